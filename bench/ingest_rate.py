"""Aggregator ingest: verified events per second vs. raw PyNaCl verify, and peak memory.

Setup (not timed): five partners with their keys and a region document; N shared events
(realistic cases: incident, first response, referrals, police, court; a few retractions),
each sealed exactly as a relay seals it, published into a fresh region stream on a real
nats-server (`EmbeddedNats`, JetStream on disk).

Rate, in interleaved rounds (order alternating):

- ingest: a fresh aggregator store (SQLite file) and a fresh durable consumer; the clock
  runs from `Ingest.start` until the store's position is the stream's last sequence:
  every message fetched, verified (region membership, key validity, Ed25519 signature,
  schema), recorded with its facts in one transaction per batch, and acked one by one;
- raw: `nacl.signing.VerifyKey.verify` over the same N signing inputs and signatures.

The ratio ingest/raw says how close ingest gets to the bare cryptography; the target
(issue #4) is >= 0.5 with a per-message ack.

Memory (`--memory`): one stream of the largest size; for each size a fresh process ingests
the first n messages into a fresh store and cuts a release (figures computed in SQL,
protected, signed), then reports its peak RSS. Target: flat within 20% from 10^4 to 10^6.

    .venv/bin/python -m bench.ingest_rate [--events N] [--rounds R]
    .venv/bin/python -m bench.ingest_rate --memory [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nacl.signing
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bench._common import median
from handsoff.events import (
    CourtJudgment,
    PerpetratorCategory,
    PoliceResponse,
    ReferralOutcome,
    ServiceType,
    ViolenceType,
    core_type,
)
from handsoff.federation import subjects
from handsoff.federation.envelope import SIGNATURE, message_id, seal_headers, signing_input
from handsoff.federation.natsconf import ensure_streams
from handsoff.federation.region import Aggregator, Coordinator, RegionDocument
from handsoff.federation.shared import (
    SharedCourtCaseOpened,
    SharedCourtJudgment,
    SharedEvent,
    SharedFirstResponse,
    SharedIncident,
    SharedPoliceReportFiled,
    SharedPoliceResponse,
    SharedReferralAccepted,
    SharedReferralCompleted,
    SharedReferralMade,
    SharedRetraction,
    encode,
    kind_of,
)
from handsoff.keys import SigningKey
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.ingest import Ingest, IngestStore
from handsoff.services.aggregator.releases import Cutter
from handsoff.services.natsserver import EmbeddedNats

REGION = "bench"
COUNTRIES = ("BW", "MZ", "NA", "ZA", "ZW")
MONTHS = tuple(f"2026-{m:02d}" for m in range(1, 13))


@dataclass(frozen=True)
class Sealed:
    subject: str
    payload: bytes
    headers: dict[str, str]


def _pseudonym(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def _case(rng: random.Random, partner: str, country: str, n: int) -> list[SharedEvent]:
    """One case's shared events (3 to 10)."""
    base = {"partner": partner, "case": _pseudonym(partner, n), "country": country}
    month = rng.choice(MONTHS)
    step = {**base, "month": month}
    types = rng.sample(list(ViolenceType), rng.randint(1, 2))
    out: list[SharedEvent] = [
        SharedIncident(
            **step,  # type: ignore[arg-type]
            violence_types=types,
            gbvims_type=core_type(types),
            perpetrators=rng.sample(list(PerpetratorCategory), 1),
        ),
        SharedFirstResponse(**step, hours_to_first_response=rng.randint(0, 96)),  # type: ignore[arg-type]
    ]
    ref = _pseudonym(partner, n, "ref")
    service = rng.choice(list(ServiceType))
    out += [
        SharedReferralMade(**step, referral=ref, service=service),  # type: ignore[arg-type]
        SharedReferralAccepted(**step, referral=ref, service=service),  # type: ignore[arg-type]
    ]
    if rng.random() < 0.6:
        out.append(
            SharedReferralCompleted(
                **step,  # type: ignore[arg-type]
                referral=ref,
                service=service,
                outcome=ReferralOutcome.SERVICE_RECEIVED,
                hours_to_complete=rng.randint(1, 400),
            )
        )
    if rng.random() < 0.4:
        out += [
            SharedPoliceReportFiled(**step),  # type: ignore[arg-type]
            SharedPoliceResponse(**step, response=rng.choice(list(PoliceResponse))),  # type: ignore[arg-type]
        ]
    if rng.random() < 0.1:
        out += [
            SharedCourtCaseOpened(**step),  # type: ignore[arg-type]
            SharedCourtJudgment(**step, judgment=rng.choice(list(CourtJudgment))),  # type: ignore[arg-type]
        ]
    if rng.random() < 0.03:
        out.append(SharedRetraction(partner=partner, case=base["case"]))
    return out


def make_region() -> tuple[RegionDocument, dict[str, SigningKey]]:
    now = datetime.now(UTC) - timedelta(minutes=5)
    keys = {f"{c.lower()}-partner": SigningKey.generate() for c in COUNTRIES}
    doc = RegionDocument(
        region=REGION,
        version=1,
        issued_at=now,
        expires_at=now + timedelta(days=30),
        threshold=1,
        coordinators=[Coordinator("c1", "Coordinator", SigningKey.generate().public_key)],
        aggregator=Aggregator("aggregator", SigningKey.generate().public_key),
    )
    for (p, k), c in zip(keys.items(), COUNTRIES, strict=True):
        doc = doc.add_partner(p, p, c, k.public_key, valid_from=now, issued_at=now)
    return doc, keys


def messages(
    doc: RegionDocument, keys: dict[str, SigningKey], n: int, seed: int
) -> Iterator[Sealed]:
    rng = random.Random(seed)
    numbers = dict.fromkeys(keys, 0)
    partners = list(keys)
    countries = dict(zip(partners, COUNTRIES, strict=True))
    made, case = 0, 0
    while made < n:
        partner = rng.choice(partners)
        case += 1
        for event in _case(rng, partner, countries[partner], case):
            if made >= n:
                return
            numbers[partner] += 1
            payload = encode(event)
            subject = subjects.events(REGION, partner, kind_of(type(event)))
            msg_id = message_id(partner, numbers[partner])
            headers = seal_headers(keys[partner], subject, msg_id, payload, doc.version)
            yield Sealed(subject, payload, headers)
            made += 1


async def publish_all(url: str, sealed: Iterator[Sealed]) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, REGION)
        pending = []
        count = 0
        for s in sealed:
            pending.append(await js.publish_async(s.subject, s.payload, headers=s.headers))
            count += 1
            if len(pending) >= 4000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await js.publish_async_completed()
        return count
    finally:
        await nc.close()


async def ingest_until(url: str, doc: RegionDocument, store: IngestStore, last: int) -> float:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        ingest = Ingest(doc, store, js, batch=256, fetch_timeout=1.0)
        start = time.perf_counter()
        await ingest.start()
        while store.position() < last:
            await ingest.run_once()
        elapsed = time.perf_counter() - start
        await ingest.stop()
        return elapsed
    finally:
        await nc.close()


async def bare_fetch_ack(url: str, doc: RegionDocument, name: str, last: int) -> float:
    """The receiving alone: the same messages fetched and acked one by one through a durable
    pull consumer of their own, nothing verified or stored (a ceiling, not the baseline)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        start = time.perf_counter()
        sub = await js.pull_subscribe(
            subjects.all_events(doc.region),
            durable=name,
            stream=subjects.events_stream(doc.region),
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
        )
        taken = 0
        while taken < last:
            for m in await sub.fetch(256, timeout=1.0):
                taken = max(taken, m.metadata.sequence.stream)
                await m.ack()
        return time.perf_counter() - start
    finally:
        await nc.close()


def raw_verify(doc: RegionDocument, keys: dict[str, SigningKey], sealed: list[Sealed]) -> float:
    vks = {p: nacl.signing.VerifyKey(k.public_key) for p, k in keys.items()}
    items = [
        (
            vks[subjects.partner_of(s.subject)],
            signing_input(s.subject, s.headers["Nats-Msg-Id"], doc.version, s.payload),
            bytes.fromhex(s.headers[SIGNATURE]),
        )
        for s in sealed
    ]
    start = time.perf_counter()
    for vk, msg, sig in items:
        vk.verify(msg, sig)
    return time.perf_counter() - start


def rate_bench(events: int, rounds: int) -> None:
    doc, keys = make_region()
    sealed = list(messages(doc, keys, events, 1))
    with tempfile.TemporaryDirectory(prefix="hx-bench-ingest-") as tmp:
        server = EmbeddedNats(Path(tmp) / "nats").start()
        try:
            asyncio.run(publish_all(server.url, iter(sealed)))
            ingest_rates, raw_rates, ratios, bare_rates = [], [], [], []
            for r in range(rounds):

                def ingest_round(r: int = r) -> float:
                    store = IngestStore(Path(tmp) / f"agg-{r}.sqlite")
                    try:
                        return asyncio.run(ingest_until(server.url, doc, store, len(sealed)))
                    finally:
                        store.close()

                if r % 2 == 0:
                    t_ingest, t_raw = ingest_round(), raw_verify(doc, keys, sealed)
                else:
                    t_raw, t_ingest = raw_verify(doc, keys, sealed), ingest_round()
                t_bare = asyncio.run(bare_fetch_ack(server.url, doc, f"bare-{r}", len(sealed)))
                bare_rates.append(events / t_bare)
                ingest_rates.append(events / t_ingest)
                raw_rates.append(events / t_raw)
                ratios.append(t_raw / t_ingest)
                print(
                    f"round {r + 1}: ingest {events / t_ingest:,.0f}/s, "
                    f"raw verify {events / t_raw:,.0f}/s, ratio {t_raw / t_ingest:.3f}",
                    flush=True,
                )
        finally:
            server.stop()
    print(
        f"\ningest (verified, recorded, acked one by one): {median(ingest_rates):,.0f} events/s"
        f"\nraw PyNaCl verify:                              {median(raw_rates):,.0f} /s"
        f"\nratio ingest/raw: median {median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.5)"
        f"\nceiling: bare nats-py fetch + ack alone (nothing verified or stored): "
        f"{median(bare_rates):,.0f}/s = {median(bare_rates) / median(raw_rates):.2f} of raw verify"
    )


def memory_child(url: str, last: int) -> None:
    """Runs in a fresh process: ingest the first `last` messages, cut a release."""
    doc_json = Path(sys.argv[sys.argv.index("--region-json") + 1]).read_bytes()
    from handsoff.federation.region import SignedRegion

    doc = SignedRegion(doc_json).document
    with tempfile.TemporaryDirectory(prefix="hx-bench-mem-") as tmp:
        store = IngestStore(Path(tmp) / "agg.sqlite")
        try:
            asyncio.run(ingest_until(url, doc, store, last))
            cutter = Cutter(doc, SigningKey.generate())
            cutter.cut(store, 1, SuppressionMemory())
            position = store.position()
        finally:
            store.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"ingested": position, "peak_rss_mib": round(peak_kib / 1024, 1)}))


def memory_bench(sizes: list[int]) -> None:
    doc, keys = make_region()
    with tempfile.TemporaryDirectory(prefix="hx-bench-ingest-mem-") as tmp:
        server = EmbeddedNats(Path(tmp) / "nats").start()
        try:
            start = time.perf_counter()
            n = asyncio.run(publish_all(server.url, messages(doc, keys, max(sizes), 1)))
            print(f"published {n:,} sealed messages in {time.perf_counter() - start:.0f} s")
            from handsoff.federation.region import SignedRegion

            region_json = Path(tmp) / "region.json"
            region_json.write_bytes(SignedRegion.unsigned(doc).document_bytes)
            peaks = {}
            for size in sizes:
                t = time.perf_counter()
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.ingest_rate",
                        "--child",
                        server.url,
                        str(size),
                        "--region-json",
                        str(region_json),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                peaks[size] = result["peak_rss_mib"]
                print(
                    f"{size:>9,} events: peak RSS {peaks[size]:7.1f} MiB "
                    f"(ingest + release in {time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
        finally:
            server.stop()
    smallest = peaks[min(sizes)]
    for size in sizes:
        print(f"{size:>9,}: {peaks[size] / smallest:.3f} x the peak at {min(sizes):,}")
    print("target: flat within 20% (<= 1.2)")


def main() -> None:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        memory_child(sys.argv[i + 1], int(sys.argv[i + 2]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--memory", action="store_true")
    p.add_argument("--sizes", default="10000,100000,1000000")
    args = p.parse_args()
    if args.memory:
        memory_bench([int(x) for x in args.sizes.split(",")])
    else:
        rate_bench(args.events, args.rounds)


if __name__ == "__main__":
    main()
