"""Signed checkpoints end to end through a real nats-server: three partner nodes relay and
checkpoint what they published, the aggregator witnesses (checks and countersigns) each
checkpoint; a node that rewrites or drops history it already published, signing with its
real key, is refused with the right reason and never countersigned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from fastapi.testclient import TestClient

from aggregator_support import Region, make_region, read_all, relay_all
from handsoff.federation import checkpoints, envelope, subjects
from handsoff.federation.checkpoints import Checkpoint, make_checkpoint, sign_checkpoint
from handsoff.keys.merkle import consistency_proof, leaf_hash, root_from_hashes
from handsoff.services.aggregator.ingest import REJECT_REASON, IngestStore
from handsoff.services.aggregator.service import Aggregator, AggregatorConfig
from handsoff.services.api import create_app
from handsoff.services.cli import main
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.admin import Role
from handsoff.services.node.config import FederationSettings, save_config
from handsoff.services.node.link import NodeLink
from handsoff.services.node.node import exclusive
from relay_support import expected_messages, record_stories
from support import PASSPHRASE

TIMEOUT = 60.0



@pytest.fixture
async def region(tmp_path: Path, nats_server: EmbeddedNats) -> AsyncIterator[Region]:
    r = await make_region(tmp_path, nats_server.url, stories=8)
    try:
        yield r
    finally:
        r.close()


async def relay_and_checkpoint(region: Region) -> dict[str, int]:
    """Runs every node's link (relay + checkpoints after every round) until each has
    checkpointed everything its log shares; returns partner -> checkpointed size."""
    settings = FederationSettings(
        nats_url=region.url, nats_user="x", publish_interval=0, checkpoint_interval=0
    )
    expected = {n.config.partner: len(expected_messages(n)) for n in region.nodes}
    links = [NodeLink(n, settings) for n in region.nodes]
    try:
        for link in links:
            await link.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not all(
            link.status().checkpointed == expected[link.node.config.partner] for link in links
        ):
            assert loop.time() < deadline, [link.status() for link in links]
            await asyncio.sleep(0.05)
        return {link.node.config.partner: link.status().checkpointed for link in links}
    finally:
        for link in links:
            await link.stop()


@dataclass
class Witnessing:
    aggregator: Aggregator
    store: IngestStore
    waited: int = 0  # the most checkpoints seen waiting for ingest at once

    async def until(self, condition: Any, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not condition(status := self.aggregator.witness.status()):
            assert loop.time() < deadline, f"{what}: {status}"
            self.waited = max(self.waited, int(status["waiting"]))
            await self.aggregator.step()

    async def close(self) -> None:
        await self.aggregator.stop()
        await self.aggregator.nc.close()
        self.store.close()


async def start_witness(region: Region) -> Witnessing:
    config = AggregatorConfig(
        dir=region.aggregator_dir,
        nats_url=region.url,
        nats_user=None,
        release_interval=3600,
        fetch_timeout=0.2,
        batch=64,  # several batches: checkpoints arrive before their envelopes are ingested
    )
    store = IngestStore(region.aggregator_dir / "aggregator.sqlite")
    nc = await nats.connect(region.url)
    aggregator = Aggregator(
        region.document, region.aggregator_key, store, nc, config, signed_region=region.kit.signed
    )
    await aggregator.start()
    return Witnessing(aggregator, store)


async def published_leaves(region: Region) -> dict[str, list[bytes]]:
    """Each partner's published log read from the raw stream (the pinned rule, here
    independently: first message per number in stream order, then number order)."""
    msgs = await read_all(
        region.url,
        subjects.all_events(region.document.region),
        subjects.events_stream(region.document.region),
    )
    first: dict[str, dict[int, bytes]] = {}
    for m in msgs:
        partner = m.subject.split(".")[3]
        number = int(m.headers[envelope.MSG_ID].split(":")[1])
        leaf = leaf_hash(envelope.leaf(m.subject, m.headers, m.data))
        first.setdefault(partner, {}).setdefault(number, leaf)
    return {p: [by[n] for n in range(1, len(by) + 1)] for p, by in first.items()}


async def checkpoints_stream(region: Region) -> list[Any]:
    """Everything in the checkpoints stream: checkpoints and cosignatures, in order
    (`RawStreamMsg`: subject, headers, data, time)."""
    stream = subjects.checkpoints_stream(region.document.region)
    nc = await nats.connect(region.url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        return [await js.get_msg(stream, seq) for seq in range(1, last + 1)]
    finally:
        await nc.close()


async def cosignatures(region: Region) -> list[checkpoints.Cosignature]:
    r = region.document.region
    msgs = await checkpoints_stream(region)
    return [
        checkpoints.open_cosignature(m.data, region.document)
        for m in msgs
        if m.subject.startswith(f"hx.{r}.witness.")
    ]


async def test_checkpoints_are_published_and_cosigned(region: Region) -> None:
    sizes = await relay_and_checkpoint(region)
    assert all(n > 0 for n in sizes.values())
    witnessing = await start_witness(region)
    try:
        await witnessing.until(
            lambda s: s["witnessed"] == sizes and s["unpublished"] == 0, "all cosigned"
        )
        status = witnessing.aggregator.witness.status()
        assert status["rejected"] == {}
        assert status["waiting"] == 0
        # The checkpoints arrived before ingest had read their envelopes: they waited.
        assert witnessing.waited > 0
        assert witnessing.aggregator.status()["checkpoints"] == status

        # Every cosignature verifies, names a checkpoint the partner signed, and its root is
        # the root of the partner's envelopes as the raw stream holds them.
        leaves = await published_leaves(region)
        cosigned = await cosignatures(region)
        assert {c.partner: c.size for c in cosigned} == sizes
        for c in cosigned:
            assert c.witness == region.document.aggregator.id
            assert bytes.fromhex(c.root) == root_from_hashes(leaves[c.partner][: c.size])

        # More cases: the next checkpoints extend the first ones with a consistency proof.
        node = region.nodes[0]
        record_stories(node, 99, 4)
        grown = await relay_and_checkpoint(region)
        p1 = node.config.partner
        assert grown[p1] > sizes[p1]
        await witnessing.until(lambda s: s["witnessed"] == grown, "grown cosigned")
        r = region.document.region
        msgs = await checkpoints_stream(region)
        signed = [
            checkpoints.open_checkpoint(m.data, region.document, m.time, m.subject)
            for m in msgs
            if m.subject == subjects.checkpoints(r, p1)
        ]
        assert [(c.size, c.previous_size) for c in signed] == [
            (sizes[p1], 0),
            (grown[p1], sizes[p1]),
        ]
        assert signed[1].proof  # proved from the first
        cosigned = await cosignatures(region)
        assert [c.size for c in cosigned if c.partner == p1] == [sizes[p1], grown[p1]]
        assert witnessing.aggregator.witness.status()["rejected"] == {}
    finally:
        await witnessing.close()

    # A restart of the aggregator decides nothing twice and cosigns nothing again.
    witnessing = await start_witness(region)
    try:
        await witnessing.aggregator.step()
        assert witnessing.aggregator.witness.status()["cosigned"] == len(cosigned)
    finally:
        await witnessing.close()
    assert len(await cosignatures(region)) == len(cosigned)


def forged(region: Region, partner: str, leaves: list[bytes], size: int, previous: int) -> bytes:
    """A checkpoint over `leaves`, signed with the partner's real key."""
    node = next(n for n in region.nodes if n.config.partner == partner)
    proof = consistency_proof(previous, size, leaves) if 0 < previous < size else []
    cp: Checkpoint = make_checkpoint(
        region.document.region, partner, size, root_from_hashes(leaves[:size]), previous, proof
    )
    return sign_checkpoint(cp, node.signer)


async def test_rewritten_or_dropped_history_is_detected(region: Region) -> None:
    sizes = await relay_and_checkpoint(region)
    witnessing = await start_witness(region)
    try:
        await witnessing.until(lambda s: s["witnessed"] == sizes, "all cosigned")
        p1 = region.nodes[0].config.partner
        w = sizes[p1]
        assert w >= 4
        leaves = (await published_leaves(region))[p1]
        rewritten = [leaves[0], leaf_hash(b"message 2, rewritten"), *leaves[2:]]
        beyond = [*leaves, leaf_hash(b"never published")]
        attempts = {
            # dropped history: a smaller size than witnessed, its root honest
            "rollback": forged(region, p1, leaves, w - 2, 0),
            # message 2 rewritten, proved from the witnessed size in the node's own tree
            "inconsistent": forged(region, p1, rewritten, w, w),
            # the same rewrite, presented as a first checkpoint (no proof to fail)
            "mismatch": forged(region, p1, rewritten, w, 0),
            # claiming a message the stream does not hold
            "unpublished": forged(region, p1, beyond, w + 1, w),
        }
        r = region.document.region
        nc = await nats.connect(region.url)
        try:
            js = nc.jetstream()
            for signed in attempts.values():
                await js.publish(subjects.checkpoints(r, p1), signed)
        finally:
            await nc.close()
        await witnessing.until(lambda s: sum(s["rejected"].values()) == 4, "all refused")
        status = witnessing.aggregator.witness.status()
        assert status["rejected"] == dict.fromkeys(attempts, 1)
        assert status["witnessed"] == sizes  # nothing countersigned
        assert len(await cosignatures(region)) == len(sizes)
        assert [
            reason for _, partner, reason, _ in witnessing.aggregator.witness.book.rejections()
        ] == list(attempts)
        assert {p for _, p, _, _ in witnessing.aggregator.witness.book.rejections()} == {p1}

        # Each refused checkpoint is filed in the quarantine with its reason.
        quarantined = await read_all(
            region.url, subjects.all_quarantine(r), subjects.quarantine_stream(r)
        )
        filed = {m.headers[REJECT_REASON]: m.data for m in quarantined}
        assert filed == attempts

        # The honest node carries on, and its next checkpoint is countersigned.
        record_stories(region.nodes[0], 77, 3)
        grown = await relay_and_checkpoint(region)
        await witnessing.until(lambda s: s["witnessed"] == grown, "honest cosigned")
        assert witnessing.aggregator.witness.status()["rejected"] == dict.fromkeys(attempts, 1)
    finally:
        await witnessing.close()


async def test_checkpoints_on_demand_through_the_api_and_the_cli(
    region: Region, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node = region.nodes[0]
    p1, r = node.config.partner, region.document.region
    settings = FederationSettings(nats_url=region.url, nats_user="x", publish_interval=0)
    assert settings.checkpoint_interval == 600  # nothing on its own during this test
    save_config(node.paths, msgspec.structs.replace(node.config, federation=settings))
    first = len(expected_messages(node))

    # The admin API of a serving node: POST /checkpoint.
    admin = {"Authorization": f"Bearer {node.add_user('ops', Role.ADMIN, 'test')}"}
    auditor = {"Authorization": f"Bearer {node.add_user('audit', Role.AUDITOR, 'test')}"}
    link = NodeLink(node, settings)

    def serve_and_checkpoint() -> dict[str, Any]:
        with TestClient(create_app(node, link)) as client:
            assert client.post("/checkpoint", headers=auditor).status_code == 403
            deadline = time.monotonic() + TIMEOUT
            while (answer := client.post("/checkpoint", headers=admin)).status_code == 503:
                assert time.monotonic() < deadline, answer.text  # until connected
                time.sleep(0.05)
            assert answer.status_code == 200, answer.text
            status = client.get("/status", headers=admin).json()
            assert (status["checkpointed"], status["checkpoint_root"]) == (
                first,
                answer.json()["root"],
            )
            return dict(answer.json())

    made = await asyncio.to_thread(serve_and_checkpoint)
    assert (made["partner"], made["size"], made["previous_size"]) == (p1, first, 0)

    # The CLI, the node not serving: the same checkpoint again (nothing new), then a new one
    # proved from it once more was published.
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
    monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
    cli = ["node", "checkpoint", "--dir", str(node.paths.root)]
    assert await asyncio.to_thread(main, cli) == 0
    assert f"checkpoint of {p1}: {first} message(s)" in capsys.readouterr().out
    record_stories(node, 55, 3)
    await relay_all(region)
    grown = len(expected_messages(node))
    assert grown > first
    assert await asyncio.to_thread(main, cli) == 0
    out = capsys.readouterr().out
    assert f"{grown} message(s)" in out
    assert f"(previous checkpoint: {first})" in out
    # Not while it serves: the serving node publishes its own.
    with exclusive(node.paths):
        assert await asyncio.to_thread(main, cli) == 2
    assert "is serving" in capsys.readouterr().err

    msgs = [m for m in await checkpoints_stream(region) if m.subject == subjects.checkpoints(r, p1)]
    opened = [checkpoints.open_checkpoint(m.data, region.document, m.time, m.subject) for m in msgs]
    assert [(c.size, c.previous_size) for c in opened] == [(first, 0), (grown, first)]

    # The witness countersigns both.
    witnessing = await start_witness(region)
    try:
        await witnessing.until(lambda s: s["witnessed"].get(p1) == grown, "cosigned")
        assert witnessing.aggregator.witness.status()["rejected"] == {}
        assert [c.size for c in await cosignatures(region) if c.partner == p1] == [first, grown]
    finally:
        await witnessing.close()
