"""`handsoff audit region` over a region that went through versions (issue #6): a partner
added, a key rotated, the old key revoked, all with real signed events relayed to a real
nats-server and released by the aggregator between the changes. With every version the
audit is clean; the aggregator's announcements of the versions it took carry the history
in the stream, so one trusted version suffices; without them, one version reports what that
version cannot explain; a tampered history is named; the export bundle carries the history
and verifies offline."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import pytest

from aggregator_support import PARTNERS
from handsoff.federation import subjects
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import (
    SignedRegion,
    load_region,
    save_region,
)
from handsoff.keys import KdfStrength, SigningKey, kid_hex
from handsoff.services.aggregator.service import (
    AggregatorPaths,
    init_aggregator,
    open_key,
    take_region,
)
from handsoff.services.auditor.bundle import Bundle, audit_bundle, sign_bundle
from handsoff.services.auditor.membership import check_history
from handsoff.services.auditor.region import (
    StreamMessage,
    audit_messages,
    audit_region,
    read_streams,
)
from handsoff.services.auditor.report import AuditReport, Collector
from handsoff.services.cli import main
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import LinkStatus, NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import record_stories
from support import PASSPHRASE, RegionKit, create_region_streams, eventually, make_node

WORKER = Path(__file__).parents[1] / "aggregator" / "aggregator_worker.py"



@dataclass
class History:
    nodes: list[Node]
    kit: RegionKit
    versions: dict[int, SignedRegion]  # version -> the signed document
    regions: Path  # one file per version
    aggregator_dir: Path
    url: str
    first_key: str  # p1's key before its rotation (kid hex)
    compromised_from: datetime  # inside version 4's time, after p1's first messages

    def close(self) -> None:
        for n in self.nodes:
            n.close()


async def _aggregate(directory: Path, url: str) -> None:
    """The aggregator, holding the version in force, releases everything stored so far."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(WORKER), str(directory), url, "none", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr


async def relay(nodes: list[Node], url: str, deadline_s: float = 60.0) -> None:
    """The nodes' links run until everything is relayed and checkpointed (this session's
    messages on top of what earlier sessions checkpointed)."""
    settings = FederationSettings(
        nats_url=url, nats_user="x", publish_interval=0, checkpoint_interval=0
    )
    links = [NodeLink(n, settings) for n in nodes]
    before = [link.status().checkpointed for link in links]

    def done(s: LinkStatus, base: int) -> bool:
        return s.relay_lag == 0 and s.published > 0 and s.checkpointed >= base + s.published

    try:
        for link in links:
            await link.start()
        await eventually(
            "every link to relay and checkpoint what it has",
            lambda: all(done(link.status(), b) for link, b in zip(links, before, strict=True)),
            deadline_s,
        )
    finally:
        for link in links:
            await link.stop()


async def make_history(tmp_path: Path, url: str) -> History:
    """v3: p1 (BW), p2 (ZA)          events, release
    v4: p3 (NA) added                events, release
    v5: p1's rotated key added       events
    v6: p1's first key revoked       events, release
    Each version is taken by the nodes and the aggregator before anything is sent under it."""
    nodes = [make_node(tmp_path / p, p, c) for p, c in PARTNERS]
    p1, p2, p3 = nodes
    agg_dir = tmp_path / "aggregator"
    key = init_aggregator(agg_dir, PASSPHRASE, KdfStrength.INTERACTIVE)
    kit = RegionKit([p1, p2], aggregator=key)
    regions = tmp_path / "regions"
    regions.mkdir()
    versions: dict[int, SignedRegion] = {}

    def issue(signed: SignedRegion, members: list[Node]) -> None:
        path = regions / f"region-v{signed.document.version}.json"
        save_region(path, signed)
        versions[signed.document.version] = signed
        for n in members:
            join_region(n, path)
        take_region(AggregatorPaths(agg_dir), path)

    async def phase(members: list[Node], seed: int) -> None:
        for i, n in enumerate(members):
            record_stories(n, seed + i, 5)
        await relay(members, url)

    issue(kit.signed, [p1, p2])
    assert kit.document.version == 3
    await create_region_streams(url, "sadc")
    await phase([p1, p2], 10)
    await _aggregate(agg_dir, url)

    now = datetime.now(UTC)
    doc = kit.document.add_partner(
        "p3", "Partner p3", "NA", p3.signer.public_key, valid_from=now, issued_at=now
    )
    issue(kit.sign(doc), nodes)
    compromised_from = now
    await phase(nodes, 20)
    await _aggregate(agg_dir, url)

    first_key = kid_hex(p1.signer.kid)
    p1.rotate_key(PASSPHRASE, "admin", KdfStrength.INTERACTIVE)
    now = datetime.now(UTC)
    doc = doc.add_partner_key("p1", p1.signer.public_key, valid_from=now, issued_at=now)
    issue(kit.sign(doc), nodes)
    await phase(nodes, 30)

    now = datetime.now(UTC)
    doc = doc.revoke_key("p1", first_key, now, issued_at=now)
    issue(kit.sign(doc), nodes)
    await phase(nodes, 40)
    await _aggregate(agg_dir, url)
    assert sorted(versions) == [3, 4, 5, 6]
    return History(nodes, kit, versions, regions, agg_dir, url, first_key, compromised_from)


async def audit(h: History, *versions: SignedRegion) -> AuditReport:
    """`audit region` with these versions trusted (the stream's announcements chain on)."""
    nc = await nats.connect(h.url)
    try:
        return await audit_region(nc.jetstream(), list(versions))
    finally:
        await nc.close()


async def streams(url: str) -> tuple[list[StreamMessage], ...]:
    """(events, aggregates, checkpoints) as stored."""
    nc = await nats.connect(url)
    try:
        return await read_streams(nc.jetstream(), "sadc")
    finally:
        await nc.close()


def unannounced(aggregates: list[StreamMessage]) -> list[StreamMessage]:
    """The aggregates stream as an aggregator from before announcements would have left it."""
    return [m for m in aggregates if not subjects.is_region_taken(m.subject)]


async def audit_by_time(h: History, *versions: SignedRegion) -> AuditReport:
    """The audit of the same streams without the aggregator's announcements: each message
    judged by the version in force at its stream time (given one version: by it)."""
    events, aggregates, checkpoints = await streams(h.url)
    return audit_messages(list(versions), events, unannounced(aggregates), checkpoints=checkpoints)


def kinds(report: AuditReport) -> Counter[tuple[str, str, str]]:
    return Counter((f.check, f.reason, f.severity) for f in report.findings)


async def test_a_region_through_four_versions_audits_clean_with_its_history(
    tmp_path: Path, nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = await make_history(tmp_path, nats_server.url)
    try:
        v = h.versions
        every = list(v.values())
        report = await audit(h, *every)
        assert report.ok, report.findings
        assert report.findings == []
        checks = {c.name: c for c in report.checks}
        assert checks["membership"].checked == 4
        assert checks["releases"].checked > 0
        assert checks["signatures"].checked > 0

        # The aggregator announced versions 3, 4 and 6 (each as it took them; it never ran
        # while holding 5): given the first version or the latest alone, the announced
        # documents chain on (the latest's coordinators vouching for the first), every
        # message is judged by the version the aggregator held, and only the version never
        # announced (5: messages were sent under it) is missing.
        for trusted in (v[3], v[6]):
            alone = await audit(h, trusted)
            assert alone.ok, alone.findings
            assert {(f.check, f.reason, f.where) for f in alone.findings} == {
                ("membership", "gap", "region version 6"),
                ("membership", "unknown_version", "region version 5"),
            }
            assert {c.name: c.checked for c in alone.checks}["announcements"] == 3

        # Without the announcements (an aggregator from before them), only the latest
        # version: every change so far took effect from its version on, so no message is
        # rejected; the audit names the versions the senders and releases used that it was
        # not given, and the releases cut under version 3 (partners in BW and ZA) no longer
        # follow: recomputed with version 6's countries, they gain a row for NA the
        # aggregator never had.
        latest = await audit_by_time(h, v[6])
        assert not latest.ok
        unknown = {f.where: f.detail for f in latest.findings if f.reason == "unknown_version"}
        assert set(unknown) == {"region version 3", "region version 4", "region version 5"}
        assert "message(s) were sent under it" in unknown["region version 5"]
        cut_under_3 = unknown["region version 3"].split("release(s) ")[1].split(" were")[0]
        mismatched = {f.where.split()[1] for f in latest.findings if f.severity == "error"}
        assert {(f.check, f.reason) for f in latest.findings if f.severity == "error"} == {
            ("releases", "release_mismatch")
        }
        assert mismatched
        assert mismatched <= set(cut_under_3.split(", "))

        # ... only the first version: the partner added later and the rotated key are
        # unknown.
        first = await audit_by_time(h, v[3])
        assert not first.ok
        found = kinds(first)
        assert found[("signatures", "unknown_partner", "error")] > 0  # p3
        assert found[("signatures", "unknown_key", "error")] > 0  # p1's new key
        assert found[("checkpoints", "unknown_partner", "error")] > 0
        assert found[("checkpoints", "unknown_key", "error")] > 0
        assert ("membership", "unknown_version", "warning") in found

        # p1's first key found compromised late: version 7 revokes it from inside version
        # 4's time. With the whole history its uses then were valid (version 4 in force,
        # and held by the aggregator) and are named as worth a look; so they are given
        # version 7 alone and the announcements; judged by version 7 alone (no
        # announcements) they are rejected.
        revoked = v[6].document.revoke_key(
            "p1", h.first_key, h.compromised_from, issued_at=datetime.now(UTC)
        )
        v7 = h.kit.sign(revoked)
        with_v7 = await audit(h, *every, v7)
        assert with_v7.ok, with_v7.findings
        assert [(f.check, f.reason, f.where) for f in with_v7.findings] == [
            ("membership", "revoked_later", "region version 4")
        ]
        assert f"signed with key {h.first_key}" in with_v7.findings[0].detail
        alone = await audit(h, v7)
        assert alone.ok, alone.findings
        assert ("membership", "revoked_later", "warning") in kinds(alone)
        alone = await audit_by_time(h, v7)
        assert not alone.ok
        found = kinds(alone)
        assert found[("signatures", "key_revoked", "error")] > 0
        assert found[("checkpoints", "key_revoked", "error")] > 0

        # The CLI: a directory of versions, or the files one by one.
        code = await asyncio.to_thread(main, [
            "audit", "region", "--nats", h.url, "--region", str(h.regions),
            "--json", str(tmp_path / "report.json"),
        ])
        assert code == 0, capsys.readouterr().out
        report_json = json.loads((tmp_path / "report.json").read_text())
        assert report_json["ok"] is True
        assert {c["name"]: c["checked"] for c in report_json["checks"]}["membership"] == 4
        files = [str(p) for p in sorted(h.regions.iterdir())]
        code = await asyncio.to_thread(
            main, ["audit", "region", "--nats", h.url, *(a for f in files for a in ("--region", f))]
        )
        assert code == 0, capsys.readouterr().out
        capsys.readouterr()

        # A tampered history: version 5 with one coordinator signature instead of two.
        weak = SignedRegion(v[5].document_bytes, v[5].signatures[:1])
        save_region(h.regions / "region-v5.json", weak)
        code = await asyncio.to_thread(
            main, ["audit", "region", "--nats", h.url, "--region", str(h.regions)]
        )
        out = capsys.readouterr().out
        assert code == 1
        assert "membership/insufficient_signatures at region version 5" in out
        assert "1 valid signature(s) of the 2 needed" in out
        # A file trusted here that the chain cannot take.
        assert "membership/different_region at region version 5" in out
        # The messages are judged by the versions the aggregator announced (5 never was).
        assert "signatures/" not in out
        save_region(h.regions / "region-v5.json", v[5])

        # The export bundle holds every version the aggregator held; it verifies offline.
        monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
        monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
        out_file = tmp_path / "bundle.json"
        code = await asyncio.to_thread(main, [
            "audit", "export", "--dir", str(h.aggregator_dir), "--nats", h.url,
            "--out", str(out_file),
        ])
        assert code == 0
        assert "4 region version(s)" in capsys.readouterr().out
        data = out_file.read_bytes()
        bundle = msgspec.json.decode(
            msgspec.json.decode(data, type=dict[str, msgspec.Raw])["bundle"], type=Bundle
        )
        assert [load(s).document.version for s in bundle.history] == [3, 4, 5]
        assert load(bundle.region).document.version == 6
        report = audit_bundle(data, v[4])
        assert report.ok, report.findings
        assert report.findings == []
        report = audit_bundle(data, v[4], workers=2)
        assert report.findings == []
        code = await asyncio.to_thread(
            main, ["audit", "bundle", str(out_file), "--region", str(h.regions / "region-v3.json")]
        )
        assert code == 0, capsys.readouterr().out
        # A bundle whose history lost a version (re-signed by the exporter): the stream's
        # announcements it carries give version 4 back ...
        key = _aggregator_key(h)
        cut = msgspec.structs.replace(bundle, history=[bundle.history[0], bundle.history[2]])
        report = audit_bundle(sign_bundle(cut, key))
        assert report.findings == []
        # ... and without them too, the gap is named.
        cut = msgspec.structs.replace(
            cut, statements=[m for m in cut.statements if not subjects.is_region_taken(m.subject)]
        )
        report = audit_bundle(sign_bundle(cut, key))
        assert ("membership", "gap", "warning") in kinds(report)
        assert not report.ok  # p3 is unknown under version 3, in force in version 4's time
        assert kinds(report)[("signatures", "unknown_partner", "error")] > 0
        # ... or whose version 5 was forged.
        forged = SignedRegion(v[5].document_bytes.replace(b'"NA"', b'"BW"'), v[5].signatures)
        bad = msgspec.structs.replace(
            bundle, history=[*bundle.history[:2], forged.encode().decode()]
        )
        report = audit_bundle(sign_bundle(bad, key))
        assert ("membership", "insufficient_signatures", "error") in kinds(report)
    finally:
        h.close()


def load(text: str) -> SignedRegion:
    return SignedRegion.decode(text.encode())


def _aggregator_key(h: History) -> SigningKey:
    return open_key(h.aggregator_dir, PASSPHRASE)


def test_the_aggregator_keeps_every_version_it_takes(tmp_path: Path) -> None:
    nodes = [make_node(tmp_path / p, p, c) for p, c in PARTNERS[:2]]
    try:
        kit = RegionKit(nodes)
        paths = AggregatorPaths(tmp_path / "aggregator")
        paths.root.mkdir()
        first = kit.save(tmp_path / "v3.json")
        take_region(paths, first)
        now = datetime.now(UTC)
        doc = kit.document.renew(kit.document.expires_at.replace(year=2100), issued_at=now)
        second = tmp_path / "v4.json"
        save_region(second, kit.sign(doc))
        take_region(paths, second)
        take_region(paths, None)
        kept = paths.region_versions()
        assert [s.document.version for s in kept] == [3, 4, 4]  # regions/ and region.json
        assert sorted(p.name for p in paths.regions.iterdir()) == [
            "region-v3.json", "region-v4.json",
        ]
        history = check_history(kept, Collector())
        assert isinstance(history, RegionHistory)
        assert [d.version for d in history.documents] == [3, 4]
        assert load_region(paths.regions / "region-v3.json").document == kit.document
    finally:
        for n in nodes:
            n.close()
