"""Fixtures for the HTTP API tests: a real node on SQLite files, a TestClient, a token per role.

No mocks: every request goes through `create_app(node)` to the sealed logs on disk. The
`Lifecycle` helper knows one valid change per lifecycle step (personal fields carry a marker
string) and the earlier steps each one needs, so a test can put a fresh case right before any
step and then take that step over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from handsoff.events import (
    CaseClosed,
    ClosureReason,
    ConsentCorrected,
    ConsentGiven,
    ConsentPurpose,
    ConsentWithdrawn,
    CourtCaseOpened,
    CourtCaseWithdrawn,
    CourtJudgment,
    CourtJudgmentGiven,
    FirstResponseGiven,
    IncidentReported,
    PoliceReportFiled,
    PoliceResponded,
    PoliceResponse,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
    ReferralOutcome,
    ResponderRole,
    ServiceType,
)
from handsoff.events.codes import (
    ConsentCorrectionReason,
    CourtWithdrawalReason,
    ReferralDeclineReason,
)
from handsoff.services.api import create_app
from handsoff.services.node.admin import Role
from handsoff.services.node.node import Node
from support import T0, incident, make_node

# One user per role; the names show up as `recorded_by` in a case's history.
USERS = {
    Role.PARALEGAL: "thandi",
    Role.SUPERVISOR: "naledi",
    Role.AUDITOR: "kagiso",
    Role.ADMIN: "mpho",
}
ROLES = tuple(r.value for r in USERS)
NO_TOKEN = "no token"
WRONG_TOKEN = "wrong token"
PRINCIPALS = (*ROLES, NO_TOKEN, WRONG_TOKEN)

ORG = "Legal Aid Botswana"
REFERRAL_ID = "legal-1"

# The earlier changes each step needs (keys of Lifecycle.changes), in order.
PREREQUISITES: dict[str, tuple[str, ...]] = {
    "first-response": (),
    "referral-made": ("consent-given",),
    "referral-accepted": ("consent-given", "referral-made"),
    "referral-declined": ("consent-given", "referral-made"),
    "referral-completed": ("consent-given", "referral-made", "referral-accepted"),
    "police-report": ("police-consent",),
    "police-response": ("police-consent", "police-report"),
    "court-case": (),
    "court-judgment": ("court-case",),
    "court-withdrawal": ("court-case",),
    "consent-given": (),
    "consent-withdrawn": ("consent-given",),
    "consent-correction": (),
    "close": (),
}

# Who takes each step in the tests (the supervisor-only steps need the supervisor).
STEP_ROLE = {path: Role.PARALEGAL for path in PREREQUISITES} | {
    "consent-correction": Role.SUPERVISOR,
    "close": Role.SUPERVISOR,
}


def changes(marker: str) -> dict[str, Any]:
    """One valid change per step (plus "police-consent"); personal fields carry `marker`."""
    h = timedelta(hours=1)
    return {
        "first-response": FirstResponseGiven(
            responded_at=T0 + 3 * h,
            responder_role=ResponderRole.PEER_EDUCATOR,
            responder=f"Responder {marker}",
        ),
        "consent-given": ConsentGiven(
            purpose=ConsentPurpose.REFERRAL, organisation=ORG, given_at=T0 + 3 * h
        ),
        "referral-made": ReferralMade(
            referral_id=REFERRAL_ID,
            service=ServiceType.LEGAL_AID,
            made_at=T0 + 4 * h,
            to_organisation=ORG,
            note=f"Referral note {marker}",
        ),
        "referral-accepted": ReferralAccepted(referral_id=REFERRAL_ID, accepted_at=T0 + 5 * h),
        "referral-declined": ReferralDeclined(
            referral_id=REFERRAL_ID,
            declined_at=T0 + 5 * h,
            reason=ReferralDeclineReason.SERVICE_UNAVAILABLE,
        ),
        "referral-completed": ReferralCompleted(
            referral_id=REFERRAL_ID,
            completed_at=T0 + 30 * 24 * h,
            outcome=ReferralOutcome.SERVICE_RECEIVED,
        ),
        "police-consent": ConsentGiven(purpose=ConsentPurpose.POLICE_REPORT, given_at=T0 + 5 * h),
        "police-report": PoliceReportFiled(filed_at=T0 + 6 * h, district="BW-Gaborone"),
        "police-response": PoliceResponded(
            responded_at=T0 + 7 * h,
            response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN,
            case_number=f"CR {marker}",
        ),
        "court-case": CourtCaseOpened(
            opened_at=T0 + 60 * 24 * h, district="BW-Gaborone", strategic_litigation=True
        ),
        "court-judgment": CourtJudgmentGiven(
            judged_at=T0 + 200 * 24 * h, judgment=CourtJudgment.WON
        ),
        "court-withdrawal": CourtCaseWithdrawn(
            withdrawn_at=T0 + 100 * 24 * h, reason=CourtWithdrawalReason.FEAR_OF_RETALIATION
        ),
        "consent-withdrawn": ConsentWithdrawn(
            purpose=ConsentPurpose.REFERRAL, organisation=ORG, withdrawn_at=T0 + 8 * h
        ),
        "consent-correction": ConsentCorrected(
            purpose=ConsentPurpose.REGIONAL_STATISTICS,
            given=True,
            corrected_at=T0 + 8 * h,
            reason=ConsentCorrectionReason.RECORDED_IN_ERROR,
        ),
        "close": CaseClosed(closed_at=T0 + 300 * 24 * h, reason=ClosureReason.RESOLVED),
    }


# Every step of a case's life, in an order the rules allow, on one case (the court case is
# judged here; withdrawal needs a case of its own).
FULL_LIFE = (
    "first-response",
    "consent-given",
    "referral-made",
    "referral-accepted",
    "referral-completed",
    "police-consent",
    "police-report",
    "police-response",
    "court-case",
    "court-judgment",
    "consent-withdrawn",
    "consent-correction",
    "close",
)


def as_json(change: msgspec.Struct) -> dict[str, Any]:
    out = msgspec.to_builtins(change)
    assert isinstance(out, dict)
    return out


def update(version: int, change: msgspec.Struct) -> dict[str, Any]:
    return {"expected_version": version, "change": as_json(change)}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Lifecycle:
    """Puts fresh cases on a node, directly (not over HTTP), right before a given step."""

    node: Node
    marker: str = field(default_factory=lambda: f"mk-{uuid.uuid4().hex}")

    @property
    def changes(self) -> dict[str, Any]:
        return changes(self.marker)

    def incident(self, **overrides: object) -> IncidentReported:
        return incident(self.marker, **overrides)

    def new_case(self, **overrides: object) -> UUID:
        return self.node.cases.report_incident(self.incident(**overrides), "setup").case_id

    def record(self, case_id: UUID, *steps: str) -> int:
        """Records `steps` (keys of `changes`) in order; returns the case's version."""
        state = self.node.cases.state(case_id)
        for step in steps:
            state = self.node.cases.record_change(
                case_id, state.version, self.changes[step], "setup"
            )
        return state.version

    def body(self, version: int, step: str, **overrides: object) -> dict[str, Any]:
        """The JSON body of `step` (an Update) for a case at `version`."""
        change = msgspec.structs.replace(self.changes[step], **overrides)
        return update(version, change)

    def ready_for(self, step: str) -> tuple[UUID, int]:
        """A new case on which `step` is allowed next, and its version."""
        case_id = self.new_case()
        return case_id, self.record(case_id, *PREREQUISITES[step])

    def full_case(self) -> tuple[UUID, int]:
        """A closed case that went through every step: a marker in every personal field."""
        case_id = self.new_case()
        return case_id, self.record(case_id, *FULL_LIFE)

    @property
    def personal_values(self) -> list[str]:
        """Every personal value this helper writes (each contains the marker)."""
        c = self.changes
        i = self.incident()
        return [
            i.survivor_name,
            i.survivor_contact or "",
            i.narrative,
            c["first-response"].responder,
            c["referral-made"].note or "",
            c["police-response"].case_number or "",
        ]


@dataclass(frozen=True)
class Snapshot:
    """Everything stored in the node's logs: equal snapshots mean nothing was written."""

    cases_max: int
    cases: tuple[tuple[object, ...], ...]
    admin_max: int
    admin: tuple[tuple[object, ...], ...]
    inbound_max: int
    inbound: tuple[tuple[object, ...], ...]


def _rows(recorder: Any) -> tuple[tuple[object, ...], ...]:
    return tuple(
        (n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state))
        for n in recorder.select_notifications(start=None, limit=1_000_000)
    )


def snapshot(node: Node) -> Snapshot:
    return Snapshot(
        node.cases.recorder.max_notification_id(),
        _rows(node.cases.recorder),
        node.admin.recorder.max_notification_id(),
        _rows(node.admin.recorder),
        node.inbound.recorder.max_notification_id(),
        _rows(node.inbound.recorder),
    )


class Principals:
    """Request headers for each role's user, no token, or a token the node never issued."""

    def __init__(self, node: Node) -> None:
        self.tokens = {
            role.value: node.add_user(name, role, "test") for role, name in USERS.items()
        }

    def token(self, role: str) -> str:
        return self.tokens[role]

    def headers(self, who: str) -> dict[str, str]:
        if who == NO_TOKEN:
            return {}
        if who == WRONG_TOKEN:
            return bearer("hx_" + "A" * 43)
        return bearer(self.tokens[who])

    def name(self, who: str) -> str:
        return USERS[Role(who)]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path / "node")
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def app(node: Node) -> FastAPI:
    return create_app(node)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def principals(node: Node) -> Principals:
    return Principals(node)


@pytest.fixture
def lifecycle(node: Node) -> Lifecycle:
    return Lifecycle(node)


@pytest.fixture
def snap(node: Node) -> Callable[[], Snapshot]:
    """`snap()`: both logs as stored now; compare two to prove nothing was written."""
    return lambda: snapshot(node)


# The same, one node per test module: for tests that make many requests on a shared node.


@pytest.fixture(scope="module")
def module_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("api") / "node")
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="module")
def module_app(module_node: Node) -> FastAPI:
    return create_app(module_node)


@pytest.fixture(scope="module")
def module_client(module_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(module_app) as c:
        yield c


@pytest.fixture(scope="module")
def module_principals(module_node: Node) -> Principals:
    return Principals(module_node)


@pytest.fixture(scope="module")
def module_lifecycle(module_node: Node) -> Lifecycle:
    return Lifecycle(module_node)


@pytest.fixture(scope="module")
def module_snap(module_node: Node) -> Callable[[], Snapshot]:
    return lambda: snapshot(module_node)
