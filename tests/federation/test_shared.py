"""Shared events: pinned tags and kinds, no field able to hold free text or a time."""

import re
import typing
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import msgspec.inspect as mi
import pytest

from handsoff.events import (
    Country,
    CourtJudgment,
    GbvimsCoreType,
    IncidentReported,
    PerpetratorCategory,
    PoliceResponse,
    ReferralOutcome,
    ServiceType,
    ViolenceType,
)
from handsoff.federation import subjects
from handsoff.federation.errors import FederationError, ShareRefused
from handsoff.federation.shared import (
    KINDS,
    SHARED_TYPES,
    UTC_OFFSET_HOURS,
    InvalidSharedEvent,
    SharedCourtCaseOpened,
    SharedCourtJudgment,
    SharedEvent,
    SharedFirstResponse,
    SharedIncident,
    SharedPoliceReportFiled,
    SharedPoliceResponse,
    SharedReferralAccepted,
    SharedReferralCompleted,
    SharedReferralMade,
    SharedRetraction,
    decode,
    encode,
    kind_of,
    month_of,
    validated,
    whole_hours,
)

PINNED: dict[type, tuple[str, str]] = {
    SharedIncident: ("shared.incident/1", "incident"),
    SharedFirstResponse: ("shared.first_response/1", "response"),
    SharedReferralMade: ("shared.referral_made/1", "referral"),
    SharedReferralAccepted: ("shared.referral_accepted/1", "referral"),
    SharedReferralCompleted: ("shared.referral_completed/1", "referral"),
    SharedPoliceReportFiled: ("shared.police_report_filed/1", "police"),
    SharedPoliceResponse: ("shared.police_response/1", "police"),
    SharedCourtCaseOpened: ("shared.court_case_opened/1", "court"),
    SharedCourtJudgment: ("shared.court_judgment/1", "court"),
    SharedRetraction: ("shared.retraction/1", "retraction"),
}

CASE = "0123456789abcdef0123456789abcdef"
REF = "fedcba9876543210fedcba9876543210"
STEP = {"partner": "sisonke-bw", "case": CASE, "country": Country.BW, "month": "2026-03"}

EXAMPLES: list[SharedEvent] = [
    SharedIncident(
        **STEP,  # type: ignore[arg-type]
        violence_types=[ViolenceType.PHYSICAL_ASSAULT, ViolenceType.EXTORTION_OR_BRIBERY],
        gbvims_type=GbvimsCoreType.PHYSICAL_ASSAULT,
        perpetrators=[PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT],
    ),
    SharedFirstResponse(**STEP, hours_to_first_response=3),  # type: ignore[arg-type]
    SharedReferralMade(**STEP, referral=REF, service=ServiceType.HEALTH_PEP),  # type: ignore[arg-type]
    SharedReferralAccepted(**STEP, referral=REF, service=ServiceType.HEALTH_PEP),  # type: ignore[arg-type]
    SharedReferralCompleted(
        **STEP,  # type: ignore[arg-type]
        referral=REF,
        service=ServiceType.HEALTH_PEP,
        outcome=ReferralOutcome.SERVICE_RECEIVED,
        hours_to_complete=50,
    ),
    SharedPoliceReportFiled(**STEP),  # type: ignore[arg-type]
    SharedPoliceResponse(**STEP, response=PoliceResponse.REFUSED),  # type: ignore[arg-type]
    SharedCourtCaseOpened(**STEP),  # type: ignore[arg-type]
    SharedCourtJudgment(**STEP, judgment=CourtJudgment.WON),  # type: ignore[arg-type]
    SharedRetraction(partner="sisonke-bw", case=CASE),
]


def test_tags_and_kinds_are_pinned() -> None:
    assert {t: (t.__struct_config__.tag, kind_of(t)) for t in SHARED_TYPES} == PINNED
    assert dict(KINDS) == {t: kind for t, (_, kind) in PINNED.items()}
    for _, kind in PINNED.values():
        assert subjects.events("sadc", "sisonke-bw", kind).endswith(f".{kind}")


def test_shared_types_are_the_union() -> None:
    assert set(SHARED_TYPES) == set(typing.get_args(SharedEvent))
    assert {type(e) for e in EXAMPLES} == set(SHARED_TYPES)


@pytest.mark.parametrize("shared_type", SHARED_TYPES, ids=lambda t: t.__name__)
def test_structs_are_frozen_strict_and_tagged_in_type(shared_type: type) -> None:
    config = shared_type.__struct_config__
    assert config.frozen
    assert config.forbid_unknown_fields
    assert config.tag_field == "type"


# --- nothing can hold free text or a time ----------------------------------------------------


def _problems(t: mi.Type, where: str) -> list[str]:
    """Why `t` could hold something other than a closed code, a pattern-checked string, a
    count or a flag (empty when it cannot). A whitelist: any other msgspec type is refused."""
    match t:
        case mi.Metadata():
            return _problems(t.type, where)
        case mi.StrType():
            ok = t.pattern is not None and t.pattern.startswith("^") and t.pattern.endswith("$")
            return [] if ok else [f"{where}: a str without an anchored pattern"]
        case mi.EnumType() | mi.IntType() | mi.BoolType() | mi.NoneType():
            return []
        case mi.LiteralType():
            return [] if all(isinstance(v, int) for v in t.values) else [f"{where}: str literal"]
        case mi.UnionType():
            return [p for m in t.types for p in _problems(m, where)]
        case mi.ListType() | mi.VarTupleType() | mi.SetType() | mi.FrozenSetType():
            return _problems(t.item_type, f"{where}[]")
    return [f"{where}: {type(t).__name__} is not allowed in a shared event"]


@pytest.mark.parametrize("shared_type", SHARED_TYPES, ids=lambda t: t.__name__)
def test_every_field_is_a_code_a_patterned_string_or_a_number(shared_type: type) -> None:
    info = mi.type_info(shared_type)
    assert isinstance(info, mi.StructType)
    problems = [p for f in info.fields for p in _problems(f.type, f.name)]
    assert problems == []
    assert not any(isinstance(f.type, mi.DateTimeType) for f in info.fields)


def test_the_whitelist_catches_what_it_must() -> None:
    class Bad(msgspec.Struct):
        note: str
        maybe: list[str | None]
        when: datetime
        blob: bytes
        anything: dict[str, int]

    info = mi.type_info(Bad)
    assert isinstance(info, mi.StructType)
    assert [len(_problems(f.type, f.name)) for f in info.fields] == [1, 1, 1, 1, 1]


def test_no_field_name_suggests_a_time_or_free_text() -> None:
    banned = re.compile(r"(_at|date|time|name|note|text|narrative|contact|number|org)")
    for t in SHARED_TYPES:
        names = [n for n in t.__struct_fields__ if banned.search(n)]
        assert names == [], t.__name__


# --- encode / decode ------------------------------------------------------------------------


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event: SharedEvent) -> None:
    raw = encode(event)
    assert decode(raw) == event
    assert validated(event) == event
    assert encode(decode(raw)) == raw
    assert msgspec.json.decode(raw)["type"] == PINNED[type(event)][0]


def test_encoding_is_pinned() -> None:
    assert encode(EXAMPLES[4]) == (
        b'{"type":"shared.referral_completed/1","partner":"sisonke-bw",'
        b'"case":"0123456789abcdef0123456789abcdef","country":"BW","month":"2026-03",'
        b'"referral":"fedcba9876543210fedcba9876543210","service":"health_pep",'
        b'"outcome":"service_received","hours_to_complete":50}'
    )


def _mutated(event: SharedEvent, **fields: object) -> bytes:
    doc = msgspec.json.decode(encode(event))
    doc.update(fields)
    return msgspec.json.encode(doc)


INCIDENT, RESPONSE, RETRACTION = EXAMPLES[0], EXAMPLES[1], EXAMPLES[-1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_mutated(RETRACTION, note="anything"), "unknown field `note`"),
        (_mutated(RETRACTION, type="shared.retraction/2"), "Invalid value"),
        (_mutated(RETRACTION, type="incident_reported/1"), "Invalid value"),
        (_mutated(RETRACTION, case=CASE.upper()), "$.case"),
        (_mutated(RETRACTION, case=CASE[:-1]), "$.case"),
        (_mutated(RETRACTION, case=CASE + "\n"), "$.case"),
        (_mutated(RETRACTION, partner="Sisonke"), "$.partner"),
        (_mutated(RETRACTION, partner="sisonke\n"), "$.partner"),
        (_mutated(RESPONSE, month="2026-13"), "$.month"),
        (_mutated(RESPONSE, month="2026-3"), "$.month"),
        (_mutated(RESPONSE, month="2026-03\n"), "$.month"),
        (_mutated(RESPONSE, month="2026-03-31"), "$.month"),
        (_mutated(RESPONSE, country="XX"), "$.country"),
        (_mutated(RESPONSE, hours_to_first_response=-1), "$.hours_to_first_response"),
        (_mutated(RESPONSE, hours_to_first_response=2.5), "$.hours_to_first_response"),
        (_mutated(INCIDENT, violence_types=[]), "$.violence_types"),
        (_mutated(INCIDENT, violence_types=["rape", "rape"]), "listed twice"),
        (_mutated(INCIDENT, perpetrators=["client", "client"]), "listed twice"),
        (_mutated(INCIDENT, gbvims_type="rape"), "does not follow"),
        (b"not json", "malformed"),
    ],
)
def test_decode_refuses_with_msgspecs_message(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidSharedEvent) as e:
        decode(raw)
    assert isinstance(e.value, FederationError)
    assert message.lower() in str(e.value).lower()


def test_encode_refuses_what_is_not_a_shared_event() -> None:
    change = IncidentReported(
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        reported_at=datetime(2026, 3, 1, tzinfo=UTC),
        country=Country.BW,
        district="BW-Gaborone",
        violence_types=[ViolenceType.RAPE],
        perpetrators=[PerpetratorCategory.CLIENT],
        perpetrator_count=1,
        location_type="street",  # type: ignore[arg-type]
        survivor_age_band="18_24",  # type: ignore[arg-type]
        survivor_gender="female",  # type: ignore[arg-type]
        survivor_name="Lesedi",
        narrative="...",
    )
    with pytest.raises(ShareRefused, match="not a shared event"):
        encode(change)  # type: ignore[arg-type]
    with pytest.raises(ShareRefused):
        kind_of(IncidentReported)
    with pytest.raises(ShareRefused):
        kind_of(int)


def test_encode_refuses_an_invalid_event_built_in_code() -> None:
    # Struct constructors check no pattern: encode does, before anything can leave.
    for bad in (
        SharedRetraction(partner="sisonke-bw", case="Lesedi Molefe, +267 71 000 000"),
        SharedFirstResponse(**STEP, hours_to_first_response=-3),  # type: ignore[arg-type]
        msgspec.structs.replace(RESPONSE, month="2026-03-02T21:30"),
    ):
        with pytest.raises(ShareRefused):
            encode(bad)
        with pytest.raises(ShareRefused):
            validated(bad)


# --- periods and durations -----------------------------------------------------------------


def test_month_is_in_the_countrys_standard_time() -> None:
    late = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)  # 00:30 on 1 April in Gaborone
    assert month_of(late, Country.BW) == "2026-04"
    assert month_of(late, Country.AO) == "2026-03"  # 23:30 in Luanda
    assert month_of(late.astimezone(timezone(timedelta(hours=-5))), Country.BW) == "2026-04"
    assert month_of(datetime(2025, 12, 31, 21, 0, tzinfo=UTC), Country.MU) == "2026-01"
    assert month_of(datetime(999, 1, 10, tzinfo=UTC), Country.ZA) == "0999-01"


def test_every_country_has_a_standard_time() -> None:
    assert set(UTC_OFFSET_HOURS) == set(Country)


def test_a_naive_datetime_has_no_month() -> None:
    with pytest.raises(ShareRefused, match="naive"):
        month_of(datetime(2026, 3, 1), Country.BW)


@pytest.mark.parametrize(
    ("duration", "hours"),
    [
        (timedelta(0), 0),
        (timedelta(minutes=29, seconds=59), 0),
        (timedelta(minutes=30), 1),
        (timedelta(hours=3, minutes=29, seconds=59), 3),
        (timedelta(hours=3, minutes=30), 4),
        (timedelta(days=3, hours=2, minutes=31), 75),
        (timedelta(minutes=-10), 0),
        (timedelta(days=-2), 0),
    ],
)
def test_durations_round_to_the_nearest_hour_never_below_zero(
    duration: timedelta, hours: int
) -> None:
    assert whole_hours(duration) == hours
