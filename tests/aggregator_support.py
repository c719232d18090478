"""A region of partner nodes relaying to a real nats-server, an aggregator folder, and an
independent recomputation of every release from the raw stream (the reference)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.js.api import DeliverPolicy

from handsoff.federation import envelope, shared, statements, subjects
from handsoff.federation.errors import EnvelopeRejected
from handsoff.federation.natsconf import ensure_streams
from handsoff.federation.region import RegionDocument, SignedRegion, sign_region
from handsoff.federation.statements import AggregateStatement, Inputs
from handsoff.keys import KdfStrength, SigningKey, kid_hex
from handsoff.keys.merkle import MerkleTree, leaf_hash
from handsoff.services.aggregator import release
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.indicators import Ledger, compute
from handsoff.services.aggregator.service import init_aggregator
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import LinkStatus, NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import record_stories
from support import PASSPHRASE, RegionKit, make_node

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
) -> Region:
    """`revoked`: a second key of p1, listed and then revoked (for tampering tests)."""
    nodes = [make_node(tmp_path / p, p, c) for p, c in PARTNERS]
    agg_dir = tmp_path / "aggregator"
    key = init_aggregator(agg_dir, PASSPHRASE, KdfStrength.INTERACTIVE)
    kit = RegionKit(nodes, aggregator=key)
    if revoked is not None:
        now = datetime.now(UTC)
        doc = kit.document.add_partner_key(
            "p1", revoked.public_key, valid_from=now - timedelta(minutes=1)
        )
        doc = doc.revoke_key("p1", kid_hex(revoked.kid), now)
        signed = SignedRegion.unsigned(doc)
        for cid in list(kit.coordinators)[:2]:
            signed = sign_region(signed, cid, kit.coordinators[cid])
        kit.signed, kit.document = signed, signed.document
    region_file = kit.save(tmp_path / "region.json")
    for seed, node in enumerate(nodes, 1):
        join_region(node, region_file)
        record_stories(node, seed, stories)
    if streams:
        nc = await nats.connect(url)
        try:
            await ensure_streams(nc.jetstream(), kit.document.region)
        finally:
            await nc.close()
    region = Region(nodes, kit, region_file, agg_dir, key, url)
    await relay_all(region)
    return region


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


def verify_stream(msgs: Sequence[Any], region: RegionDocument, last_seq: int) -> Verified:
    ledger, tree = Ledger(), MerkleTree()
    seen: dict[tuple[str, int], bytes] = {}
    rejected: dict[str, int] = {}
    as_of = None
    for m in msgs:
        if m.metadata.sequence.stream > last_seq:
            break
        as_of = m.metadata.timestamp
        try:
            opened = envelope.open_message(
                region, m.subject, m.headers, m.data, m.metadata.timestamp, shared.decode
            )
        except EnvelopeRejected as e:
            rejected[e.reason] = rejected.get(e.reason, 0) + 1
            continue
        key = (opened.partner, opened.number)
        if key in seen:
            if seen[key] != m.data:
                rejected["conflict"] = rejected.get("conflict", 0) + 1
            continue
        seen[key] = m.data
        ledger.add(opened.partner, opened.number, opened.event)
        tree.append(leaf_hash(envelope.leaf(m.subject, m.headers, m.data)))
    return Verified(ledger, tree.size, tree.root().hex(), as_of, rejected)


def recompute(
    msgs: Sequence[Any], region: RegionDocument, published: Sequence[Sequence[AggregateStatement]]
) -> list[tuple[AggregateStatement, ...]]:
    """Every published release recomputed from the raw events, in order (the suppression
    memory carried from one to the next), with the reference Ledger model."""
    memory = SuppressionMemory()
    out = []
    countries = sorted({p.country for p in region.partners})
    for statements_of_release in published:
        first = statements_of_release[0]
        v = verify_stream(msgs, region, first.inputs.last_seq)
        header = release.ReleaseHeader(
            region=region.region,
            region_version=first.region_version,
            aggregator=region.aggregator.id,
            release=first.release,
            k=first.k,
            breakdowns=first.breakdowns,
            as_of=v.as_of,
            inputs=Inputs(
                stream=subjects.events_stream(region.region),
                first_seq=1,
                last_seq=first.inputs.last_seq,
                accepted=v.accepted,
                commitment=v.commitment,
            ),
        )
        made = release.build(compute(v.ledger), header, countries, memory)
        memory = made.memory
        out.append(made.statements)
    return out


def decode_release(body: bytes, region: RegionDocument) -> tuple[int, list[AggregateStatement]]:
    """GET /api/releases/latest: every statement verified with the aggregator's key."""
    raw = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    number = msgspec.json.decode(raw["release"], type=int)
    signed = msgspec.json.decode(raw["statements"], type=list[msgspec.Raw])
    return number, [statements.verify(bytes(s), region) for s in signed]
