"""A region of partner nodes relaying to a real nats-server, an aggregator folder, and an
independent recomputation of every release from the raw stream (the reference)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.js.api import DeliverPolicy

from handsoff.federation import statements, subjects
from handsoff.federation.region import Breakdowns, RegionDocument
from handsoff.federation.statements import AggregateStatement
from handsoff.keys import KdfStrength, SigningKey, kid_hex
from handsoff.services.aggregator.indicators import Ledger
from handsoff.services.aggregator.service import init_aggregator
from handsoff.services.auditor.replay import (
    EXACTLY_ONCE,
    RELEASES,
    SIGNATURES,
    EventReplay,
    PublishedRelease,
)
from handsoff.services.auditor.report import Collector, Finding
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import LinkStatus, NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import record_stories
from support import PASSPHRASE, RegionKit, create_region_streams, eventually, make_node

PARTNERS = (("p1", "BW"), ("p2", "ZA"), ("p3", "NA"))


@dataclass
class Region:
    nodes: list[Node]
    kit: RegionKit
    region_file: Path
    aggregator_dir: Path
    aggregator_key: SigningKey
    url: str

    @property
    def document(self) -> RegionDocument:
        return self.kit.document

    def close(self) -> None:
        for n in self.nodes:
            n.close()


async def make_region(
    tmp_path: Path,
    url: str,
    stories: int = 20,
    *,
    streams: bool = True,
    revoked: SigningKey | None = None,
    partners: Sequence[tuple[str, str]] = PARTNERS,
    breakdowns: Breakdowns = "country",
    events_window: float | None = None,
) -> Region:
    """`revoked`: a second key of p1, listed and then revoked (for tampering tests).
    `partners`: (id, country) of the nodes; `breakdowns`: the region document's rule;
    `events_window`: a short duplicate window for the events stream (see
    `create_region_streams`)."""
    nodes = [make_node(tmp_path / p, p, c) for p, c in partners]
    agg_dir = tmp_path / "aggregator"
    key = init_aggregator(agg_dir, PASSPHRASE, KdfStrength.INTERACTIVE)
    kit = RegionKit(nodes, aggregator=key)
    doc = kit.document
    if revoked is not None:
        now = datetime.now(UTC)
        doc = doc.add_partner_key("p1", revoked.public_key, valid_from=now - timedelta(minutes=1))
        doc = doc.revoke_key("p1", kid_hex(revoked.kid), now)
    if breakdowns != doc.breakdowns:
        doc = doc.set_breakdowns(breakdowns)
    if doc is not kit.document:
        kit.signed = kit.sign(doc)
        kit.document = kit.signed.document
    region_file = kit.save(tmp_path / "region.json")
    for seed, node in enumerate(nodes, 1):
        join_region(node, region_file)
        record_stories(node, seed, stories)
    if streams:
        await create_region_streams(url, kit.document.region, events_window=events_window)
    region = Region(nodes, kit, region_file, agg_dir, key, url)
    await relay_all(region)
    return region


async def publish_stored(
    js: Any, subject: str, data: bytes, headers: dict[str, str] | None = None
) -> int:
    """Publishes until the stream stores the message (its id no longer in the stream's
    duplicate window: set short for the test), as a relay retrying late would; returns its
    sequence."""
    stored: list[int] = []

    async def published() -> bool:
        ack = await js.publish(subject, data, headers=headers)
        if not ack.duplicate:
            stored.append(int(ack.seq))
        return bool(stored)

    await eventually(f"{subject} stored beyond the duplicate window", published, 30)
    return stored[0]


async def relay_all(region: Region, deadline_s: float = 60.0) -> None:
    settings = FederationSettings(
        nats_url=region.url, nats_user="x", publish_interval=0, checkpoint_interval=0
    )
    links = [NodeLink(n, settings) for n in region.nodes]
    try:
        for link in links:
            await link.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        def done(s: LinkStatus) -> bool:  # relayed, and checkpointed up to there
            return s.relay_lag == 0 and s.relay_position > 0 and s.checkpointed >= s.published

        while not all(done(x.status()) for x in links):
            assert loop.time() < deadline, "relays did not catch up"
            await asyncio.sleep(0.05)
    finally:
        for link in links:
            await link.stop()


async def read_all(url: str, subject: str, stream: str) -> list[Any]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        if not info.state.messages:
            return []
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        out = [await sub.next_msg(timeout=5) for _ in range(info.state.messages)]
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def stream_end(url: str, region: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(subjects.events_stream(region))
        return int(info.state.last_seq)
    finally:
        await nc.close()


@dataclass(frozen=True)
class Verified:
    """The raw stream up to a position, verified from scratch: accepted messages only."""

    ledger: Ledger
    accepted: int
    commitment: str
    as_of: Any
    rejected: dict[str, int]


def _replay(
    msgs: Sequence[Any], region: RegionDocument, last_seq: int, releases: Sequence[Any] = ()
) -> tuple[EventReplay, Collector]:
    """The auditor's replay (public keys only, the reference ledger) of the raw stream."""
    found = Collector()
    replay = EventReplay(region, found, releases)
    for m in msgs:
        seq = m.metadata.sequence.stream
        if seq > last_seq:
            break
        replay.add(seq, m.subject, m.headers, m.data, m.metadata.timestamp)
    return replay, found


def verify_stream(msgs: Sequence[Any], region: RegionDocument, last_seq: int) -> Verified:
    """What the stream up to `last_seq` supports, recomputed independently of the aggregator."""
    replay, found = _replay(msgs, region, last_seq)
    rejected = Counter(
        f.reason for f in found.findings
        if f.check == SIGNATURES or (f.check == EXACTLY_ONCE and f.reason == "conflict")
    )
    return Verified(
        replay.ledger, replay.tree.size, replay.tree.root().hex(), replay.as_of, dict(rejected)
    )


def release_findings(
    msgs: Sequence[Any], region: RegionDocument, published: Sequence[Sequence[AggregateStatement]]
) -> list[Finding]:
    """Every published release recomputed from the raw events, in order (the suppression
    memory carried from one to the next): what differs (nothing, for an honest aggregator)."""
    releases = [PublishedRelease(s[0].release, {x.indicator: x for x in s}) for s in published]
    end = msgs[-1].metadata.sequence.stream if msgs else 0
    replay, found = _replay(msgs, region, end, releases)
    replay.finish()
    return [f for f in found.findings if f.check == RELEASES]


def decode_release(body: bytes, region: RegionDocument) -> tuple[int, list[AggregateStatement]]:
    """GET /api/releases/latest: every statement verified with the aggregator's key."""
    raw = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    number = msgspec.json.decode(raw["release"], type=int)
    signed = msgspec.json.decode(raw["statements"], type=list[msgspec.Raw])
    return number, [statements.verify(bytes(s), region) for s in signed]
