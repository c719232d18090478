"""Shared events: the only things that leave a partner's node. A wire format: tags pinned.

Each shared event is a frozen msgspec Struct tagged "shared.<name>/<version>" in "type". No
field can hold free text: every string is a closed code (an enum of handsoff.events.codes) or
matches a strict pattern (pseudonym, partner id, month); there is no date or time field at
all, and durations are whole hours. To change a payload, add a new class with the next
version; never edit a tag, a kind or a pattern.

Every field is there because an indicator of the regional aggregator needs it (by month and
country), and nothing else is, because what has left a node cannot be called back:

    incidents by violence type, GBVIMS core type    SharedIncident.violence_types, gbvims_type
    incidents by perpetrator category (police)      SharedIncident.perpetrators
    median, p90 time to first response              SharedFirstResponse.hours_to_first_response
    referrals made / accepted / completed, service  SharedReferral*.service, .outcome
    time to complete a referral                     SharedReferralCompleted.hours_to_complete
    police reports filed, police response           SharedPoliceReportFiled, .response
    court cases opened and won                      SharedCourtCaseOpened, SharedCourtJudgment
    partners reporting in the period                every event: partner, month
    by month and country                            every event: month, country
    withdrawal of consent                           every event: case; SharedRetraction

Not shared, because no indicator needs them: district, age band, gender, location type and
number of perpetrators (quasi-identifiers: with a month they can single out a person in a
small place), the responder's role, strategic litigation (such cases are public, so the flag
would tie a pseudonym, and every other event of that case, to a known person), referral
declines, court withdrawals and case closures. Sharing one later is a new versioned type.

Periods. `month` is the calendar month ("2026-03"), in the country's standard time
(UTC_OFFSET_HOURS), of the step the event records: the incident's occurrence for
SharedIncident, the response for SharedFirstResponse, the referral being made, accepted or
completed, the police report being filed or answered, the court case being opened or judged.
Each event counts in that month. No ISO week is shared: a week that straddles two months,
together with the month, narrows a date to a few days (2025-W14 with 2025-03 is 31 March
exactly), and no indicator needs weeks. A retraction carries no period: it covers every
event ever shared about its case, in whatever month each counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Annotated, Final, TypeAlias

import msgspec

from handsoff.events.codes import (
    Country,
    CourtJudgment,
    GbvimsCoreType,
    PerpetratorCategory,
    PoliceResponse,
    ReferralOutcome,
    ServiceType,
    ViolenceType,
    core_type,
)
from handsoff.federation.errors import FederationError, ShareRefused
from handsoff.federation.pseudonyms import PSEUDONYM_PATTERN

# Whole-string patterns: `(?!\n)$`, because Python's `$` also matches before a final newline.
PARTNER_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,31}(?!\n)$"  # as a NATS subject token
MONTH_PATTERN: Final = r"^[0-9]{4}-(0[1-9]|1[0-2])(?!\n)$"

PartnerId = Annotated[
    str, msgspec.Meta(pattern=PARTNER_PATTERN, description="The sending partner's id.")
]
Pseudonym = Annotated[
    str,
    msgspec.Meta(
        pattern=PSEUDONYM_PATTERN,
        description="A keyed pseudonym (handsoff.federation.pseudonyms): irreversible and "
        "unlinkable without the sending node's key.",
    ),
]
Month = Annotated[
    str,
    msgspec.Meta(
        pattern=MONTH_PATTERN,
        description="Calendar month of the step, in the country's standard time.",
        examples=["2026-03"],
    ),
]
Hours = Annotated[int, msgspec.Meta(ge=0, description="A duration rounded to whole hours.")]

# Standard time of each country (none of them has daylight saving time). The DRC spans two
# zones; Kinshasa's is used, so a Lubumbashi step in the last hour of a month counts in the next.
UTC_OFFSET_HOURS: Mapping[Country, int] = MappingProxyType(
    {
        Country.AO: 1,
        Country.BW: 2,
        Country.KM: 3,
        Country.CD: 1,
        Country.SZ: 2,
        Country.LS: 2,
        Country.MG: 3,
        Country.MW: 2,
        Country.MU: 4,
        Country.MZ: 2,
        Country.NA: 2,
        Country.SC: 4,
        Country.ZA: 2,
        Country.TZ: 3,
        Country.ZM: 2,
        Country.ZW: 2,
    }
)


_ZONES: Mapping[Country, timezone] = MappingProxyType(
    {c: timezone(timedelta(hours=h)) for c, h in UTC_OFFSET_HOURS.items()}
)


def month_of(when: datetime, country: Country) -> str:
    """The calendar month ("2026-03") of an aware `when` in `country`'s standard time."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ShareRefused("a naive datetime has no month (which time zone?)")
    local = when.astimezone(_ZONES[Country(country)])
    return f"{local.year:04d}-{local.month:02d}"


def whole_hours(duration: timedelta) -> int:
    """`duration` rounded to the nearest hour (half an hour rounds up); never below 0, so
    a step recorded before its starting point (a response on the spot, before the report
    was taken) counts as 0 hours."""
    return max(0, (duration + timedelta(minutes=30)) // timedelta(hours=1))


class InvalidSharedEvent(FederationError):
    """Received bytes are not a valid shared event; the message is msgspec's."""


class _Shared(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """Shared settings: immutable, strict on unknown fields, tagged in "type"."""

    partner: PartnerId
    case: Pseudonym  # Pseudonymiser.case


class _Step(_Shared, frozen=True, kw_only=True):
    """A step of a case, counted in `month` (see the module docstring) and `country`."""

    country: Country
    month: Month


def _distinct(what: str, values: list[ViolenceType] | list[PerpetratorCategory]) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"a {what} is listed twice")


class SharedIncident(_Step, frozen=True, kw_only=True, tag="shared.incident/1"):
    """A case was reported; month of the incident's occurrence."""

    violence_types: Annotated[
        list[ViolenceType], msgspec.Meta(min_length=1, max_length=len(ViolenceType))
    ]
    gbvims_type: GbvimsCoreType
    perpetrators: Annotated[
        list[PerpetratorCategory], msgspec.Meta(min_length=1, max_length=len(PerpetratorCategory))
    ]

    def __post_init__(self) -> None:
        # Runs on decoding too (msgspec turns the ValueError into a ValidationError).
        _distinct("violence type", self.violence_types)
        _distinct("perpetrator category", self.perpetrators)
        if self.gbvims_type != core_type(self.violence_types):
            raise ValueError("gbvims_type does not follow from violence_types")


class SharedFirstResponse(_Step, frozen=True, kw_only=True, tag="shared.first_response/1"):
    """The first response; month of the response, hours from the report."""

    hours_to_first_response: Hours


class SharedReferralMade(_Step, frozen=True, kw_only=True, tag="shared.referral_made/1"):
    referral: Pseudonym  # Pseudonymiser.referral
    service: ServiceType


class SharedReferralAccepted(_Step, frozen=True, kw_only=True, tag="shared.referral_accepted/1"):
    referral: Pseudonym
    service: ServiceType


class SharedReferralCompleted(_Step, frozen=True, kw_only=True, tag="shared.referral_completed/1"):
    """Month of completion, hours from the referral being made."""

    referral: Pseudonym
    service: ServiceType
    outcome: ReferralOutcome
    hours_to_complete: Hours


class SharedPoliceReportFiled(_Step, frozen=True, kw_only=True, tag="shared.police_report_filed/1"):
    """One per report: a survivor refused at one station may file again at another."""


class SharedPoliceResponse(_Step, frozen=True, kw_only=True, tag="shared.police_response/1"):
    response: PoliceResponse


class SharedCourtCaseOpened(_Step, frozen=True, kw_only=True, tag="shared.court_case_opened/1"):
    pass


class SharedCourtJudgment(_Step, frozen=True, kw_only=True, tag="shared.court_judgment/1"):
    judgment: CourtJudgment


class SharedRetraction(_Shared, frozen=True, kw_only=True, tag="shared.retraction/1"):
    """The survivor withdrew consent: every event ever shared with this case pseudonym (from
    this partner) must be removed from every figure, past and future. Carries no period."""


SharedEvent: TypeAlias = (
    SharedIncident
    | SharedFirstResponse
    | SharedReferralMade
    | SharedReferralAccepted
    | SharedReferralCompleted
    | SharedPoliceReportFiled
    | SharedPoliceResponse
    | SharedCourtCaseOpened
    | SharedCourtJudgment
    | SharedRetraction
)

# The short subject token of each type: subjects.events(region, partner, kind). Pinned.
_KINDS: dict[type[SharedEvent], str] = {
    SharedIncident: "incident",
    SharedFirstResponse: "response",
    SharedReferralMade: "referral",
    SharedReferralAccepted: "referral",
    SharedReferralCompleted: "referral",
    SharedPoliceReportFiled: "police",
    SharedPoliceResponse: "police",
    SharedCourtCaseOpened: "court",
    SharedCourtJudgment: "court",
    SharedRetraction: "retraction",
}
KINDS: Mapping[type[SharedEvent], str] = MappingProxyType(_KINDS)
SHARED_TYPES: tuple[type[SharedEvent], ...] = tuple(_KINDS)

_ENCODER = msgspec.json.Encoder()
_DECODER: msgspec.json.Decoder[SharedEvent] = msgspec.json.Decoder(SharedEvent)


def kind_of(shared_type: type) -> str:
    """The subject token for events of `shared_type`, e.g. "incident"."""
    try:
        return _KINDS[shared_type]
    except (KeyError, TypeError):
        raise ShareRefused(f"{shared_type!r} is not a shared event type") from None


def validated(event: SharedEvent) -> SharedEvent:
    """`event` as decoded from its own bytes: Struct constructors check no pattern or bound,
    so an event built in code is checked like one from the wire. ShareRefused if invalid."""
    return encoded(event)[0]


def encode(event: SharedEvent) -> bytes:
    """The JSON bytes of a shared event, checked against its schema before they can leave.

    Refuses (ShareRefused) anything that is not a shared event type, so a case change or any
    other Struct can never be published by mistake.
    """
    return encoded(event)[1]


def encoded(event: SharedEvent) -> tuple[SharedEvent, bytes]:
    """`validated(event)` and `encode(event)` at the cost of one check: the bytes, and the
    event decoded from them. Encoding the decoded event gives the same bytes (the same
    field values in the same order), so the bytes are what `encode` of either returns."""
    if type(event) not in _KINDS:
        raise ShareRefused(f"{type(event).__name__} is not a shared event type")
    raw = _ENCODER.encode(event)
    try:
        return _DECODER.decode(raw), raw
    except msgspec.MsgspecError as e:
        raise ShareRefused(f"invalid {type(event).__name__}: {e}") from None


def decode(raw: bytes) -> SharedEvent:
    """A shared event from its JSON bytes; InvalidSharedEvent (msgspec's message) if not."""
    try:
        return _DECODER.decode(raw)
    except msgspec.MsgspecError as e:
        raise InvalidSharedEvent(str(e)) from None
