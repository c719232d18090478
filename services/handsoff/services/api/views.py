"""What the API returns: case views (no personal data unless the history is asked for)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, cast
from uuid import UUID

import msgspec
from fastapi import Path

from handsoff.events import (
    CaseChange,
    CaseState,
    ConsentPurpose,
    Country,
    PerpetratorCategory,
    ViolenceType,
)
from handsoff.events.codes import CaseStatus, ResponderRole
from handsoff.events.inbound import InboundChange, InboundState
from handsoff.events.state import CourtCase, IncidentSummary, PoliceReport, Referral
from handsoff.keys import Keyring
from handsoff.services.api.bodies import KeyView
from handsoff.services.node.admin import UserName
from handsoff.services.node.cases import SealInfo
from handsoff.services.node.store import Recorded

USER_NAME_PATH = Path(pattern=msgspec.inspect.type_info(UserName).pattern)  # type: ignore[attr-defined]


class CaseStatusFilter(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Consent(msgspec.Struct, frozen=True):
    purpose: ConsentPurpose
    organisation: str | None
    given: bool


class CaseView(msgspec.Struct, frozen=True, kw_only=True):
    """A case's current state: codes, dates and statuses, never personal data."""

    case_id: UUID
    version: int
    status: CaseStatus
    incident: IncidentSummary
    reported_at: datetime
    first_response_at: datetime | None
    first_response_role: ResponderRole | None
    referrals: dict[str, Referral]
    police: PoliceReport | None
    court: CourtCase | None
    consents: list[Consent]
    closed_at: datetime | None
    closed_reason: str | None


class HistoryEntry(msgspec.Struct, frozen=True):
    version: int
    recorded_at: datetime
    recorded_by: str
    change: CaseChange


class CaseDetail(msgspec.Struct, frozen=True):
    """The case and every change, personal data included (paralegals and supervisors)."""

    case: CaseView
    history: list[HistoryEntry]


class CaseList(msgspec.Struct, frozen=True):
    total: int
    offset: int
    limit: int
    cases: list[CaseView]


class SealList(msgspec.Struct, frozen=True):
    case_id: UUID
    seals: list[SealInfo]


def case_view(s: CaseState) -> CaseView:
    consents = [Consent(p, org, given) for (p, org), given in s.consents.items()]
    return CaseView(
        case_id=s.case_id,
        version=s.version,
        status=s.status,
        incident=s.incident,
        reported_at=s.reported_at,
        first_response_at=s.first_response_at,
        first_response_role=s.first_response_role,
        referrals=dict(s.referrals),
        police=s.police,
        court=s.court,
        consents=consents,
        closed_at=s.closed_at,
        closed_reason=s.closed_reason.value if s.closed_reason else None,
    )


def detail(state: CaseState, history: list[Recorded]) -> CaseDetail:
    entries = [
        HistoryEntry(r.originator_version, r.recorded_at, r.recorded_by, cast(CaseChange, r.change))
        for r in history
    ]
    return CaseDetail(case_view(state), entries)


def case_filter(
    status: CaseStatusFilter | None,
    country: Country | None,
    district: str | None,
    violence_type: ViolenceType | None,
    perpetrator: PerpetratorCategory | None,
    reported_from: datetime | None,
    reported_to: datetime | None,
) -> Callable[[CaseState], bool]:
    tests: list[Callable[[CaseState], bool]] = []
    if status is not None:
        tests.append(lambda s: s.status.value == status.value)
    if country is not None:
        tests.append(lambda s: s.incident.country == country)
    if district is not None:
        tests.append(lambda s: s.incident.district == district)
    if violence_type is not None:
        tests.append(lambda s: violence_type in s.incident.violence_types)
    if perpetrator is not None:
        tests.append(lambda s: perpetrator in s.incident.perpetrators)
    if reported_from is not None:
        tests.append(lambda s: _after(s.reported_at, reported_from))
    if reported_to is not None:
        tests.append(lambda s: not _after(s.reported_at, reported_to))
    return lambda s: all(t(s) for t in tests)


def _after(t: datetime, bound: datetime) -> bool:
    # A naive bound is read as UTC rather than refused: it only narrows a search.
    from datetime import UTC

    if bound.tzinfo is None:
        bound = bound.replace(tzinfo=UTC)
    return t >= bound


def key_views(ring: Keyring) -> list[KeyView]:
    return [
        KeyView(
            r.kid,
            r.public_key.hex(),
            r.activated_at.isoformat(),
            r.retired_at.isoformat() if r.retired_at else None,
            r.predecessor,
        )
        for r in ring.keys
    ]


__all__: list[Any] = []


class InboundView(msgspec.Struct, frozen=True, kw_only=True):
    """A referral received from another partner (no personal data)."""

    referral_id: UUID
    version: int
    from_partner: str
    service: str
    made_at: datetime
    received_at: datetime
    status: str


class InboundEntry(msgspec.Struct, frozen=True):
    version: int
    recorded_at: datetime
    recorded_by: str
    change: InboundChange


class InboundDetail(msgspec.Struct, frozen=True):
    """An inbound referral with the details the survivor agreed to share with us."""

    referral: InboundView
    history: list[InboundEntry]


class InboundList(msgspec.Struct, frozen=True):
    referrals: list[InboundView]


def inbound_view(referral_id: UUID, s: InboundState) -> InboundView:
    return InboundView(
        referral_id=referral_id,
        version=s.version,
        from_partner=s.from_partner,
        service=s.service.value,
        made_at=s.made_at,
        received_at=s.received_at,
        status=s.status.value,
    )


def inbound_detail(
    referral_id: UUID, state: InboundState, history: list[Recorded]
) -> InboundDetail:
    entries = [
        InboundEntry(
            r.originator_version, r.recorded_at, r.recorded_by, cast(InboundChange, r.change)
        )
        for r in history
    ]
    return InboundDetail(inbound_view(referral_id, state), entries)
