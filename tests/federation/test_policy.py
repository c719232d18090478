"""The share policy: only consented cases leave, late consent releases the backlog in order,
a withdrawal retracts once and for good, no personal data ever leaves, replay is identical."""

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any
from uuid import UUID

import msgspec
import pytest

from handsoff.events import (
    CASE_CHANGES,
    AgeBand,
    CaseChange,
    CaseClosed,
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
    CourtWithdrawalReason,
    FirstResponseGiven,
    Gender,
    IncidentReported,
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
    ResponderRole,
    ServiceType,
    ViolenceType,
    personal_fields,
)
from handsoff.federation.errors import FederationError, ShareRefused
from handsoff.federation.policy import SHARED_AS, SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.shared import (
    SHARED_TYPES,
    SharedEvent,
    SharedFirstResponse,
    SharedIncident,
    SharedPoliceResponse,
    SharedReferralAccepted,
    SharedReferralCompleted,
    SharedReferralMade,
    SharedRetraction,
    encode,
)

PARTNER = "sisonke-bw"
KEY = bytes(range(32))
CASE = UUID("6f1c2b1e-0000-4000-8000-00000000000a")
OTHER_CASE = UUID("6f1c2b1e-0000-4000-8000-00000000000b")
# 00:30 on 1 April in Gaborone: the incident counts in April although it is March in UTC.
T0 = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)
CLINIC = "Gaborone Women's Clinic"
P = ConsentPurpose


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def policy(key: bytes = KEY) -> SharePolicy:
    return SharePolicy(PARTNER, Pseudonymiser(key))


def incident(**fields: Any) -> IncidentReported:
    values: dict[str, Any] = {
        "occurred_at": T0,
        "reported_at": at(1),
        "country": Country.BW,
        "district": "BW-Gaborone",
        "violence_types": [ViolenceType.RAPE, ViolenceType.EXTORTION_OR_BRIBERY],
        "perpetrators": [PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT],
        "perpetrator_count": 2,
        "location_type": LocationType.POLICE_STATION_OR_CELL,
        "survivor_age_band": AgeBand.AGE_25_29,
        "survivor_gender": Gender.TRANS_WOMAN,
        "survivor_name": "Lesedi",
        "survivor_contact": "+267 71 000 000",
        "narrative": "Held overnight at the station.",
    }
    return IncidentReported(**(values | fields))


def consent(purpose: ConsentPurpose, when: datetime, organisation: str | None = None) -> Any:
    return ConsentGiven(purpose=purpose, given_at=when, organisation=organisation)


def withdraw(purpose: ConsentPurpose, when: datetime, organisation: str | None = None) -> Any:
    return ConsentWithdrawn(purpose=purpose, withdrawn_at=when, organisation=organisation)


def lifecycle() -> list[CaseChange]:
    """A case through every shared step, without consent to regional statistics."""
    return [
        incident(),
        FirstResponseGiven(
            responded_at=at(1 + 3.49), responder_role=ResponderRole.PARALEGAL, responder="Kgosi"
        ),
        consent(P.REFERRAL, at(5), CLINIC),
        ReferralMade(
            referral_id="clinic-ref-1",
            service=ServiceType.HEALTH_PEP,
            made_at=at(6),
            to_organisation=CLINIC,
        ),
        ReferralAccepted(referral_id="clinic-ref-1", accepted_at=at(7)),
        ReferralCompleted(
            referral_id="clinic-ref-1",
            completed_at=at(6 + 49.5),
            outcome=ReferralOutcome.SERVICE_RECEIVED,
        ),
        consent(P.POLICE_REPORT, at(8)),
        PoliceReportFiled(filed_at=at(10), district="BW-Gaborone"),
        PoliceResponded(responded_at=at(30), response=PoliceResponse.REFUSED),
        PoliceReportFiled(filed_at=datetime(2026, 5, 2, 9, tzinfo=UTC), district="BW-Mogoditshane"),
        PoliceResponded(
            responded_at=datetime(2026, 5, 3, 9, tzinfo=UTC),
            response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN,
            case_number="CR 114/05/2026",
        ),
        CourtCaseOpened(
            opened_at=datetime(2026, 5, 10, tzinfo=UTC),
            district="BW-Gaborone",
            strategic_litigation=True,
        ),
        CourtJudgmentGiven(
            judged_at=datetime(2026, 9, 1, 8, tzinfo=UTC), judgment=CourtJudgment.WON
        ),
    ]


def feed(p: SharePolicy, changes: Iterable[CaseChange], case: UUID = CASE) -> list[SharedEvent]:
    return [event for change in changes for event in p.process(case, change)]


def summary(events: Iterable[SharedEvent]) -> list[tuple[str, str, object]]:
    """(type, month, duration or code) of each event: what the tests compare."""
    out: list[tuple[str, str, object]] = []
    for e in events:
        detail: object = None
        match e:
            case SharedFirstResponse():
                detail = e.hours_to_first_response
            case SharedReferralCompleted():
                detail = (e.service, e.outcome, e.hours_to_complete)
            case SharedReferralMade() | SharedReferralAccepted():
                detail = e.service
            case SharedPoliceResponse():
                detail = e.response
            case SharedIncident():
                detail = (tuple(e.violence_types), e.gbvims_type, tuple(e.perpetrators))
        out.append((type(e).__name__, getattr(e, "month", ""), detail))
    return out


EXPECTED_LIFECYCLE = [
    (
        "SharedIncident",
        "2026-04",
        (
            (ViolenceType.RAPE, ViolenceType.EXTORTION_OR_BRIBERY),
            "rape",
            (PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT,),
        ),
    ),
    ("SharedFirstResponse", "2026-04", 3),  # 3 h 29 min after the report
    ("SharedReferralMade", "2026-04", ServiceType.HEALTH_PEP),
    ("SharedReferralAccepted", "2026-04", ServiceType.HEALTH_PEP),
    (
        "SharedReferralCompleted",
        "2026-04",
        (ServiceType.HEALTH_PEP, ReferralOutcome.SERVICE_RECEIVED, 50),  # 49 h 30 min
    ),
    ("SharedPoliceReportFiled", "2026-04", None),
    ("SharedPoliceResponse", "2026-04", PoliceResponse.REFUSED),
    ("SharedPoliceReportFiled", "2026-05", None),
    ("SharedPoliceResponse", "2026-05", PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN),
    ("SharedCourtCaseOpened", "2026-05", None),
    ("SharedCourtJudgment", "2026-09", None),
]

LATER = datetime(2026, 10, 5, tzinfo=UTC)  # after every step of lifecycle()


# --- consent --------------------------------------------------------------------------------


def test_nothing_leaves_without_consent_to_regional_statistics() -> None:
    p = policy()
    for n, change in enumerate(lifecycle(), start=1):
        assert p.process(CASE, change) == []
        assert p.backlog_size(CASE) == len([c for c in lifecycle()[:n] if SHARED_AS[type(c)]])
    assert p.backlog_size(CASE) == len(EXPECTED_LIFECYCLE)
    assert not p.is_retracted(CASE)


def test_late_consent_releases_the_backlog_in_order_with_the_steps_months_and_durations() -> None:
    p = policy()
    assert feed(p, lifecycle()) == []
    released = p.process(CASE, consent(P.REGIONAL_STATISTICS, LATER))
    assert summary(released) == EXPECTED_LIFECYCLE  # months of the steps, not of the consent
    assert p.backlog_size(CASE) == 0
    # From now on changes are shared as they come, and the backlog is not released again.
    closed = p.process(CASE, CaseClosed(closed_at=LATER, reason=ClosureReason.RESOLVED))
    assert closed == []  # closures are not shared
    assert p.backlog_size(CASE) == 0


def test_consent_early_shares_each_step_as_it_comes() -> None:
    p = policy()
    changes = lifecycle()
    out = feed(p, [changes[0], consent(P.REGIONAL_STATISTICS, at(2)), *changes[1:]])
    assert summary(out) == EXPECTED_LIFECYCLE
    assert p.backlog_size(CASE) == 0


def test_same_result_whenever_consent_comes() -> None:
    changes = lifecycle()
    results = set()
    for i in range(1, len(changes) + 1):
        p = policy()
        given = max(
            getattr(c, f) for c in changes[:i] for f in c.__struct_fields__ if f.endswith("_at")
        )
        out = feed(p, [*changes[:i], consent(P.REGIONAL_STATISTICS, given), *changes[i:]])
        results.add(b"\n".join(encode(e) for e in out))
    assert len(results) == 1


def test_a_correction_to_given_releases_the_backlog() -> None:
    p = policy()
    feed(p, lifecycle())
    corrected = ConsentCorrected(
        purpose=P.REGIONAL_STATISTICS,
        given=True,
        corrected_at=LATER,
        reason=ConsentCorrectionReason.RECORDED_IN_ERROR,
    )
    assert summary(p.process(CASE, corrected)) == EXPECTED_LIFECYCLE


def test_withdrawal_after_sharing_retracts_once_and_for_good() -> None:
    p = policy()
    changes = lifecycle()
    shared = feed(p, [*changes[:4], consent(P.REGIONAL_STATISTICS, at(6.5))])
    assert len(shared) == 3
    retraction = p.process(CASE, withdraw(P.REGIONAL_STATISTICS, at(6.6)))
    assert retraction == [SharedRetraction(partner=PARTNER, case=Pseudonymiser(KEY).case(CASE))]
    assert {e.case for e in shared} == {retraction[0].case}  # it names what was shared
    assert p.is_retracted(CASE)
    # Nothing more, whatever happens: later steps, consent again, corrections, closure.
    after = [
        *changes[4:8],
        consent(P.REGIONAL_STATISTICS, at(9)),
        *changes[8:],
        withdraw(P.REGIONAL_STATISTICS, LATER),
        ConsentCorrected(
            purpose=P.REGIONAL_STATISTICS,
            given=True,
            corrected_at=LATER,
            reason=ConsentCorrectionReason.SURVIVOR_CLARIFIED,
        ),
        CaseClosed(closed_at=LATER, reason=ClosureReason.SURVIVOR_REQUEST),
    ]
    for change in after:
        assert p.process(CASE, change) == []
        assert p.backlog_size(CASE) == 0
        assert p.is_retracted(CASE)


def test_a_correction_to_not_given_retracts() -> None:
    p = policy()
    feed(p, [incident(), consent(P.REGIONAL_STATISTICS, at(1))])
    corrected = ConsentCorrected(
        purpose=P.REGIONAL_STATISTICS,
        given=False,
        corrected_at=at(2),
        reason=ConsentCorrectionReason.RECORDED_IN_ERROR,
    )
    assert [type(e) for e in p.process(CASE, corrected)] == [SharedRetraction]
    assert feed(p, lifecycle()[1:]) == []


def test_withdrawal_can_come_after_closure_and_still_retracts() -> None:
    p = policy()
    feed(p, [incident(), consent(P.REGIONAL_STATISTICS, at(1))])
    assert p.process(CASE, CaseClosed(closed_at=at(2), reason=ClosureReason.RESOLVED)) == []
    assert [type(e) for e in p.process(CASE, withdraw(P.REGIONAL_STATISTICS, at(3)))] == [
        SharedRetraction
    ]


def test_a_case_never_consented_leaves_nothing_and_its_backlog_goes_at_closure() -> None:
    # Under the case rules consent can only be withdrawn once given (which released at least
    # the incident); "withdrawn before anything was shared" is a case that never consented.
    p = policy()
    steps = [
        *lifecycle(),
        withdraw(P.REFERRAL, LATER, CLINIC),
        withdraw(P.POLICE_REPORT, LATER),
    ]
    assert feed(p, steps) == []
    assert p.backlog_size(CASE) == len(EXPECTED_LIFECYCLE)
    assert p.process(CASE, CaseClosed(closed_at=LATER, reason=ClosureReason.OTHER)) == []
    assert p.backlog_size(CASE) == 0  # a closed case cannot be given consent: it can never leave
    with pytest.raises(ShareRefused, match="case is closed"):
        p.process(CASE, consent(P.REGIONAL_STATISTICS, LATER))
    assert not p.is_retracted(CASE)


def test_withdrawing_consent_never_given_is_refused_and_changes_nothing() -> None:
    p = policy()
    feed(p, lifecycle()[:2])
    with pytest.raises(ShareRefused, match="not currently given"):
        p.process(CASE, withdraw(P.REGIONAL_STATISTICS, at(5)))
    assert p.backlog_size(CASE) == 2
    assert not p.is_retracted(CASE)
    assert len(p.process(CASE, consent(P.REGIONAL_STATISTICS, at(5)))) == 2


def test_consent_for_other_purposes_is_never_shared_nor_retracts() -> None:
    p = policy()
    out = feed(
        p,
        [
            incident(),
            consent(P.REGIONAL_STATISTICS, at(1)),
            consent(P.REFERRAL, at(2), CLINIC),
            withdraw(P.REFERRAL, at(3), CLINIC),
            consent(P.POLICE_REPORT, at(4)),
            ConsentCorrected(
                purpose=P.POLICE_REPORT,
                given=False,
                corrected_at=at(5),
                reason=ConsentCorrectionReason.OTHER,
            ),
        ],
    )
    assert [type(e) for e in out] == [SharedIncident]
    assert not p.is_retracted(CASE)


def test_cases_are_independent() -> None:
    p = policy()
    a, b = lifecycle(), lifecycle()
    assert p.process(CASE, a[0]) == []
    assert p.process(OTHER_CASE, b[0]) == []
    assert len(p.process(OTHER_CASE, consent(P.REGIONAL_STATISTICS, at(1)))) == 1
    assert p.process(CASE, a[1]) == []
    assert len(p.process(OTHER_CASE, b[1])) == 1
    assert (p.backlog_size(CASE), p.backlog_size(OTHER_CASE)) == (2, 0)
    pseudonyms = Pseudonymiser(KEY)
    assert p.process(OTHER_CASE, withdraw(P.REGIONAL_STATISTICS, at(6)))[0].case == (
        pseudonyms.case(OTHER_CASE)
    )
    assert not p.is_retracted(CASE)
    assert [e.case for e in p.process(CASE, consent(P.REGIONAL_STATISTICS, at(6)))] == [
        pseudonyms.case(CASE)
    ] * 2


# --- durations ------------------------------------------------------------------------------


def test_a_response_before_the_report_counts_as_zero_hours() -> None:
    p = policy()
    feed(p, [incident(reported_at=at(5)), consent(P.REGIONAL_STATISTICS, at(5))])
    first = FirstResponseGiven(
        responded_at=at(0.5), responder_role=ResponderRole.PEER_EDUCATOR, responder="On the spot"
    )
    (shared,) = p.process(CASE, first)
    assert isinstance(shared, SharedFirstResponse)
    assert shared.hours_to_first_response == 0


def test_referral_ids_and_organisations_stay_on_the_node() -> None:
    p = policy()
    out = feed(p, [incident(), consent(P.REGIONAL_STATISTICS, at(1)), *lifecycle()[2:6]])
    made = [e for e in out if isinstance(e, SharedReferralMade)]
    assert [e.referral for e in made] == [Pseudonymiser(KEY).referral(CASE, "clinic-ref-1")]
    raw = b"".join(encode(e) for e in out)
    assert b"clinic-ref-1" not in raw
    assert CLINIC.encode() not in raw
    assert b"Gaborone" not in raw  # neither the clinic nor the district


# --- errors ---------------------------------------------------------------------------------


def test_a_change_the_rules_refuse_changes_nothing() -> None:
    p = policy()
    changes = lifecycle()
    feed(p, changes[:2])
    with pytest.raises(ShareRefused, match="first response was already recorded"):
        p.process(CASE, changes[1])
    with pytest.raises(ShareRefused, match="must start with its incident report"):
        p.process(OTHER_CASE, changes[1])
    with pytest.raises(ShareRefused):
        p.process(CASE, "incident_reported/1")  # type: ignore[arg-type]
    assert p.backlog_size(CASE) == 2
    assert p.backlog_size(OTHER_CASE) == 0
    assert summary(feed(p, [consent(P.REGIONAL_STATISTICS, at(5)), *changes[2:]])) == (
        EXPECTED_LIFECYCLE
    )


def test_every_case_change_has_a_share_rule() -> None:
    assert set(SHARED_AS) == set(CASE_CHANGES)
    assert {t for t in SHARED_AS.values() if t is not None} | {SharedRetraction} == set(
        SHARED_TYPES
    )


@pytest.mark.parametrize("partner", ["", "Sisonke", "sisonke bw", "sisonke-bw\n", "a" * 33])
def test_partner_must_be_a_subject_token(partner: str) -> None:
    with pytest.raises(FederationError):
        SharePolicy(partner, Pseudonymiser(KEY))


# --- determinism ----------------------------------------------------------------------------


def interleaved() -> list[tuple[UUID, CaseChange]]:
    a, b = lifecycle(), lifecycle()
    out: list[tuple[UUID, CaseChange]] = []
    for i in range(len(a)):
        out.append((CASE, a[i]))
        out.append((OTHER_CASE, b[i]))
        if i == 3:
            out.append((OTHER_CASE, consent(P.REGIONAL_STATISTICS, at(6))))
    out.append((CASE, consent(P.REGIONAL_STATISTICS, LATER)))
    out.append((OTHER_CASE, withdraw(P.REGIONAL_STATISTICS, LATER)))
    return out


def run(p: SharePolicy, log: list[tuple[UUID, CaseChange]]) -> list[bytes]:
    return [encode(e) for case, change in log for e in p.process(case, change)]


def test_replaying_the_same_log_gives_byte_identical_messages() -> None:
    log = interleaved()
    first, replay = run(policy(), log), run(policy(), log)
    assert first == replay
    assert len(first) == 2 * len(EXPECTED_LIFECYCLE) + 1
    # Replaying a decoded copy of the log (as a relay does after a crash) changes nothing.
    decoder = msgspec.json.Decoder(CaseChange)
    copied = [(c, decoder.decode(msgspec.json.encode(ch))) for c, ch in log]
    assert run(policy(), copied) == first


def test_another_node_key_changes_only_the_pseudonyms() -> None:
    log = interleaved()
    mine, theirs = run(policy(), log), run(policy(bytes(32)), log)
    assert mine != theirs
    strip = ("case", "referral")

    def without_pseudonyms(raw: bytes) -> dict[str, Any]:
        return {k: v for k, v in msgspec.json.decode(raw).items() if k not in strip}

    assert [without_pseudonyms(r) for r in mine] == [without_pseudonyms(r) for r in theirs]


# --- the canary: no personal field ever leaves ----------------------------------------------


def _markers() -> Iterator[str]:
    for n in count():
        yield f"Canary{n:03d}Qz"


def _marked(change: CaseChange, markers: Iterator[str], seen: list[str]) -> CaseChange:
    fields = {name: next(markers) for name in sorted(personal_fields(type(change)))}
    seen.extend(fields.values())
    return msgspec.structs.replace(change, **fields)


def canary_log() -> tuple[list[tuple[UUID, CaseChange]], list[str]]:
    """Two cases that between them make every kind of case change, every personal field of
    each holding a unique marker; organisation names and referral ids are markers too."""
    org = "Canary Clinic Org Zq"
    ref, ref2 = "canary-ref-zq1", "canary-ref-zq2"
    a: list[CaseChange] = [
        incident(),
        consent(P.REGIONAL_STATISTICS, at(1)),
        FirstResponseGiven(responded_at=at(2), responder_role=ResponderRole.STAFF, responder="x"),
        consent(P.REFERRAL, at(3), org),
        ReferralMade(
            referral_id=ref, service=ServiceType.LEGAL_AID, made_at=at(4), to_organisation=org
        ),
        ReferralAccepted(referral_id=ref, accepted_at=at(5)),
        ReferralCompleted(
            referral_id=ref, completed_at=at(6), outcome=ReferralOutcome.NOT_RECEIVED
        ),
        ReferralMade(
            referral_id=ref2, service=ServiceType.SHELTER, made_at=at(7), to_organisation=org
        ),
        ReferralDeclined(
            referral_id=ref2, declined_at=at(8), reason=ReferralDeclineReason.SERVICE_REFUSED
        ),
        consent(P.POLICE_REPORT, at(9)),
        PoliceReportFiled(filed_at=at(10), district="BW-Canary-Zq"),
        PoliceResponded(
            responded_at=at(11), response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN, case_number="x"
        ),
        CourtCaseOpened(opened_at=at(12), district="BW-Canary-Zq2"),
        CourtCaseWithdrawn(withdrawn_at=at(13), reason=CourtWithdrawalReason.FEAR_OF_RETALIATION),
        withdraw(P.REFERRAL, at(14), org),
        CaseClosed(closed_at=at(15), reason=ClosureReason.RESOLVED),
        withdraw(P.REGIONAL_STATISTICS, at(16)),
    ]
    b: list[CaseChange] = [
        incident(district="BW-CanaryTown-Zq"),
        ConsentCorrected(
            purpose=P.REGIONAL_STATISTICS,
            given=True,
            corrected_at=at(1),
            reason=ConsentCorrectionReason.SURVIVOR_CLARIFIED,
        ),
        CourtCaseOpened(opened_at=at(2), district="BW-Canary-Zq3", strategic_litigation=True),
        CourtJudgmentGiven(judged_at=at(3), judgment=CourtJudgment.LOST),
    ]
    markers, seen = _markers(), [org, ref, ref2, "Canary-Zq", "CanaryTown"]
    log = [(CASE, _marked(c, markers, seen)) for c in a]
    log += [(OTHER_CASE, _marked(c, markers, seen)) for c in b]
    return log, seen


def test_canary_log_covers_every_change_type_and_personal_field() -> None:
    log, seen = canary_log()
    assert {type(c) for _, c in log} == set(CASE_CHANGES)
    marked = {name for _, c in log for name in personal_fields(type(c)) if getattr(c, name) in seen}
    assert marked == {name for t in CASE_CHANGES for name in personal_fields(t)}


def test_no_personal_data_ever_leaves() -> None:
    log, markers = canary_log()
    p = policy()
    sent = run(p, log)
    assert {msgspec.json.decode(raw)["type"].split("/")[0] for raw in sent} == {
        t.__struct_config__.tag.split("/")[0]
        for t in SHARED_TYPES  # type: ignore[union-attr]
    }
    everything = b"\n".join(sent).lower()
    for marker in markers:
        assert marker.lower().encode() not in everything, marker
    for case in (CASE, OTHER_CASE):
        assert str(case).encode() not in everything
        assert case.hex.encode() not in everything


def test_process_encoded_gives_the_events_and_exactly_the_bytes_encode_gives() -> None:
    # The relay publishes these bytes: they must be encode() of the events, byte for byte.
    log, _ = canary_log()
    with_bytes, plain = policy(), policy()
    pairs = [pair for case, change in log for pair in with_bytes.process_encoded(case, change)]
    events = [event for case, change in log for event in plain.process(case, change)]
    assert [event for event, _ in pairs] == events
    assert [raw for _, raw in pairs] == [encode(event) for event in events]
    assert {type(event) for event in events} == set(SHARED_TYPES)
