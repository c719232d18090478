"""Events recorded per second through the case log: signed and chained vs. unsigned.

Each run records N events through `node.cases.report_incident` / `node.cases.record_change`
(the same calls the API makes: catch up, check the rules, encrypt, seal, insert, apply) on a
fresh node with real SQLite files. The signed run is a node built normally; the unsigned run
is the same node opened with `signing=False` (same envelope, zero signature, no signature
verification), so the difference is the cost of signing and verifying.

Runs are interleaved (signed/unsigned, order alternating each round) so machine noise hits
both alike; medians and the signed/unsigned ratio are printed, never a pass/fail timing.

    .venv/bin/python -m bench.record_rate [--events N] [--rounds R]   (from the repo root)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID

from bench._common import CASE_LENGTHS, case_changes, median, new_node_dir, open_node, spread
from handsoff.events import IncidentReported
from handsoff.keys import SigningKey

TARGET_OVERHEAD = 0.20  # issue: "signing costs under 20%"
BY = "bench"


def record_run(workdir: Path, events: int, *, signing: bool) -> float:
    """Events per second recording `events` changes on a fresh node; setup is not timed."""
    directory = Path(tempfile.mkdtemp(prefix="signed-" if signing else "unsigned-", dir=workdir))
    new_node_dir(directory)
    node = open_node(directory, signing=signing)
    changes = list(case_changes(events))  # built before the clock starts
    cases: dict[int, UUID] = {}
    try:
        start = time.perf_counter()
        for number, change in changes:
            if isinstance(change, IncidentReported):
                cases[number] = node.cases.report_incident(change, BY).case_id
            else:
                case_id = cases[number]
                version = node.cases.states[case_id].version
                node.cases.record_change(case_id, version, change, BY)
        elapsed = time.perf_counter() - start
        recorded = node.cases.follower.count
    finally:
        node.close()
    if recorded != events:
        sys.exit(f"recorded {recorded} events, expected {events}")
    return events / elapsed


def sign_cost_us(n: int = 5000) -> float:
    """Microseconds per SigningKey.sign of a 32-byte link: the only crypto the signed write
    path adds (own writes are not re-verified), timed alone so it is not lost in SQLite noise.
    """
    key = SigningKey.generate()
    links = [i.to_bytes(32, "big") for i in range(n)]
    sign = key.sign
    start = time.perf_counter()
    for link in links:
        sign(link)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per run (2000)")
    parser.add_argument("--rounds", type=int, default=7, help="signed+unsigned pairs (7)")
    args = parser.parse_args()
    events: int = args.events
    rounds: int = args.rounds

    print(
        f"record_rate: {rounds} rounds x {events} events, signed vs unsigned, SQLite files; "
        f"case lengths cycle {CASE_LENGTHS}"
    )
    signed: list[float] = []
    unsigned: list[float] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="handsoff-bench-") as tmp:
        workdir = Path(tmp)
        record_run(workdir, min(events, 200), signing=True)  # warm-up: imports, caches
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            rates = {s: record_run(workdir, events, signing=s) for s in order}
            signed.append(rates[True])
            unsigned.append(rates[False])
            ratios.append(rates[True] / rates[False])
            print(
                f"  round {r + 1}: signed {rates[True]:,.0f}/s  unsigned {rates[False]:,.0f}/s"
                f"  ratio {ratios[-1]:.3f}"
            )

    s, u = median(signed), median(unsigned)
    ratio = median(ratios)  # paired: each round's two runs saw the same machine state
    overhead = 1 / ratio - 1  # extra time per event, relative to unsigned
    per_event_us = overhead * 1e6 / u  # same paired estimate, in time per event
    print(f"signed   (median): {s:,.0f} events/s ({spread(signed)})")
    print(f"unsigned (median): {u:,.0f} events/s ({spread(unsigned)})")
    print(f"ratio signed/unsigned: {ratio:.3f} (median of paired rounds; of medians {s / u:.3f})")
    print(
        f"signing overhead: {overhead:+.1%} time per event ({per_event_us:+.0f} us/event); "
        f"target < {TARGET_OVERHEAD:.0%}: {'met' if overhead < TARGET_OVERHEAD else 'MISSED'}"
    )
    sign_us = median([sign_cost_us() for _ in range(3)])
    print(
        f"signing alone: {sign_us:.0f} us per SigningKey.sign = {sign_us * u / 1e6:.1%} of an "
        f"unsigned event's {1e6 / u:.0f} us (the low-noise estimate of the overhead)"
    )


if __name__ == "__main__":
    main()
