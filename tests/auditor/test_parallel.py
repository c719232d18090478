"""Verification on several processes gives exactly the report of the single-process replay."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from handsoff.events import Country, PerpetratorCategory, ViolenceType, core_type
from handsoff.federation import subjects
from handsoff.federation.envelope import SIGNATURE, message_id, seal_headers
from handsoff.federation.natsconf import ensure_streams
from handsoff.federation.region import Aggregator, Coordinator, RegionDocument
from handsoff.federation.shared import SharedFirstResponse, SharedIncident, encode, kind_of
from handsoff.keys import SigningKey
from handsoff.services.auditor import parallel
from handsoff.services.auditor.region import StreamMessage, audit_messages, audit_region
from handsoff.services.natsserver import EmbeddedNats


def region_and_messages(n: int) -> tuple[RegionDocument, list[StreamMessage]]:
    now = datetime.now(UTC) - timedelta(minutes=1)
    keys = {p: SigningKey.generate() for p in ("p1", "p2")}
    doc = RegionDocument(
        region="sadc", version=1, issued_at=now, expires_at=now + timedelta(days=1),
        threshold=1, coordinators=[Coordinator("c1", "C", SigningKey.generate().public_key)],
        aggregator=Aggregator("aggregator", SigningKey.generate().public_key),
    )
    for p, k in keys.items():
        doc = doc.add_partner(p, p, "BW", k.public_key, valid_from=now, issued_at=now)
    out = []
    numbers = {p: 0 for p in keys}
    for i in range(n):
        p = ("p1", "p2")[i % 2]
        case = hashlib.blake2b(f"{p}/{i // 4}".encode(), digest_size=16).hexdigest()
        step = {"partner": p, "case": case, "country": Country.BW, "month": "2026-03"}
        if i % 4 < 2:
            types = [ViolenceType.PHYSICAL_ASSAULT]
            event: object = SharedIncident(
                **step, violence_types=types, gbvims_type=core_type(types),  # type: ignore[arg-type]
                perpetrators=[PerpetratorCategory.CLIENT],
            )
        else:
            event = SharedFirstResponse(**step, hours_to_first_response=i % 40)  # type: ignore[arg-type]
        numbers[p] += 1
        payload = encode(event)  # type: ignore[arg-type]
        subject = subjects.events("sadc", p, kind_of(type(event)))
        headers = seal_headers(keys[p], subject, message_id(p, numbers[p]), payload, doc.version)
        out.append(StreamMessage(i + 1, now + timedelta(seconds=i + 30), subject, headers, payload))
    return doc, out


def test_parallel_verdicts_equal_single_process() -> None:
    doc, messages = region_and_messages(1300)  # more than two chunks
    assert len(messages) > 2 * parallel.CHUNK
    bad = dict(messages[700].headers)
    bad[SIGNATURE] = "00" * 64
    messages[700] = replace(messages[700], headers=bad)
    messages[900] = replace(messages[900], data=messages[900].data.replace(b"2026", b"2025"))
    single = audit_messages(doc, messages, [])
    several = audit_messages(doc, messages, [], workers=2)
    assert not single.ok
    assert single == several
    assert [(f.check, f.reason, f.where) for f in single.findings] == [
        ("signatures", "bad_signature", "stream seq 701 (p1:351)"),
        ("signatures", "bad_signature", "stream seq 901 (p1:451)"),
        ("exactly_once", "missing", "partner p1"),  # so p1's numbers 351 and 451 never count
    ]


async def test_region_audit_over_nats_with_workers_equals_single_process(tmp_path: Path) -> None:
    """`audit region --workers N` examines chunks in worker processes while the stream is
    still being read: the report is the single-process one, findings included."""
    doc, messages = region_and_messages(900)
    bad = dict(messages[450].headers)
    bad[SIGNATURE] = "00" * 64
    messages[450] = replace(messages[450], headers=bad)
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js, doc.region)
        acks = [
            await js.publish_async(m.subject, m.data, headers=m.headers) for m in messages
        ]
        await asyncio.wait_for(asyncio.gather(*acks), timeout=30)
        single = await audit_region(js, doc)
        several = await audit_region(js, doc, workers=2)
        await nc.close()
    finally:
        server.stop()
    assert single == several
    assert next(c.checked for c in single.checks if c.name == "signatures") == 900
    assert [(f.check, f.reason, f.where) for f in single.findings] == [
        ("signatures", "bad_signature", "stream seq 451 (p1:226)"),
        ("exactly_once", "missing", "partner p1"),
    ]


def test_a_worker_that_dies_stops_the_audit_with_a_clear_error() -> None:
    doc, messages = region_and_messages(3 * parallel.CHUNK)
    with parallel.ParallelVerifier(doc, 2) as verifier:
        victim = verifier._processes[0]
        victim.kill()
        victim.join(timeout=10)
        with pytest.raises(parallel.WorkerLost, match="verifying worker 0 ended"):
            list(verifier.examined(messages))
