"""`node verify` events per second vs. raw PyNaCl Ed25519 verification on the same machine.

A node directory (real SQLite files) is filled once with N sealed case events; then, in
interleaved rounds, `verify_node` (what `handsoff node verify` runs: keyring chain, then
every log read page by page, every signature, link and key order checked) is timed against
a tight loop of `nacl.signing.VerifyKey.verify(msg, sig)` over N 32-byte messages with
64-byte signatures (the same shape as a sealed event's link and signature). The ratio
node/raw says how close `node verify` gets to the bare cryptography; the target is >= 70%.

    .venv/bin/python -m bench.verify_rate [--events N] [--rounds R] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import nacl.signing

from bench._common import (
    CASE_LENGTHS,
    CONFIG,
    lifecycle,
    median,
    new_node_dir,
    open_node,
    spread,
)
from handsoff.keys import load_keyring
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.config import NodePaths
from handsoff.services.node.persistence import application_recorder, store_env
from handsoff.services.node.store import PAGE, Recorded
from handsoff.services.node.verify import VerificationReport, verify_node

TARGET_RATIO = 0.70
BATCH = 500  # events per insert when filling


def fill(directory: Path, events: int) -> None:
    """N sealed case events, written through the case log's event store in batches.

    Each event is encrypted, signed and chained by SealedEventStore.put exactly as a
    recorded change is; only the per-command rule check and commit are skipped, so the
    fill takes seconds instead of the ~20 s of recording one change at a time.
    """
    new_node_dir(directory)
    node = open_node(directory, signing=True)
    try:
        now = datetime.now(UTC)
        batch: list[Recorded] = []
        written = 0
        case = 0
        while written < events:
            case_id = uuid4()
            length = CASE_LENGTHS[case % len(CASE_LENGTHS)]
            for version, change in enumerate(lifecycle(str(case))[:length], start=1):
                if written == events:
                    break
                batch.append(Recorded(case_id, version, now, "bench", change))
                written += 1
            if len(batch) >= BATCH or written == events:
                node.cases.record(batch)
                batch = []
            case += 1
    finally:
        node.close()


def verify_run(directory: Path) -> tuple[float, VerificationReport]:
    paths = NodePaths(directory)
    keyring = load_keyring(paths.keyring)
    start = time.perf_counter()
    report = verify_node(CONFIG, paths.data, keyring)
    elapsed = time.perf_counter() - start
    if not report.intact:
        sys.exit(f"node verify failed: {report}")
    return sum(log.events for log in report.logs) / elapsed, report


def unsigned_walk_run(directory: Path) -> float:
    """Breakdown only: verify_log's loop over the case log with signature checks off.

    What is left is reading pages, unsealing, hashing links and checking the chain, so
    (node verify time - this) is the signature path: key lookup, checks, PyNaCl, libsodium.
    """
    paths = NodePaths(directory)
    recorder = application_recorder(store_env(CONFIG, paths.data, "cases"), "cases")
    follower = ChainFollower("cases", load_keyring(paths.keyring), verify_signatures=False)
    start = time.perf_counter()
    while True:
        page = recorder.select_notifications(
            start=follower.position, limit=PAGE, inclusive_of_start=False
        )
        if not page:
            break
        follower.check_all(page)
    elapsed = time.perf_counter() - start
    close = getattr(getattr(recorder, "datastore", None), "close", None)
    if callable(close):
        close()
    return follower.count / elapsed


def raw_material(n: int) -> tuple[nacl.signing.VerifyKey, list[tuple[bytes, bytes]]]:
    key = nacl.signing.SigningKey.generate()
    pairs = []
    for _ in range(n):
        msg = os.urandom(32)
        pairs.append((msg, key.sign(msg).signature))
    return key.verify_key, pairs


def raw_run(vk: nacl.signing.VerifyKey, pairs: list[tuple[bytes, bytes]]) -> float:
    verify = vk.verify
    start = time.perf_counter()
    for msg, sig in pairs:
        verify(msg, sig)
    return len(pairs) / (time.perf_counter() - start)


def profile(directory: Path) -> None:
    print("\nprofile of one verify_node run (cProfile adds overhead; read proportions):")
    profiler = cProfile.Profile()
    profiler.enable()
    verify_run(directory)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs()
    print("-- top 15 by cumulative time --")
    stats.sort_stats("cumulative").print_stats(15)
    print("-- top 15 by own time --")
    stats.sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events in the node (20000)")
    parser.add_argument("--rounds", type=int, default=7, help="node+raw pairs (7)")
    parser.add_argument("--profile", action="store_true", help="cProfile one verify_node run")
    args = parser.parse_args()
    events: int = args.events
    rounds: int = args.rounds

    with tempfile.TemporaryDirectory(prefix="handsoff-bench-") as tmp:
        directory = Path(tmp) / "node"
        start = time.perf_counter()
        fill(directory, events)
        print(
            f"verify_rate: node with {events} case events (+1 admin event) filled in "
            f"{time.perf_counter() - start:.1f} s; {rounds} rounds, node verify vs raw PyNaCl"
        )
        vk, pairs = raw_material(events + 1)  # the same count as the node's events
        verify_run(directory)  # warm-up: page cache, imports, key cache
        raw_run(vk, pairs[:1000])
        node_rates: list[float] = []
        raw_rates: list[float] = []
        walk_rates: list[float] = []
        ratios: list[float] = []
        for r in range(rounds):
            if r % 2 == 0:
                node_rate, report = verify_run(directory)
                raw_rate = raw_run(vk, pairs)
            else:
                raw_rate = raw_run(vk, pairs)
                node_rate, report = verify_run(directory)
            walk_rates.append(unsigned_walk_run(directory))
            node_rates.append(node_rate)
            raw_rates.append(raw_rate)
            ratios.append(node_rate / raw_rate)
            print(
                f"  round {r + 1}: node verify {node_rate:,.0f}/s  raw {raw_rate:,.0f}/s"
                f"  ratio {ratios[-1]:.3f}"
            )
        counted = {log.log: log.events for log in report.logs}
        n, w, ratio = median(node_rates), median(raw_rates), median(ratios)
        print(f"events verified per run: {counted}")
        print(f"node verify (median): {n:,.0f} events/s ({spread(node_rates)})")
        print(f"raw PyNaCl  (median): {w:,.0f} verifies/s ({spread(raw_rates)})")
        print(
            f"ratio node/raw: {ratio:.3f} (median of paired rounds; of medians {n / w:.3f}); "
            f"per event {1e6 / n:.0f} us vs {1e6 / w:.0f} us raw; "
            f"target >= {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}"
        )
        walk_us = 1e6 / median(walk_rates)
        node_us = median([1e6 / x for x in node_rates])
        print(
            f"breakdown per event (medians): node verify {node_us:.0f} us = read+unseal+link+"
            f"chain {walk_us:.0f} us (signature checks off) + signature path "
            f"{node_us - walk_us:.0f} us; raw PyNaCl verify {1e6 / w:.0f} us"
        )
        if args.profile:
            profile(directory)


if __name__ == "__main__":
    main()
