"""The aggregator's ingest against a real nats-server: every message verified before it
counts, rejects quarantined by reason, idempotent for ever, crash- and restart-safe."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from aggregator_support import publish_stored
from handsoff.events.codes import Country, PerpetratorCategory, ViolenceType, core_type
from handsoff.federation import subjects
from handsoff.federation.envelope import leaf, message_id, open_message, seal_headers
from handsoff.federation.errors import EnvelopeRejected
from handsoff.federation.natsconf import ensure_streams, stream_configs
from handsoff.federation.region import Aggregator, Coordinator, RegionDocument
from handsoff.federation.shared import (
    SharedEvent,
    SharedFirstResponse,
    SharedIncident,
    SharedRetraction,
    decode,
    encode,
    kind_of,
    validated,
)
from handsoff.keys import SigningKey
from handsoff.keys.merkle import leaf_hash
from handsoff.services.aggregator.indicators import Indicators, compute, compute_from
from handsoff.services.aggregator.ingest import (
    REJECT_REASON,
    Accepted,
    Batch,
    Ingest,
    IngestStore,
    Published,
    Rejected,
)
from handsoff.services.natsserver import EmbeddedNats

REGION = "sadc"
V, P = ViolenceType, PerpetratorCategory



@dataclass
class World:
    region: RegionDocument
    keys: dict[str, SigningKey]
    nc: Client
    js: JetStreamContext
    numbers: dict[str, int]

    def next_number(self, partner: str) -> int:
        self.numbers[partner] = self.numbers.get(partner, 0) + 1
        return self.numbers[partner]

    async def send(
        self,
        partner: str,
        event: SharedEvent,
        *,
        number: int | None = None,
        signer: SigningKey | None = None,
        beyond_window: bool = False,
    ) -> int:
        """Seals and publishes one message as `partner`'s relay would; its number.
        `beyond_window`: published again until the stream stores it (a number it still
        deduplicates, under a short duplicate window)."""
        n = self.next_number(partner) if number is None else number
        payload = encode(event)
        subject = subjects.events(REGION, partner, kind_of(type(event)))
        headers = seal_headers(
            signer or self.keys[partner],
            subject,
            message_id(partner, n),
            payload,
            self.region.version,
        )
        if beyond_window:
            await publish_stored(self.js, subject, payload, headers)
        else:
            await self.js.publish(subject, payload, headers=headers)
        return n


def make_region(partners: list[str]) -> tuple[RegionDocument, dict[str, SigningKey]]:
    now = datetime.now(UTC) - timedelta(minutes=1)
    keys = {p: SigningKey.generate() for p in partners}
    doc = RegionDocument(
        region=REGION,
        version=1,
        issued_at=now,
        expires_at=now + timedelta(days=30),
        threshold=1,
        coordinators=[Coordinator("c1", "Coordinator c1", SigningKey.generate().public_key)],
        aggregator=Aggregator("aggregator", SigningKey.generate().public_key),
    )
    for p, k in keys.items():
        doc = doc.add_partner(p, f"Partner {p}", "BW", k.public_key, valid_from=now, issued_at=now)
    return doc, keys


@pytest.fixture
async def world(nats_server: EmbeddedNats) -> AsyncIterator[World]:
    region, keys = make_region(["p1", "p2"])
    nc = await nats.connect(nats_server.url)
    try:
        yield World(region, keys, nc, nc.jetstream(), {})
    finally:
        await nc.close()


def pseudonym(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


def incident(partner: str, case: str, month: str = "2026-03") -> SharedIncident:
    types = [V.PHYSICAL_ASSAULT, V.EXTORTION_OR_BRIBERY]
    return validated(
        SharedIncident(  # type: ignore[return-value]
            partner=partner,
            case=pseudonym(f"{partner}/{case}"),
            country=Country.BW,
            month=month,
            violence_types=types,
            gbvims_type=core_type(types),
            perpetrators=[P.POLICE_OR_LAW_ENFORCEMENT],
        )
    )


def response(partner: str, case: str, hours: int, month: str = "2026-03") -> SharedFirstResponse:
    return validated(
        SharedFirstResponse(  # type: ignore[return-value]
            partner=partner,
            case=pseudonym(f"{partner}/{case}"),
            country=Country.BW,
            month=month,
            hours_to_first_response=hours,
        )
    )


def retraction(partner: str, case: str) -> SharedRetraction:
    return validated(
        SharedRetraction(  # type: ignore[return-value]
            partner=partner, case=pseudonym(f"{partner}/{case}")
        )
    )


async def verified_stream(world: World) -> tuple[Indicators, int]:
    """Figures computed independently from the whole stream read back (rejects dropped),
    and the number of messages that did not verify."""
    info = await world.js.stream_info(subjects.events_stream(REGION))
    sub = await world.js.subscribe(
        subjects.all_events(REGION), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    good, bad = [], 0
    for _ in range(info.state.messages):
        m = await sub.next_msg(timeout=5)
        try:
            o = open_message(
                world.region, m.subject, m.headers, m.data, m.metadata.timestamp, decode
            )
        except EnvelopeRejected:
            bad += 1
        else:
            good.append((o.partner, o.number, o.event))
    await sub.unsubscribe()
    return compute_from(good), bad


async def quarantined(world: World) -> dict[str, int]:
    """Quarantine stream contents by their Hx-Reject-Reason header."""
    info = await world.js.stream_info(subjects.quarantine_stream(REGION))
    sub = await world.js.subscribe(
        f"hx.{REGION}.quarantine.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    out: dict[str, int] = {}
    for _ in range(info.state.messages):
        m = await sub.next_msg(timeout=5)
        assert m.headers is not None
        reason = m.headers[REJECT_REASON]
        assert m.subject == f"hx.{REGION}.quarantine.{reason}"
        out[reason] = out.get(reason, 0) + 1
    await sub.unsubscribe()
    return out


def figures(store: IngestStore) -> Indicators:
    return compute(store.ledger())


def same(a: Indicators, b: Indicators) -> bool:
    return msgspec.json.encode(a) == msgspec.json.encode(b)


# --- the store alone ---------------------------------------------------------------------


def test_store_records_in_one_transaction_and_is_idempotent(tmp_path: Path) -> None:
    store = IngestStore(tmp_path / "ingest.sqlite")
    try:
        payload = encode(incident("p1", "a"))
        store.record(
            Batch(
                3,
                [Accepted(1, "p1", 1, payload, b"l1")],
                [Rejected(2, "bad_signature"), Rejected(3, "schema")],
            )
        )
        # The same (partner, number) again, under another payload: changes nothing, for ever.
        store.record(Batch(4, [Accepted(4, "p1", 1, encode(incident("p1", "b")), b"l4")]))
        assert store.payload_of("p1", 1) == payload
        assert store.position() == 4
        store.record(Batch(2))  # the position never moves back
        assert store.position() == 4
        assert store.rejected_by_reason() == {"bad_signature": 1, "schema": 1}
        # A failing batch leaves nothing behind.
        with pytest.raises(sqlite3.IntegrityError):  # position NOT NULL, after the rows
            store.record(
                Batch(
                    None,
                    [Accepted(5, "p2", 1, encode(incident("p2", "a")), b"l5")],  # type: ignore[arg-type]
                    [Rejected(6, "schema")],
                )
            )
        assert store.position() == 4
        assert store.payload_of("p2", 1) is None
        assert store.rejected_by_reason() == {"bad_signature": 1, "schema": 1}
    finally:
        store.close()
    store = IngestStore(tmp_path / "ingest.sqlite")  # figures survive a restart
    try:
        assert store.position() == 4
        assert store.accepted_count() == 1
        assert same(figures(store), compute_from([("p1", 1, incident("p1", "a"))]))
    finally:
        store.close()


def test_published_leaves_first_wins_and_an_older_store_starts_from_accepted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ingest.sqlite"
    store = IngestStore(path)
    try:
        store.record(
            Batch(
                3,
                [Accepted(2, "p1", 1, encode(incident("p1", "a")), b"accepted-1")],
                [Rejected(1, "stale_region")],
                published=[Published(1, "p1", 1, b"first-1"), Published(3, "p1", 2, b"p1-2")],
            )
        )
        # The first message under a number stands for it, accepted or not.
        assert list(store.published_leaves("p1", 0, 5)) == [b"first-1", b"p1-2"]
        assert store.published_count("p1", 1) == 1
        assert store.published_count("p1", 9) == 2
        assert store.published_count("p2", 9) == 0
        # A store made before checkpoints: the table is made from the accepted envelopes.
        store.connection.execute("DROP TABLE published_leaves")
    finally:
        store.close()
    store = IngestStore(path)
    try:
        assert list(store.published_leaves("p1", 0, 5)) == [b"accepted-1"]
    finally:
        store.close()


# --- against nats-server -------------------------------------------------------------------


async def test_figures_equal_the_verified_stream_and_rejects_are_quarantined(
    tmp_path: Path, world: World
) -> None:
    await ensure_streams(world.js, REGION)
    for i in range(5):
        await world.send("p1", incident("p1", f"c{i}"))
        await world.send("p1", response("p1", f"c{i}", hours=i + 1))
    for i in range(3):
        await world.send("p2", incident("p2", f"d{i}", month="2026-04"))
    await world.send("p2", retraction("p2", "d1"))
    # Forged: p2's subject and message id, signed with p1's key.
    await world.send("p2", incident("p2", "forged"), signer=world.keys["p1"])
    # Signed by a key of no partner of the region.
    await world.send("p2", incident("p2", "stranger"), signer=SigningKey.generate())
    # A partner outside the region.
    outsider = SigningKey.generate()
    await world.send("p9", incident("p9", "x"), signer=outsider)
    # Signed by p1, payload altered on the way.
    subject = subjects.events(REGION, "p1", "incident")
    sealed = seal_headers(
        world.keys["p1"],
        subject,
        message_id("p1", 11),
        encode(incident("p1", "real")),
        world.region.version,
    )
    await world.js.publish(subject, encode(incident("p1", "altered")), headers=sealed)
    # No envelope at all.
    await world.js.publish(subjects.events(REGION, "p1", "incident"), b"{}")

    store = IngestStore(tmp_path / "ingest.sqlite")
    try:
        ingest = Ingest(world.region, store, world.js, batch=4, fetch_timeout=0.3)
        await ingest.start()
        result = await ingest.drain()
        await ingest.stop()
        expected, bad = await verified_stream(world)
        assert bad == 5
        assert result.accepted == 14
        assert sum(result.rejected.values()) == 5
        assert same(figures(store), expected)
        assert figures(store).value("incidents", "2026-03", "BW") == 5
        assert figures(store).value("incidents", "2026-04", "BW") == 2  # d1 retracted
        reasons = store.rejected_by_reason()
        assert reasons == {
            "unknown_key": 2,
            "unknown_partner": 1,
            "malformed": 1,
            "bad_signature": 1,
        }
        assert await quarantined(world) == reasons
        assert store.position() == 19
        # What each partner published, accepted or not (witness.py checks checkpoints
        # against it): all but the message without an envelope.
        assert store.published_count("p1", 99) == 11  # 10 accepted, the altered p1:11
        assert store.published_count("p2", 99) == 6  # 4 accepted, the forged, the stranger's
        assert store.published_count("p9", 99) == 1
    finally:
        store.close()


async def test_duplicates_beyond_the_window_and_out_of_order_steps(
    tmp_path: Path, world: World
) -> None:
    events_config = next(
        c for c in stream_configs(REGION) if c.name == subjects.events_stream(REGION)
    )
    await world.js.add_stream(dataclasses.replace(events_config, duplicate_window=0.5))
    quarantine = next(
        c for c in stream_configs(REGION) if c.name == subjects.quarantine_stream(REGION)
    )
    await world.js.add_stream(quarantine)
    store = IngestStore(tmp_path / "ingest.sqlite")
    try:
        ingest = Ingest(world.region, store, world.js, fetch_timeout=0.3)
        await ingest.start()
        first = incident("p1", "c1")
        subject = subjects.events(REGION, "p1", "incident")
        headers = seal_headers(
            world.keys["p1"], subject, message_id("p1", 1), encode(first), world.region.version
        )
        await world.js.publish(subject, encode(first), headers=headers)
        assert (await ingest.drain()).accepted == 1
        before = figures(store)
        assert before.value("incidents", "2026-03", "BW") == 1

        # the same message again, stored past the stream's duplicate window
        assert await publish_stored(world.js, subject, encode(first), headers) == 2
        # A validly signed, different message under the same number (past the window again).
        await world.send("p1", incident("p1", "other"), number=1, beyond_window=True)
        # A step whose incident (number 2) is still in flight.
        await world.send("p1", response("p1", "c2", hours=5), number=3)
        result = await ingest.drain()
        assert (result.accepted, result.duplicates, dict(result.rejected)) == (
            1,
            1,
            {"conflict": 1},
        )
        assert same(figures(store), before)  # nothing counted twice, nothing early
        assert store.rejected_by_reason() == {"conflict": 1}
        assert await quarantined(world) == {"conflict": 1}

        await world.send("p1", incident("p1", "c2"), number=2)
        assert (await ingest.drain()).accepted == 1
        await ingest.stop()
        expected = compute_from(
            [
                ("p1", 1, first),
                ("p1", 2, incident("p1", "c2")),
                ("p1", 3, response("p1", "c2", hours=5)),
            ]
        )
        assert same(figures(store), expected)
        assert expected.value("incidents", "2026-03", "BW") == 2
        assert store.accepted_count() == 3
        assert store.position() == 5
        # The first message under number 1 stands for it; the conflicting one does not.
        assert next(store.published_leaves("p1", 0, 1)) == leaf_hash(
            leaf(subject, headers, encode(first))
        )
        assert store.published_count("p1", 3) == 3
    finally:
        store.close()


async def test_a_crash_between_commit_and_ack_and_restarts_count_nothing_twice(
    tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ensure_streams(world.js, REGION)
    for i in range(3):
        await world.send("p1", incident("p1", f"c{i}"))
        await world.send("p2", response("p2", f"c{i}", hours=i))
        await world.send("p2", incident("p2", f"c{i}"))
    await world.send("p1", incident("p1", "forged"), signer=world.keys["p2"])
    path = tmp_path / "ingest.sqlite"

    store = IngestStore(path)
    try:
        ingest = Ingest(world.region, store, world.js, fetch_timeout=0.3, ack_wait=1.0)
        await ingest.start()

        async def crash(*_: object) -> None:
            raise RuntimeError("crashed after the commit, before the acks")

        monkeypatch.setattr(ingest, "_ack", crash)
        with pytest.raises(RuntimeError, match="crashed"):
            await ingest.run_once()
        await ingest.stop()
        committed = figures(store)
        assert store.position() == 10
        assert store.accepted_count() == 9
    finally:
        store.close()

    store = IngestStore(path)  # restart: a new Ingest on the same store and consumer
    try:
        ingest = Ingest(world.region, store, world.js, fetch_timeout=0.3, ack_wait=1.0)
        await ingest.start()
        # The consumer restarts after the stored position: the committed, unacked batch is
        # not processed again, even once its ack_wait has passed.
        await asyncio.sleep(1.2)  # past ack_wait: a redelivery would be due by now
        result = await ingest.drain()
        assert (result.skipped, result.accepted, sum(result.rejected.values())) == (0, 0, 0)
        assert same(figures(store), committed)
        assert store.rejected_by_reason() == {"unknown_key": 1}
        assert await quarantined(world) == {"unknown_key": 1}  # republish deduplicated

        await world.send("p1", response("p1", "c0", hours=7))
        await ingest.stop()
    finally:
        store.close()

    store = IngestStore(path)  # and again: continues from the position
    try:
        ingest = Ingest(world.region, store, world.js, fetch_timeout=0.3, ack_wait=1.0)
        await ingest.start()
        result = await ingest.drain()
        assert (result.skipped, result.accepted) == (0, 1)
        await ingest.stop()
        expected, bad = await verified_stream(world)
        assert bad == 1
        assert same(figures(store), expected)
        assert store.position() == 11
        consumer = await world.js.consumer_info(subjects.events_stream(REGION), "aggregator")
        assert consumer.num_ack_pending == 0
        assert consumer.num_pending == 0
    finally:
        store.close()


async def test_events_relayed_by_real_nodes_are_counted_as_the_stream_says(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    from handsoff.services.node.config import FederationSettings
    from handsoff.services.node.link import NodeLink, join_region
    from relay_support import read_stream, record_stories
    from support import RegionKit, make_node

    nodes = [make_node(tmp_path / p, p) for p in ("p1", "p2")]
    store = IngestStore(tmp_path / "ingest.sqlite")
    nc = await nats.connect(nats_server.url)
    try:
        kit = RegionKit(nodes)
        region_file = kit.save(tmp_path / "region.json")
        for seed, node in enumerate(nodes, 1):
            join_region(node, region_file)
            record_stories(node, seed, 12)
        js = nc.jetstream()
        await ensure_streams(js, REGION)
        settings = FederationSettings(
            nats_url=nats_server.url, nats_user="ignored", publish_interval=0
        )
        links = [NodeLink(n, settings) for n in nodes]
        try:
            for link in links:
                await link.start()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not all(
                s.relay_lag == 0 and s.relay_position > 0 for s in (link.status() for link in links)
            ):
                assert loop.time() < deadline, "relays did not catch up"
                await asyncio.sleep(0.05)
        finally:
            for link in links:
                await link.stop()

        ingest = Ingest(kit.document, store, js, batch=16, fetch_timeout=0.3)
        await ingest.start()
        result = await ingest.drain()
        await ingest.stop()
        stored = await read_stream(nats_server.url, kit.document)
        assert result.accepted == len(stored) > 0
        assert store.rejected_by_reason() == {}
        expected = compute_from((o.partner, o.number, o.event) for o, _ in stored)
        assert same(figures(store), expected)
        assert expected.table("incidents")
    finally:
        await nc.close()
        store.close()
        for n in nodes:
            n.close()
