"""Personal data is found from the schema alone, and redaction withholds all of it."""

from datetime import UTC, datetime
from typing import Annotated

import msgspec
import pytest

from handsoff.events import (
    CASE_CHANGES,
    PERSONAL_DATA_KEY,
    WITHHELD,
    AgeBand,
    CaseClosed,
    ClosureReason,
    Country,
    FirstResponseGiven,
    Gender,
    IncidentReported,
    LocationType,
    PerpetratorCategory,
    PersonalContact,
    PersonalName,
    PersonalText,
    PoliceResponded,
    PoliceResponse,
    ReferralMade,
    ResponderRole,
    ServiceType,
    ViolenceType,
    personal_fields,
    redact,
)

T = datetime(2025, 3, 1, 20, 30, tzinfo=UTC)

PERSONAL_FIELDS_BY_TYPE: dict[type, frozenset[str]] = {t: frozenset() for t in CASE_CHANGES} | {
    IncidentReported: frozenset({"survivor_name", "survivor_contact", "narrative"}),
    FirstResponseGiven: frozenset({"responder"}),
    ReferralMade: frozenset({"note"}),
    PoliceResponded: frozenset({"case_number"}),
}


def incident(contact: str | None) -> IncidentReported:
    return IncidentReported(
        occurred_at=T,
        reported_at=T,
        country=Country.BW,
        district="BW-SE-GAB",
        violence_types=[ViolenceType.ROBBERY, ViolenceType.PHYSICAL_ASSAULT],
        perpetrators=[PerpetratorCategory.CLIENT],
        perpetrator_count=None,
        location_type=LocationType.HOTEL_OR_LODGE,
        survivor_age_band=AgeBand.AGE_30_34,
        survivor_gender=Gender.FEMALE,
        survivor_name="Neo Mokoena",
        survivor_contact=contact,
        narrative="Client took her phone and money and hit her.",
    )


@pytest.mark.parametrize("change_type", CASE_CHANGES, ids=lambda t: t.__name__)
def test_personal_fields_of_each_change(change_type: type[msgspec.Struct]) -> None:
    assert personal_fields(change_type) == PERSONAL_FIELDS_BY_TYPE[change_type]


class Note(msgspec.Struct):
    author: PersonalName
    reachable_at: PersonalContact | None
    extra_names: list[PersonalName]
    body: Annotated[PersonalText, msgspec.Meta(title="body")]  # nested Annotated
    district: str
    tags: list[str]
    written_at: datetime


def test_personal_fields_sees_through_optional_lists_and_nested_annotations() -> None:
    assert personal_fields(Note) == {"author", "reachable_at", "extra_names", "body"}


def test_personal_fields_needs_a_struct() -> None:
    with pytest.raises(TypeError):
        personal_fields(int)  # type: ignore[arg-type]


def test_the_mark_is_the_documented_key() -> None:
    (meta,) = PersonalName.__metadata__  # type: ignore[attr-defined]
    assert meta.extra == {PERSONAL_DATA_KEY: True}
    assert meta.extra_json_schema == {PERSONAL_DATA_KEY: True}
    assert "Personal data" in meta.description


def test_redact_withholds_every_personal_field_and_keeps_the_rest() -> None:
    change = incident("+267 71 000 000")
    out = redact(change)
    assert out == {
        "type": "incident_reported/1",
        "occurred_at": "2025-03-01T20:30:00Z",
        "reported_at": "2025-03-01T20:30:00Z",
        "country": "BW",
        "district": "BW-SE-GAB",
        "violence_types": ["robbery", "physical_assault"],
        "perpetrators": ["client"],
        "perpetrator_count": None,
        "location_type": "hotel_or_lodge",
        "survivor_age_band": "30_34",
        "survivor_gender": "female",
        "survivor_name": WITHHELD,
        "survivor_contact": WITHHELD,
        "narrative": WITHHELD,
    }
    assert change.survivor_name == "Neo Mokoena"  # the payload itself is untouched


def test_redact_withholds_an_empty_personal_field_too() -> None:
    # Otherwise an auditor would learn whether the survivor left a contact.
    assert redact(incident(None))["survivor_contact"] == WITHHELD


def test_redacted_output_contains_no_personal_value() -> None:
    changes = [
        incident("+267 71 000 000"),
        FirstResponseGiven(responded_at=T, responder_role=ResponderRole.STAFF, responder="Kabo"),
        ReferralMade(
            referral_id="legal-1",
            service=ServiceType.LEGAL_AID,
            made_at=T,
            to_organisation="Legal Aid Botswana",
            note="Prefers calls after 6pm",
        ),
        PoliceResponded(
            responded_at=T,
            response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN,
            case_number="GAB/CR/77/2025",
        ),
    ]
    for change in changes:
        encoded = msgspec.json.encode(redact(change))
        for name in personal_fields(type(change)):
            value = getattr(change, name)
            assert value.encode() not in encoded
    assert b"Legal Aid Botswana" in msgspec.json.encode(redact(changes[2]))


def test_redact_of_a_change_without_personal_data_is_plain_builtins() -> None:
    change = CaseClosed(closed_at=T, reason=ClosureReason.DUPLICATE)
    assert redact(change) == msgspec.to_builtins(change)
