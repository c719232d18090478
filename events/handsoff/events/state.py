"""The case as a pure fold over its changes: `check` says whether a change is allowed now,
`apply` returns the next state, `fold` replays a whole history.

The state holds no personal data, so it can back list views and statistics directly.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TypeAlias
from uuid import UUID

import msgspec

from handsoff.events.case import (
    CaseChange,
    CaseClosed,
    ConsentCorrected,
    ConsentGiven,
    ConsentWithdrawn,
    CourtCaseOpened,
    CourtCaseWithdrawn,
    CourtJudgmentGiven,
    FirstResponseGiven,
    IncidentReported,
    PoliceReportFiled,
    PoliceResponded,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
)
from handsoff.events.codes import (
    AgeBand,
    CaseStatus,
    ClosureReason,
    ConsentPurpose,
    Country,
    CourtJudgment,
    CourtStatus,
    CourtWithdrawalReason,
    GbvimsCoreType,
    Gender,
    LocationType,
    PerpetratorCategory,
    PoliceResponse,
    ReferralDeclineReason,
    ReferralDetail,
    ReferralOutcome,
    ReferralStatus,
    ResponderRole,
    ServiceType,
    ViolenceType,
)
from handsoff.events.errors import CaseRuleViolation, EventsError
from handsoff.events.rules import checked


class IncidentSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The non-personal part of the incident report."""

    occurred_at: datetime
    country: Country
    district: str
    violence_types: tuple[ViolenceType, ...]
    gbvims_type: GbvimsCoreType
    perpetrators: tuple[PerpetratorCategory, ...]
    perpetrator_count: int | None
    location_type: LocationType
    survivor_age_band: AgeBand
    survivor_gender: Gender


class Referral(msgspec.Struct, frozen=True, kw_only=True):
    service: ServiceType
    to_organisation: str
    made_at: datetime
    status: ReferralStatus = ReferralStatus.MADE
    decline_reason: ReferralDeclineReason | None = None
    outcome: ReferralOutcome | None = None
    to_partner: str | None = None


class PoliceReport(msgspec.Struct, frozen=True, kw_only=True):
    """The latest police report; response None means it still waits for one."""

    filed_at: datetime
    district: str
    response: PoliceResponse | None = None
    responded_at: datetime | None = None


class CourtCase(msgspec.Struct, frozen=True, kw_only=True):
    opened_at: datetime
    district: str
    strategic_litigation: bool
    status: CourtStatus = CourtStatus.OPEN
    judgment: CourtJudgment | None = None
    withdrawal_reason: CourtWithdrawalReason | None = None


# (purpose, organisation): organisation is set for referral consent only.
ConsentKey: TypeAlias = tuple[ConsentPurpose, str | None]


class CaseState(msgspec.Struct, frozen=True, kw_only=True):
    """A case after `version` changes. In memory only (consent keys are tuples)."""

    case_id: UUID
    version: int
    status: CaseStatus
    incident: IncidentSummary
    reported_at: datetime
    first_response_at: datetime | None = None
    first_response_role: ResponderRole | None = None
    referrals: Mapping[str, Referral] = msgspec.field(default_factory=dict)
    police: PoliceReport | None = None
    court: CourtCase | None = None
    consents: Mapping[ConsentKey, bool] = msgspec.field(default_factory=dict)
    # organisation -> the details the survivor agreed to share with it (referral consent)
    referral_details: Mapping[str, tuple[ReferralDetail, ...]] = msgspec.field(default_factory=dict)
    closed_at: datetime | None = None
    closed_reason: ClosureReason | None = None


def has_consent(state: CaseState, purpose: ConsentPurpose, organisation: str | None = None) -> bool:
    """Whether the survivor's consent for this purpose is in force. Default: no consent."""
    return state.consents.get((purpose, organisation), False)


def check(state: CaseState | None, change: CaseChange) -> None:
    """Raises CaseRuleViolation (InvalidChange for a schema breach) unless allowed now."""
    checked(state, change)


# --- apply ---------------------------------------------------------------------------------


def _opened(case_id: UUID, change: IncidentReported) -> CaseState:
    incident = IncidentSummary(
        occurred_at=change.occurred_at,
        country=change.country,
        district=change.district,
        violence_types=tuple(change.violence_types),
        gbvims_type=change.gbvims_type,
        perpetrators=tuple(change.perpetrators),
        perpetrator_count=change.perpetrator_count,
        location_type=change.location_type,
        survivor_age_band=change.survivor_age_band,
        survivor_gender=change.survivor_gender,
    )
    return CaseState(
        case_id=case_id,
        version=1,
        status=CaseStatus.OPEN,
        incident=incident,
        reported_at=change.reported_at,
    )


def _with_referral(state: CaseState, rid: str, referral: Referral) -> dict[str, object]:
    return {"referrals": {**state.referrals, rid: referral}}


def _with_consent(state: CaseState, key: ConsentKey, given: bool) -> dict[str, object]:
    return {"consents": {**state.consents, key: given}}


def _consented(state: CaseState, change: ConsentGiven) -> dict[str, object]:
    updates = _with_consent(state, (change.purpose, change.organisation), True)
    if change.organisation is not None:
        details = {**state.referral_details, change.organisation: tuple(change.details)}
        updates["referral_details"] = details
    return updates


def _referral_after(
    state: CaseState, change: ReferralAccepted | ReferralDeclined | ReferralCompleted
) -> Referral:
    referral = state.referrals[change.referral_id]
    replace = msgspec.structs.replace
    match change:
        case ReferralAccepted():
            return replace(referral, status=ReferralStatus.ACCEPTED)
        case ReferralDeclined():
            return replace(referral, status=ReferralStatus.DECLINED, decline_reason=change.reason)
        case ReferralCompleted():
            return replace(referral, status=ReferralStatus.COMPLETED, outcome=change.outcome)


def _updates(state: CaseState, change: CaseChange) -> dict[str, object]:
    """The fields that `change` sets; maps are copied, never mutated (states are shared)."""
    replace = msgspec.structs.replace
    match change:
        case FirstResponseGiven():
            return {
                "first_response_at": change.responded_at,
                "first_response_role": change.responder_role,
            }
        case ReferralMade():
            referral = Referral(
                service=change.service,
                to_organisation=change.to_organisation,
                made_at=change.made_at,
                to_partner=change.to_partner,
            )
            return _with_referral(state, change.referral_id, referral)
        case ReferralAccepted() | ReferralDeclined() | ReferralCompleted():
            return _with_referral(state, change.referral_id, _referral_after(state, change))
        case PoliceReportFiled():
            return {"police": PoliceReport(filed_at=change.filed_at, district=change.district)}
        case PoliceResponded() if state.police is not None:
            return {
                "police": replace(
                    state.police, response=change.response, responded_at=change.responded_at
                )
            }
        case CourtCaseOpened():
            return {
                "court": CourtCase(
                    opened_at=change.opened_at,
                    district=change.district,
                    strategic_litigation=change.strategic_litigation,
                )
            }
        case CourtJudgmentGiven() if state.court is not None:
            return {
                "court": replace(state.court, status=CourtStatus.JUDGED, judgment=change.judgment)
            }
        case CourtCaseWithdrawn() if state.court is not None:
            return {
                "court": replace(
                    state.court, status=CourtStatus.WITHDRAWN, withdrawal_reason=change.reason
                )
            }
        case ConsentGiven():
            return _consented(state, change)
        case ConsentWithdrawn(purpose=purpose, organisation=organisation):
            return _with_consent(state, (purpose, organisation), False)
        case ConsentCorrected(purpose=purpose, organisation=organisation, given=given):
            return _with_consent(state, (purpose, organisation), given)
        case CaseClosed():
            return {
                "status": CaseStatus.CLOSED,
                "closed_at": change.closed_at,
                "closed_reason": change.reason,
            }
    raise EventsError(f"{type(change).__name__} cannot be applied here")  # check() forbids it


def apply(state: CaseState | None, case_id: UUID, change: CaseChange) -> CaseState:
    """The state after `change`; raises CaseRuleViolation if `check` does not allow it."""
    change = checked(state, change)
    if state is None:
        assert isinstance(change, IncidentReported)  # checked() guarantees it
        return _opened(case_id, change)
    if state.case_id != case_id:
        raise EventsError(f"a change for case {case_id} cannot apply to case {state.case_id}")
    return msgspec.structs.replace(state, version=state.version + 1, **_updates(state, change))


def fold(case_id: UUID, changes: Iterable[CaseChange]) -> CaseState:
    """The state of a case after all its changes, each checked in order."""
    state: CaseState | None = None
    for change in changes:
        state = apply(state, case_id, change)
    if state is None:
        raise CaseRuleViolation("a case needs at least its incident report")
    return state
