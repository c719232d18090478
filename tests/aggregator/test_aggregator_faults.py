"""The aggregator under faults: SIGKILL at any point, and hostile or disordered traffic
(forged, duplicated beyond the window, replayed under another id, out of order). Figures
stay exact; the quarantine counts every reject by its reason."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import nats

from aggregator_support import (
    Region,
    make_region,
    publish_stored,
    read_all,
    release_findings,
    verify_stream,
)
from handsoff.events import Country, PerpetratorCategory, ViolenceType, core_type
from handsoff.federation import statements, subjects
from handsoff.federation.envelope import MSG_ID, message_id, seal_headers
from handsoff.federation.shared import (
    SharedEvent,
    SharedFirstResponse,
    SharedIncident,
    encode,
    kind_of,
    validated,
)
from handsoff.keys import SigningKey
from handsoff.services.aggregator import tally
from handsoff.services.aggregator.indicators import compute
from handsoff.services.aggregator.ingest import IngestStore
from handsoff.services.aggregator.release import PUBLISHED
from handsoff.services.aggregator.releases import ReleaseBook
from handsoff.services.aggregator.service import AggregatorPaths, take_region
from handsoff.services.natsserver import EmbeddedNats

WORKER = Path(__file__).with_name("aggregator_worker.py")



def worker(region: Region, mode: str, n: int) -> int:
    done = subprocess.run(
        [sys.executable, str(WORKER), str(region.aggregator_dir), region.url, mode, str(n)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode in (0, -9), done.stderr
    return done.returncode


async def assert_exact(region: Region) -> None:
    """The store's figures and every published release equal the recomputation from the
    raw stream."""
    events = await read_all(
        region.url,
        subjects.all_events(region.document.region),
        subjects.events_stream(region.document.region),
    )
    end = events[-1].metadata.sequence.stream
    store = IngestStore(AggregatorPaths(region.aggregator_dir).store)
    try:
        reference = verify_stream(events, region.document, end)
        assert store.position() == end
        assert store.accepted_count() == reference.accepted
        assert tally.compute(store.connection) == compute(reference.ledger)
        assert store.rejected_by_reason() == reference.rejected
        state = ReleaseBook(store).state()
        assert state is not None
        assert state.published == state.release
    finally:
        store.close()
    aggregates = await read_all(
        region.url,
        subjects.all_aggregates(region.document.region),
        subjects.aggregates_stream(region.document.region),
    )
    by_release: dict[int, dict[str, statements.AggregateStatement]] = {}
    for m in aggregates:
        if subjects.is_region_taken(m.subject):  # the aggregator's announcement of its region
            continue
        s = statements.verify(m.data, region.document)
        held = by_release.setdefault(s.release, {}).get(s.indicator)
        assert held is None or held == s  # a republished release is the same release
        by_release[s.release][s.indicator] = s
    assert sorted(by_release) == list(range(1, len(by_release) + 1))
    published = [tuple(by_release[n][i] for i in PUBLISHED) for n in sorted(by_release)]
    assert release_findings(events, region.document, published) == []
    assert published[-1][0].inputs.last_seq == end


async def test_sigkill_at_any_point_then_restart_figures_exact(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    region = await make_region(tmp_path, nats_server.url, stories=15)
    try:
        take_region(AggregatorPaths(region.aggregator_dir), region.region_file)
        kills = [
            ("mid-batch", 40),  # verifying message 40 of this run: nothing of its batch kept
            ("after-commit", 3),  # third batch committed, not acked
            ("mid-batch", 7),
            ("after-commit", 1),
            ("mid-release", 1),  # caught up, release kept, not yet published
        ]
        for mode, n in kills:
            assert await asyncio.to_thread(worker, region, mode, n) == -9, (mode, n)
        assert await asyncio.to_thread(worker, region, "none", 0) == 0
        await assert_exact(region)
    finally:
        region.close()


def _incident(partner: str, case: str) -> SharedIncident:
    types = [ViolenceType.PHYSICAL_ASSAULT]
    return validated(  # type: ignore[return-value]
        SharedIncident(
            partner=partner,
            case=hashlib.blake2b(f"{partner}/{case}".encode(), digest_size=16).hexdigest(),
            country=Country.BW,
            month="2026-03",
            violence_types=types,
            gbvims_type=core_type(types),
            perpetrators=[PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT],
        )
    )


def _response(partner: str, case: str, hours: int) -> SharedFirstResponse:
    return validated(  # type: ignore[return-value]
        SharedFirstResponse(
            partner=partner,
            case=hashlib.blake2b(f"{partner}/{case}".encode(), digest_size=16).hexdigest(),
            country=Country.BW,
            month="2026-03",
            hours_to_first_response=hours,
        )
    )


async def test_forged_duplicated_replayed_and_out_of_order_messages(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    # A short duplicate window, so duplicates published later really reach the stream.
    region = await make_region(tmp_path, nats_server.url, stories=10, events_window=0.5)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        take_region(AggregatorPaths(region.aggregator_dir), region.region_file)
        assert await asyncio.to_thread(worker, region, "none", 0) == 0
        store = IngestStore(AggregatorPaths(region.aggregator_dir).store)
        try:
            before = tally.compute(store.connection)
        finally:
            store.close()

        doc = region.document
        p1, p2 = region.nodes[0], region.nodes[1]
        honest = await read_all(
            region.url, subjects.all_events("sadc"), subjects.events_stream("sadc")
        )

        async def send(
            partner: str,
            event: SharedEvent,
            number: int,
            signer: SigningKey,
            kid: bytes | None = None,
        ) -> None:
            payload = encode(event)
            subject = subjects.events("sadc", partner, kind_of(type(event)))
            headers = seal_headers(
                signer, subject, message_id(partner, number), payload, doc.version
            )
            if kid is not None:
                headers["Hx-Kid"] = kid.hex()
            # stored even under a number the stream still deduplicates (the short window)
            await publish_stored(js, subject, payload, headers)

        # Forged: p2's key under p1's key id; an unknown key; p2 signing on p1's subject.
        await send("p1", _incident("p1", "forged-a"), 9001, p2.signer, kid=p1.signer.kid)
        await send("p1", _incident("p1", "forged-b"), 9002, SigningKey.generate())
        await send("p1", _incident("p1", "forged-c"), 9003, p2.signer)
        # Duplicated beyond the window: honest messages published again, byte for byte.
        for m in honest[:5]:
            await publish_stored(js, m.subject, m.data, dict(m.headers))
        # Replayed under another message id: the signature no longer covers it.
        m = honest[0]
        replay = dict(m.headers)
        replay[MSG_ID] = message_id(m.headers[MSG_ID].split(":")[0], 8000)
        await js.publish(m.subject, m.data, headers=replay)
        # A different payload under a number already accepted (signed by the right key);
        # not one of the numbers just republished, which NATS would still deduplicate.
        republished = {m.headers[MSG_ID] for m in honest[:5]}
        taken = next(
            int(m.headers[MSG_ID].split(":")[1])
            for m in honest
            if m.headers[MSG_ID].startswith("p1:") and m.headers[MSG_ID] not in republished
        )
        await send("p1", _incident("p1", "other"), taken, p1.signer)
        # Out of order, but genuine: the response before its incident.
        await send("p1", _response("p1", "late", 7), 9100, p1.signer)
        await send("p1", _incident("p1", "late"), 9101, p1.signer)

        assert await asyncio.to_thread(worker, region, "none", 0) == 0
        await assert_exact(region)
        store = IngestStore(AggregatorPaths(region.aggregator_dir).store)
        try:
            after = tally.compute(store.connection)
            assert store.rejected_by_reason() == {
                "bad_signature": 2,  # p2's signature under p1's kid; the replay
                "unknown_key": 2,  # a stranger's key; p2's key for p1
                "conflict": 1,
            }
        finally:
            store.close()
        # The only change: the genuine late case (one incident, one response).
        assert after != before
        moved = {(c.indicator, c.period, c.area, c.key): c.value for c in after.cells}
        was = {(c.indicator, c.period, c.area, c.key): c.value for c in before.cells}
        assert (
            moved[("incidents", "2026-03", "BW", "")]
            == was.get(("incidents", "2026-03", "BW", ""), 0) + 1
        )
        quarantined = await read_all(
            region.url, subjects.all_quarantine("sadc"), subjects.quarantine_stream("sadc")
        )
        reasons: dict[str, int] = {}
        for q in quarantined:
            reasons[q.headers["Hx-Reject-Reason"]] = (
                reasons.get(q.headers["Hx-Reject-Reason"], 0) + 1
            )
        assert reasons == {"bad_signature": 2, "unknown_key": 2, "conflict": 1}
    finally:
        region.close()
        await nc.close()
