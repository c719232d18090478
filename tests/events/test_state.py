"""The case as a fold: every rule of check() with a change it allows and one it refuses."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from handsoff.events import (
    AgeBand,
    CaseChange,
    CaseClosed,
    CaseRuleViolation,
    CaseState,
    CaseStatus,
    ClosureReason,
    ConsentCorrected,
    ConsentCorrectionReason,
    ConsentGiven,
    ConsentPurpose,
    ConsentWithdrawn,
    Country,
    CourtCaseOpened,
    CourtCaseWithdrawn,
    CourtJudgment,
    CourtJudgmentGiven,
    CourtStatus,
    CourtWithdrawalReason,
    EventsError,
    FirstResponseGiven,
    GbvimsCoreType,
    Gender,
    IncidentReported,
    InvalidChange,
    LocationType,
    PerpetratorCategory,
    PoliceReportFiled,
    PoliceResponded,
    PoliceResponse,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralDeclineReason,
    ReferralMade,
    ReferralOutcome,
    ReferralStatus,
    ResponderRole,
    ServiceType,
    ViolenceType,
    apply,
    check,
    fold,
    has_consent,
)

CASE = UUID("6f1c2b1e-0000-4000-8000-000000000001")
T0 = datetime(2025, 3, 1, 22, 0, tzinfo=UTC)
P = ConsentPurpose


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def incident(**changes: Any) -> IncidentReported:
    fields: dict[str, Any] = {
        "occurred_at": T0,
        "reported_at": at(1),
        "country": Country.MZ,
        "district": "MZ-MPM-KaMpfumo",
        "violence_types": [ViolenceType.RAPE, ViolenceType.NON_PAYMENT],
        "perpetrators": [PerpetratorCategory.CLIENT],
        "perpetrator_count": 1,
        "location_type": LocationType.CLIENT_RESIDENCE,
        "survivor_age_band": AgeBand.AGE_18_24,
        "survivor_gender": Gender.FEMALE,
        "survivor_name": "Ana",
        "survivor_contact": "+258 84 000 0000",
        "narrative": "Client refused to pay and raped her.",
    }
    return IncidentReported(**(fields | changes))


# Referrals and police reports need consent first; most tests are about something else,
# so their cases start with both consents given (tests of the consent rules use bare()).
CONSENTED: tuple[CaseChange, ...] = ()


def bare(*changes: CaseChange) -> CaseState:
    return fold(CASE, [incident(), *changes])


def after(*changes: CaseChange) -> CaseState:
    return fold(CASE, [incident(), *CONSENTED, *changes])


def refused(state: CaseState | None, change: CaseChange, match: str) -> None:
    with pytest.raises(CaseRuleViolation, match=match):
        check(state, change)


def allowed(state: CaseState | None, change: CaseChange) -> CaseState:
    check(state, change)
    return apply(state, CASE, change)


def response(hours: float = 2) -> FirstResponseGiven:
    return FirstResponseGiven(
        responded_at=at(hours), responder_role=ResponderRole.PEER_EDUCATOR, responder="Rosa"
    )


def referral(rid: str = "pep-1", hours: float = 2) -> ReferralMade:
    return ReferralMade(
        referral_id=rid, service=ServiceType.HEALTH_PEP, made_at=at(hours), to_organisation="HCM"
    )


def accepted(rid: str = "pep-1") -> ReferralAccepted:
    return ReferralAccepted(referral_id=rid, accepted_at=at(3))


def declined(rid: str = "pep-1") -> ReferralDeclined:
    return ReferralDeclined(
        referral_id=rid, declined_at=at(3), reason=ReferralDeclineReason.SERVICE_UNAVAILABLE
    )


def completed(rid: str = "pep-1") -> ReferralCompleted:
    return ReferralCompleted(
        referral_id=rid, completed_at=at(4), outcome=ReferralOutcome.SERVICE_RECEIVED
    )


def filed() -> PoliceReportFiled:
    return PoliceReportFiled(filed_at=at(5), district="MZ-MPM-KaMpfumo")


def police(answer: PoliceResponse, case_number: str | None = None) -> PoliceResponded:
    return PoliceResponded(responded_at=at(6), response=answer, case_number=case_number)


ACCEPTED = PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN


def court_opened() -> CourtCaseOpened:
    return CourtCaseOpened(opened_at=at(100), district="MZ-MPM-KaMpfumo")


def judged() -> CourtJudgmentGiven:
    return CourtJudgmentGiven(judged_at=at(200), judgment=CourtJudgment.WON)


def withdrawn() -> CourtCaseWithdrawn:
    return CourtCaseWithdrawn(withdrawn_at=at(200), reason=CourtWithdrawalReason.OTHER)


def consent(purpose: ConsentPurpose, organisation: str | None = None) -> ConsentGiven:
    return ConsentGiven(purpose=purpose, given_at=at(1), organisation=organisation)


def withdrawal(purpose: ConsentPurpose, organisation: str | None = None) -> ConsentWithdrawn:
    return ConsentWithdrawn(purpose=purpose, withdrawn_at=at(7), organisation=organisation)


def correction(
    purpose: ConsentPurpose, given: bool, organisation: str | None = None
) -> ConsentCorrected:
    return ConsentCorrected(
        purpose=purpose,
        organisation=organisation,
        given=given,
        corrected_at=at(8),
        reason=ConsentCorrectionReason.RECORDED_IN_ERROR,
    )


def closed() -> CaseClosed:
    return CaseClosed(closed_at=at(300), reason=ClosureReason.RESOLVED)


CONSENTED = (consent(P.REFERRAL, "HCM"), consent(P.POLICE_REPORT))


def test_a_referral_needs_consent_for_that_organisation() -> None:
    refused(bare(), referral(), "needs the survivor's consent to referral")
    refused(bare(consent(P.REFERRAL, "Other")), referral(), "consent to referral")
    allowed(bare(consent(P.REFERRAL, "HCM")), referral())
    withdrawn_consent = bare(consent(P.REFERRAL, "HCM"), withdrawal(P.REFERRAL, "HCM"))
    refused(withdrawn_consent, referral(hours=8), "consent to referral")


def test_a_police_report_needs_consent_to_report() -> None:
    refused(bare(), filed(), "needs the survivor's consent to report")
    allowed(bare(consent(P.POLICE_REPORT)), filed())


# --- the first change ---------------------------------------------------------------------


def test_a_case_starts_with_its_incident_report() -> None:
    refused(None, response(), "must start with its incident report")
    state = allowed(None, incident())
    assert state.version == 1
    assert state.status is CaseStatus.OPEN


def test_the_incident_is_reported_only_once() -> None:
    refused(after(), incident(), "already reported")


def test_reported_at_is_not_before_the_incident() -> None:
    refused(None, incident(reported_at=T0 - timedelta(seconds=1)), "reported_at is before")
    allowed(None, incident(reported_at=T0))


def test_district_lies_in_the_country() -> None:
    refused(None, incident(district="ZA-GT-JHB"), "district 'ZA-GT-JHB' is not in MZ")
    allowed(None, incident(country=Country.ZA, district="ZA-GT-JHB"))


def test_violence_types_are_not_repeated() -> None:
    twice = [ViolenceType.ROBBERY, ViolenceType.RAPE, ViolenceType.ROBBERY]
    refused(None, incident(violence_types=twice), "violence type 'robbery' is listed twice")
    allowed(None, incident(violence_types=[ViolenceType.ROBBERY, ViolenceType.RAPE]))


def test_non_gbv_stands_alone() -> None:
    refused(None, incident(violence_types=[ViolenceType.NON_GBV, ViolenceType.ROBBERY]), "non_gbv")
    state = allowed(None, incident(violence_types=[ViolenceType.NON_GBV]))
    assert state.incident.gbvims_type is GbvimsCoreType.NON_GBV


def test_perpetrators_are_not_repeated() -> None:
    twice = [PerpetratorCategory.CLIENT, PerpetratorCategory.CLIENT]
    refused(None, incident(perpetrators=twice), "perpetrator category 'client' is listed twice")


def test_perpetrator_count_covers_the_categories_listed() -> None:
    two = [PerpetratorCategory.CLIENT, PerpetratorCategory.SECURITY_GUARD_OR_BOUNCER]
    refused(None, incident(perpetrators=two, perpetrator_count=1), "perpetrator_count 1")
    allowed(None, incident(perpetrators=two, perpetrator_count=2))
    allowed(None, incident(perpetrators=two, perpetrator_count=None))


# --- times --------------------------------------------------------------------------------

# Each change type, the changes it needs first, and a builder taking its time.
TIMED: list[tuple[str, list[CaseChange], Callable[[datetime], CaseChange]]] = [
    ("responded_at", [], lambda t: FirstResponseGiven(
        responded_at=t, responder_role=ResponderRole.STAFF, responder="Rosa")),
    ("made_at", [consent(P.REFERRAL, "Casa")], lambda t: ReferralMade(
        referral_id="r", service=ServiceType.SHELTER, made_at=t, to_organisation="Casa")),
    ("accepted_at", [referral("r")], lambda t: ReferralAccepted(referral_id="r", accepted_at=t)),
    ("declined_at", [referral("r")], lambda t: ReferralDeclined(
        referral_id="r", declined_at=t, reason=ReferralDeclineReason.OTHER)),
    ("completed_at", [referral("r"), accepted("r")], lambda t: ReferralCompleted(
        referral_id="r", completed_at=t, outcome=ReferralOutcome.NOT_RECEIVED)),
    ("filed_at", [], lambda t: PoliceReportFiled(filed_at=t, district="MZ-MPM-KaMpfumo")),
    ("responded_at", [filed()], lambda t: PoliceResponded(
        responded_at=t, response=PoliceResponse.REFUSED)),
    ("opened_at", [], lambda t: CourtCaseOpened(opened_at=t, district="MZ-MPM-KaMpfumo")),
    ("judged_at", [court_opened()], lambda t: CourtJudgmentGiven(
        judged_at=t, judgment=CourtJudgment.LOST)),
    ("withdrawn_at", [court_opened()], lambda t: CourtCaseWithdrawn(
        withdrawn_at=t, reason=CourtWithdrawalReason.SURVIVOR_WITHDREW)),
    ("given_at", [], lambda t: ConsentGiven(purpose=P.REGIONAL_STATISTICS, given_at=t)),
    ("withdrawn_at", [], lambda t: ConsentWithdrawn(
        purpose=P.POLICE_REPORT, withdrawn_at=t)),
    ("corrected_at", [], lambda t: ConsentCorrected(
        purpose=P.POLICE_REPORT, given=False, corrected_at=t,
        reason=ConsentCorrectionReason.SURVIVOR_CLARIFIED)),
    ("closed_at", [], lambda t: CaseClosed(closed_at=t, reason=ClosureReason.DUPLICATE)),
]  # fmt: skip


def test_every_change_type_after_the_incident_has_a_time_case() -> None:
    types = {type(make(T0)) for _, _, make in TIMED}
    assert len(types) == 14
    assert IncidentReported not in types


@pytest.mark.parametrize(
    ("field", "before", "make"), TIMED, ids=[type(m(T0)).__name__ for _, _, m in TIMED]
)
def test_no_change_is_dated_before_the_incident(
    field: str, before: list[CaseChange], make: Callable[[datetime], CaseChange]
) -> None:
    state = after(*before)
    refused(state, make(T0 - timedelta(minutes=1)), f"{field} is before the incident occurred")
    allowed(state, make(T0))


def test_times_in_other_zones_compare_as_instants() -> None:
    sast = timezone(timedelta(hours=2))
    # 23:30 in Maputo is 21:30 UTC: before the 22:00 UTC incident; 00:30 next day is after.
    before = datetime(2025, 3, 1, 23, 30, tzinfo=sast)
    refused(after(), response_at(before), "responded_at is before the incident")
    allowed(after(), response_at(datetime(2025, 3, 2, 0, 30, tzinfo=sast)))


def response_at(when: datetime) -> FirstResponseGiven:
    return FirstResponseGiven(
        responded_at=when, responder_role=ResponderRole.PARALEGAL, responder="Rosa"
    )


# --- first response -----------------------------------------------------------------------


def test_first_response_is_recorded_once() -> None:
    state = allowed(after(), response(2))
    assert state.first_response_at == at(2)
    assert state.first_response_role is ResponderRole.PEER_EDUCATOR
    refused(state, response(3), "first response was already recorded")


# --- referrals ----------------------------------------------------------------------------


def test_referral_ids_are_unique_within_the_case() -> None:
    state = allowed(after(), referral("pep-1"))
    refused(state, referral("pep-1"), "referral 'pep-1' was already made")
    allowed(state, referral("legal-1"))


def test_accept_or_decline_needs_a_referral_that_was_made() -> None:
    refused(after(), accepted("ref-1"), "referral 'ref-1' was never made")
    refused(after(), declined("ref-1"), "referral 'ref-1' was never made")
    allowed(after(referral()), accepted())
    allowed(after(referral()), declined())


def test_only_a_pending_referral_is_accepted_or_declined() -> None:
    refused(after(referral(), accepted()), declined(), "'pep-1' was already accepted")
    refused(after(referral(), declined()), accepted(), "'pep-1' was already declined")
    refused(after(referral(), accepted()), accepted(), "'pep-1' was already accepted")


def test_only_an_accepted_referral_is_completed() -> None:
    refused(after(), completed("x"), "referral 'x' was never made")
    refused(after(referral()), completed(), "'pep-1' is made: only an accepted one")
    refused(after(referral(), declined()), completed(), "'pep-1' is declined")
    state = allowed(after(referral(), accepted()), completed())
    refused(state, completed(), "'pep-1' is completed")


def test_referral_lifecycle_in_state() -> None:
    state = after(referral("pep-1"), referral("legal-1"), accepted("pep-1"), declined("legal-1"))
    assert state.referrals["pep-1"].status is ReferralStatus.ACCEPTED
    assert state.referrals["legal-1"].decline_reason is ReferralDeclineReason.SERVICE_UNAVAILABLE
    state = apply(state, CASE, completed("pep-1"))
    assert state.referrals["pep-1"].status is ReferralStatus.COMPLETED
    assert state.referrals["pep-1"].outcome is ReferralOutcome.SERVICE_RECEIVED
    assert state.referrals["pep-1"].service is ServiceType.HEALTH_PEP


# --- police -------------------------------------------------------------------------------


def test_police_response_needs_a_police_report_first() -> None:
    refused(after(), police(PoliceResponse.REFUSED), "police response needs a police report")
    allowed(after(filed()), police(PoliceResponse.REFUSED))


def test_police_respond_once_to_a_report() -> None:
    state = after(filed(), police(PoliceResponse.PERPETRATOR_WAS_POLICE))
    refused(state, police(PoliceResponse.REFUSED), "police already responded")


def test_case_number_comes_exactly_with_an_accepted_report() -> None:
    state = after(filed())
    refused(state, police(ACCEPTED), "needs the case number")
    refused(state, police(PoliceResponse.REFUSED, "CR 1/25"), "cannot come with refused")
    done = allowed(state, police(ACCEPTED, "CR 1/25"))
    assert done.police is not None
    assert done.police.response is ACCEPTED


def test_a_refused_report_may_be_filed_again_elsewhere() -> None:
    refused(after(filed()), filed(), "already waiting for a response")
    allowed(after(filed(), police(PoliceResponse.REFUSED)), filed())
    allowed(after(filed(), police(PoliceResponse.PERPETRATOR_WAS_POLICE)), filed())
    refused(after(filed(), police(ACCEPTED, "CR 1/25")), filed(), "already accepted")


# --- court --------------------------------------------------------------------------------


def test_judgment_and_withdrawal_need_a_court_case() -> None:
    refused(after(), judged(), "no court case")
    refused(after(), withdrawn(), "no court case")
    ends: list[tuple[CaseChange, CourtStatus]] = [
        (judged(), CourtStatus.JUDGED),
        (withdrawn(), CourtStatus.WITHDRAWN),
    ]
    for change, status in ends:
        court = allowed(after(court_opened()), change).court
        assert court is not None
        assert court.status is status


def test_a_court_case_ends_once() -> None:
    refused(after(court_opened(), judged()), judged(), "court case was already judged")
    refused(after(court_opened(), judged()), withdrawn(), "court case was already judged")
    refused(after(court_opened(), withdrawn()), judged(), "court case was already withdrawn")


def test_a_court_case_is_opened_once() -> None:
    refused(after(court_opened()), court_opened(), "court case was already opened")


def test_strategic_litigation_is_kept() -> None:
    change = CourtCaseOpened(opened_at=at(9), district="MZ-MPM-X", strategic_litigation=True)
    state = allowed(after(), change)
    assert state.court is not None
    assert state.court.strategic_litigation is True


# --- consent ------------------------------------------------------------------------------


def test_default_is_no_consent() -> None:
    state = bare()
    assert not any(has_consent(state, p) for p in ConsentPurpose)
    assert not has_consent(state, P.REFERRAL, "HCM")


def test_consent_to_referral_names_the_organisation() -> None:
    refused(bare(), consent(P.REFERRAL), "must name the organisation")
    state = allowed(bare(), consent(P.REFERRAL, "HCM"))
    assert has_consent(state, P.REFERRAL, "HCM")
    assert not has_consent(state, P.REFERRAL, "Other clinic")


def test_other_consents_name_no_organisation() -> None:
    refused(bare(), consent(P.POLICE_REPORT, "HCM"), "police_report names no organisation")
    refused(bare(), withdrawal(P.REGIONAL_STATISTICS, "HCM"), "names no organisation")
    refused(bare(), correction(P.REGIONAL_STATISTICS, True, "HCM"), "names no organisation")
    assert has_consent(allowed(bare(), consent(P.POLICE_REPORT)), P.POLICE_REPORT)


def test_consent_is_given_once_until_withdrawn() -> None:
    state = bare(consent(P.REGIONAL_STATISTICS))
    refused(state, consent(P.REGIONAL_STATISTICS), "already given")
    state = allowed(state, withdrawal(P.REGIONAL_STATISTICS))
    assert not has_consent(state, P.REGIONAL_STATISTICS)
    assert has_consent(allowed(state, consent(P.REGIONAL_STATISTICS)), P.REGIONAL_STATISTICS)


def test_only_consent_in_force_is_withdrawn() -> None:
    refused(bare(), withdrawal(P.REGIONAL_STATISTICS), "not currently given")
    refused(bare(consent(P.REFERRAL, "HCM")), withdrawal(P.REFERRAL, "Other"), "'Other'")
    state = allowed(bare(consent(P.REFERRAL, "HCM")), withdrawal(P.REFERRAL, "HCM"))
    assert not has_consent(state, P.REFERRAL, "HCM")


def test_a_correction_must_change_the_record() -> None:
    refused(bare(), correction(P.POLICE_REPORT, False), "already recorded as not given")
    refused(bare(consent(P.POLICE_REPORT)), correction(P.POLICE_REPORT, True), "as given")
    state = allowed(bare(consent(P.POLICE_REPORT)), correction(P.POLICE_REPORT, False))
    assert not has_consent(state, P.POLICE_REPORT)
    assert has_consent(allowed(bare(), correction(P.POLICE_REPORT, True)), P.POLICE_REPORT)


# --- closure ------------------------------------------------------------------------------


def test_nothing_but_taking_consent_away_happens_after_closure() -> None:
    state = after(consent(P.REGIONAL_STATISTICS), closed())
    assert state.status == CaseStatus.CLOSED
    assert state.closed_reason is ClosureReason.RESOLVED
    not_now: list[CaseChange] = [
        response(),
        referral(),
        filed(),
        court_opened(),
        closed(),
        consent(P.REFERRAL, "HCM"),
        correction(P.REFERRAL, True, "HCM"),
    ]
    for change in not_now:
        refused(state, change, "case is closed")
    # Closed cases still count in published statistics: a withdrawal must still reach them.
    state = allowed(state, withdrawal(P.REGIONAL_STATISTICS))
    state = allowed(state, correction(P.POLICE_REPORT, False))
    assert not has_consent(state, P.REGIONAL_STATISTICS)
    assert not has_consent(state, P.POLICE_REPORT)


def test_closing_with_open_referrals_is_allowed() -> None:
    state = allowed(after(referral()), closed())
    assert state.referrals["pep-1"].status is ReferralStatus.MADE


# --- validation of changes built in code --------------------------------------------------


def test_a_naive_datetime_built_in_code_is_refused() -> None:
    naive = FirstResponseGiven(
        responded_at=datetime(2025, 3, 2, 1, 0),
        responder_role=ResponderRole.STAFF,
        responder="Rosa",
    )
    with pytest.raises(InvalidChange, match=r"timezone.*\$\.responded_at"):
        check(after(), naive)


def test_a_schema_breach_built_in_code_is_refused() -> None:
    with pytest.raises(InvalidChange, match=r"\$\.district"):
        check(None, incident(district="Maputo, Rua 5"))
    with pytest.raises(InvalidChange, match="not a case change"):
        check(None, msgspec.Struct())  # type: ignore[arg-type]


def test_plain_strings_built_in_code_become_codes_in_state() -> None:
    change = incident(violence_types=["robbery"], country="MZ")
    state = apply(None, CASE, change)
    assert state.incident.violence_types == (ViolenceType.ROBBERY,)
    assert type(state.incident.country) is Country


# --- apply and fold -----------------------------------------------------------------------


def test_apply_leaves_the_earlier_state_untouched() -> None:
    first = after(referral("a"), consent(P.REGIONAL_STATISTICS))
    second = apply(first, CASE, referral("b"))
    third = apply(second, CASE, withdrawal(P.REGIONAL_STATISTICS))
    assert set(first.referrals) == {"a"}
    assert has_consent(second, P.REGIONAL_STATISTICS)
    assert not has_consent(third, P.REGIONAL_STATISTICS)
    assert (first.version, second.version, third.version) == (5, 6, 7)


def test_a_refused_change_is_not_applied() -> None:
    with pytest.raises(CaseRuleViolation, match="never made"):
        apply(after(), CASE, accepted("nope"))


def test_apply_keeps_changes_to_their_own_case() -> None:
    with pytest.raises(EventsError, match="cannot apply to case"):
        apply(after(), uuid4(), response())


def test_fold_needs_at_least_the_incident() -> None:
    with pytest.raises(CaseRuleViolation, match="at least its incident report"):
        fold(CASE, [])


def test_a_whole_case() -> None:
    state = bare(
        response(0.5),
        consent(P.REFERRAL, "HCM"),
        referral("pep-1"),
        accepted("pep-1"),
        completed("pep-1"),
        consent(P.POLICE_REPORT),
        filed(),
        police(ACCEPTED, "CR 88/03/2025"),
        court_opened(),
        judged(),
        consent(P.REGIONAL_STATISTICS),
        withdrawal(P.REGIONAL_STATISTICS),
        closed(),
    )
    assert state.case_id == CASE
    assert state.version == 14
    assert state.reported_at == at(1)
    assert state.first_response_at == at(0.5)
    assert state.incident.gbvims_type is GbvimsCoreType.RAPE
    assert state.incident.district == "MZ-MPM-KaMpfumo"
    assert state.referrals["pep-1"].status is ReferralStatus.COMPLETED
    assert state.court is not None
    assert state.court.judgment is CourtJudgment.WON
    assert dict(state.consents) == {
        (P.REFERRAL, "HCM"): True,
        (P.POLICE_REPORT, None): True,
        (P.REGIONAL_STATISTICS, None): False,
    }
    assert state.closed_at == at(300)
    for personal in ["Ana", "+258", "refused to pay", "Rosa", "CR 88"]:
        assert personal not in repr(state)
