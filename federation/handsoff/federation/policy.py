"""The share policy: which of a node's case changes leave it, as what, and when.

Rules (issue #3):

- Only a case whose survivor consented to regional statistics is shared. Until then, what
  would be shared is computed when the change happens (so months and durations are those of
  the change) and kept in the case's backlog.
- Consent given (ConsentGiven, or ConsentCorrected to given, for regional statistics)
  releases the whole backlog in log order; later changes are shared as they come.
- Consent taken away (ConsentWithdrawn, or ConsentCorrected to not given): if anything about
  the case was shared, one SharedRetraction is emitted, covering all of it. A retracted case
  stays retracted: nothing more about it is ever shared, even if consent is given again (a
  new consent cannot tell the aggregator which of the retracted events it covers, and the
  survivor's last word on what was published must not be undone by a data-entry step). If
  nothing was shared, nothing is emitted and the backlog is dropped. (Under the case rules
  consent can only be taken away after it was given, which released at least the incident.)
- Consent for other purposes, and the consent changes themselves, are never shared.
- Shared events are built from the case state (which holds no personal data) and the
  change's own times only; referral organisation names stay on the node (a service type is
  shared instead), referral ids and case ids become keyed pseudonyms.
- Once the case rules no longer allow consent for regional statistics to be given (a closed
  case), the backlog of a case without that consent can never leave, and is dropped.

`process` is deterministic: the same calls in the same order give the same events, so a relay
replaying the node's log after a crash produces identical messages. No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias
from uuid import UUID

from handsoff.events import (
    CaseChange,
    CaseClosed,
    CaseState,
    ConsentCorrected,
    ConsentGiven,
    ConsentPurpose,
    ConsentWithdrawn,
    Country,
    CourtCaseOpened,
    CourtCaseWithdrawn,
    CourtJudgmentGiven,
    EventsError,
    FirstResponseGiven,
    IncidentReported,
    PoliceReportFiled,
    PoliceResponded,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
    apply,
    check,
    has_consent,
)
from handsoff.federation.errors import FederationError, ShareRefused
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.shared import (
    PARTNER_PATTERN,
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
    encoded,
    month_of,
    whole_hours,
)

REGIONAL: Final = ConsentPurpose.REGIONAL_STATISTICS

# What each case change becomes (None: never shared). Every case change type must be listed:
# a new one is refused (ShareRefused) until someone decides here whether it may leave.
_SHARED_AS: dict[type[CaseChange], type[SharedEvent] | None] = {
    IncidentReported: SharedIncident,
    FirstResponseGiven: SharedFirstResponse,
    ReferralMade: SharedReferralMade,
    ReferralAccepted: SharedReferralAccepted,
    ReferralDeclined: None,  # no indicator needs declines
    ReferralCompleted: SharedReferralCompleted,
    PoliceReportFiled: SharedPoliceReportFiled,
    PoliceResponded: SharedPoliceResponse,
    CourtCaseOpened: SharedCourtCaseOpened,
    CourtJudgmentGiven: SharedCourtJudgment,
    CourtCaseWithdrawn: None,  # indicators count cases opened and won only
    ConsentGiven: None,  # consent decides what leaves; it never leaves itself
    ConsentWithdrawn: None,
    ConsentCorrected: None,
    CaseClosed: None,  # no indicator needs closures
}
SHARED_AS: Mapping[type[CaseChange], type[SharedEvent] | None] = MappingProxyType(_SHARED_AS)

# A shared event and its JSON bytes (shared.encoded: validated, exactly what is published).
Encoded: TypeAlias = tuple[SharedEvent, bytes]


@dataclass(slots=True)
class _CaseRecord:
    state: CaseState
    consented: bool = False  # consent to regional statistics in force
    shared: bool = False  # something about this case has left the node
    retracted: bool = False
    backlog: list[Encoded] = field(default_factory=list)


class SharePolicy:
    """Turns a node's case changes, fed in log order, into the shared events that may leave."""

    def __init__(self, partner: str, pseudonymiser: Pseudonymiser) -> None:
        if not re.match(PARTNER_PATTERN, partner):
            raise FederationError(f"{partner!r} is not a partner id")
        self._partner = partner
        self._pseudonyms = pseudonymiser
        self._cases: dict[UUID, _CaseRecord] = {}
        self._case_pseudonyms: dict[UUID, str] = {}  # made once per case, not per event

    @property
    def partner(self) -> str:
        return self._partner

    def backlog_size(self, case_id: UUID) -> int:
        """Shared events of the case computed but held back (no consent yet)."""
        record = self._cases.get(case_id)
        return len(record.backlog) if record else 0

    def is_retracted(self, case_id: UUID) -> bool:
        record = self._cases.get(case_id)
        return record.retracted if record else False

    def process(self, case_id: UUID, change: CaseChange) -> list[SharedEvent]:
        """The shared events to publish, in order, after `change` (the next one of the case
        in the node's log). Raises ShareRefused, changing nothing, if the case rules refuse
        the change or it cannot be shared safely."""
        return [event for event, _ in self.process_encoded(case_id, change)]

    def process_encoded(self, case_id: UUID, change: CaseChange) -> list[Encoded]:
        """`process`, each event with its bytes (`shared.encode(event)`, checked once)."""
        record = self._cases.get(case_id)
        try:
            state = apply(record.state if record else None, case_id, change)
        except EventsError as e:
            raise ShareRefused(
                f"the case rules refuse this {type(change).__name__} of a case: {e}"
            ) from e
        would_share = self._would_share(case_id, state, change)
        consented_before = record.consented if record else False
        if record is None:
            record = self._cases[case_id] = _CaseRecord(state=state)
        record.state = state
        record.consented = has_consent(state, REGIONAL)
        out = self._release(case_id, record, consented_before, would_share)
        if out:
            record.shared = True
        return out

    def _case(self, case_id: UUID) -> str:
        pseudonym = self._case_pseudonyms.get(case_id)
        if pseudonym is None:
            pseudonym = self._case_pseudonyms[case_id] = self._pseudonyms.case(case_id)
        return pseudonym

    def _release(
        self,
        case_id: UUID,
        record: _CaseRecord,
        consented_before: bool,
        would_share: list[Encoded],
    ) -> list[Encoded]:
        if record.retracted:
            return []
        if record.consented:
            out = [*record.backlog, *would_share]  # the whole backlog when consent comes
            record.backlog.clear()
            return out
        if consented_before:  # consent taken away by this change
            record.backlog.clear()
            if not record.shared:
                return []
            retraction = encoded(SharedRetraction(partner=self._partner, case=self._case(case_id)))
            record.retracted = True
            return [retraction]
        record.backlog.extend(would_share)
        if record.backlog and not _consent_possible(record.state):
            record.backlog.clear()  # can never leave
        return []

    def _would_share(self, case_id: UUID, state: CaseState, change: CaseChange) -> list[Encoded]:
        try:
            expected = _SHARED_AS[type(change)]
        except KeyError:
            raise ShareRefused(f"no share rule for {type(change).__name__}") from None
        if expected is None:
            return []
        try:
            event = self._build(case_id, state, change)
        except (ValueError, TypeError, KeyError) as e:
            raise ShareRefused(f"cannot share {type(change).__name__}: {e}") from None
        if type(event) is not expected:
            raise ShareRefused(f"{type(change).__name__} built a {type(event).__name__}")
        return [encoded(event)]

    def _build(self, case_id: UUID, state: CaseState, change: CaseChange) -> SharedEvent:
        """The shared event of `change`, from the state after it (codes, checked by the case
        rules) and the change's own times; never from a personal field."""
        partner, case = self._partner, self._case(case_id)
        country: Country = state.incident.country
        match change:
            case IncidentReported():
                incident = state.incident
                return SharedIncident(
                    partner=partner,
                    case=case,
                    country=country,
                    month=month_of(incident.occurred_at, country),
                    violence_types=list(incident.violence_types),
                    gbvims_type=incident.gbvims_type,
                    perpetrators=list(incident.perpetrators),
                )
            case FirstResponseGiven(responded_at=at):
                return SharedFirstResponse(
                    partner=partner,
                    case=case,
                    country=country,
                    month=month_of(at, country),
                    hours_to_first_response=whole_hours(at - state.reported_at),
                )
            case ReferralMade() | ReferralAccepted() | ReferralCompleted():
                return self._build_referral(case_id, state, change)
            case PoliceReportFiled(filed_at=at):
                return SharedPoliceReportFiled(
                    partner=partner, case=case, country=country, month=month_of(at, country)
                )
            case PoliceResponded(responded_at=at) if state.police and state.police.response:
                return SharedPoliceResponse(
                    partner=partner,
                    case=case,
                    country=country,
                    month=month_of(at, country),
                    response=state.police.response,
                )
            case CourtCaseOpened(opened_at=at):
                return SharedCourtCaseOpened(
                    partner=partner, case=case, country=country, month=month_of(at, country)
                )
            case CourtJudgmentGiven(judged_at=at) if state.court and state.court.judgment:
                return SharedCourtJudgment(
                    partner=partner,
                    case=case,
                    country=country,
                    month=month_of(at, country),
                    judgment=state.court.judgment,
                )
        raise ShareRefused(f"no shared event is built from {type(change).__name__}")

    def _build_referral(
        self,
        case_id: UUID,
        state: CaseState,
        change: ReferralMade | ReferralAccepted | ReferralCompleted,
    ) -> SharedEvent:
        # Only the service type: organisation names could identify a small place.
        referral = state.referrals[change.referral_id]
        partner, case = self._partner, self._case(case_id)
        pseudonym = self._pseudonyms.referral(case_id, change.referral_id)
        country: Country = state.incident.country
        match change:
            case ReferralMade():
                return SharedReferralMade(
                    partner=partner,
                    case=case,
                    country=country,
                    month=month_of(referral.made_at, country),
                    referral=pseudonym,
                    service=referral.service,
                )
            case ReferralAccepted():
                return SharedReferralAccepted(
                    partner=partner,
                    case=case,
                    country=country,
                    month=month_of(change.accepted_at, country),
                    referral=pseudonym,
                    service=referral.service,
                )
            case ReferralCompleted():
                if referral.outcome is None:
                    raise ShareRefused("a completed referral without its outcome")
                return SharedReferralCompleted(
                    partner=partner,
                    case=case,
                    country=country,
                    month=month_of(change.completed_at, country),
                    referral=pseudonym,
                    service=referral.service,
                    outcome=referral.outcome,
                    hours_to_complete=whole_hours(change.completed_at - referral.made_at),
                )


def _consent_possible(state: CaseState) -> bool:
    """Whether the case rules would still let the survivor consent to regional statistics."""
    when = state.closed_at or state.incident.occurred_at
    try:
        check(state, ConsentGiven(purpose=REGIONAL, given_at=when))
    except EventsError:
        return False
    return True
