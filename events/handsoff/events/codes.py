"""Closed code lists of the case record.

The values are a wire format (stored, signed, exchanged between partners): they are written
out by hand and must never change. Add members; never rename or remove one.
"""

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType


class GbvimsCoreType(StrEnum):
    """The GBVIMS classification: exactly one per incident, for export to GBVIMS tools."""

    RAPE = "rape"
    SEXUAL_ASSAULT = "sexual_assault"
    PHYSICAL_ASSAULT = "physical_assault"
    FORCED_MARRIAGE = "forced_marriage"
    DENIAL_OF_RESOURCES = "denial_of_resources"
    PSYCHOLOGICAL_ABUSE = "psychological_abuse"
    NON_GBV = "non_gbv"


class ViolenceType(StrEnum):
    """What happened: the GBVIMS six plus what sex workers' reports need. Several per case."""

    RAPE = "rape"
    SEXUAL_ASSAULT = "sexual_assault"
    PHYSICAL_ASSAULT = "physical_assault"
    FORCED_MARRIAGE = "forced_marriage"
    DENIAL_OF_RESOURCES = "denial_of_resources"
    PSYCHOLOGICAL_ABUSE = "psychological_abuse"
    ARBITRARY_ARREST = "arbitrary_arrest"
    UNLAWFUL_DETENTION = "unlawful_detention"
    POLICE_HARASSMENT = "police_harassment"
    EXTORTION_OR_BRIBERY = "extortion_or_bribery"
    SEXUAL_EXTORTION = "sexual_extortion"  # sex demanded, e.g. for release from a cell
    CONDOM_CONFISCATION = "condom_confiscation"
    PROPERTY_CONFISCATION = "property_confiscation"
    ROBBERY = "robbery"
    NON_PAYMENT = "non_payment"  # a client who refused to pay
    DENIAL_OF_HEALTH_SERVICES = "denial_of_health_services"
    NON_GBV = "non_gbv"


# Each extension maps to the GBVIMS type of the act itself, not of what often comes with it:
# a beating during an arrest is recorded as physical_assault as well, and that wins by order.
_CORE = GbvimsCoreType
_GBVIMS_CORE: dict[ViolenceType, GbvimsCoreType] = {
    ViolenceType.RAPE: _CORE.RAPE,
    ViolenceType.SEXUAL_ASSAULT: _CORE.SEXUAL_ASSAULT,
    ViolenceType.PHYSICAL_ASSAULT: _CORE.PHYSICAL_ASSAULT,
    ViolenceType.FORCED_MARRIAGE: _CORE.FORCED_MARRIAGE,
    ViolenceType.DENIAL_OF_RESOURCES: _CORE.DENIAL_OF_RESOURCES,
    ViolenceType.PSYCHOLOGICAL_ABUSE: _CORE.PSYCHOLOGICAL_ABUSE,
    ViolenceType.NON_GBV: _CORE.NON_GBV,
    # Coerced sex without (known) penetration is sexual assault in GBVIMS; if penetration
    # happened the recorder also ticks rape, which comes first.
    ViolenceType.SEXUAL_EXTORTION: _CORE.SEXUAL_ASSAULT,
    # GBVIMS physical assault needs bodily violence (hitting, choking...); confinement by
    # itself is "forced isolation", which GBVIMS lists under psychological abuse.
    ViolenceType.ARBITRARY_ARREST: _CORE.PSYCHOLOGICAL_ABUSE,
    ViolenceType.UNLAWFUL_DETENTION: _CORE.PSYCHOLOGICAL_ABUSE,
    # Harassment and intimidation are named in the GBVIMS definition of psychological abuse;
    # extortion is money taken by threat, so the threat is what classifies it.
    ViolenceType.POLICE_HARASSMENT: _CORE.PSYCHOLOGICAL_ABUSE,
    ViolenceType.EXTORTION_OR_BRIBERY: _CORE.PSYCHOLOGICAL_ABUSE,
    # Denial of resources covers "economic resources/assets or livelihood opportunities,
    # education, health or other social services": property, earnings, condoms, clinics.
    ViolenceType.CONDOM_CONFISCATION: _CORE.DENIAL_OF_RESOURCES,
    ViolenceType.PROPERTY_CONFISCATION: _CORE.DENIAL_OF_RESOURCES,
    ViolenceType.ROBBERY: _CORE.DENIAL_OF_RESOURCES,
    ViolenceType.NON_PAYMENT: _CORE.DENIAL_OF_RESOURCES,
    ViolenceType.DENIAL_OF_HEALTH_SERVICES: _CORE.DENIAL_OF_RESOURCES,
}
GBVIMS_CORE: Mapping[ViolenceType, GbvimsCoreType] = MappingProxyType(_GBVIMS_CORE)

# GBVIMS picks the first "yes" in this order; none of them means non_gbv.
GBVIMS_ORDER: tuple[GbvimsCoreType, ...] = (
    _CORE.RAPE,
    _CORE.SEXUAL_ASSAULT,
    _CORE.PHYSICAL_ASSAULT,
    _CORE.FORCED_MARRIAGE,
    _CORE.DENIAL_OF_RESOURCES,
    _CORE.PSYCHOLOGICAL_ABUSE,
)


def core_type(types: Iterable[ViolenceType]) -> GbvimsCoreType:
    """The one GBVIMS type of an incident with these violence types."""
    cores = {GBVIMS_CORE[t] for t in types}
    return next((c for c in GBVIMS_ORDER if c in cores), GbvimsCoreType.NON_GBV)


class PerpetratorCategory(StrEnum):
    """Who did it: the 14 GBVIMS relationships plus the people sex workers face most."""

    INTIMATE_PARTNER = "intimate_partner_or_former_partner"
    PRIMARY_CAREGIVER = "primary_caregiver"
    FAMILY_OTHER = "family_other_than_spouse_or_caregiver"
    SUPERVISOR_OR_EMPLOYER = "supervisor_or_employer"
    SCHOOLMATE = "schoolmate"
    TEACHER_OR_SCHOOL_OFFICIAL = "teacher_or_school_official"
    SERVICE_PROVIDER = "service_provider"
    COTENANT_OR_HOUSEMATE = "cotenant_or_housemate"
    FAMILY_FRIEND_OR_NEIGHBOUR = "family_friend_or_neighbour"
    OTHER_REFUGEE_IDP_OR_RETURNEE = "other_refugee_idp_or_returnee"
    OTHER_COMMUNITY_MEMBER = "other_community_member"
    OTHER = "other"
    NO_RELATION = "no_relation"
    UNKNOWN = "unknown"
    POLICE_OR_LAW_ENFORCEMENT = "police_or_law_enforcement"
    CLIENT = "client"
    BROTHEL_OWNER_OR_MANAGER = "brothel_owner_or_manager"
    SECURITY_GUARD_OR_BOUNCER = "security_guard_or_bouncer"
    MUNICIPAL_OFFICER = "municipal_officer"
    HEALTH_WORKER = "health_worker"
    OTHER_SEX_WORKER = "other_sex_worker"


class LocationType(StrEnum):
    STREET = "street"
    BROTHEL = "brothel"
    BAR_OR_CLUB = "bar_or_club"
    HOTEL_OR_LODGE = "hotel_or_lodge"
    CLIENT_RESIDENCE = "client_residence"
    SURVIVOR_RESIDENCE = "survivor_residence"
    POLICE_STATION_OR_CELL = "police_station_or_cell"
    VEHICLE = "vehicle"
    PUBLIC_PLACE = "public_place"
    ONLINE = "online"
    OTHER = "other"
    UNKNOWN = "unknown"


class AgeBand(StrEnum):
    UNDER_18 = "under_18"
    AGE_18_24 = "18_24"
    AGE_25_29 = "25_29"
    AGE_30_34 = "30_34"
    AGE_35_39 = "35_39"
    AGE_40_49 = "40_49"
    AGE_50_PLUS = "50_plus"
    UNKNOWN = "unknown"


class Gender(StrEnum):
    FEMALE = "female"
    MALE = "male"
    TRANS_WOMAN = "trans_woman"
    TRANS_MAN = "trans_man"
    NON_BINARY = "non_binary"
    OTHER = "other"
    UNDISCLOSED = "undisclosed"


class Country(StrEnum):
    """The 16 SADC member states, ISO 3166-1 alpha-2 (also the prefix of district codes)."""

    AO = "AO"  # Angola
    BW = "BW"  # Botswana
    KM = "KM"  # Comoros
    CD = "CD"  # Democratic Republic of the Congo
    SZ = "SZ"  # Eswatini
    LS = "LS"  # Lesotho
    MG = "MG"  # Madagascar
    MW = "MW"  # Malawi
    MU = "MU"  # Mauritius
    MZ = "MZ"  # Mozambique
    NA = "NA"  # Namibia
    SC = "SC"  # Seychelles
    ZA = "ZA"  # South Africa
    TZ = "TZ"  # Tanzania
    ZM = "ZM"  # Zambia
    ZW = "ZW"  # Zimbabwe


class ResponderRole(StrEnum):
    PARALEGAL = "paralegal"
    PEER_EDUCATOR = "peer_educator"
    STAFF = "staff"


class ServiceType(StrEnum):
    POLICE = "police"
    LEGAL_AID = "legal_aid"
    HEALTH = "health"
    HEALTH_PEP = "health_pep"  # post-exposure prophylaxis: only works within 72 hours
    PSYCHOSOCIAL = "psychosocial"
    SHELTER = "shelter"  # shelter or safe space
    OTHER = "other"


class ReferralDeclineReason(StrEnum):
    SURVIVOR_DECLINED = "survivor_declined"
    SERVICE_REFUSED = "service_refused"  # the organisation would not serve the survivor
    SERVICE_UNAVAILABLE = "service_unavailable"  # no capacity, closed, out of stock
    NOT_ELIGIBLE = "not_eligible"
    UNSAFE_FOR_SURVIVOR = "unsafe_for_survivor"
    OTHER = "other"


class ReferralOutcome(StrEnum):
    SERVICE_RECEIVED = "service_received"
    PARTIALLY_RECEIVED = "partially_received"
    NOT_RECEIVED = "not_received"
    SURVIVOR_WITHDREW = "survivor_withdrew"
    LOST_TO_FOLLOW_UP = "lost_to_follow_up"


class PoliceResponse(StrEnum):
    ACCEPTED_CASE_NUMBER_GIVEN = "accepted_case_number_given"
    REFUSED = "refused"
    PERPETRATOR_WAS_POLICE = "perpetrator_was_police"


class CourtJudgment(StrEnum):
    WON = "won"
    LOST = "lost"


class CourtWithdrawalReason(StrEnum):
    SURVIVOR_WITHDREW = "survivor_withdrew"
    FEAR_OF_RETALIATION = "fear_of_retaliation"  # kept apart: it measures intimidation
    SETTLED_OUT_OF_COURT = "settled_out_of_court"
    PROSECUTION_DECLINED = "prosecution_declined"
    INSUFFICIENT_EVIDENCE = "insufficient_evidence"
    PERPETRATOR_NOT_FOUND = "perpetrator_not_found"
    OTHER = "other"


class ConsentPurpose(StrEnum):
    REGIONAL_STATISTICS = "regional_statistics"
    REFERRAL = "referral"  # always to one named organisation
    POLICE_REPORT = "police_report"


class ReferralDetail(StrEnum):
    """What a survivor may agree to share with an organisation a case is referred to."""

    SURVIVOR_NAME = "survivor_name"
    SURVIVOR_CONTACT = "survivor_contact"
    INCIDENT_SUMMARY = "incident_summary"  # violence types, when and the district
    NARRATIVE = "narrative"
    REFERRAL_NOTE = "referral_note"


class ConsentCorrectionReason(StrEnum):
    RECORDED_IN_ERROR = "recorded_in_error"
    SURVIVOR_CLARIFIED = "survivor_clarified"
    OTHER = "other"


class ClosureReason(StrEnum):
    RESOLVED = "resolved"
    SURVIVOR_REQUEST = "survivor_request"
    LOST_TO_FOLLOW_UP = "lost_to_follow_up"
    REFERRED_OUT = "referred_out"
    DUPLICATE = "duplicate"
    OTHER = "other"


# Statuses of the case state (derived from the changes, never sent as a change).
class CaseStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ReferralStatus(StrEnum):
    MADE = "made"  # waiting for the organisation to accept or decline
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"


class CourtStatus(StrEnum):
    OPEN = "open"
    JUDGED = "judged"
    WITHDRAWN = "withdrawn"
