"""The privacy canary (issue #3): unique marker strings placed in every personal-data field of
every case change type appear nowhere in the NATS traffic (the whole stream, read back, and
everything a monitoring subscriber on `>` sees) and nowhere in the logs.

Personal fields are found through handsoff.events.personal_fields over CASE_CHANGES, so a new
personal field (or a new change type) is covered, or fails this test, without editing it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import msgspec.inspect as mi
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from handsoff.events import (
    CASE_CHANGES,
    CaseChange,
    CaseClosed,
    ClosureReason,
    ConsentCorrected,
    ConsentCorrectionReason,
    ConsentGiven,
    ConsentPurpose,
    ConsentWithdrawn,
    CourtCaseOpened,
    CourtCaseWithdrawn,
    CourtJudgment,
    CourtJudgmentGiven,
    CourtWithdrawalReason,
    FirstResponseGiven,
    PoliceReportFiled,
    PoliceResponded,
    PoliceResponse,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralDeclineReason,
    ReferralDetail,
    ReferralMade,
    ReferralOutcome,
    ResponderRole,
    ServiceType,
    personal_fields,
)
from handsoff.federation import subjects
from handsoff.federation.envelope import MSG_ID, open_message
from handsoff.federation.natsconf import ensure_streams, stream_configs
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.shared import SharedRetraction, decode
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import expected_messages
from support import T0, RegionKit, incident, make_node

REGIONAL = ConsentPurpose.REGIONAL_STATISTICS
PARTNER = "canary-p1"


def hours(n: float) -> Any:
    return T0 + timedelta(hours=n)


# ---------------------------------------------------------------------------------------
# Markers


def _is_collection(t: mi.Type) -> bool:
    if isinstance(t, mi.Metadata):
        return _is_collection(t.type)
    if isinstance(t, mi.UnionType):
        return any(_is_collection(m) for m in t.types)
    return isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType)


@dataclass
class Canary:
    """Every string that must never leave the node, and which personal fields were marked."""

    forbidden: dict[str, str] = field(default_factory=dict)  # needle -> what it is
    marked: set[tuple[type, str]] = field(default_factory=set)
    recorded: set[type] = field(default_factory=set)
    case_ids: dict[str, UUID] = field(default_factory=dict)

    def new(self, what: str, template: str = "CANARY-{}") -> str:
        needle = template.format(secrets.token_hex(8))
        self.forbidden[needle] = what
        return needle

    def mark(self, change: CaseChange, *, unmarked: Iterable[str] = ()) -> CaseChange:
        """`change` with a fresh marker in every personal field (but those the case rules
        require to be empty in this change, listed in `unmarked`)."""
        t = type(change)
        personal = personal_fields(t)
        unmarked = set(unmarked)
        assert unmarked <= personal, f"{unmarked - personal} are not personal fields of {t}"
        types = {f.name: f.type for f in mi.type_info(t).fields}  # type: ignore[attr-defined]
        values: dict[str, Any] = {}
        for name in sorted(personal - unmarked):
            marker = self.new(f"{t.__name__}.{name}")
            values[name] = [marker] if _is_collection(types[name]) else marker
            self.marked.add((t, name))
        return msgspec.structs.replace(change, **values)

    def needles(self) -> dict[bytes, str]:
        out = {k.encode(): v for k, v in self.forbidden.items()}
        for name, case_id in self.case_ids.items():
            for form in (str(case_id), case_id.hex, str(case_id).upper(), case_id.hex.upper()):
                out[form.encode()] = f"case id of {name}"
            out[case_id.bytes] = f"case id of {name} (bytes)"
        return out


class Story:
    """One case recorded on the node, every change through the node's own rules."""

    def __init__(self, node: Node, canary: Canary, name: str, by: str) -> None:
        self.node, self.canary, self.name, self.by = node, canary, name, by
        self.case_id: UUID | None = None
        self.version = 0

    def record(self, change: CaseChange, *, unmarked: Iterable[str] = ()) -> Story:
        change = self.canary.mark(change, unmarked=unmarked)
        cases = self.node.cases
        if self.case_id is None:
            state = cases.report_incident(change, self.by)  # type: ignore[arg-type]
            self.canary.case_ids[self.name] = state.case_id
        else:
            state = cases.record_change(self.case_id, self.version, change, self.by)
        self.case_id, self.version = state.case_id, state.version
        self.canary.recorded.add(type(change))
        return self


def record_cases(node: Node, canary: Canary) -> dict[str, UUID]:
    staff = canary.new("recorded_by (a staff user name)", "canary-staff-{}")

    def org() -> str:
        return canary.new("organisation name", "Canary Clinic {}")

    def referral_id() -> str:
        return canary.new("referral id", "canary-ref-{}")

    # Consented from the start; every step of a case's life, then closed.
    clinic, lawyers, r1, r2 = org(), org(), referral_id(), referral_id()
    shared = Story(node, canary, "shared", staff)
    shared.record(incident())
    shared.record(ConsentGiven(purpose=REGIONAL, given_at=hours(3)))
    shared.record(
        FirstResponseGiven(
            responded_at=hours(4), responder_role=ResponderRole.PARALEGAL, responder="x"
        )
    )
    shared.record(
        ConsentGiven(
            purpose=ConsentPurpose.REFERRAL,
            organisation=clinic,
            given_at=hours(5),
            details=[ReferralDetail.SURVIVOR_NAME, ReferralDetail.NARRATIVE],
        )
    )
    shared.record(
        ReferralMade(
            referral_id=r1,
            service=ServiceType.HEALTH_PEP,
            made_at=hours(6),
            to_organisation=clinic,
            note="x",
        )
    )
    shared.record(ReferralAccepted(referral_id=r1, accepted_at=hours(8)))
    shared.record(
        ReferralCompleted(
            referral_id=r1, completed_at=hours(30), outcome=ReferralOutcome.SERVICE_RECEIVED
        )
    )
    shared.record(
        ConsentGiven(purpose=ConsentPurpose.REFERRAL, organisation=lawyers, given_at=hours(31))
    )
    shared.record(
        ReferralMade(
            referral_id=r2,
            service=ServiceType.LEGAL_AID,
            made_at=hours(32),
            to_organisation=lawyers,
            note="x",
        )
    )
    shared.record(
        ReferralDeclined(
            referral_id=r2,
            declined_at=hours(40),
            reason=ReferralDeclineReason.SERVICE_UNAVAILABLE,
        )
    )
    shared.record(ConsentGiven(purpose=ConsentPurpose.POLICE_REPORT, given_at=hours(41)))
    shared.record(PoliceReportFiled(filed_at=hours(42), district="BW-Gaborone"))
    shared.record(
        PoliceResponded(
            responded_at=hours(50),
            response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN,
            case_number="x",
        )
    )
    shared.record(CourtCaseOpened(opened_at=hours(100), district="BW-Gaborone"))
    shared.record(CourtJudgmentGiven(judged_at=hours(200), judgment=CourtJudgment.WON))
    shared.record(
        ConsentCorrected(
            purpose=ConsentPurpose.REFERRAL,
            organisation=lawyers,
            given=False,
            corrected_at=hours(201),
            reason=ConsentCorrectionReason.RECORDED_IN_ERROR,
        )
    )
    shared.record(CaseClosed(closed_at=hours(300), reason=ClosureReason.RESOLVED))

    # Shared, then consent withdrawn: one retraction, nothing after it.
    withdrawn = Story(node, canary, "withdrawn", staff)
    withdrawn.record(incident())
    withdrawn.record(ConsentGiven(purpose=REGIONAL, given_at=hours(2)))
    withdrawn.record(
        FirstResponseGiven(
            responded_at=hours(3), responder_role=ResponderRole.PEER_EDUCATOR, responder="x"
        )
    )
    withdrawn.record(ConsentGiven(purpose=ConsentPurpose.POLICE_REPORT, given_at=hours(4)))
    withdrawn.record(PoliceReportFiled(filed_at=hours(5), district="BW-Gaborone"))
    # A refusal carries no case number (the case rules require it empty).
    withdrawn.record(
        PoliceResponded(responded_at=hours(6), response=PoliceResponse.REFUSED),
        unmarked=["case_number"],
    )
    withdrawn.record(CourtCaseOpened(opened_at=hours(7), district="BW-Gaborone"))
    withdrawn.record(
        CourtCaseWithdrawn(withdrawn_at=hours(8), reason=CourtWithdrawalReason.FEAR_OF_RETALIATION)
    )
    withdrawn.record(ConsentWithdrawn(purpose=REGIONAL, withdrawn_at=hours(9)))
    withdrawn.record(CaseClosed(closed_at=hours(10), reason=ClosureReason.SURVIVOR_REQUEST))

    # Consent comes late, as a supervisor's correction: the backlog is released then.
    late = Story(node, canary, "late", staff)
    late.record(incident())
    late.record(
        FirstResponseGiven(responded_at=hours(3), responder_role=ResponderRole.STAFF, responder="x")
    )
    late.record(
        ConsentCorrected(
            purpose=REGIONAL,
            given=True,
            corrected_at=hours(4),
            reason=ConsentCorrectionReason.SURVIVOR_CLARIFIED,
        )
    )

    # Never consented to regional statistics: nothing about it may leave at all.
    private_org, r3 = org(), referral_id()
    private = Story(node, canary, "unconsented", staff)
    private.record(incident())
    private.record(
        FirstResponseGiven(
            responded_at=hours(1), responder_role=ResponderRole.PARALEGAL, responder="x"
        )
    )
    private.record(
        ConsentGiven(purpose=ConsentPurpose.REFERRAL, organisation=private_org, given_at=hours(2))
    )
    private.record(
        ReferralMade(
            referral_id=r3,
            service=ServiceType.SHELTER,
            made_at=hours(3),
            to_organisation=private_org,
            note="x",
        )
    )
    private.record(ConsentGiven(purpose=ConsentPurpose.POLICE_REPORT, given_at=hours(4)))
    private.record(PoliceReportFiled(filed_at=hours(5), district="BW-Gaborone"))
    private.record(
        PoliceResponded(
            responded_at=hours(6),
            response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN,
            case_number="x",
        )
    )
    private.record(CaseClosed(closed_at=hours(7), reason=ClosureReason.RESOLVED))
    return dict(canary.case_ids)


# ---------------------------------------------------------------------------------------
# What NATS carried


@dataclass(frozen=True)
class Seen:
    where: str  # "monitor", "stream HX_..."
    subject: str
    reply: str
    headers: dict[str, str]
    data: bytes

    def parts(self) -> Iterator[tuple[str, bytes]]:
        yield "subject", self.subject.encode()
        yield "reply subject", self.reply.encode()
        for k, v in self.headers.items():
            yield f"header {k}", f"{k}: {v}".encode()
        yield "payload", self.data


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")


def decoded_views(blob: bytes) -> Iterator[bytes]:
    """`blob`, and every base64 run in it decoded (the JetStream API returns stored
    messages base64-encoded in JSON)."""
    yield blob
    for run in _BASE64_RUN.findall(blob):
        try:
            yield base64.b64decode(run + b"=" * (-len(run) % 4))
        except (binascii.Error, ValueError):
            continue


def leaks(needles: dict[bytes, str], where: str, blob: bytes) -> list[str]:
    return [
        f"{what} ({needle!r}) in {where}"
        for view in decoded_views(blob)
        for needle, what in needles.items()
        if needle in view
    ]


class Monitor:
    """A plain subscriber on `>`: everything published in the account, JetStream API,
    acknowledgements and deliveries included."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.nc: Any = None

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url, name="canary-monitor")
        await self.nc.subscribe(">", cb=self._on)
        await self.nc.flush()

    async def _on(self, m: Msg) -> None:
        self.seen.append(Seen("monitor", m.subject, m.reply or "", dict(m.headers or {}), m.data))

    async def stop(self) -> None:
        await self.nc.flush()
        await self.nc.drain()  # handles every delivery already on the wire, then closes


async def read_streams(url: str, region: str) -> list[Any]:
    """Every message of every stream of the region, raw (metadata kept for verification)."""
    nc = await nats.connect(url, name="canary-reader")
    try:
        js = nc.jetstream()
        out = []
        for config in stream_configs(region):
            assert config.name
            assert config.subjects
            info = await js.stream_info(config.name)
            if not info.state.messages:
                continue
            sub = await js.subscribe(
                config.subjects[0], ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
            for _ in range(info.state.messages):
                out.append((config.name, await sub.next_msg(timeout=5)))
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def relay_until_caught_up(link: NodeLink, deadline_s: float = 60) -> None:
    await link.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        s = link.status()
        if s.relay_lag == 0 and s.relay_position > 0 and s.relay_position == s.log_head:
            return
        assert loop.time() < deadline, f"the relay did not catch up: {s}"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------
# The canary


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path / "node", PARTNER)
    yield n
    n.close()


def debug_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG on the root logger and on every logger that exists now (some set their own
    level); loggers made later inherit the root's."""
    caplog.set_level(logging.DEBUG)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)


async def test_no_personal_data_leaves_the_node(
    tmp_path: Path, node: Node, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    debug_everywhere(caplog)
    canary = Canary()
    case_ids = record_cases(node, canary)

    # Every personal field of every change type carries a marker; every type was recorded.
    every_personal = {(t, name) for t in CASE_CHANGES for name in personal_fields(t)}
    assert every_personal, "the schema marks no personal field?"
    assert canary.marked == every_personal, every_personal - canary.marked
    assert canary.recorded == set(CASE_CHANGES), set(CASE_CHANGES) - canary.recorded

    kit = RegionKit([node])
    join_region(node, kit.save(tmp_path / "region.json"))
    region = kit.document.region

    monitor = Monitor()
    await monitor.start(nats_server.url)
    nc = await nats.connect(nats_server.url, name="canary-operator")
    await ensure_streams(nc.jetstream(), region)
    await nc.close()

    link = NodeLink(
        node, FederationSettings(nats_url=nats_server.url, nats_user="x", publish_interval=0)
    )
    try:
        await relay_until_caught_up(link)
    finally:
        await link.stop()
    stored = await read_streams(nats_server.url, region)
    await monitor.stop()

    # -- the stream holds exactly what the share policy allows, verified --------------------
    expected = expected_messages(node)
    events_stream = subjects.events_stream(region)
    events = [m for name, m in stored if name == events_stream]
    assert [name for name, _ in stored if name != events_stream] == []  # no referral, checkpoint
    opened = [
        open_message(kit.document, m.subject, m.headers, m.data, m.metadata.timestamp, decode)
        for m in events
    ]
    assert [(o.msg_id, m.data) for o, m in zip(opened, events, strict=True)] == expected
    pseudonyms = Pseudonymiser(node.pseudonym_key)
    by_case = {name: pseudonyms.case(cid) for name, cid in case_ids.items()}
    cases_shared = {o.event.case for o in opened}
    assert cases_shared == {by_case["shared"], by_case["withdrawn"], by_case["late"]}
    retractions = [o for o in opened if isinstance(o.event, SharedRetraction)]
    assert [r.event.case for r in retractions] == [by_case["withdrawn"]]

    # -- the monitor saw the traffic: the check below is not vacuous ----------------------
    events_prefix = f"{subjects.PREFIX}.{region}.events."
    inbox = subjects.inbox_prefix(PARTNER)
    on_events = [s for s in monitor.seen if s.subject.startswith(events_prefix)]
    published = [s for s in on_events if s.reply.startswith(inbox)]  # the relay's publishes
    delivered = [s for s in on_events if s.reply.startswith("$JS.ACK.")]  # the read-back
    assert len(expected) > 0
    assert len(published) >= len(expected)  # a retried publish may be seen twice
    assert {(s.headers[MSG_ID], s.data) for s in published} == set(expected)
    assert sorted((s.headers[MSG_ID], s.data) for s in delivered) == sorted(expected)
    assert any(s.subject == subjects.events(region, PARTNER, "retraction") for s in published)
    assert [s.reply for s in on_events if s not in published and s not in delivered] == []
    assert any(s.subject.startswith(inbox) for s in monitor.seen)  # PubAcks
    assert any(s.subject.startswith("$JS.API.") for s in monitor.seen)  # JetStream API
    assert any(s.subject.startswith("$JS.EVENT.") for s in monitor.seen)  # advisories

    # The case without statistics consent: no message at all, under any pseudonym of it.
    unconsented = by_case["unconsented"].encode()
    assert not [s for s in monitor.seen for _, blob in s.parts() if unconsented in blob]
    assert not [m for m in events if unconsented in m.data]

    # -- no marker, case id, referral id, organisation or name anywhere ------------------
    needles = canary.needles()
    found: list[str] = []
    for s in monitor.seen:
        for part, blob in s.parts():
            found += leaks(needles, f"monitor: {s.subject} {part}", blob)
    for name, m in stored:
        s = Seen(name, m.subject, m.reply or "", dict(m.headers or {}), m.data)
        for part, blob in s.parts():
            found += leaks(needles, f"stream {name}: {m.subject} {part}", blob)

    # The nats-server's log, and everything it keeps on disk (stream files), after it stops.
    nats_server.stop()
    assert nats_server.log_file.exists()
    found += leaks(needles, "nats-server log", nats_server.log_file.read_bytes())
    on_disk = b""
    for path in sorted(p for p in nats_server.store_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        on_disk += data
        found += leaks(needles, f"nats-server file {path.relative_to(tmp_path)}", data)
    assert expected[0][1] in on_disk, "the stream's files were not found (vacuous check)"

    # Every log record of every logger, with its arguments and extras. (A control record
    # first: DEBUG records of the product's loggers do reach the capture.)
    logging.getLogger("handsoff.relay").debug("canary control %s", "record")
    assert any(r.getMessage() == "canary control record" for r in caplog.records)
    for record in caplog.records:
        text = f"{record.getMessage()}\n{record.__dict__!r}".encode()
        found += leaks(needles, f"log record {record.name}:{record.lineno}", text)
    found += leaks(needles, "captured log text", caplog.text.encode())

    assert not found, "personal data left the node:\n" + "\n".join(sorted(set(found)))
