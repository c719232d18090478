"""The changes in a case's life, as versioned, signed-once payloads.

Every change is a frozen msgspec Struct tagged "<snake_name>/<version>" in its "type" field.
Tags are pinned by hand: a stored topic is TOPIC_PREFIX + tag, so renaming a class must never
change it. To change a payload, add a new class with the next version; never edit a tag.
Fields are keyword-only, so a reordering in a new version cannot silently shift arguments.
"""

from datetime import datetime
from typing import Annotated, TypeAlias

import msgspec

from handsoff.events.codes import (
    AgeBand,
    ClosureReason,
    ConsentCorrectionReason,
    ConsentPurpose,
    Country,
    CourtJudgment,
    CourtWithdrawalReason,
    GbvimsCoreType,
    Gender,
    LocationType,
    PerpetratorCategory,
    PoliceResponse,
    ReferralDeclineReason,
    ReferralDetail,
    ReferralOutcome,
    ResponderRole,
    ServiceType,
    ViolenceType,
    core_type,
)
from handsoff.events.errors import EventsError
from handsoff.events.personal import PersonalContact, PersonalName, PersonalReference, PersonalText

# A naive datetime would make every time comparison and every "time to response" ambiguous.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
DistrictCode = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Z]{2}-[A-Za-z0-9_-]{1,40}$",
        description="Country code, a hyphen, then the partner's district code (never a place "
        "name: a named street or venue can identify a survivor).",
        examples=["ZA-GT-JHB"],
    ),
]
ReferralId = Annotated[
    str,
    msgspec.Meta(
        pattern="^[a-z0-9][a-z0-9-]{0,39}$",
        description="Chosen by the client, unique within the case.",
    ),
]
OrganisationName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
PartnerId = Annotated[
    str,
    msgspec.Meta(
        pattern="^[a-z0-9][a-z0-9-]{0,31}$",
        description="A partner of this node's region (a referral travels to its node).",
    ),
]
PerpetratorCount = Annotated[int, msgspec.Meta(ge=1, le=100)]


class _Change(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Shared settings: immutable, strict on unknown fields, tagged in "type"."""


class IncidentReported(_Change, frozen=True, kw_only=True, tag="incident_reported/1"):
    occurred_at: AwareDatetime
    reported_at: AwareDatetime
    country: Country
    district: DistrictCode
    # No duplicates: checked by the case state (msgspec has no unique-items constraint).
    violence_types: Annotated[
        list[ViolenceType], msgspec.Meta(min_length=1, max_length=len(ViolenceType))
    ]
    perpetrators: Annotated[
        list[PerpetratorCategory], msgspec.Meta(min_length=1, max_length=len(PerpetratorCategory))
    ]
    perpetrator_count: PerpetratorCount | None  # None: not known
    location_type: LocationType
    survivor_age_band: AgeBand
    survivor_gender: Gender
    survivor_name: PersonalName  # name or alias
    survivor_contact: PersonalContact | None = None
    narrative: PersonalText

    @property
    def gbvims_type(self) -> GbvimsCoreType:
        """The one GBVIMS core type of this incident (first "yes" in GBVIMS order)."""
        return core_type(self.violence_types)


class FirstResponseGiven(_Change, frozen=True, kw_only=True, tag="first_response_given/1"):
    responded_at: AwareDatetime
    responder_role: ResponderRole
    responder: PersonalName  # a staff name never leaves the node either


class ReferralMade(_Change, frozen=True, kw_only=True, tag="referral_made/1"):
    referral_id: ReferralId
    service: ServiceType
    made_at: AwareDatetime
    to_organisation: OrganisationName  # an organisation, not a person: not personal data
    note: PersonalText | None = None
    # Set when the organisation is a partner of the region: the referral is sent to its node,
    # sealed for it alone, with only the details the survivor agreed to share with it.
    to_partner: PartnerId | None = None


class ReferralAccepted(_Change, frozen=True, kw_only=True, tag="referral_accepted/1"):
    referral_id: ReferralId
    accepted_at: AwareDatetime


class ReferralDeclined(_Change, frozen=True, kw_only=True, tag="referral_declined/1"):
    referral_id: ReferralId
    declined_at: AwareDatetime
    reason: ReferralDeclineReason


class ReferralCompleted(_Change, frozen=True, kw_only=True, tag="referral_completed/1"):
    referral_id: ReferralId
    completed_at: AwareDatetime
    outcome: ReferralOutcome


class PoliceReportFiled(_Change, frozen=True, kw_only=True, tag="police_report_filed/1"):
    filed_at: AwareDatetime
    district: DistrictCode


class PoliceResponded(_Change, frozen=True, kw_only=True, tag="police_responded/1"):
    responded_at: AwareDatetime
    response: PoliceResponse
    # Required exactly when response is accepted_case_number_given (checked by the state).
    # Personal: the police file it names leads to the survivor.
    case_number: PersonalReference | None = None


class CourtCaseOpened(_Change, frozen=True, kw_only=True, tag="court_case_opened/1"):
    opened_at: AwareDatetime
    district: DistrictCode
    strategic_litigation: bool = False


class CourtJudgmentGiven(_Change, frozen=True, kw_only=True, tag="court_judgment_given/1"):
    judged_at: AwareDatetime
    judgment: CourtJudgment


class CourtCaseWithdrawn(_Change, frozen=True, kw_only=True, tag="court_case_withdrawn/1"):
    withdrawn_at: AwareDatetime
    reason: CourtWithdrawalReason


# Consent is keyed by (purpose, organisation): organisation names the receiving organisation
# for purpose referral and must be None for every other purpose (checked by the state).
class ConsentGiven(_Change, frozen=True, kw_only=True, tag="consent_given/1"):
    purpose: ConsentPurpose
    given_at: AwareDatetime
    organisation: OrganisationName | None = None
    # For a referral: which details may go to that organisation (none unless listed).
    details: list[ReferralDetail] = msgspec.field(default_factory=list)


class ConsentWithdrawn(_Change, frozen=True, kw_only=True, tag="consent_withdrawn/1"):
    purpose: ConsentPurpose
    withdrawn_at: AwareDatetime
    organisation: OrganisationName | None = None


class ConsentCorrected(_Change, frozen=True, kw_only=True, tag="consent_corrected/1"):
    """A supervisor's correction of a consent recorded wrongly (not the survivor changing it)."""

    purpose: ConsentPurpose
    organisation: OrganisationName | None = None
    given: bool
    corrected_at: AwareDatetime
    reason: ConsentCorrectionReason


class CaseClosed(_Change, frozen=True, kw_only=True, tag="case_closed/1"):
    closed_at: AwareDatetime
    reason: ClosureReason


CaseChange: TypeAlias = (
    IncidentReported
    | FirstResponseGiven
    | ReferralMade
    | ReferralAccepted
    | ReferralDeclined
    | ReferralCompleted
    | PoliceReportFiled
    | PoliceResponded
    | CourtCaseOpened
    | CourtJudgmentGiven
    | CourtCaseWithdrawn
    | ConsentGiven
    | ConsentWithdrawn
    | ConsentCorrected
    | CaseClosed
)
CASE_CHANGES: tuple[type[CaseChange], ...] = (
    IncidentReported,
    FirstResponseGiven,
    ReferralMade,
    ReferralAccepted,
    ReferralDeclined,
    ReferralCompleted,
    PoliceReportFiled,
    PoliceResponded,
    CourtCaseOpened,
    CourtJudgmentGiven,
    CourtCaseWithdrawn,
    ConsentGiven,
    ConsentWithdrawn,
    ConsentCorrected,
    CaseClosed,
)

TOPIC_PREFIX = "handsoff.case:"


def _tag(change_type: type[CaseChange]) -> str:
    tag = change_type.__struct_config__.tag
    if not isinstance(tag, str):  # every case change pins a string tag
        raise EventsError(f"{change_type.__name__} has no pinned tag")
    return tag


_TYPE_BY_TOPIC: dict[str, type[CaseChange]] = {TOPIC_PREFIX + _tag(t): t for t in CASE_CHANGES}
_TOPIC_BY_TYPE: dict[type, str] = {t: topic for topic, t in _TYPE_BY_TOPIC.items()}
if len(_TYPE_BY_TOPIC) != len(CASE_CHANGES):
    raise EventsError("two case changes share a tag")


def topic_of(change_type: type) -> str:
    """The stored topic of a case change type, e.g. "handsoff.case:incident_reported/1"."""
    try:
        return _TOPIC_BY_TYPE[change_type]
    except KeyError:
        raise EventsError(f"{change_type!r} is not a case change") from None


def change_type_of(topic: str) -> type[CaseChange]:
    """The case change type stored under `topic`."""
    try:
        return _TYPE_BY_TOPIC[topic]
    except KeyError:
        raise EventsError(f"unknown case change topic {topic!r}") from None
