"""A referral between two partners and back, through a real nats-server; a third partner,
NATS and anyone reading the stream see only ciphertext."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import nats
import pytest
from nats.js.api import DeliverPolicy

from handsoff.events import (
    ConsentGiven,
    ConsentPurpose,
    ReferralDetail,
    ReferralMade,
    ReferralOutcome,
    ReferralStatus,
    ServiceType,
)
from handsoff.events.inbound import InboundReferralAccepted, InboundReferralCompleted
from handsoff.federation import subjects
from handsoff.federation.natsconf import ensure_streams
from handsoff.federation.referrals import ReferralUnreadable, unseal
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from support import T0, RegionKit, incident, make_node


async def eventually(what: str, condition: Callable[[], bool], deadline_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def partners(tmp_path: Path) -> list[Node]:
    nodes = [make_node(tmp_path / p, p) for p in ("p1", "p2", "p3")]
    kit = RegionKit(nodes)
    region_file = kit.save(tmp_path / "region.json")
    for n in nodes:
        join_region(n, region_file)
    yield nodes  # type: ignore[misc]
    for n in nodes:
        n.close()


async def test_referral_round_trip_and_a_third_partner_cannot_read_it(
    partners: list[Node], nats_server: EmbeddedNats
) -> None:
    p1, p2, p3 = partners
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream(), "sadc")
    seen: list[bytes] = []

    async def monitor(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg.subject.encode() + repr(msg.headers).encode() + msg.data)

    await nc.subscribe(">", cb=monitor)

    # p1 records a case and refers it to p2, with consent to share contact and summary only.
    marker = "canary-7f3a"
    state = p1.cases.report_incident(incident(marker), "pat")
    org = "Partner p2"
    state = p1.cases.record_change(
        state.case_id,
        1,
        ConsentGiven(
            purpose=ConsentPurpose.REFERRAL,
            organisation=org,
            given_at=T0 + timedelta(hours=3),
            details=[ReferralDetail.SURVIVOR_CONTACT, ReferralDetail.INCIDENT_SUMMARY],
        ),
        "pat",
    )
    state = p1.cases.record_change(
        state.case_id,
        2,
        ReferralMade(
            referral_id="legal-1",
            service=ServiceType.LEGAL_AID,
            made_at=T0 + timedelta(hours=4),
            to_organisation=org,
            to_partner="p2",
            note=f"note {marker}",
        ),
        "pat",
    )

    settings = FederationSettings(nats_url=nats_server.url, nats_user="x", publish_interval=0)
    links = [NodeLink(n, settings) for n in partners]
    for link in links:
        await link.start()
    try:

        def received() -> bool:
            p2.inbound.refresh()
            return len(p2.inbound.states) == 1

        await eventually("p2 to receive the referral", received)
        ((inbound_id, inbound),) = p2.inbound.states.items()
        assert inbound.from_partner == "p1"
        assert inbound.service == ServiceType.LEGAL_AID
        _, history = p2.inbound.history_of(inbound_id)
        received_change = history[0].change
        assert received_change.survivor_contact == incident(marker).survivor_contact
        assert received_change.district == "BW-Gaborone"
        assert received_change.survivor_name is None  # not consented for this organisation
        assert received_change.narrative is None
        assert received_change.note is None

        # p2 accepts, then completes: both travel back and update p1's case.
        p2.inbound.record_change(
            inbound_id, 1, InboundReferralAccepted(accepted_at=T0 + timedelta(hours=6)), "lerato"
        )
        p2.inbound.record_change(
            inbound_id,
            2,
            InboundReferralCompleted(
                completed_at=T0 + timedelta(days=3), outcome=ReferralOutcome.SERVICE_RECEIVED
            ),
            "lerato",
        )

        def completed_at_p1() -> bool:
            p1.cases.refresh()
            return (
                p1.cases.state(state.case_id).referrals["legal-1"].status
                == ReferralStatus.COMPLETED
            )

        await eventually("p1's case to show the referral completed", completed_at_p1)
        referral = p1.cases.state(state.case_id).referrals["legal-1"]
        assert referral.outcome == ReferralOutcome.SERVICE_RECEIVED
        _, p1_history = p1.cases.history(state.case_id)
        assert [e.recorded_by for e in p1_history[-2:]] == ["partner p2", "partner p2"]
    finally:
        for link in links:
            await link.stop()

    # Nobody but the addressee can read a referral: not p3, not NATS, not a stream reader.
    js = nc.jetstream()
    sub = await js.subscribe(
        subjects.all_referrals("sadc"), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    stored = [await sub.next_msg(timeout=5) for _ in range(3)]  # package, accepted, completed
    await nc.close()
    package = stored[0]
    assert package.subject == subjects.referral("sadc", "p1", "p2")
    with pytest.raises(ReferralUnreadable):
        unseal(package.data, p3.signer)
    assert unseal(package.data, p2.signer).service == ServiceType.LEGAL_AID
    replies = stored[1:]
    assert all(m.subject == subjects.referral("sadc", "p2", "p1") for m in replies)
    for m in replies:
        with pytest.raises(ReferralUnreadable):
            unseal(m.data, p3.signer)
    assert seen, "the monitor saw the traffic"
    personal = [marker.encode(), b"+267 555 0100", b"Legal Aid", b"legal-1"]
    assert not [s for s in seen for p in personal if p in s]
