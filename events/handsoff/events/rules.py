"""The rules of a case: which change is allowed in which state, and why not.

Rules only read the state; `handsoff.events.state` applies what they allow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from handsoff.events.case import (
    CASE_CHANGES,
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
    CaseStatus,
    ConsentPurpose,
    CourtStatus,
    PerpetratorCategory,
    PoliceResponse,
    ReferralStatus,
    ViolenceType,
)
from handsoff.events.errors import CaseRuleViolation, InvalidChange

if TYPE_CHECKING:
    from handsoff.events.state import CaseState, ConsentKey

_DECODERS = {t: msgspec.json.Decoder(t) for t in CASE_CHANGES}
_ENCODER = msgspec.json.Encoder()

# The time each change happened, which may not be before the incident itself.
_TIME_FIELD: dict[type, str] = {
    IncidentReported: "reported_at",
    FirstResponseGiven: "responded_at",
    ReferralMade: "made_at",
    ReferralAccepted: "accepted_at",
    ReferralDeclined: "declined_at",
    ReferralCompleted: "completed_at",
    PoliceReportFiled: "filed_at",
    PoliceResponded: "responded_at",
    CourtCaseOpened: "opened_at",
    CourtJudgmentGiven: "judged_at",
    CourtCaseWithdrawn: "withdrawn_at",
    ConsentGiven: "given_at",
    ConsentWithdrawn: "withdrawn_at",
    ConsentCorrected: "corrected_at",
    CaseClosed: "closed_at",
}


def _validated(change: CaseChange) -> CaseChange:
    """The change as decoded from its own bytes: Struct constructors validate nothing, so a
    change built in code is checked like one from the wire, and its codes become enum members.
    """
    decoder = _DECODERS.get(type(change))
    if decoder is None:
        raise InvalidChange(f"{type(change).__name__} is not a case change")
    try:
        return decoder.decode(_ENCODER.encode(change))
    except (msgspec.MsgspecError, TypeError) as e:
        raise InvalidChange(f"invalid {type(change).__name__}: {e}") from None


def _check_incident(change: IncidentReported) -> None:
    if change.reported_at < change.occurred_at:
        raise CaseRuleViolation("reported_at is before the incident occurred")
    if not change.district.startswith(change.country.value + "-"):
        raise CaseRuleViolation(f"district {change.district!r} is not in {change.country.value}")
    _no_repeats("violence type", change.violence_types)
    if ViolenceType.NON_GBV in change.violence_types and len(change.violence_types) > 1:
        raise CaseRuleViolation("non_gbv cannot be combined with other violence types")
    _no_repeats("perpetrator category", change.perpetrators)
    count, kinds = change.perpetrator_count, len(change.perpetrators)
    if count is not None and count < kinds:  # each category listed is at least one person
        raise CaseRuleViolation(f"perpetrator_count {count} is less than the {kinds} categories")


def _no_repeats(what: str, values: list[ViolenceType] | list[PerpetratorCategory]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise CaseRuleViolation(f"{what} {v.value!r} is listed twice")
        seen.add(v)


def _consent_key(purpose: ConsentPurpose, organisation: str | None) -> ConsentKey:
    if purpose == ConsentPurpose.REFERRAL and organisation is None:
        raise CaseRuleViolation("consent to referral must name the organisation")
    if purpose != ConsentPurpose.REFERRAL and organisation is not None:
        raise CaseRuleViolation(f"consent for {purpose.value} names no organisation")
    return (purpose, organisation)


def _describe(key: ConsentKey) -> str:
    purpose, organisation = key
    return f"referral to {organisation!r}" if organisation else purpose.value


def _takes_consent_away(change: CaseChange) -> bool:
    # Consent can be withdrawn at any time, even after closure: closed cases still count
    # in published statistics, and a withdrawal must reach them.
    return isinstance(change, ConsentWithdrawn) or (
        isinstance(change, ConsentCorrected) and not change.given
    )


def checked(state: CaseState | None, change: CaseChange) -> CaseChange:
    """`change`, validated and normalised, if allowed now; else raises CaseRuleViolation."""
    change = _validated(change)
    if state is None:
        if not isinstance(change, IncidentReported):
            raise CaseRuleViolation("a case must start with its incident report")
        _check_incident(change)
        return change
    if isinstance(change, IncidentReported):
        raise CaseRuleViolation("the incident of this case was already reported")
    if state.status == CaseStatus.CLOSED and not _takes_consent_away(change):
        raise CaseRuleViolation("case is closed")
    field = _TIME_FIELD[type(change)]
    if getattr(change, field) < state.incident.occurred_at:
        raise CaseRuleViolation(f"{field} is before the incident occurred")
    _check_step(state, change)
    return change


def _check_step(state: CaseState, change: CaseChange) -> None:
    match change:
        case FirstResponseGiven() if state.first_response_at is not None:
            raise CaseRuleViolation("the first response was already recorded")
        case ReferralMade() | ReferralAccepted() | ReferralDeclined() | ReferralCompleted():
            _check_referral(state, change)
        case PoliceReportFiled():
            _check_police_report(state)
        case PoliceResponded():
            _check_police_response(state, change)
        case CourtCaseOpened() | CourtJudgmentGiven() | CourtCaseWithdrawn():
            _check_court(state, change)
        case ConsentGiven() | ConsentWithdrawn() | ConsentCorrected():
            _check_consent(state, change)
        case _:
            pass


def _check_referral(
    state: CaseState, change: ReferralMade | ReferralAccepted | ReferralDeclined | ReferralCompleted
) -> None:
    rid = change.referral_id
    if isinstance(change, ReferralMade):
        if rid in state.referrals:
            raise CaseRuleViolation(f"referral {rid!r} was already made")
        # Referring shares the survivor's details: only with consent for that organisation.
        if not state.consents.get((ConsentPurpose.REFERRAL, change.to_organisation), False):
            raise CaseRuleViolation(
                f"referral to {change.to_organisation!r} needs the survivor's consent to "
                "referral to that organisation first"
            )
        return
    if rid not in state.referrals:
        raise CaseRuleViolation(f"referral {rid!r} was never made")
    status = state.referrals[rid].status
    if isinstance(change, ReferralCompleted):
        if status != ReferralStatus.ACCEPTED:
            raise CaseRuleViolation(
                f"referral {rid!r} is {status.value}: only an accepted one can be completed"
            )
    elif status != ReferralStatus.MADE:
        raise CaseRuleViolation(f"referral {rid!r} was already {status.value}")


def _check_police_report(state: CaseState) -> None:
    if not state.consents.get((ConsentPurpose.POLICE_REPORT, None), False):
        raise CaseRuleViolation("a police report needs the survivor's consent to report first")
    # Filing again is allowed after a refusal: survivors are sent to another station.
    if state.police is None:
        return
    if state.police.response is None:
        raise CaseRuleViolation("a police report is already waiting for a response")
    if state.police.response == PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN:
        raise CaseRuleViolation("police already accepted a report of this case")


def _check_police_response(state: CaseState, change: PoliceResponded) -> None:
    if state.police is None:
        raise CaseRuleViolation("police response needs a police report first")
    if state.police.response is not None:
        raise CaseRuleViolation("police already responded to this report")
    accepted = change.response == PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN
    if accepted and change.case_number is None:
        raise CaseRuleViolation("accepted_case_number_given needs the case number")
    if not accepted and change.case_number is not None:
        raise CaseRuleViolation(f"a case number cannot come with {change.response.value}")


def _check_court(
    state: CaseState, change: CourtCaseOpened | CourtJudgmentGiven | CourtCaseWithdrawn
) -> None:
    if isinstance(change, CourtCaseOpened):
        if state.court is not None:
            raise CaseRuleViolation("a court case was already opened")
    elif state.court is None:
        raise CaseRuleViolation("there is no court case")
    elif state.court.status != CourtStatus.OPEN:
        raise CaseRuleViolation(f"the court case was already {state.court.status.value}")


def _check_consent(
    state: CaseState, change: ConsentGiven | ConsentWithdrawn | ConsentCorrected
) -> None:
    key = _consent_key(change.purpose, change.organisation)
    if isinstance(change, ConsentGiven) and change.details:
        if change.purpose != ConsentPurpose.REFERRAL:
            raise CaseRuleViolation("details to share go with consent to a referral only")
        if len(set(change.details)) != len(change.details):
            raise CaseRuleViolation("a detail to share is listed twice")
    now = state.consents.get(key, False)
    if isinstance(change, ConsentGiven) and now:
        raise CaseRuleViolation(f"consent for {_describe(key)} is already given")
    if isinstance(change, ConsentWithdrawn) and not now:
        raise CaseRuleViolation(f"consent for {_describe(key)} is not currently given")
    if isinstance(change, ConsentCorrected) and now == change.given:
        word = "given" if now else "not given"
        raise CaseRuleViolation(f"consent for {_describe(key)} is already recorded as {word}")
