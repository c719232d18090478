"""A node restored from a backup resumes sharing (`handsoff node resume-sharing`,
services/node/resume.py): its new events are numbered past what the region holds for the
events it lost, each reaches the stream once, the aggregator counts everything once and the
audits stay clean (the lost numbers a warning of `audit node`).

Real nodes, a real nats-server, the real aggregator (tests/aggregator/aggregator_worker.py).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import pytest

from auditor.test_history_audit import _aggregate, relay
from handsoff.keys import KdfStrength
from handsoff.services.aggregator.ingest import IngestStore
from handsoff.services.aggregator.service import AggregatorPaths, init_aggregator, take_region
from handsoff.services.auditor.region import audit_region
from handsoff.services.cli import main
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import FederationSettings, save_config
from handsoff.services.node.link import NodeLink, join_region, publish_checkpoint, relay_position
from handsoff.services.node.node import Node
from handsoff.services.node.resume import (
    ResumeRefused,
    plan,
    resume_sharing,
    stream_messages,
)
from relay_support import expected_messages, record_stories
from support import PASSPHRASE, RegionKit, create_region_streams, eventually, make_node


@dataclass
class Restored:
    node: Node  # p1, restored from its backup, with new events recorded since
    kit: RegionKit
    aggregator: Path
    kept: int  # messages the restored log makes from before the backup: p1:1..kept
    shared: int  # messages the region holds of p1: p1:1..shared (the lost ones included)


async def restore(tmp_path: Path, url: str) -> Restored:
    """p1 and p2 share and are released; p1 is backed up, shares more, loses it all and is
    restored; then records new cases, which the relay refuses to share (blocked)."""
    p1, p2 = make_node(tmp_path / "p1", "p1", "BW"), make_node(tmp_path / "p2", "p2", "ZA")
    agg = tmp_path / "aggregator"
    kit = RegionKit([p1, p2], aggregator=init_aggregator(agg, PASSPHRASE, KdfStrength.INTERACTIVE))
    region_file = kit.save(tmp_path / "region.json")
    for n in (p1, p2):
        join_region(n, region_file)
    # as `node join --nats` leaves it, so that `node resume-sharing` can reach the region
    federation = FederationSettings(nats_url=url, nats_user="p1", publish_interval=0)
    save_config(p1.paths, msgspec.structs.replace(p1.config, federation=federation))
    take_region(AggregatorPaths(agg), region_file)
    await create_region_streams(url, "sadc")
    record_stories(p1, 1, 4)
    record_stories(p2, 2, 3)
    await relay([p1, p2], url)
    await _aggregate(agg, url)
    p2.close()

    root = p1.paths.root
    p1.close()
    shutil.copytree(root, tmp_path / "backup")
    p1 = Node.open(root, PASSPHRASE)
    kept = len(expected_messages(p1))
    record_stories(p1, 3, 4)  # shared, released, then lost with the machine
    await relay([p1], url)
    await _aggregate(agg, url)
    shared = len(expected_messages(p1))
    assert shared > kept
    p1.close()
    shutil.rmtree(root)
    shutil.copytree(tmp_path / "backup", root)

    restored = Node.open(root, PASSPHRASE)
    record_stories(restored, 4, 4)  # numbered as the lost ones were: the relay stops
    link = NodeLink(restored, FederationSettings(nats_url=url, nats_user="x", publish_interval=0))
    await link.start()
    try:
        await eventually("the relay to stop", lambda: link.status().relay_blocked is not None, 30)
        assert "handsoff node resume-sharing" in (link.status().relay_blocked or "")
    finally:
        await link.stop()
    return Restored(restored, kit, agg, kept, shared)


def p1_numbers(messages: dict[int, tuple[bytes, int]]) -> list[int]:
    return sorted(messages)


async def test_a_restored_node_resumes_sharing_and_every_event_counts_once(
    tmp_path: Path, nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = nats_server.url
    r = await restore(tmp_path, url)
    node, root = r.node, r.node.paths.root
    node.close()
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
    monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
    capsys.readouterr()

    code = await asyncio.to_thread(main, ["node", "resume-sharing", "--dir", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"p1:{r.kept + 1} to p1:{r.shared} are in the region's stream" in out
    assert f"numbered from p1:{r.shared + 1}" in out
    # Once is enough: run again, it refuses and changes nothing.
    code = await asyncio.to_thread(main, ["node", "resume-sharing", "--dir", str(root)])
    out, err = capsys.readouterr()
    assert code == 2, out
    assert "nothing to resume" in err

    node = Node.open(root, PASSPHRASE)
    try:
        assert len(node.admin.resumptions()) == 1
        new = len(expected_messages(node)) - r.kept
        await relay([node], url)
        nc = await nats.connect(url)
        try:
            stored = await stream_messages(nc.jetstream(), node)
        finally:
            await nc.close()
        # the old numbers once each, the new ones past them, nothing twice, nothing reused
        assert p1_numbers(stored) == list(range(1, r.shared + new + 1))
        # a checkpoint of everything p1 has in the stream, lost numbers included
        checkpoint = await publish_checkpoint(node)
        assert checkpoint.size == r.shared + new
    finally:
        node.close()

    # `audit node` against the stream: every message explained, the lost ones a warning.
    code = await asyncio.to_thread(main, [
        "audit", "node", "--dir", str(root), "--nats", url,
        "--region", str(tmp_path / "region.json"),
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "lost_in_restore" in out

    # The aggregator counts everything once; the region audits clean (checkpoints too).
    await _aggregate(r.aggregator, url)
    store = IngestStore(AggregatorPaths(r.aggregator).store)
    try:
        assert store.rejected_by_reason() == {}
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            total = (await js.stream_info("HX_SADC_EVENTS")).state.messages
            assert store.accepted_count() == total
            report = await audit_region(js, [r.kit.signed])
        finally:
            await nc.close()
    finally:
        store.close()
    assert report.findings == [], report.findings


async def test_a_resumption_interrupted_before_the_position_moved_is_finished(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    r = await restore(tmp_path, nats_server.url)
    node = r.node
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        made = plan(node, await stream_messages(js, node))
        node.admin.sharing_resumed(made, "test")  # ... and the process died here
        position = relay_position(node)
        try:
            assert position.load().notification_id < made.after_notification
        finally:
            position.close()
        again = await resume_sharing(node, js, "test")
        assert again == made
        assert len(node.admin.resumptions()) == 1
        position = relay_position(node)
        try:
            at = position.load()
        finally:
            position.close()
        assert (at.notification_id, at.stream_seq) == (made.after_notification, made.stream_seq)
    finally:
        await nc.close()
    await relay([node], nats_server.url)
    node.close()


async def test_resuming_refuses_what_is_not_this_nodes_history(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    r = await restore(tmp_path, nats_server.url)
    nc = await nats.connect(nats_server.url)
    try:
        stored = await stream_messages(nc.jetstream(), r.node)
    finally:
        await nc.close()
    # Another node of the same partner (its own pseudonym key): nothing in the stream is its.
    stranger = make_node(tmp_path / "stranger", "p1", "BW")
    try:
        record_stories(stranger, 1, 4)
        with pytest.raises(ResumeRefused, match="not this node's history"):
            plan(stranger, stored)
    finally:
        stranger.close()
    # The stream without the lost numbers: nothing to resume.
    with pytest.raises(ResumeRefused, match="nothing to resume"):
        plan(r.node, {n: m for n, m in stored.items() if n <= r.kept})
    with pytest.raises(ResumeRefused, match="holds no message"):
        plan(r.node, {})
    assert r.node.admin.resumptions() == []
    r.node.close()
