"""Headline figures of one node's cases, computed from case states (no personal data)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable

import msgspec

from handsoff.events import (
    CaseState,
    ConsentPurpose,
    PerpetratorCategory,
    PoliceResponse,
    ReferralStatus,
    has_consent,
)


class Headline(msgspec.Struct, frozen=True):
    incidents: int
    by_gbvims_type: dict[str, int]
    police_perpetrated: int
    median_hours_to_first_response: float | None
    referrals_made: int
    referrals_accepted: int
    referrals_completed: int
    police_reports_filed: int
    police_responses: dict[str, int]
    court_cases_won: int
    consented_to_regional_statistics: int
    closed: int


def headline(states: Iterable[CaseState]) -> Headline:
    cases = list(states)
    hours = [
        (s.first_response_at - s.reported_at).total_seconds() / 3600
        for s in cases
        if s.first_response_at is not None
    ]
    referrals = [r for s in cases for r in s.referrals.values()]
    reached = {ReferralStatus.ACCEPTED, ReferralStatus.COMPLETED}
    responses = Counter(
        s.police.response.value
        for s in cases
        if s.police is not None and s.police.response is not None
    )
    return Headline(
        incidents=len(cases),
        by_gbvims_type=dict(sorted(Counter(s.incident.gbvims_type.value for s in cases).items())),
        police_perpetrated=sum(
            PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT in s.incident.perpetrators for s in cases
        ),
        median_hours_to_first_response=round(statistics.median(hours), 1) if hours else None,
        referrals_made=len(referrals),
        referrals_accepted=sum(r.status in reached for r in referrals),
        referrals_completed=sum(r.status == ReferralStatus.COMPLETED for r in referrals),
        police_reports_filed=sum(s.police is not None for s in cases),
        police_responses={r.value: responses[r.value] for r in PoliceResponse},
        court_cases_won=sum(
            s.court is not None and s.court.judgment is not None and s.court.judgment.value == "won"
            for s in cases
        ),
        consented_to_regional_statistics=sum(
            has_consent(s, ConsentPurpose.REGIONAL_STATISTICS) for s in cases
        ),
        closed=sum(s.status.value == "closed" for s in cases),
    )


def render(h: Headline) -> list[str]:
    share = f"{100 * h.police_perpetrated / h.incidents:.0f}%" if h.incidents else "-"
    median = (
        f"{h.median_hours_to_first_response:.1f} h"
        if h.median_hours_to_first_response is not None
        else "-"
    )
    return [
        f"incidents recorded            {h.incidents}",
        "by GBVIMS type                "
        + ", ".join(f"{k} {v}" for k, v in h.by_gbvims_type.items()),
        f"committed by police           {h.police_perpetrated} ({share})",
        f"median time to first response {median}",
        f"referrals made/accepted/done  {h.referrals_made}/{h.referrals_accepted}/"
        f"{h.referrals_completed}",
        f"police reports filed          {h.police_reports_filed} ("
        + ", ".join(f"{k} {v}" for k, v in h.police_responses.items())
        + ")",
        f"court cases won               {h.court_cases_won}",
        f"consented to regional stats   {h.consented_to_regional_statistics}",
        f"cases closed                  {h.closed}",
    ]
