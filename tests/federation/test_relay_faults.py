"""The relay under faults: NATS down beyond the duplicate window, SIGKILL between publish
and position commit, node restarts. Every consented event arrives exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from handsoff.federation.natsconf import stream_configs
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import expected_messages, read_stream, record_stories
from support import PASSPHRASE, RegionKit, eventually, make_node

SHORT_WINDOW = 1.0  # seconds: the outage below lasts longer than this


async def create_streams(url: str, region: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for config in stream_configs(region):
            await js.add_stream(dataclasses.replace(config, duplicate_window=SHORT_WINDOW))
    finally:
        await nc.close()


async def wait_caught_up(link: NodeLink, deadline_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not (link.status().relay_lag == 0 and link.status().relay_position > 0):
        assert loop.time() < deadline, f"relay did not catch up: {link.status()}"
        await asyncio.sleep(0.05)


async def assert_exactly_once(url: str, kit: RegionKit, node: Node) -> None:
    stored = await read_stream(url, kit.document)
    ids = [o.msg_id for o, _ in stored]
    assert len(ids) == len(set(ids)), "duplicates in the stream"
    got = sorted((o.msg_id, payload) for o, payload in stored)
    want = sorted(expected_messages(node))
    assert len(got) == len(want)
    assert got == want


@pytest.fixture
def region_node(tmp_path: Path) -> tuple[Node, RegionKit]:
    node = make_node(tmp_path / "p1", "p1")
    kit = RegionKit([node])
    join_region(node, kit.save(tmp_path / "region.json"))
    return node, kit


async def test_nats_down_longer_than_the_duplicate_window(
        tmp_path: Path, region_node: tuple[Node, RegionKit]) -> None:
    node, kit = region_node
    server = EmbeddedNats(tmp_path / "nats").start()
    link = None
    try:
        await create_streams(server.url, kit.document.region)
        record_stories(node, 1, 15)
        link = NodeLink(node, FederationSettings(nats_url=server.url, nats_user="x",
                                                 publish_interval=0))
        link.relay.settings.batch = 4
        await link.start()
        await wait_caught_up(link)

        # Stop NATS while the node keeps recording (and the relay keeps trying).
        writer = asyncio.create_task(asyncio.to_thread(record_stories, node, 2, 15))
        await asyncio.sleep(0.05)  # not a wait for a condition: NATS goes down mid-recording
        server.stop()
        await writer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while link.status().last_error is None:  # the relay noticed the outage
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert link.status().relay_lag > 0
        await asyncio.sleep(SHORT_WINDOW * 3)  # beyond the duplicate window

        server.start()  # same port, same store
        await wait_caught_up(link)
        await assert_exactly_once(server.url, kit, node)
    finally:
        if link is not None:
            await link.stop()
        server.stop()


async def test_sigkill_between_publish_and_commit_then_node_restarts(
        tmp_path: Path, region_node: tuple[Node, RegionKit], nats_server: EmbeddedNats) -> None:
    node, kit = region_node
    await create_streams(nats_server.url, kit.document.region)
    record_stories(node, 3, 20)
    node.close()  # the worker process owns the node from here

    worker = Path(__file__).with_name("relay_worker.py")
    kills = 0
    for kill_at in (1, 2, 3, 2, 0):
        done = subprocess.run(
            [sys.executable, str(worker), str(node.paths.root), nats_server.url, str(kill_at)],
            capture_output=True, text=True, timeout=120, check=False)
        if kill_at:
            assert done.returncode == -9, done.stderr  # died between PubAck and commit
            kills += 1
        else:
            assert done.returncode == 0, done.stderr
    assert kills == 4

    reopened = Node.open(node.paths.root, PASSPHRASE)
    try:
        await assert_exactly_once(nats_server.url, kit, reopened)
        # And the node goes on: more cases, a restarted relay, still exactly once.
        record_stories(reopened, 4, 5)
        link = NodeLink(reopened, FederationSettings(nats_url=nats_server.url, nats_user="x",
                                                     publish_interval=0))
        await link.start()
        try:
            await wait_caught_up(link)
        finally:
            await link.stop()
        await assert_exactly_once(nats_server.url, kit, reopened)
    finally:
        reopened.close()


async def test_a_node_restored_from_a_backup_stops_sharing_instead_of_losing_events(
        tmp_path: Path, region_node: tuple[Node, RegionKit], nats_server: EmbeddedNats) -> None:
    """After a restore, the node numbers its new events as the lost ones were numbered. The
    relay must neither drop them as "already stored" nor publish them under numbers the
    region already holds: it stops sharing and says why; the node goes on recording."""
    node, kit = region_node
    await create_streams(nats_server.url, kit.document.region)
    settings = FederationSettings(nats_url=nats_server.url, nats_user="x", publish_interval=0)

    async def relay_until_caught_up(n: Node) -> None:
        link = NodeLink(n, settings)
        await link.start()
        try:
            await wait_caught_up(link)
        finally:
            await link.stop()

    root = node.paths.root
    record_stories(node, 1, 6)
    await relay_until_caught_up(node)
    node.close()
    shutil.copytree(root, tmp_path / "backup")

    node = Node.open(root, PASSPHRASE)
    record_stories(node, 2, 6)  # shared, then lost with the machine
    await relay_until_caught_up(node)
    node.close()
    published = await read_stream(nats_server.url, kit.document)

    shutil.rmtree(root)
    shutil.copytree(tmp_path / "backup", root)
    restored = Node.open(root, PASSPHRASE)
    try:
        record_stories(restored, 3, 6)  # new events, numbered as the lost ones were
        link = NodeLink(restored, settings)
        await link.start()
        try:
            await eventually(
                "the relay to stop", lambda: link.status().relay_blocked is not None, 30
            )
            assert "restored from a backup" in (link.status().relay_blocked or "")
            error = link.status().last_error or ""
            assert error.startswith("blocked:"), error
            assert link.running  # the node keeps its API and recording up
            record_stories(restored, 4, 1)
        finally:
            await link.stop()
        assert await read_stream(nats_server.url, kit.document) == published  # nothing sent
    finally:
        restored.close()
