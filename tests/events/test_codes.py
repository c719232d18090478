"""Code lists are a wire format: their values are pinned here, written out by hand."""

import re
from enum import StrEnum

import pytest

from handsoff.events import (
    GBVIMS_CORE,
    GBVIMS_ORDER,
    AgeBand,
    CaseStatus,
    ClosureReason,
    ConsentCorrectionReason,
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
    ReferralOutcome,
    ReferralStatus,
    ResponderRole,
    ServiceType,
    ViolenceType,
    core_type,
)

V = ViolenceType
G = GbvimsCoreType

PINNED_VALUES: dict[type[StrEnum], list[str]] = {
    GbvimsCoreType: [
        "rape", "sexual_assault", "physical_assault", "forced_marriage",
        "denial_of_resources", "psychological_abuse", "non_gbv",
    ],
    ViolenceType: [
        "rape", "sexual_assault", "physical_assault", "forced_marriage",
        "denial_of_resources", "psychological_abuse", "arbitrary_arrest", "unlawful_detention",
        "police_harassment", "extortion_or_bribery", "sexual_extortion", "condom_confiscation",
        "property_confiscation", "robbery", "non_payment", "denial_of_health_services",
        "non_gbv",
    ],
    PerpetratorCategory: [
        "intimate_partner_or_former_partner", "primary_caregiver",
        "family_other_than_spouse_or_caregiver", "supervisor_or_employer", "schoolmate",
        "teacher_or_school_official", "service_provider", "cotenant_or_housemate",
        "family_friend_or_neighbour", "other_refugee_idp_or_returnee",
        "other_community_member", "other", "no_relation", "unknown",
        "police_or_law_enforcement", "client", "brothel_owner_or_manager",
        "security_guard_or_bouncer", "municipal_officer", "health_worker", "other_sex_worker",
    ],
    LocationType: [
        "street", "brothel", "bar_or_club", "hotel_or_lodge", "client_residence",
        "survivor_residence", "police_station_or_cell", "vehicle", "public_place", "online",
        "other", "unknown",
    ],
    AgeBand: ["under_18", "18_24", "25_29", "30_34", "35_39", "40_49", "50_plus", "unknown"],
    Gender: ["female", "male", "trans_woman", "trans_man", "non_binary", "other", "undisclosed"],
    Country: [
        "AO", "BW", "KM", "CD", "SZ", "LS", "MG", "MW", "MU", "MZ", "NA", "SC", "ZA", "TZ",
        "ZM", "ZW",
    ],
    ResponderRole: ["paralegal", "peer_educator", "staff"],
    ServiceType: [
        "police", "legal_aid", "health", "health_pep", "psychosocial", "shelter", "other",
    ],
    ReferralDeclineReason: [
        "survivor_declined", "service_refused", "service_unavailable", "not_eligible",
        "unsafe_for_survivor", "other",
    ],
    ReferralOutcome: [
        "service_received", "partially_received", "not_received", "survivor_withdrew",
        "lost_to_follow_up",
    ],
    PoliceResponse: ["accepted_case_number_given", "refused", "perpetrator_was_police"],
    CourtJudgment: ["won", "lost"],
    CourtWithdrawalReason: [
        "survivor_withdrew", "fear_of_retaliation", "settled_out_of_court",
        "prosecution_declined", "insufficient_evidence", "perpetrator_not_found", "other",
    ],
    ConsentPurpose: ["regional_statistics", "referral", "police_report"],
    ConsentCorrectionReason: ["recorded_in_error", "survivor_clarified", "other"],
    ClosureReason: [
        "resolved", "survivor_request", "lost_to_follow_up", "referred_out", "duplicate",
        "other",
    ],
    CaseStatus: ["open", "closed"],
    ReferralStatus: ["made", "accepted", "declined", "completed"],
    CourtStatus: ["open", "judged", "withdrawn"],
}  # fmt: skip


@pytest.mark.parametrize("code", PINNED_VALUES, ids=lambda c: c.__name__)
def test_values_are_pinned(code: type[StrEnum]) -> None:
    assert [m.value for m in code] == PINNED_VALUES[code]


@pytest.mark.parametrize("code", PINNED_VALUES, ids=lambda c: c.__name__)
def test_values_are_snake_case_or_country_codes(code: type[StrEnum]) -> None:
    pattern = r"[A-Z]{2}" if code is Country else r"[a-z0-9]+(_[a-z0-9]+)*"
    for member in code:
        assert re.fullmatch(pattern, member.value), member


def test_sadc_has_sixteen_members() -> None:
    assert len(Country) == 16
    assert {Country.BW, Country.MZ, Country.NA, Country.ZA, Country.ZW} <= set(Country)


def test_perpetrators_extend_the_fourteen_gbvims_relationships() -> None:
    gbvims = PINNED_VALUES[PerpetratorCategory][:14]
    assert gbvims[-1] == "unknown"
    assert len(PerpetratorCategory) == 21


def test_age_band_members_are_identifiers_for_numeric_values() -> None:
    assert AgeBand.AGE_18_24.value == "18_24"
    assert AgeBand("50_plus") is AgeBand.AGE_50_PLUS


def test_gbvims_mapping_is_total() -> None:
    assert set(GBVIMS_CORE) == set(ViolenceType)
    assert set(GBVIMS_CORE.values()) == set(GbvimsCoreType)


def test_gbvims_mapping_is_the_documented_one() -> None:
    assert dict(GBVIMS_CORE) == {
        V.RAPE: G.RAPE,
        V.SEXUAL_ASSAULT: G.SEXUAL_ASSAULT,
        V.PHYSICAL_ASSAULT: G.PHYSICAL_ASSAULT,
        V.FORCED_MARRIAGE: G.FORCED_MARRIAGE,
        V.DENIAL_OF_RESOURCES: G.DENIAL_OF_RESOURCES,
        V.PSYCHOLOGICAL_ABUSE: G.PSYCHOLOGICAL_ABUSE,
        V.NON_GBV: G.NON_GBV,
        V.SEXUAL_EXTORTION: G.SEXUAL_ASSAULT,
        V.ARBITRARY_ARREST: G.PSYCHOLOGICAL_ABUSE,
        V.UNLAWFUL_DETENTION: G.PSYCHOLOGICAL_ABUSE,
        V.POLICE_HARASSMENT: G.PSYCHOLOGICAL_ABUSE,
        V.EXTORTION_OR_BRIBERY: G.PSYCHOLOGICAL_ABUSE,
        V.CONDOM_CONFISCATION: G.DENIAL_OF_RESOURCES,
        V.PROPERTY_CONFISCATION: G.DENIAL_OF_RESOURCES,
        V.ROBBERY: G.DENIAL_OF_RESOURCES,
        V.NON_PAYMENT: G.DENIAL_OF_RESOURCES,
        V.DENIAL_OF_HEALTH_SERVICES: G.DENIAL_OF_RESOURCES,
    }


def test_mapping_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        GBVIMS_CORE[V.ROBBERY] = G.RAPE  # type: ignore[index]


def test_gbvims_order() -> None:
    assert GBVIMS_ORDER == (
        G.RAPE, G.SEXUAL_ASSAULT, G.PHYSICAL_ASSAULT, G.FORCED_MARRIAGE,
        G.DENIAL_OF_RESOURCES, G.PSYCHOLOGICAL_ABUSE,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ([V.PSYCHOLOGICAL_ABUSE, V.RAPE], G.RAPE),
        ([V.PHYSICAL_ASSAULT, V.SEXUAL_EXTORTION], G.SEXUAL_ASSAULT),
        ([V.UNLAWFUL_DETENTION, V.PHYSICAL_ASSAULT], G.PHYSICAL_ASSAULT),
        ([V.DENIAL_OF_RESOURCES, V.FORCED_MARRIAGE], G.FORCED_MARRIAGE),
        ([V.POLICE_HARASSMENT, V.CONDOM_CONFISCATION], G.DENIAL_OF_RESOURCES),
        ([V.ARBITRARY_ARREST, V.EXTORTION_OR_BRIBERY], G.PSYCHOLOGICAL_ABUSE),
        ([V.NON_GBV], G.NON_GBV),
        ([], G.NON_GBV),
    ],
)
def test_core_type_picks_the_first_yes_in_gbvims_order(
    types: list[ViolenceType], expected: GbvimsCoreType
) -> None:
    assert core_type(types) is expected
    assert core_type(reversed(types)) is expected  # the order of the input does not matter


def test_core_type_of_each_type_alone_is_its_mapping() -> None:
    for t in ViolenceType:
        assert core_type([t]) is GBVIMS_CORE[t]
