"""Audit replay: events per second vs raw PyNaCl verify, and a 1,000,000-event replay.

Setup (not timed): five partners' keys and a region document; N shared events of realistic
cases, each sealed exactly as a relay seals it, numbered as stream messages (seq, time).

Rate, in interleaved rounds: the region audit over those messages (`audit_messages`: every
signature, membership and key validity, exactly once, sequence, the reference ledger and
the Merkle commitment) against `nacl.signing.VerifyKey.verify` over the same signatures on
one core. The issue's target compares with *twice* the single-core rate (both cores used):
audit >= 0.7 x 2 x raw.

Million (`--million`): the messages are written to a file, then a fresh process replays
them through the audit (read as it goes) and reports the time and its peak RSS.

Over NATS (`--nats`): the same messages published into a region stream on an embedded
nats-server, then `audit region` as a user runs it (the stream read back through an ordered
consumer while it is replayed), in one process and with `--workers`, rounds interleaved.

    .venv/bin/python -m bench.audit_rate [--events N] [--rounds R]
    .venv/bin/python -m bench.audit_rate --million [--events 1000000]
    .venv/bin/python -m bench.audit_rate --nats [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats

from bench._common import median
from bench.ingest_rate import Sealed, make_region, messages, publish_all, raw_verify
from handsoff.federation.region import RegionDocument, SignedRegion
from handsoff.services.auditor.parallel import ParallelVerifier
from handsoff.services.auditor.region import StreamMessage, audit_messages, audit_region
from handsoff.services.natsserver import EmbeddedNats


class Record(msgspec.Struct, array_like=True):
    subject: str
    headers: dict[str, str]
    data: bytes


def stream_messages(sealed: Iterator[Sealed]) -> Iterator[StreamMessage]:
    start = datetime.now(UTC)  # stream times after the keys' validity begins
    for i, s in enumerate(sealed, 1):
        yield StreamMessage(i, start + timedelta(milliseconds=i), s.subject, s.headers, s.payload)


def rate_bench(events: int, rounds: int, workers: int) -> None:
    doc, keys = make_region()
    sealed = list(messages(doc, keys, events, 1))
    ms = list(stream_messages(iter(sealed)))
    audit_rates, raw_rates = [], []
    for r in range(rounds):
        if r % 2 == 0:
            t0 = time.perf_counter()
            report = audit_messages(doc, ms, [], workers=workers)
            t_audit = time.perf_counter() - t0
            t_raw = raw_verify(doc, keys, sealed)
        else:
            t_raw = raw_verify(doc, keys, sealed)
            t0 = time.perf_counter()
            report = audit_messages(doc, ms, [], workers=workers)
            t_audit = time.perf_counter() - t0
        assert report.ok, report.findings[:3]
        audit_rates.append(events / t_audit)
        raw_rates.append(events / t_raw)
        print(
            f"round {r + 1}: audit {events / t_audit:,.0f}/s, raw verify {events / t_raw:,.0f}/s",
            flush=True,
        )
    audit, raw = median(audit_rates), median(raw_rates)
    print(
        f"\naudit replay: {audit:,.0f} events/s\nraw PyNaCl verify (one core): {raw:,.0f} /s"
        f"\nratio audit/raw: {audit / raw:.3f}; audit/(2 x raw): {audit / (2 * raw):.3f} "
        "(target >= 0.7 of twice the single-core rate)"
    )
    if workers > 1:
        print(
            f"(included above: starting {workers} worker processes, {startup(doc, workers):.2f} s)"
        )


def startup(doc: RegionDocument, workers: int) -> float:
    """Time until every worker has answered once (an empty chunk)."""
    start = time.perf_counter()
    with ParallelVerifier(doc, workers) as verifier:
        for _ in range(workers):
            list(verifier.feed([]))
        list(verifier.flush())
    return time.perf_counter() - start


def nats_bench(events: int, rounds: int, workers: int) -> None:
    doc, keys = make_region()
    with tempfile.TemporaryDirectory(prefix="hx-bench-audit-nats-") as tmp:
        server = EmbeddedNats(Path(tmp) / "nats").start()
        try:
            asyncio.run(publish_all(server.url, messages(doc, keys, events, 1)))

            async def audit(w: int) -> float:
                nc = await nats.connect(server.url)
                try:
                    start = time.perf_counter()
                    report = await audit_region(nc.jetstream(), doc, workers=w)
                    elapsed = time.perf_counter() - start
                finally:
                    await nc.close()
                assert report.ok, report.findings[:3]
                return elapsed

            one, several = [], []
            for r in range(rounds):
                order = (1, workers) if r % 2 == 0 else (workers, 1)
                times = {w: asyncio.run(audit(w)) for w in order}
                one.append(events / times[1])
                several.append(events / times[workers])
                print(
                    f"round {r + 1}: one process {one[-1]:,.0f}/s, "
                    f"{workers} workers {several[-1]:,.0f}/s",
                    flush=True,
                )
        finally:
            server.stop()
    print(
        f"\naudit region over NATS: one process {median(one):,.0f} events/s, "
        f"--workers {workers} {median(several):,.0f} events/s "
        f"({median(several) / median(one):.2f}x)"
    )


def write_file(path: Path, doc: RegionDocument, keys: dict[str, object], n: int) -> None:
    encoder = msgspec.msgpack.Encoder()
    with path.open("wb") as f:
        for s in messages(doc, keys, n, 1):  # type: ignore[arg-type]
            record = encoder.encode(Record(s.subject, s.headers, s.payload))
            f.write(struct.pack(">I", len(record)) + record)


def read_file(path: Path) -> Iterator[StreamMessage]:
    decoder = msgspec.msgpack.Decoder(Record)
    start = datetime.now(UTC)
    with path.open("rb") as f:
        i = 0
        while header := f.read(4):
            (size,) = struct.unpack(">I", header)
            r = decoder.decode(f.read(size))
            i += 1
            at = start + timedelta(milliseconds=i)
            yield StreamMessage(i, at, r.subject, r.headers, r.data)


def million_child(path: Path, region_path: Path, workers: int) -> None:
    doc = SignedRegion(region_path.read_bytes()).document
    t0 = time.perf_counter()
    report = audit_messages(doc, read_file(path), [], workers=workers)
    elapsed = time.perf_counter() - t0
    events = next(c.checked for c in report.checks if c.name == "signatures")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "events": events,
                "seconds": round(elapsed, 1),
                "ok": report.ok,
                "peak_rss_mib": round(peak, 1),
            }
        )
    )


def million_bench(events: int, workers: int) -> None:
    doc, keys = make_region()
    with tempfile.TemporaryDirectory(prefix="hx-bench-audit-") as tmp:
        path, region_path = Path(tmp) / "messages.bin", Path(tmp) / "region.json"
        region_path.write_bytes(SignedRegion.unsigned(doc).document_bytes)
        t0 = time.perf_counter()
        write_file(path, doc, keys, events)  # type: ignore[arg-type]
        print(f"sealed {events:,} messages in {time.perf_counter() - t0:.0f} s", flush=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.audit_rate",
                "--child",
                str(path),
                str(region_path),
                str(workers),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"replayed {result['events']:,} events in {result['seconds']} s "
        f"({result['events'] / result['seconds']:,.0f}/s), ok={result['ok']}, "
        f"peak RSS {result['peak_rss_mib']} MiB"
    )


def main() -> None:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        million_child(Path(sys.argv[i + 1]), Path(sys.argv[i + 2]), int(sys.argv[i + 3]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--million", action="store_true")
    p.add_argument("--nats", action="store_true", help="audit region over a real stream")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="verifying processes")
    args = p.parse_args()
    if args.million:
        million_bench(args.events or 1_000_000, args.workers)
    elif args.nats:
        nats_bench(args.events or 50_000, args.rounds, args.workers)
    else:
        rate_bench(args.events or 20_000, args.rounds, args.workers)


if __name__ == "__main__":
    main()
