"""Case change payloads: pinned topics, JSON round trips, and what decoding rejects."""

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from handsoff.events import (
    CASE_CHANGES,
    TOPIC_PREFIX,
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
    EventsError,
    FirstResponseGiven,
    GbvimsCoreType,
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
    change_type_of,
    topic_of,
)

# Stored topics: changing any of these strands events already stored. Never edit; add.
PINNED_TOPICS = [
    "handsoff.case:incident_reported/1",
    "handsoff.case:first_response_given/1",
    "handsoff.case:referral_made/1",
    "handsoff.case:referral_accepted/1",
    "handsoff.case:referral_declined/1",
    "handsoff.case:referral_completed/1",
    "handsoff.case:police_report_filed/1",
    "handsoff.case:police_responded/1",
    "handsoff.case:court_case_opened/1",
    "handsoff.case:court_judgment_given/1",
    "handsoff.case:court_case_withdrawn/1",
    "handsoff.case:consent_given/1",
    "handsoff.case:consent_withdrawn/1",
    "handsoff.case:consent_corrected/1",
    "handsoff.case:case_closed/1",
]

SAST = timezone(timedelta(hours=2))
T = datetime(2025, 3, 1, 22, 30, tzinfo=SAST)

INCIDENT = IncidentReported(
    occurred_at=T,
    reported_at=T + timedelta(hours=1),
    country=Country.ZA,
    district="ZA-GT-JHB",
    violence_types=[ViolenceType.ARBITRARY_ARREST, ViolenceType.SEXUAL_EXTORTION],
    perpetrators=[PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT],
    perpetrator_count=2,
    location_type=LocationType.POLICE_STATION_OR_CELL,
    survivor_age_band=AgeBand.AGE_25_29,
    survivor_gender=Gender.TRANS_WOMAN,
    survivor_name="Lerato",
    survivor_contact="+27 82 000 0000",
    narrative="Held overnight; officer demanded sex for release.",
)
EXAMPLES: list[CaseChange] = [
    INCIDENT,
    FirstResponseGiven(responded_at=T, responder_role=ResponderRole.PARALEGAL, responder="Thandi"),
    ReferralMade(
        referral_id="pep-1",
        service=ServiceType.HEALTH_PEP,
        made_at=T,
        to_organisation="Clinic",
        note="Needs PEP",
    ),
    ReferralAccepted(referral_id="pep-1", accepted_at=T),
    ReferralDeclined(
        referral_id="pep-1", declined_at=T, reason=ReferralDeclineReason.SERVICE_REFUSED
    ),
    ReferralCompleted(
        referral_id="pep-1", completed_at=T, outcome=ReferralOutcome.SERVICE_RECEIVED
    ),
    PoliceReportFiled(filed_at=T, district="ZA-GT-JHB"),
    PoliceResponded(
        responded_at=T,
        response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN,
        case_number="CAS 123/03/2025",
    ),
    CourtCaseOpened(opened_at=T, district="ZA-GT-JHB", strategic_litigation=True),
    CourtJudgmentGiven(judged_at=T, judgment=CourtJudgment.WON),
    CourtCaseWithdrawn(withdrawn_at=T, reason=CourtWithdrawalReason.FEAR_OF_RETALIATION),
    ConsentGiven(purpose=ConsentPurpose.REFERRAL, given_at=T, organisation="Clinic"),
    ConsentWithdrawn(purpose=ConsentPurpose.REGIONAL_STATISTICS, withdrawn_at=T),
    ConsentCorrected(
        purpose=ConsentPurpose.POLICE_REPORT,
        given=False,
        corrected_at=T,
        reason=ConsentCorrectionReason.RECORDED_IN_ERROR,
    ),
    CaseClosed(closed_at=T, reason=ClosureReason.RESOLVED),
]
DECODER = msgspec.json.Decoder(CaseChange)


def ids(value: Any) -> str:
    return value if isinstance(value, str) else type(value).__name__


def as_dict(change: CaseChange) -> dict[str, Any]:
    return msgspec.json.decode(msgspec.json.encode(change))  # type: ignore[no-any-return]


def incident_json(**changes: Any) -> bytes:
    return msgspec.json.encode({**as_dict(INCIDENT), **changes})


def rejection(data: bytes) -> str:
    with pytest.raises(msgspec.ValidationError) as info:
        DECODER.decode(data)
    return str(info.value)


# --- topics -------------------------------------------------------------------------------


def test_topics_are_pinned() -> None:
    assert [topic_of(t) for t in CASE_CHANGES] == PINNED_TOPICS
    assert len(set(PINNED_TOPICS)) == len(PINNED_TOPICS)
    assert all(t.startswith(TOPIC_PREFIX) for t in PINNED_TOPICS)


@pytest.mark.parametrize("topic", PINNED_TOPICS)
def test_topic_leads_back_to_its_type(topic: str) -> None:
    assert topic_of(change_type_of(topic)) == topic


def test_unknown_topic_is_named_in_the_error() -> None:
    with pytest.raises(EventsError, match=re.escape("'handsoff.case:incident_reported/9'")):
        change_type_of("handsoff.case:incident_reported/9")


def test_a_type_that_is_not_a_case_change_has_no_topic() -> None:
    with pytest.raises(EventsError, match="not a case change"):
        topic_of(dict)


def test_every_change_type_has_an_example() -> None:
    assert [type(e) for e in EXAMPLES] == list(CASE_CHANGES)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("change", EXAMPLES, ids=ids)
def test_json_round_trip_through_the_union(change: CaseChange) -> None:
    data = msgspec.json.encode(change)
    assert DECODER.decode(data) == change
    assert msgspec.json.decode(data, type=type(change)) == change
    assert data.startswith(
        b'{"type":"' + topic_of(type(change)).removeprefix(TOPIC_PREFIX).encode()
    )


@pytest.mark.parametrize("change", EXAMPLES, ids=ids)
def test_msgpack_round_trip(change: CaseChange) -> None:
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(change), type=CaseChange) == change


def test_same_value_gives_same_bytes() -> None:
    again = msgspec.json.decode(msgspec.json.encode(INCIDENT), type=IncidentReported)
    assert msgspec.json.encode(again) == msgspec.json.encode(INCIDENT)


def test_utc_offset_is_kept() -> None:
    decoded = DECODER.decode(msgspec.json.encode(INCIDENT))
    assert isinstance(decoded, IncidentReported)
    assert decoded.occurred_at.utcoffset() == timedelta(hours=2)
    assert decoded.occurred_at == T.astimezone(UTC)


def test_changes_are_frozen_and_keyword_only() -> None:
    with pytest.raises(AttributeError):
        INCIDENT.narrative = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        CaseClosed(T, ClosureReason.RESOLVED)  # type: ignore[call-arg]


def test_incident_gives_its_gbvims_type() -> None:
    assert INCIDENT.gbvims_type is GbvimsCoreType.SEXUAL_ASSAULT


# --- rejections ---------------------------------------------------------------------------

TIME_FIELDS = [
    "occurred_at", "responded_at", "made_at", "accepted_at", "declined_at", "completed_at",
    "filed_at", "responded_at", "opened_at", "judged_at", "withdrawn_at", "given_at",
    "withdrawn_at", "corrected_at", "closed_at",
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"), list(zip(EXAMPLES, TIME_FIELDS, strict=True)), ids=ids
)
def test_naive_datetime_is_rejected_naming_the_field(change: CaseChange, field: str) -> None:
    data = msgspec.json.encode({**as_dict(change), field: "2025-03-01T22:30:00"})
    message = rejection(data)
    assert "timezone" in message
    assert f"$.{field}" in message


def test_reported_at_must_carry_a_timezone_too() -> None:
    assert "$.reported_at" in rejection(incident_json(reported_at="2025-03-01T23:30:00"))


@pytest.mark.parametrize("change", EXAMPLES, ids=ids)
def test_unknown_field_is_rejected(change: CaseChange) -> None:
    data = msgspec.json.encode({**as_dict(change), "survivor_id_number": "8001015009087"})
    assert "unknown field `survivor_id_number`" in rejection(data)


def test_unknown_type_is_rejected() -> None:
    data = msgspec.json.encode({**as_dict(INCIDENT), "type": "incident_reported/9"})
    assert "$.type" in rejection(data)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("violence_types", ["witchcraft"], "$.violence_types[0]"),
        ("perpetrators", ["client", "landlord"], "$.perpetrators[1]"),
        ("country", "KE", "$.country"),
        ("location_type", "shebeen", "$.location_type"),
        ("survivor_age_band", "18-24", "$.survivor_age_band"),
        ("survivor_gender", "woman", "$.survivor_gender"),
    ],
)
def test_unknown_code_is_rejected(field: str, value: object, where: str) -> None:
    assert where in rejection(incident_json(**{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("district", "Johannesburg"),  # a place name, not a district code
        ("district", "ZA-"),
        ("violence_types", []),
        ("perpetrators", []),
        ("perpetrator_count", 0),
        ("perpetrator_count", 101),
        ("survivor_name", ""),
        ("survivor_name", "x" * 201),
        ("narrative", "x" * 4001),
        ("survivor_contact", "x" * 201),
    ],
)
def test_out_of_bounds_value_is_rejected(field: str, value: object) -> None:
    assert f"$.{field}" in rejection(incident_json(**{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("perpetrator_count", None), ("perpetrator_count", 100), ("narrative", "x" * 4000)],
)
def test_values_at_the_bounds_are_accepted(field: str, value: object) -> None:
    decoded = DECODER.decode(incident_json(**{field: value}))
    assert getattr(decoded, field) == value


def test_survivor_contact_may_be_left_out() -> None:
    data = as_dict(INCIDENT)
    del data["survivor_contact"]
    decoded = DECODER.decode(msgspec.json.encode(data))
    assert isinstance(decoded, IncidentReported)
    assert decoded.survivor_contact is None


def test_required_field_missing_is_rejected() -> None:
    data = as_dict(INCIDENT)
    del data["narrative"]
    assert "narrative" in rejection(msgspec.json.encode(data))


@pytest.mark.parametrize("referral_id", ["Ref-1", "-ref", "ref 1", "", "r" * 41])
def test_bad_referral_id_is_rejected(referral_id: str) -> None:
    data = msgspec.json.encode({**as_dict(EXAMPLES[3]), "referral_id": referral_id})
    assert "$.referral_id" in rejection(data)


def test_organisation_name_is_bounded() -> None:
    data = msgspec.json.encode({**as_dict(EXAMPLES[2]), "to_organisation": "x" * 201})
    assert "$.to_organisation" in rejection(data)


def test_json_schema_marks_personal_fields() -> None:
    (_, components) = msgspec.json.schema_components([IncidentReported])
    props = components["IncidentReported"]["properties"]
    assert props["survivor_name"]["x-personal-data"] is True
    assert props["survivor_contact"]["anyOf"][0]["x-personal-data"] is True
    assert "x-personal-data" not in props["district"]
