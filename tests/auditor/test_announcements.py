"""The aggregator announces each region version it takes (hx.<r>.aggregates._region), and
the auditor judges every message by the version the aggregator held when it ingested it.

A real region on a real nats-server: version 4 (a new partner, p3) is issued while the
nodes and the aggregator hold version 3; p1 takes it at once, p2 keeps sending under version
3 for a while (so after version 4 was issued), and the aggregator, still holding 3, accepts
and releases those messages. It takes version 4 later, at a restart that is SIGKILLed right
after the announcement is published and before it is recorded. Then p3 joins and everyone
sends. With only version 3 as trust anchor the audit is clean; the same streams judged by
stream time (the announcements left out) are not; `aggregator rebuild` reproduces every
release; forged, tampered, backward, repeated and missing announcements are named."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import pytest

from auditor.test_history_audit import relay
from handsoff.federation import announcements, statements, subjects
from handsoff.federation.region import SignedRegion, save_region
from handsoff.keys import KdfStrength, SigningKey
from handsoff.services.aggregator import tally
from handsoff.services.aggregator.announce import TakenBook
from handsoff.services.aggregator.indicators import compute
from handsoff.services.aggregator.ingest import IngestStore
from handsoff.services.aggregator.service import (
    AggregatorPaths,
    init_aggregator,
    open_key,
    take_region,
)
from handsoff.services.auditor.bundle import Bundle, audit_bundle, sign_bundle
from handsoff.services.auditor.region import (
    StreamMessage,
    audit_messages,
    audit_region,
    judged,
    read_streams,
)
from handsoff.services.auditor.replay import EventReplay
from handsoff.services.auditor.report import AuditReport, Collector
from handsoff.services.cli import main
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.link import join_region
from relay_support import record_stories
from support import PASSPHRASE, RegionKit, create_region_streams, make_node

WORKER = Path(__file__).parents[1] / "aggregator" / "aggregator_worker.py"
TAKEN = subjects.region_taken("sadc")
assert TAKEN == "hx.sadc.aggregates._region"



async def worker(directory: Path, url: str, mode: str = "none", n: int = 0) -> int:
    """The aggregator (tests/aggregator/aggregator_worker.py) until it has released the whole
    stream (exit 0), or SIGKILLed at the point `mode` names (-9)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(WORKER), str(directory), url, mode, str(n)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode in (0, -9), done.stderr
    return done.returncode


@dataclass
class Streams:
    events: list[StreamMessage]
    aggregates: list[StreamMessage]
    checkpoints: list[StreamMessage]

    @property
    def announced(self) -> list[StreamMessage]:
        return [m for m in self.aggregates if m.subject == TAKEN]

    def audit(self, *versions: SignedRegion, aggregates: list[StreamMessage] | None = None
              ) -> AuditReport:
        return audit_messages(
            list(versions), self.events,
            self.aggregates if aggregates is None else aggregates,
            checkpoints=self.checkpoints,
        )


async def streams(url: str) -> Streams:
    nc = await nats.connect(url)
    try:
        return Streams(*await read_streams(nc.jetstream(), "sadc"))
    finally:
        await nc.close()


def errors(report: AuditReport) -> Counter[tuple[str, str]]:
    return Counter((f.check, f.reason) for f in report.findings if f.severity == "error")


def appended(aggregates: list[StreamMessage], data: bytes) -> list[StreamMessage]:
    """The aggregates stream with one more announcement stored at its end."""
    last = aggregates[-1]
    return [*aggregates, StreamMessage(last.seq + 1, last.time, TAKEN, {}, data)]


def body(signed: bytes) -> announcements.RegionTaken:
    raw = msgspec.json.decode(signed, type=dict[str, msgspec.Raw])["taken"]
    return msgspec.json.decode(raw, type=announcements.RegionTaken)


async def test_a_version_taken_late_is_audited_by_the_aggregators_announcements(
    tmp_path: Path, nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = nats_server.url
    p1, p2, p3 = nodes = [make_node(tmp_path / p, p, c) for p, c in
                          (("p1", "BW"), ("p2", "ZA"), ("p3", "NA"))]
    try:
        agg = tmp_path / "aggregator"
        paths = AggregatorPaths(agg)
        key = init_aggregator(agg, PASSPHRASE, KdfStrength.INTERACTIVE)
        kit = RegionKit([p1, p2], aggregator=key)
        v3_file = kit.save(tmp_path / "region-v3.json")
        v3 = kit.signed
        for n in (p1, p2):
            join_region(n, v3_file)
        take_region(paths, v3_file)
        await create_region_streams(url, "sadc")

        record_stories(p1, 1, 6)
        record_stories(p2, 2, 6)
        await relay([p1, p2], url)
        assert await worker(agg, url) == 0  # announces version 3 after seq 0; release 1

        now = datetime.now(UTC)
        doc = kit.document.add_partner(
            "p3", "Partner p3", "NA", p3.signer.public_key, valid_from=now, issued_at=now
        )
        v4 = kit.sign(doc)
        v4_file = tmp_path / "region-v4.json"
        save_region(v4_file, v4)
        # p1 takes version 4 at once; p2 sends under version 3 after version 4 was issued;
        # the aggregator, still holding version 3, accepts both and releases them.
        join_region(p1, v4_file)
        record_stories(p1, 11, 6)
        record_stories(p2, 12, 6)
        await relay([p1, p2], url)
        assert await worker(agg, url) == 0  # release 2, under version 3
        s = await streams(url)
        taken_at = s.events[-1].seq
        stale = [m for m in s.events if m.headers["Hx-Region"] == "3" and m.time >= now]
        assert stale  # sent under version 3 after version 4 was issued

        # The aggregator takes version 4 at a restart, SIGKILLed right after the
        # announcement's PubAck and before it is recorded; restarted, it announces again
        # (the same bytes, deduplicated by the stream) and ingests nothing meanwhile.
        take_region(paths, v4_file)
        assert await worker(agg, url, "announced", 1) == -9
        assert [body(m.data).version for m in (await streams(url)).announced] == [3, 4]
        store = IngestStore(paths.store)
        try:
            assert [t.version for t in TakenBook(store).all()] == [3]
        finally:
            store.close()
        assert await worker(agg, url) == 0
        s = await streams(url)
        assert [(body(m.data).version, body(m.data).after_seq) for m in s.announced] == [
            (3, 0), (4, taken_at),
        ]
        store = IngestStore(paths.store)
        try:
            recorded = TakenBook(store).all()
        finally:
            store.close()
        assert [t.signed for t in recorded] == [m.data for m in s.announced]

        # Now p2 and p3 take version 4 too; everyone sends; release 3 under version 4.
        join_region(p2, v4_file)
        join_region(p3, v4_file)
        for seed, n in enumerate(nodes, 21):
            record_stories(n, seed, 6)
        await relay(nodes, url)
        assert await worker(agg, url) == 0
        s = await streams(url)

        published: dict[int, statements.AggregateStatement] = {}
        for m in s.aggregates:
            if m.subject == "hx.sadc.aggregates.incidents":
                st = statements.verify(m.data, doc)
                published[st.release] = st
        assert sorted(published) == [1, 2, 3]
        assert [published[n].region_version for n in (1, 2, 3)] == [3, 3, 4]
        assert "NA" not in published[2].tables[0].rows
        assert "NA" in published[3].tables[0].rows

        # Only version 3 as trust anchor: version 4 comes from the stream; every message is
        # judged by the version the aggregator held; the figures follow.
        nc = await nats.connect(url)
        try:
            report = await audit_region(nc.jetstream(), [v3])
            assert report.findings == [], report.findings
            report = await audit_region(nc.jetstream(), [v3], workers=2)
            assert report.findings == [], report.findings
        finally:
            await nc.close()
        checks = {c.name: c.checked for c in report.checks}
        assert checks["announcements"] == 2
        assert checks["membership"] == 2
        assert checks["releases"] > 0
        assert checks["checkpoints"] > 0
        code = await asyncio.to_thread(
            main, ["audit", "region", "--nats", url, "--region", str(v3_file)]
        )
        assert code == 0, capsys.readouterr().out
        capsys.readouterr()

        # The same streams judged by stream time (the announcements left out), with both
        # versions: p2's late messages under version 3 are stale, and release 2, which
        # counted them, no longer follows. It is the announcements that tell them apart.
        without = [m for m in s.aggregates if m.subject != TAKEN]
        assert s.audit(v3, v4).findings == []
        by_time = s.audit(v3, v4, aggregates=without)
        found = errors(by_time)
        assert found[("signatures", "stale_region")] == len(stale)
        assert found[("releases", "release_mismatch")] > 0
        assert {f.where.split()[1] for f in by_time.findings
                if f.reason == "release_mismatch"} == {"2", "3"}

        # The figures are exact: the store equals the auditor's reference replay.
        history = judged([v3], s.aggregates, Collector()).history
        assert history.taken == ((0, 3), (taken_at, 4))
        replay = EventReplay(history.latest, Collector(), history=history)
        for m in s.events:
            replay.add(m.seq, m.subject, m.headers, m.data, m.time)
        store = IngestStore(paths.store)
        try:
            assert store.position() == s.events[-1].seq
            assert store.accepted_count() == replay.tree.size == len(s.events)
            assert tally.compute(store.connection) == compute(replay.ledger)
        finally:
            store.close()

        # A rebuild reproduces every release byte for byte across the version change.
        monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
        monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
        rebuilt = tmp_path / "rebuilt"
        code = await asyncio.to_thread(main, [
            "aggregator", "rebuild", "--dir", str(agg), "--into", str(rebuilt), "--nats", url,
        ])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "releases reproduced byte for byte: 3 of 3" in out
        store = IngestStore(AggregatorPaths(rebuilt).store)
        try:
            assert [t.signed for t in TakenBook(store).all()] == [m.data for m in s.announced]
        finally:
            store.close()

        # The export bundle carries the announcements, and `audit bundle` judges by them.
        bundle_file = tmp_path / "bundle.json"
        code = await asyncio.to_thread(main, [
            "audit", "export", "--dir", str(agg), "--nats", url, "--out", str(bundle_file),
        ])
        assert code == 0
        assert "2 announcement(s) of region versions taken" in capsys.readouterr().out
        data = bundle_file.read_bytes()
        assert audit_bundle(data, v3).findings == []
        bundle = msgspec.json.decode(
            msgspec.json.decode(data, type=dict[str, msgspec.Raw])["bundle"], type=Bundle
        )
        stripped = msgspec.structs.replace(
            bundle, statements=[m for m in bundle.statements if m.subject != TAKEN]
        )
        aggregator_key = open_key(agg, PASSPHRASE)
        report = audit_bundle(sign_bundle(stripped, aggregator_key), v3)
        assert errors(report)[("signatures", "stale_region")] == len(stale)

        # --- what is wrong with announcements is named ---------------------------------
        announced_v4 = s.announced[1]
        taken_v4 = body(announced_v4.data)

        # An announcement by someone else (not the aggregator's key).
        forged = announcements.sign(taken_v4, SigningKey.generate())
        report = s.audit(v3, aggregates=appended(s.aggregates, forged))
        assert [(f.check, f.reason) for f in report.findings] == [
            ("announcements", "unknown_key")
        ]
        assert "not the key of the aggregator of version 4" in report.findings[0].detail

        # The document inside edited, the aggregator's signature kept: it no longer
        # verifies, and without its announcement version 4 was never taken.
        edited = announced_v4.data.replace(b'\\"NA\\"', b'\\"ZA\\"')
        assert edited != announced_v4.data
        tampered = [replace(m, data=edited) if m is announced_v4 else m for m in s.aggregates]
        found = errors(s.audit(v3, aggregates=tampered))
        assert found[("announcements", "bad_signature")] == 1
        assert found[("announcements", "unannounced")] == 1  # release 3 names version 4
        assert found[("signatures", "unknown_partner")] > 0  # p3, judged by version 3

        # ... or signed again by a dishonest aggregator: the coordinators never signed it.
        other_file = taken_v4.region_file.replace('"NA"', '"ZA"')
        assert other_file != taken_v4.region_file
        resigned = announcements.sign(
            msgspec.structs.replace(taken_v4, region_file=other_file), aggregator_key
        )
        tampered = [replace(m, data=resigned) if m is announced_v4 else m for m in s.aggregates]
        report = s.audit(v3, aggregates=tampered)
        reasons = {(f.check, f.reason, f.where) for f in report.findings}
        assert ("membership", "insufficient_signatures", "region version 4") in reasons
        assert ("announcements", "not_chained",
                f"announcement of version 4 (aggregates seq {announced_v4.seq})") in reasons

        # A version going back (3 announced again after 4), or positions going back.
        again = announcements.sign(
            msgspec.structs.replace(body(s.announced[0].data), after_seq=taken_at + 1),
            aggregator_key,
        )
        report = s.audit(v3, aggregates=appended(s.aggregates, again))
        assert [(f.check, f.reason) for f in report.findings] == [("announcements", "backwards")]
        earlier = announcements.sign(
            msgspec.structs.replace(taken_v4, after_seq=taken_at - 1), aggregator_key
        )
        report = s.audit(v3, aggregates=appended(s.aggregates, earlier))
        assert [(f.check, f.reason) for f in report.findings] == [("announcements", "conflict")]

        # The identical announcement stored twice (a republish after the stream's
        # duplicate window): one announcement.
        report = s.audit(v3, aggregates=appended(s.aggregates, announced_v4.data))
        assert report.findings == []
        assert {c.name: c.checked for c in report.checks}["announcements"] == 3

        # Version 4 never announced, though release 3 was cut under it.
        report = s.audit(v3, v4, aggregates=[m for m in s.aggregates if m is not announced_v4])
        unannounced = [f for f in report.findings if f.reason == "unannounced"]
        assert [(f.check, f.where) for f in unannounced] == [
            ("announcements", "region version 4")
        ]
        assert "release(s) 3 were cut under it" in unannounced[0].detail
    finally:
        for n in nodes:
            n.close()
