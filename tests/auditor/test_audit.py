"""`handsoff audit region | node` against a real region: clean audits pass; forged events,
altered or re-signed statements, gaps and unconsented sharing are found and named."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import nats
import pytest

from aggregator_support import Region, make_region
from handsoff.federation import statements, subjects
from handsoff.federation.envelope import message_id, seal_headers
from handsoff.federation.shared import SharedRetraction, encode, kind_of
from handsoff.federation.statements import AggregateStatement
from handsoff.keys import SigningKey
from handsoff.services.aggregator.service import AggregatorPaths, take_region
from handsoff.services.auditor.node import audit_node, compare_stream, shared_messages
from handsoff.services.auditor.region import audit_region
from handsoff.services.auditor.report import Collector
from handsoff.services.cli import main
from handsoff.services.natsserver import EmbeddedNats
from support import PASSPHRASE

WORKER = Path(__file__).parents[1] / "aggregator" / "aggregator_worker.py"



async def released_region(tmp_path: Path, url: str) -> Region:
    """Three nodes relayed, the aggregator ran to a published release."""
    import subprocess
    import sys

    region = await make_region(tmp_path, url, stories=12)
    take_region(AggregatorPaths(region.aggregator_dir), region.region_file)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(WORKER), str(region.aggregator_dir), url, "none", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return region


async def audit(region: Region) -> tuple[bool, list[tuple[str, str, str]]]:
    nc = await nats.connect(region.url)
    try:
        report = await audit_region(nc.jetstream(), region.document)
    finally:
        await nc.close()
    return report.ok, [(f.check, f.reason, f.severity) for f in report.findings]


async def test_clean_region_audits_clean_and_tampering_is_named(
    tmp_path: Path, nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    region = await released_region(tmp_path, nats_server.url)
    try:
        assert await audit(region) == (True, [])

        # The CLI: exit 0, a JSON report with the stable schema, an HTML report.
        code = await asyncio.to_thread(main, [
            "audit", "region", "--nats", region.url, "--region", str(region.region_file),
            "--json", str(tmp_path / "report.json"), "--html", str(tmp_path / "report.html"),
        ])
        assert code == 0, capsys.readouterr()
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["schema"] == "handsoff-audit-report/1"
        assert report["ok"] is True
        checks = {c["name"]: c for c in report["checks"]}
        assert set(checks) >= {
            "statements", "signatures", "exactly_once", "releases", "sequence",
            "checkpoints", "cosignatures",
        }
        assert checks["checkpoints"]["checked"] >= 3  # one per partner at least
        assert checks["cosignatures"]["checked"] >= 3  # the aggregator witnessed them
        assert "verified: every check passed" in (tmp_path / "report.html").read_text()

        nc = await nats.connect(region.url)
        js = nc.jetstream()
        try:
            # A statement re-signed with the right key but a figure changed.
            kv = await js.key_value(subjects.latest_bucket("sadc"))
            raw = (await kv.get("incidents")).value
            assert raw is not None
            honest = statements.verify(raw, region.document)
            table = honest.tables[0]
            altered = msgspec.structs.replace(
                honest, tables=(msgspec.structs.replace(table, total=987654), *honest.tables[1:])
            )
            forged = statements.sign(altered, region.aggregator_key)
            await js.publish(
                subjects.aggregates("sadc", "incidents"), forged,
                headers={"Nats-Msg-Id": "forged-statement"},
            )
            # A statement signed by a stranger.
            await js.publish(
                subjects.aggregates("sadc", "incidents"),
                statements.sign(honest, SigningKey.generate()),
            )
            # An event signed with another partner's key.
            p1, p2 = region.nodes[0], region.nodes[1]
            event = SharedRetraction(partner="p1", case="0" * 32)
            subject = subjects.events("sadc", "p1", kind_of(SharedRetraction))
            payload = encode(event)
            for signer, number in ((p2.signer, 5001), (p1.signer, 5000)):
                headers = seal_headers(
                    signer, subject, message_id("p1", number), payload, region.document.version
                )
                await js.publish(subject, payload, headers=headers)
        finally:
            await nc.close()
        ok, findings = await audit(region)
        assert not ok
        assert ("statements", "conflict", "error") in findings  # same release, other bytes
        assert ("statements", "unknown_key", "error") in findings
        assert ("signatures", "unknown_key", "error") in findings
        # p1:5000 (genuinely signed) without the numbers before it: a gap.
        assert ("exactly_once", "missing", "error") in findings

        code = await asyncio.to_thread(main, [
            "audit", "region", "--nats", region.url, "--region", str(region.region_file),
        ])
        assert code == 1
        out = capsys.readouterr().out
        assert "FAILED" in out
        assert "statements/conflict" in out
    finally:
        region.close()


async def test_node_audit_consent_and_stream(
    tmp_path: Path, nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    region = await make_region(tmp_path, nats_server.url, stories=15)
    try:
        node = region.nodes[0]
        report = audit_node(node)
        assert report.ok, report.findings
        consent = next(c for c in report.checks if c.name == "consent")
        assert consent.checked > 0
        expected = shared_messages(node, Collector())
        found = Collector()
        compare_stream(expected, expected, found)
        assert found.findings == []
        # Something in the stream the log does not allow: named.
        found = Collector()
        extra = dict(expected)
        extra["p1:99999"] = b"{}"
        first = next(iter(expected))
        extra[first] = expected[first] + b" "
        compare_stream(expected, extra, found)
        assert {(f.reason, f.where) for f in found.findings} == {
            ("unexplained", "p1:99999"), ("altered", first),
        }
        region.close()
        # The CLI, with the stream: what left equals what the log allows.
        monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
        monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
        code = await asyncio.to_thread(main, [
            "audit", "node", "--dir", str(node.paths.root), "--nats", region.url,
            "--region", str(region.region_file),
        ])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "audit of node p1: OK" in out
    finally:
        region.close()


def test_statement_type_is_exported() -> None:
    assert AggregateStatement.__struct_fields__[0] == "type"
