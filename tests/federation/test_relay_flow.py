"""Three partner nodes relay through a real nats-server: consented events exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import nats
import pytest

from handsoff.events import (
    ConsentCorrected,
    ConsentCorrectionReason,
    ConsentGiven,
    ConsentPurpose,
    ConsentWithdrawn,
    FirstResponseGiven,
    PoliceReportFiled,
    PoliceResponded,
    PoliceResponse,
    ResponderRole,
)
from handsoff.federation.natsconf import ensure_streams
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import expected_messages, read_stream, record_stories
from support import T0, RegionKit, incident, make_node

SUPERVISOR_STEPS = ("CaseClosed", "ConsentCorrected")


async def relay_until_caught_up(links: list[NodeLink], deadline_s: float = 60) -> None:
    for link in links:
        await link.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        statuses = [link.status() for link in links]
        if all(s.relay_lag == 0 and s.relay_position > 0 for s in statuses):
            return
        assert loop.time() < deadline, f"relays did not catch up: {statuses}"
        await asyncio.sleep(0.05)


@pytest.fixture
def three_nodes(tmp_path: Path) -> list[Node]:
    nodes = [make_node(tmp_path / p, p) for p in ("p1", "p2", "p3")]
    yield nodes  # type: ignore[misc]
    for n in nodes:
        n.close()


async def test_every_consented_event_arrives_exactly_once_signed(
        tmp_path: Path, three_nodes: list[Node], nats_server: EmbeddedNats) -> None:
    kit = RegionKit(three_nodes)
    region_file = kit.save(tmp_path / "region.json")
    for seed, node in enumerate(three_nodes, 1):
        join_region(node, region_file)
        record_stories(node, seed, 25)
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream(), kit.document.region)
    await nc.close()

    settings = FederationSettings(nats_url=nats_server.url, nats_user="ignored",
                                  publish_interval=0)
    links = [NodeLink(n, settings) for n in three_nodes]
    try:
        await relay_until_caught_up(links)
    finally:
        for link in links:
            await link.stop()

    stored = await read_stream(nats_server.url, kit.document)
    ids = [opened.msg_id for opened, _ in stored]
    assert len(ids) == len(set(ids)), "a message was stored twice"
    for node in three_nodes:
        expected = expected_messages(node)
        assert expected, "the synthetic stories should share something"
        mine = [(o.msg_id, payload) for o, payload in stored if o.partner == node.config.partner]
        assert sorted(mine) == sorted(expected)  # same ids, byte-identical payloads
    # Cases without statistics consent never appear.
    for node in three_nodes:
        pseud = Pseudonymiser(node.pseudonym_key)
        node.cases.refresh()
        unconsented = {pseud.case(cid) for cid, s in node.cases.states.items()
                       if not any(k[0].value == "regional_statistics" for k in s.consents)}
        shared_cases = {o.event.case for o, _ in stored}
        assert unconsented, "some synthetic cases have no consent"
        assert not unconsented & shared_cases
    kinds = Counter(type(o.event).__name__ for o, _ in stored)
    assert kinds["SharedIncident"] > 0


async def test_a_withdrawal_retracts_and_nothing_later_is_shared(
        tmp_path: Path, nats_server: EmbeddedNats) -> None:
    node = make_node(tmp_path / "p1", "p1")
    try:
        kit = RegionKit([node])
        join_region(node, kit.save(tmp_path / "region.json"))
        nc = await nats.connect(nats_server.url)
        await ensure_streams(nc.jetstream(), kit.document.region)
        await nc.close()
        pseud = Pseudonymiser(node.pseudonym_key)
        t = T0 + timedelta(hours=3)
        state = node.cases.report_incident(incident("w"), "pat")
        for change in (
            ConsentGiven(purpose=ConsentPurpose.REGIONAL_STATISTICS, given_at=t),
            FirstResponseGiven(responded_at=t, responder_role=ResponderRole.PARALEGAL,
                               responder="pat"),
            ConsentWithdrawn(purpose=ConsentPurpose.REGIONAL_STATISTICS, withdrawn_at=t),
            ConsentGiven(purpose=ConsentPurpose.POLICE_REPORT, given_at=t),
            PoliceReportFiled(filed_at=t, district="BW-Gaborone"),
            ConsentCorrected(purpose=ConsentPurpose.REGIONAL_STATISTICS, given=True,
                             corrected_at=t, reason=ConsentCorrectionReason.SURVIVOR_CLARIFIED),
            PoliceResponded(responded_at=t, response=PoliceResponse.REFUSED),
        ):
            state = node.cases.record_change(state.case_id, state.version, change, "pat")
        link = NodeLink(node, FederationSettings(nats_url=nats_server.url, nats_user="x",
                                                 publish_interval=0))
        try:
            await relay_until_caught_up([link])
        finally:
            await link.stop()
        stored = await read_stream(nats_server.url, kit.document)
        about_case = [type(o.event).__name__ for o, _ in stored
                      if o.event.case == pseud.case(state.case_id)]
        # Shared while consented, one retraction, then nothing (not even after re-consent).
        assert about_case == ["SharedIncident", "SharedFirstResponse", "SharedRetraction"]
    finally:
        node.close()
