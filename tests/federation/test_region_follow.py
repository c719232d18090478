"""A serving node takes each newer region version the aggregator announces
(services/node/follow.py), and what a node sent under the version before, within the new
version's grace, still counts.

Real nodes, a real aggregator (tests/aggregator/aggregator_worker.py) and a real
nats-server; the coordinators hand a new version to the aggregator only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import pytest

from auditor.test_history_audit import _aggregate, relay
from handsoff.federation import announcements, subjects
from handsoff.federation.natsconf import ensure_streams, generate_credentials, nats_config
from handsoff.federation.region import Coordinator, SignedRegion, save_region, sign_region
from handsoff.keys import KdfStrength, SigningKey
from handsoff.services.aggregator.ingest import IngestStore
from handsoff.services.aggregator.service import AggregatorPaths, init_aggregator, take_region
from handsoff.services.auditor.region import StreamMessage, audit_region, read_streams
from handsoff.services.natsserver import EmbeddedNats, free_port
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, held_region, join_region
from handsoff.services.node.node import Node
from relay_support import Cable, record_stories
from support import PASSPHRASE, RegionKit, create_region_streams, eventually, make_node


class Region:
    """Two partner nodes and the aggregator on one version (`base`), everything relayed and
    released."""

    def __init__(self, tmp_path: Path, url: str, age: timedelta = timedelta(0)) -> None:
        self.tmp, self.url = tmp_path, url
        self.nodes = [make_node(tmp_path / p, p, c) for p, c in (("p1", "BW"), ("p2", "ZA"))]
        self.agg = tmp_path / "aggregator"
        self.paths = AggregatorPaths(self.agg)
        self.kit = RegionKit(
            self.nodes, aggregator=init_aggregator(self.agg, PASSPHRASE, KdfStrength.INTERACTIVE)
        )
        self.v1 = self.kit.signed
        if age:  # issued `age` ago (the partners' keys stay valid from a minute ago)
            earlier = datetime.now(UTC) - age
            self.v1 = self.kit.sign(msgspec.structs.replace(self.kit.document, issued_at=earlier))
        self.document = self.v1.document
        self.base = self.v1.document.version
        v1_file = tmp_path / "region-v1.json"
        save_region(v1_file, self.v1)
        for n in self.nodes:
            join_region(n, v1_file)
        take_region(self.paths, v1_file)

    async def start(self) -> None:
        await create_region_streams(self.url, "sadc")
        for seed, n in enumerate(self.nodes, 1):
            record_stories(n, seed, 3)
        await relay(self.nodes, self.url)
        await _aggregate(self.agg, self.url)  # announces `base`; release 1

    def issue(self, grace_hours: int, age: timedelta = timedelta(0)) -> SignedRegion:
        """The next version, issued `age` ago with the grace given, signed; the aggregator
        takes it at its next start (and announces it then)."""
        issued = datetime.now(UTC) - age
        v2 = self.kit.sign(self.document.set_version_grace(grace_hours, issued_at=issued))
        save_region(self.tmp / "region-v2.json", v2)
        take_region(self.paths, self.tmp / "region-v2.json")
        return v2

    async def events(self) -> list[StreamMessage]:
        nc = await nats.connect(self.url)
        try:
            return (await read_streams(nc.jetstream(), "sadc"))[0]
        finally:
            await nc.close()


def serving(node: Node, url: str) -> NodeLink:
    return NodeLink(
        node,
        FederationSettings(
            nats_url=url,
            nats_user="x",
            publish_interval=0,
            checkpoint_interval=0,
            region_check_interval=0.2,
        ),
    )


async def test_a_serving_node_takes_each_version_the_aggregator_announces(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    region = Region(tmp_path, nats_server.url)
    await region.start()
    p1 = region.nodes[0]
    links = [serving(n, nats_server.url) for n in region.nodes]
    try:
        for link in links:
            await link.start()
        await eventually("both links connected", lambda: all(
            link.status().connected for link in links), 30)
        base = region.base
        assert [link.status().region_version for link in links] == [base, base]

        # The coordinators hand the next version to the aggregator only; it announces it when it
        # starts; every serving node takes it on its own, and keeps the file.
        v2 = region.issue(grace_hours=24)
        await _aggregate(region.agg, nats_server.url)
        await eventually("both nodes on the next version", lambda: all(
            link.status().region_version == base + 1 for link in links), 30)
        assert [held_region(n).version for n in region.nodes] == [base + 1] * 2
        assert all(link.status().region_error is None for link in links)

        # What they send from now on is under the new version.
        before = len(await region.events())
        record_stories(p1, 11, 3)
        await eventually("p1's new events relayed", lambda: links[0].status().relay_lag == 0, 30)
        new = (await region.events())[before:]
        assert new
        assert {m.headers["Hx-Region"] for m in new} == {str(base + 1)}
        await _aggregate(region.agg, nats_server.url)

        nc = await nats.connect(nats_server.url)
        try:
            report = await audit_region(nc.jetstream(), [region.v1])
        finally:
            await nc.close()
        assert report.findings == [], report.findings
        assert {c.name: c.checked for c in report.checks}["announcements"] == 2

        # A version the aggregator announces but only one coordinator signed: not taken,
        # and the node says why; the version held stays.
        v3 = region.kit.sign(v2.document.set_version_grace(48), signers=1)
        forged = announcements.sign(announcements.announcement(v3, len(new)), region.kit.aggregator)
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().publish(subjects.region_taken("sadc"), forged)
        finally:
            await nc.close()
        await eventually("the refusal reported", lambda: all(
            link.status().region_error for link in links), 30)
        for link, n in zip(links, region.nodes, strict=True):
            error = link.status().region_error
            assert error is not None
            assert f"version {base + 2} carries 1 valid signature(s) of the 2 needed" in error
            assert link.status().region_version == base + 1
            assert held_region(n).version == base + 1
    finally:
        for link in links:
            await link.stop()


@pytest.mark.parametrize(
    ("grace_hours", "issued_hours_ago"),
    [(24, 0), (0, 0), (24, 30)],
    ids=["within-grace", "no-grace", "announced-a-day-late"],
)
async def test_what_a_node_sent_under_the_version_before_counts_within_the_grace(
    tmp_path: Path, nats_server: EmbeddedNats, grace_hours: int, issued_hours_ago: int
) -> None:
    """p2 sends under the version it holds after the next was issued (it could not know:
    the aggregator had not announced it yet); the aggregator then takes the next and judges
    those messages under it. Within the grace they count and the audit is clean; with no
    grace they are quarantined as stale, and the audit names each one. A version the
    aggregator took more than its grace after it was issued: the grace runs from the
    announcement, when nodes could first take it from NATS."""
    age = timedelta(hours=issued_hours_ago)
    region = Region(tmp_path, nats_server.url, age=age + timedelta(hours=1))
    await region.start()
    p1, p2 = region.nodes
    region.issue(grace_hours, age)
    before = len(await region.events())
    record_stories(p2, 21, 3)
    await relay([p2], nats_server.url)
    late = (await region.events())[before:]
    assert late
    assert {m.headers["Hx-Region"] for m in late} == {str(region.base)}

    await _aggregate(region.agg, nats_server.url)  # announces the next, ingests under it
    events = await region.events()
    store = IngestStore(region.paths.store)
    try:
        if grace_hours:
            assert store.accepted_count() == len(events)
            assert store.rejected_by_reason() == {}
        else:
            assert store.accepted_count() == len(events) - len(late)
            assert store.rejected_by_reason() == {"stale_region": len(late)}
    finally:
        store.close()
    nc = await nats.connect(nats_server.url)
    try:
        report = await audit_region(nc.jetstream(), [region.v1])
    finally:
        await nc.close()
    if grace_hours:
        assert report.findings == [], report.findings
    else:
        assert {(f.check, f.reason) for f in report.findings} == {("signatures", "stale_region")}
        assert len(report.findings) == len(late)
        assert all("grace" not in f.detail for f in report.findings)

    # Relaying again, p2 first takes the new version from the announcement, then sends
    # under it.
    record_stories(p2, 31, 2)
    await relay([p2], nats_server.url)
    newest = (await region.events())[len(events):]
    assert newest
    assert {m.headers["Hx-Region"] for m in newest} == {str(region.base + 1)}
    assert held_region(p2).version == region.base + 1
    assert held_region(p1).version == region.base  # not serving: still the file it was given
    assert held_region(p2).version_grace_hours == grace_hours


async def test_a_node_back_from_an_outage_takes_the_version_announced_meanwhile_first(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """The line goes down; the node records cases (the relay builds them under the version
    it holds and cannot send them); a version with no grace is issued and announced; the
    line comes back. Before sending anything the relay takes the new version and seals what
    it had built again under it: nothing is stale, everything counts."""
    region = Region(tmp_path, nats_server.url)
    await region.start()
    p1 = region.nodes[0]
    cable = Cable(nats_server.port)
    await cable.mend()
    link = NodeLink(
        p1,
        FederationSettings(
            nats_url=f"nats://127.0.0.1:{cable.port}",
            nats_user="x",
            publish_interval=0,
            checkpoint_interval=0,
            region_check_interval=3600,  # only the relay's look after the outage can take it
        ),
    )
    try:
        await link.start()
        await eventually("connected", lambda: link.status().connected, 30)
        before = len(await region.events())
        await cable.cut()
        await eventually("the client to see the line down", lambda: not link.status().connected)
        record_stories(p1, 51, 3)
        # built under the version held, and not sent
        await eventually("the relay to hold a batch", lambda: link.relay.status.pending > 0, 30)
        assert link.relay.status.published == 0
        region.issue(grace_hours=0)
        await _aggregate(region.agg, nats_server.url)  # announces the new version
        await cable.mend()
        await eventually("the relay to catch up", lambda: link.status().relay_lag == 0
                         and link.status().connected, 60)
        assert link.status().region_version == region.base + 1
        sent = (await region.events())[before:]
        assert sent
        assert {m.headers["Hx-Region"] for m in sent} == {str(region.base + 1)}
    finally:
        await link.stop()
        await cable.cut()
    await _aggregate(region.agg, nats_server.url)
    store = IngestStore(region.paths.store)
    try:
        assert store.rejected_by_reason() == {}
        assert store.accepted_count() == len(await region.events())
    finally:
        store.close()


async def test_a_nats_configuration_from_before_the_follower_leaves_the_relay_alone(
    tmp_path: Path,
) -> None:
    """A region whose nats-server configuration was generated before partners could read
    the announcements: the node relays as before and shows connected; only `region_error`
    says that the announcements cannot be read and what to do."""
    node = make_node(tmp_path / "p1", "p1", "BW")
    kit = RegionKit([node])
    join_region(node, kit.save(tmp_path / "region.json"))
    credentials = generate_credentials(kit.document)
    port = free_port()
    text = nats_config(kit.document, credentials, port=port, store_dir=tmp_path / "js")
    consumer = subjects.region_consumer("p1")
    old, n = re.subn(rf',?\s*"[^"]*\.{re.escape(consumer)}[^"]*"', "", text)
    # p1's create (filtered), info, next and delete, and the aggregator's four denials of
    # them: the configuration as generated before
    assert n == 8
    assert consumer in text
    assert f".{consumer}" not in old.split("user: \"p1\"")[1].split("user:")[0]
    conf = tmp_path / "nats-old.conf"
    conf.write_text(old)
    server = EmbeddedNats(tmp_path / "nats", port, conf).start()
    link = None
    try:
        nc = await nats.connect(
            server.url, user="operator", password=credentials.password("operator")
        )
        try:
            await ensure_streams(nc.jetstream(), "sadc")
        finally:
            await nc.close()
        password_file = tmp_path / "p1.password"
        password_file.write_text(credentials.password("p1"))
        link = NodeLink(node, FederationSettings(
            nats_url=server.url, nats_user="p1", nats_password_file=str(password_file),
            publish_interval=0, region_check_interval=0.5,
        ))
        await link.start()
        record_stories(node, 61, 3)
        await eventually("the relay to catch up", lambda: link is not None and (
            link.status().relay_lag == 0 and link.status().published > 0), 60)
        # two more looks, each refused by nats-server, after the relay's last round
        looks = link.follower.status.looks
        await eventually("two more looks", lambda: link is not None and (
            link.follower.status.looks >= looks + 2), 60)
        status = link.status()
        assert status.connected, status
        assert status.last_error is None
        assert "region-p1" in (status.region_error or "") or "nats-config" in (
            status.region_error or ""
        ), status.region_error
    finally:
        if link is not None:
            await link.stop()
        server.stop()
        node.close()


async def test_a_node_far_behind_takes_an_expired_version_between_to_reach_the_current(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """The coordinators were replaced in a version that has expired since; a node that
    missed it takes it as of its successor's issue (as an auditor checks a chain), then the
    successor, which only the new coordinators signed. Never the expired one alone."""
    region = Region(tmp_path, nats_server.url, age=timedelta(hours=3))
    await region.start()
    p1 = region.nodes[0]
    base, now = region.base, datetime.now(UTC)
    newcomers = {f"n{i}": SigningKey.generate() for i in (1, 2, 3)}
    replaced = region.document.set_coordinators(
        [Coordinator(c, f"Coordinator {c}", k.public_key) for c, k in newcomers.items()],
        2,
        issued_at=now - timedelta(hours=2),
    )
    replaced = msgspec.structs.replace(replaced, expires_at=now - timedelta(hours=1))
    in_between = region.kit.sign(replaced)  # by the coordinators it replaces
    current = SignedRegion.unsigned(
        replaced.renew(now + timedelta(days=30), issued_at=now - timedelta(minutes=90))
    )
    for c in ("n1", "n2"):
        current = sign_region(current, c, newcomers[c])

    async def announce(*versions: SignedRegion) -> None:
        """As the aggregator announced them, each in its time."""
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(subjects.events_stream("sadc"))).state.last_seq
            for signed in versions:
                taken = announcements.announcement(signed, last)
                await js.publish(
                    subjects.region_taken("sadc"),
                    announcements.sign(taken, region.kit.aggregator),
                    stream=subjects.aggregates_stream("sadc"),
                )
        finally:
            await nc.close()

    link = serving(p1, nats_server.url)
    try:
        # Only the expired version announced so far: not taken, and said why.
        await announce(in_between)
        await link.start()
        await eventually("the refusal", lambda: link.status().region_error is not None, 30)
        assert "expired" in (link.status().region_error or "")
        assert link.status().region_version == base
        # Its successor announced: both taken, in order.
        await announce(current)
        await eventually("the current version", lambda: (
            link.status().region_version == base + 2), 30)
        assert link.status().region_error is None
        assert held_region(p1).version == base + 2
        assert link.follower.status.taken == 2
    finally:
        await link.stop()
