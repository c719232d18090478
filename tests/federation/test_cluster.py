"""A real JetStream cluster: three nats-server processes on loopback, each started from the
generated configuration (per-partner users, authenticated routes), the region's streams
replicated three times. Three partner nodes record and relay continuously and the
aggregator ingests while the events stream's leader is SIGKILLed under load, then restarted
on the same ports and store. Every consented event is stored exactly once, on every
replica, and counted exactly once by the aggregator."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import signal
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from aggregator_support import verify_stream
from handsoff.federation import envelope, shared, subjects
from handsoff.federation.natsconf import (
    AGGREGATOR_USER,
    OPERATOR_USER,
    Cluster,
    Credentials,
    ensure_streams,
    generate_credentials,
    nats_config,
)
from handsoff.keys import SigningKey
from handsoff.keys.merkle import MerkleTree
from handsoff.services.aggregator import tally
from handsoff.services.aggregator.indicators import compute
from handsoff.services.aggregator.ingest import Ingest, IngestResult, IngestStore
from handsoff.services.aggregator.service import AggregatorConfig, connect
from handsoff.services.natsserver import EmbeddedNats, nats_server_binary
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import expected_messages, record_stories
from support import RegionKit, make_node

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTNERS = (("p1", "BW"), ("p2", "ZA"), ("p3", "NA"))
REGION = "sadc"
EVENTS = subjects.events_stream(REGION)
CLUSTER = "hx-sadc"
DEADLINE = 60.0  # seconds for any one condition; the whole test takes well under that
API_TIMEOUT = 1.0  # JetStream API requests while polling: short, a failover makes them time out
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


# --- the cluster ------------------------------------------------------------------------------


def distinct_ports(n: int) -> list[int]:
    """n free loopback ports, all different (held open together while they are chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass
class Member:
    name: str  # server_name, as the cluster reports it (stream leader, replicas)
    server: EmbeddedNats

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no leadership hand-over."""
        proc = self.server.proc
        assert proc is not None, f"{self.name} is not running"
        assert proc.poll() is None, f"{self.name} has exited"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.server.proc = None

    def restart(self) -> None:
        self.server.start()  # the same client port, cluster port, configuration and store


@dataclass
class NatsCluster:
    members: list[Member]
    credentials: Credentials

    @property
    def url(self) -> str:
        """Every server's URL, comma-separated: the form a node or the aggregator is given."""
        return ",".join(m.url for m in self.members)

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def stop(self) -> None:
        for m in self.members:
            m.server.stop()


def start_cluster(root: Path, kit: RegionKit, credentials: Credentials) -> NatsCluster:
    """Three servers from the generated configuration: their own store, client and cluster
    ports; each one's routes name the two others. Stopped again if any fails to start."""
    ports = distinct_ports(6)
    client_ports, cluster_ports = ports[:3], ports[3:]
    members = []
    for i in range(3):
        name = f"n{i + 1}"
        directory = root / name
        directory.mkdir(parents=True)
        config_file = directory / "nats.conf"
        config_file.write_text(
            nats_config(
                kit.document,
                credentials,
                port=client_ports[i],
                store_dir=directory / "jetstream",
                cluster=Cluster(
                    name=CLUSTER,
                    server_name=name,
                    port=cluster_ports[i],
                    routes=[f"127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i],
                ),
            )
        )
        config_file.chmod(0o600)
        checked = subprocess.run(
            [str(nats_server_binary()), "-t", "-c", str(config_file)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
        members.append(Member(name, EmbeddedNats(directory, client_ports[i], config_file)))
    cluster = NatsCluster(members, credentials)
    try:
        for m in members:
            m.server.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def operator(servers: list[str] | str, credentials: Credentials) -> Client:
    return await nats.connect(
        servers,
        user=OPERATOR_USER,
        password=credentials.password(OPERATOR_USER),
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
        connect_timeout=2,
    )


# --- polling ----------------------------------------------------------------------------------


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    start = loop.time()
    while not await check():
        assert loop.time() < deadline, f"after {DEADLINE} s still waiting for {what}"
        await asyncio.sleep(0.05)
    print(f"waited {loop.time() - start:4.1f} s for {what}")  # shown when the test fails


@dataclass(frozen=True)
class Placement:
    leader: str | None
    current: dict[str, bool]  # every server of the stream's group -> current, not offline
    lag: int
    last_seq: int


async def placement(js: JetStreamContext, stream: str = EVENTS) -> Placement | None:
    """The stream's leader and replicas, or None while the cluster cannot answer."""
    try:
        info = await js.stream_info(stream)
    except NATS_ERRORS:
        return None
    c = info.cluster
    if c is None:
        return None
    current = {c.leader: True} if c.leader else {}
    for p in c.replicas or []:
        if p.name:
            current[p.name] = bool(p.current) and not p.offline
    lag = sum(p.lag or 0 for p in c.replicas or [])
    return Placement(c.leader, current, lag, int(info.state.last_seq))


def healthy(p: Placement | None, *, settled: bool = False) -> bool:
    """A leader and all three servers current (settled: no replica lags behind either)."""
    return (
        p is not None
        and p.leader is not None
        and sorted(p.current) == ["n1", "n2", "n3"]
        and all(p.current.values())
        and (not settled or p.lag == 0)
    )


async def healthy_now(js: JetStreamContext) -> bool:
    return healthy(await placement(js))


async def make_leader(js: JetStreamContext, nc: Client, name: str) -> None:
    """Moves the stream's leadership to server `name` (a stepdown naming it preferred)."""

    async def is_leader() -> bool:
        p = await placement(js)
        if not healthy(p, settled=True):
            return False
        assert p is not None
        if p.leader == name:
            return True
        with contextlib.suppress(*NATS_ERRORS):
            await nc.request(
                f"$JS.API.STREAM.LEADER.STEPDOWN.{EVENTS}",
                json.dumps({"placement": {"preferred": name}}).encode(),
                timeout=API_TIMEOUT,
            )
        return False

    await wait_until(is_leader, f"{name} to lead {EVENTS}")


# --- reading the stream back ------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    headers: tuple[tuple[str, str], ...]
    payload: bytes


async def read_ordered(cluster: NatsCluster) -> list[Msg]:
    """The whole events stream through an ordered consumer (with metadata, for the
    independent recomputation)."""
    nc = await operator(cluster.url.split(","), cluster.credentials)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(EVENTS)).state.messages
        sub = await js.subscribe(
            subjects.all_events(REGION), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        msgs = [await sub.next_msg(timeout=5) for _ in range(total)]
        await sub.unsubscribe()
        return msgs
    finally:
        await nc.close()


async def read_replica(cluster: NatsCluster, member: Member) -> list[Stored]:
    """Every message of the events stream as `member`'s own store holds it: `member` is made
    the stream leader, and the message-get API (answered by the leader from its store) is
    asked for each sequence through a connection to `member` alone."""
    nc = await operator([member.url], cluster.credentials)
    try:
        js = nc.jetstream(timeout=5)
        await make_leader(nc.jetstream(timeout=API_TIMEOUT), nc, member.name)
        info = await js.stream_info(EVENTS)
        assert info.cluster is not None
        assert info.cluster.leader == member.name
        assert info.state.first_seq == 1
        assert info.state.messages == info.state.last_seq  # no holes (delete is denied)
        out: list[Stored] = []
        seqs = list(range(1, info.state.last_seq + 1))
        for i in range(0, len(seqs), 200):
            raws = await asyncio.gather(*(js.get_msg(EVENTS, seq) for seq in seqs[i : i + 200]))
            for raw in raws:
                assert raw.seq is not None
                assert raw.subject is not None
                out.append(
                    Stored(
                        raw.seq,
                        raw.subject,
                        tuple(sorted((raw.headers or {}).items())),
                        raw.data or b"",
                    )
                )
        return out
    finally:
        await nc.close()


def stored(m: Msg) -> Stored:
    return Stored(
        m.metadata.sequence.stream, m.subject, tuple(sorted((m.headers or {}).items())), m.data
    )


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Region:
    nodes: list[Node]
    kit: RegionKit
    aggregator_key: SigningKey
    credentials: Credentials
    cluster: NatsCluster
    password_files: dict[str, Path]


@pytest.fixture
def region(tmp_path: Path) -> Iterator[Region]:
    nodes = [make_node(tmp_path / p, p, c) for p, c in PARTNERS]
    try:
        key = SigningKey.generate()
        kit = RegionKit(nodes, region=REGION, aggregator=key)
        region_file = kit.save(tmp_path / "region.json")
        for node in nodes:
            join_region(node, region_file)
        credentials = generate_credentials(kit.document)
        files = {}
        for user in (*(p for p, _ in PARTNERS), AGGREGATOR_USER):
            files[user] = tmp_path / f"{user}.password"
            files[user].write_text(credentials.password(user) + "\n")
            files[user].chmod(0o600)
        cluster = start_cluster(tmp_path / "cluster", kit, credentials)
        try:
            yield Region(nodes, kit, key, credentials, cluster, files)
        finally:
            cluster.stop()
    finally:
        for n in nodes:
            n.close()


# --- load -------------------------------------------------------------------------------------


class Writers:
    """One thread per node recording synthetic stories, one every `pace` seconds, until
    stopped (a steady load; unpaced, the writers only pile up a backlog to wait for)."""

    def __init__(self, nodes: list[Node], pace: float = 0.1) -> None:
        self.nodes = nodes
        self.pace = pace
        self.stop = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(len(nodes), "writer")
        self.futures: list[concurrent.futures.Future[int]] = []

    def start(self) -> None:
        self.futures = [self.pool.submit(self._record, n, i) for i, n in enumerate(self.nodes)]

    def _record(self, node: Node, index: int) -> int:
        stories = 0
        while not self.stop.is_set():
            record_stories(node, 1000 * (index + 1) + stories, 1)
            stories += 1
            self.stop.wait(self.pace)
        return stories

    async def finish(self) -> list[int]:
        self.stop.set()
        try:
            return [await asyncio.wrap_future(f) for f in self.futures]
        finally:
            self.pool.shutdown(wait=True)


def heads(nodes: list[Node]) -> list[int]:
    return [n.cases.recorder.max_notification_id() or 0 for n in nodes]


def server_port(nc: Client | None) -> int | None:
    """The client port of the server a connection is on (None while it has none)."""
    if nc is None or not nc.is_connected or nc.connected_url is None:
        return None
    return nc.connected_url.port


@dataclass
class Ingesting:
    """The aggregator's ingest (durable consumer, verified, one transaction per batch),
    looping like `Aggregator.run`: a NATS error is waited out and retried."""

    ingest: Ingest
    store: IngestStore
    nc: Client
    stop: asyncio.Event
    counts: IngestResult
    errors: list[str]
    task: asyncio.Task[None] | None = None

    def position(self) -> int:
        """The stream sequence ingested up to (raises what stopped the loop, if it did)."""
        if self.task is not None and self.task.done():
            self.task.result()
            raise AssertionError("the ingest loop stopped")
        return self.store.position()

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.counts.add(await self.ingest.run_once())
            except (nats.errors.Error, nats.js.errors.Error) as e:
                self.errors.append(type(e).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 0.2)


@contextlib.asynccontextmanager
async def aggregator_ingest(region: Region, directory: Path) -> AsyncIterator[Ingesting]:
    config = AggregatorConfig(
        dir=directory,
        nats_url=region.cluster.url,  # the cluster's three servers, comma-separated
        nats_user=AGGREGATOR_USER,
        nats_password=region.credentials.password(AGGREGATOR_USER),
        fetch_timeout=0.2,
    )
    directory.mkdir()
    store = IngestStore(directory / "aggregator.sqlite")
    try:
        nc = await connect(config)
        try:
            # A delivery lost with the killed server comes back after ack_wait; the
            # service's 30 s would only make this test wait longer.
            ingest = Ingest(
                region.kit.document,
                store,
                nc.jetstream(),
                batch=config.batch,
                fetch_timeout=config.fetch_timeout,
                ack_wait=5.0,
            )
            await ingest.start()
            running = Ingesting(ingest, store, nc, asyncio.Event(), IngestResult(), [])
            running.task = asyncio.create_task(running.run())
            try:
                yield running
            finally:
                running.stop.set()
                await asyncio.wait_for(running.task, DEADLINE)
                await ingest.stop()
        finally:
            await nc.close()
    finally:
        store.close()


@contextlib.asynccontextmanager
async def relaying(region: Region) -> AsyncIterator[list[NodeLink]]:
    links = []
    for node in region.nodes:
        partner = node.config.partner
        settings = FederationSettings(
            nats_url=region.cluster.url,  # the cluster's three servers, comma-separated
            nats_user=partner,
            nats_password_file=str(region.password_files[partner]),
            publish_interval=0,
        )
        links.append(NodeLink(node, settings))
    try:
        for link in links:
            await link.start()
        yield links
    finally:
        for link in links:
            await link.stop()


# --- the test ---------------------------------------------------------------------------------


async def test_killing_the_stream_leader_under_load_loses_nothing_and_counts_nothing_twice(
    region: Region, tmp_path: Path
) -> None:
    cluster, doc = region.cluster, region.kit.document
    nc = await operator(cluster.url.split(","), region.credentials)
    try:
        js = nc.jetstream(timeout=API_TIMEOUT)

        async def streams_created() -> bool:  # the meta leader takes a few seconds to elect
            try:
                await ensure_streams(js, REGION, replicas=3)
            except NATS_ERRORS:
                return False
            return True

        await wait_until(streams_created, "the region's streams (R3)")
        await wait_until(
            lambda: healthy_now(js), f"{EVENTS} to have a leader and three current replicas"
        )
        info = await js.stream_info(EVENTS)
        assert info.config.num_replicas == 3

        for seed, node in enumerate(region.nodes, 1):
            record_stories(node, seed, 5)
        writers = Writers(region.nodes)
        kills: dict[str, Any] = {}
        try:
            async with (
                relaying(region) as links,
                aggregator_ingest(region, tmp_path / "aggregator") as ingesting,
            ):
                writers.start()

                async def seq_beyond(n: int) -> bool:
                    p = await placement(js)
                    return p is not None and p.last_seq >= n

                # Under load: the stream grows while the nodes keep recording.
                await wait_until(lambda: seq_beyond(150), "150 messages in the stream")
                # The victim: the server most clients are on (at least two of the four),
                # made the stream leader, so both a leader and connections are lost.
                clients = {f"relay {link.node.config.partner}": link._nc for link in links}
                clients["aggregator"] = ingesting.nc
                on = {name: server_port(c) for name, c in clients.items()}
                assert None not in on.values(), on
                busiest = max(cluster.members, key=lambda m: list(on.values()).count(m.server.port))
                await make_leader(js, nc, busiest.name)
                before = await placement(js)
                assert before is not None
                assert before.leader == busiest.name
                victim = busiest
                victim.kill()
                kills["leader"], kills["seq"] = victim.name, before.last_seq
                kills["heads"] = heads(region.nodes)
                failing_over = [name for name, port in on.items() if port == victim.server.port]
                assert len(failing_over) >= 2

                # Two servers carry on: a new leader, messages still stored and ingested.
                async def new_leader() -> bool:
                    p = await placement(js)
                    return p is not None and p.leader not in (None, victim.name)

                await wait_until(new_leader, "a new leader among the two servers left")
                await wait_until(lambda: seq_beyond(before.last_seq + 100), "relaying on")

                async def ingested_beyond() -> bool:
                    return ingesting.position() > before.last_seq

                await wait_until(ingested_beyond, "the aggregator to ingest during the outage")
                during = await placement(js)
                assert during is not None
                assert during.current.get(victim.name) is False
                assert all(
                    a > b for a, b in zip(heads(region.nodes), kills["heads"], strict=True)
                ), "every node recorded during the outage"
                kills["new_leader"] = during.leader

                # Restarted under load: it catches up while messages keep coming.
                victim.restart()
                kills["restart_seq"] = during.last_seq

                async def rejoined() -> bool:
                    p = await placement(js)
                    return healthy(p) and p is not None and p.last_seq >= during.last_seq + 50

                await wait_until(rejoined, f"{victim.name} to rejoin, the stream to grow")
                kills["stories"] = await writers.finish()

                # Everything recorded reaches the stream; the restarted replica catches up.
                async def caught_up() -> bool:
                    return all(
                        s.relay_position > 0 and s.relay_lag == 0 and s.relay_position == head
                        for s, head in zip(
                            (link.status() for link in links), heads(region.nodes), strict=True
                        )
                    )

                await wait_until(caught_up, "the relays to catch up")
                final: Placement | None = None

                async def settled() -> bool:
                    nonlocal final
                    final = await placement(js)
                    return healthy(final, settled=True)

                await wait_until(settled, f"{victim.name} to be a current replica again")
                assert final is not None

                async def all_ingested() -> bool:
                    return ingesting.position() == final.last_seq

                await wait_until(all_ingested, "the aggregator to ingest the whole stream")
                # The clients that were on the killed server went on through the others.
                for name in failing_over:
                    assert server_port(clients[name]) not in (None, victim.server.port), name
                counts, ingest_errors = ingesting.counts, ingesting.errors
                store_path = ingesting.store.path
        finally:
            if not writers.stop.is_set():
                await writers.finish()
    finally:
        await nc.close()

    assert kills["new_leader"] != kills["leader"]
    assert kills["restart_seq"] > kills["seq"]
    assert min(kills["stories"]) > 0

    # Every consented event exactly once: by count and identity, byte-identical payloads.
    msgs = await read_ordered(cluster)
    assert [m.metadata.sequence.stream for m in msgs] == list(range(1, len(msgs) + 1))
    opened = [
        envelope.open_message(
            doc, m.subject, m.headers, m.data, m.metadata.timestamp, shared.decode
        )
        for m in msgs
    ]
    ids = [o.msg_id for o in opened]
    assert len(ids) == len(set(ids)), "a message was stored twice"
    expected_total = 0
    for node in region.nodes:
        expected = expected_messages(node)
        expected_total += len(expected)
        mine = [
            (o.msg_id, m.data)
            for o, m in zip(opened, msgs, strict=True)
            if o.partner == node.config.partner
        ]
        assert len(mine) == len(expected)
        assert sorted(mine) == sorted(expected)
    assert len(msgs) == expected_total == final.last_seq

    # The same messages, in the same order, in every server's own store.
    reference = [stored(m) for m in msgs]
    for member in cluster.members:
        assert await read_replica(cluster, member) == reference, f"replica {member.name}"

    # The aggregator counted each message once, and its figures equal a recomputation.
    assert counts.accepted == expected_total
    assert not counts.rejected
    assert counts.duplicates == 0
    store = IngestStore(store_path)
    try:
        assert store.accepted_count() == expected_total
        assert store.position() == final.last_seq
        assert store.rejected_by_reason() == {}
        verified = verify_stream(msgs, doc, final.last_seq)
        assert verified.accepted == expected_total
        assert verified.rejected == {}
        assert tally.compute(store.connection) == compute(verified.ledger)
        tree = MerkleTree()
        for leaf in store.leaves():
            tree.append(leaf)
        assert tree.root().hex() == verified.commitment  # the same messages, in stream order
    finally:
        store.close()
    print(f"{kills}; failed over: {failing_over}; ingest retried: {Counter(ingest_errors)}")
