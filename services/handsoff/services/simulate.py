"""A synthetic but realistic stream of cases, as a paralegal's tool would record them.

Every story starts with an incident report and follows the programme's life of a case:
first response, consents, referrals, police reports, court cases, withdrawals, closure.
Names and narratives are plainly synthetic. The same seed gives the same stories.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import msgspec

from handsoff.events import (
    AgeBand,
    CaseChange,
    CaseClosed,
    ClosureReason,
    ConsentGiven,
    ConsentPurpose,
    ConsentWithdrawn,
    Country,
    CourtCaseOpened,
    CourtJudgment,
    CourtJudgmentGiven,
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
)

DISTRICTS: dict[Country, tuple[str, ...]] = {
    Country.BW: ("BW-Gaborone", "BW-Francistown", "BW-Kasane"),
    Country.MZ: ("MZ-Maputo", "MZ-Beira", "MZ-Nampula"),
    Country.NA: ("NA-Windhoek", "NA-Walvis-Bay", "NA-Oshakati"),
    Country.ZA: ("ZA-GT-JHB", "ZA-WC-CPT", "ZA-KZN-DBN"),
    Country.ZW: ("ZW-Harare", "ZW-Bulawayo", "ZW-Mutare"),
}
SERVICES: dict[ServiceType, str] = {
    ServiceType.HEALTH_PEP: "district clinic (PEP)",
    ServiceType.HEALTH: "district hospital",
    ServiceType.LEGAL_AID: "legal aid centre",
    ServiceType.PSYCHOSOCIAL: "counselling centre",
    ServiceType.SHELTER: "safe house",
}
_NAMES = ("Thandi", "Naledi", "Amina", "Chipo", "Lerato", "Nomsa", "Rutendo", "Ana", "Kefilwe")


@dataclass(frozen=True)
class Story:
    """One case: its incident report, then the later changes in the order they happen."""

    incident: IncidentReported
    changes: list[CaseChange] = field(default_factory=list)


T = TypeVar("T")


def _pick(rng: random.Random, weighted: dict[T, float]) -> T:
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def _when(change: CaseChange) -> datetime:
    """When a step happened: the first date-time field of the change."""
    return next(v for v in msgspec.structs.astuple(change) if isinstance(v, datetime))


class StoryTeller:
    def __init__(
        self,
        seed: int,
        country: Country,
        start: datetime,
        days: int = 365,
        until: datetime | None = None,
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (synthetic data, seeded on purpose)
        self.country = country
        self.start = start
        self.days = days
        self.until = until  # nothing after this: a story stops at its first later step
        self.count = 0

    def story(self) -> Story:
        rng = self.rng
        self.count += 1
        occurred = self.start + timedelta(minutes=rng.randrange(self.days * 24 * 60))
        reported = occurred + timedelta(minutes=rng.randrange(10, 72 * 60))
        police_did_it = rng.random() < 0.3
        incident = self._incident(occurred, reported, police_did_it)
        changes: list[CaseChange] = []
        t = reported
        if rng.random() < 0.9:
            t = t + timedelta(minutes=rng.randrange(5, 36 * 60))
            changes.append(
                FirstResponseGiven(
                    responded_at=t,
                    responder_role=_pick(
                        rng,
                        {
                            ResponderRole.PARALEGAL: 6,
                            ResponderRole.PEER_EDUCATOR: 3,
                            ResponderRole.STAFF: 1,
                        },
                    ),
                    responder=f"paralegal {rng.randrange(1, 9)} (synthetic)",
                )
            )
        if rng.random() < 0.75:
            changes.append(ConsentGiven(purpose=ConsentPurpose.REGIONAL_STATISTICS, given_at=t))
        t = self._referrals(changes, t)
        t = self._police(changes, t, police_did_it)
        consented = any(
            isinstance(c, ConsentGiven) and c.purpose == ConsentPurpose.REGIONAL_STATISTICS
            for c in changes
        )
        if consented and rng.random() < 0.05:
            changes.append(
                ConsentWithdrawn(
                    purpose=ConsentPurpose.REGIONAL_STATISTICS, withdrawn_at=t + timedelta(days=3)
                )
            )
        if rng.random() < 0.6:
            changes.append(
                CaseClosed(
                    closed_at=t + timedelta(days=rng.randrange(7, 90)),
                    reason=_pick(
                        rng,
                        {
                            ClosureReason.RESOLVED: 6,
                            ClosureReason.LOST_TO_FOLLOW_UP: 2,
                            ClosureReason.SURVIVOR_REQUEST: 1,
                        },
                    ),
                )
            )
        if self.until is not None:
            later = (i for i, c in enumerate(changes) if _when(c) > self.until)
            changes = changes[: next(later, len(changes))]
        return Story(incident, changes)

    def _incident(self, occurred: datetime, reported: datetime, police: bool) -> IncidentReported:
        rng = self.rng
        if police:
            violence = rng.sample(
                [
                    ViolenceType.ARBITRARY_ARREST,
                    ViolenceType.EXTORTION_OR_BRIBERY,
                    ViolenceType.SEXUAL_EXTORTION,
                    ViolenceType.PHYSICAL_ASSAULT,
                    ViolenceType.CONDOM_CONFISCATION,
                ],
                k=rng.randint(1, 3),
            )
            perpetrators = [PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT]
            location = _pick(
                rng,
                {
                    LocationType.STREET: 5,
                    LocationType.POLICE_STATION_OR_CELL: 3,
                    LocationType.VEHICLE: 1,
                },
            )
        else:
            violence = rng.sample(
                [
                    ViolenceType.RAPE,
                    ViolenceType.PHYSICAL_ASSAULT,
                    ViolenceType.ROBBERY,
                    ViolenceType.NON_PAYMENT,
                    ViolenceType.PSYCHOLOGICAL_ABUSE,
                    ViolenceType.DENIAL_OF_HEALTH_SERVICES,
                ],
                k=rng.randint(1, 2),
            )
            perpetrators = [
                _pick(
                    rng,
                    {
                        PerpetratorCategory.CLIENT: 6,
                        PerpetratorCategory.INTIMATE_PARTNER: 2,
                        PerpetratorCategory.BROTHEL_OWNER_OR_MANAGER: 1,
                        PerpetratorCategory.SECURITY_GUARD_OR_BOUNCER: 1,
                        PerpetratorCategory.HEALTH_WORKER: 1,
                    },
                )
            ]
            location = _pick(
                rng,
                {
                    LocationType.CLIENT_RESIDENCE: 3,
                    LocationType.STREET: 3,
                    LocationType.HOTEL_OR_LODGE: 2,
                    LocationType.BAR_OR_CLUB: 2,
                    LocationType.BROTHEL: 1,
                },
            )
        name = f"{rng.choice(_NAMES)} {self.count} (synthetic)"
        return IncidentReported(
            occurred_at=occurred,
            reported_at=reported,
            country=self.country,
            district=rng.choice(DISTRICTS[self.country]),
            violence_types=violence,
            perpetrators=perpetrators,
            perpetrator_count=rng.choice([1, 1, 1, 2, 3, None]),
            location_type=location,
            survivor_age_band=_pick(
                rng,
                {
                    AgeBand.AGE_18_24: 3,
                    AgeBand.AGE_25_29: 4,
                    AgeBand.AGE_30_34: 3,
                    AgeBand.AGE_35_39: 2,
                    AgeBand.AGE_40_49: 1,
                },
            ),
            survivor_gender=_pick(
                rng,
                {Gender.FEMALE: 8, Gender.TRANS_WOMAN: 2, Gender.MALE: 1, Gender.NON_BINARY: 0.5},
            ),
            survivor_name=name,
            survivor_contact=f"+000 555 {rng.randrange(10**6):06d}",
            narrative=f"Synthetic account number {self.count} for the demo; no real person.",
        )

    def _referrals(self, changes: list[CaseChange], t: datetime) -> datetime:
        rng = self.rng
        wanted = [
            s
            for s, p in (
                (ServiceType.HEALTH_PEP, 0.3),
                (ServiceType.LEGAL_AID, 0.25),
                (ServiceType.PSYCHOSOCIAL, 0.3),
                (ServiceType.SHELTER, 0.08),
            )
            if rng.random() < p
        ]
        for n, service in enumerate(wanted, 1):
            org = f"{self.country.value} {SERVICES[service]}"
            rid = f"ref-{n}"
            t = t + timedelta(hours=rng.randrange(1, 24))
            changes.append(
                ConsentGiven(purpose=ConsentPurpose.REFERRAL, organisation=org, given_at=t)
            )
            changes.append(
                ReferralMade(referral_id=rid, service=service, made_at=t, to_organisation=org)
            )
            t = t + timedelta(hours=rng.randrange(1, 72))
            if rng.random() < 0.15:
                changes.append(
                    ReferralDeclined(
                        referral_id=rid,
                        declined_at=t,
                        reason=ReferralDeclineReason.SERVICE_UNAVAILABLE,
                    )
                )
                continue
            changes.append(ReferralAccepted(referral_id=rid, accepted_at=t))
            if rng.random() < 0.8:
                t = t + timedelta(hours=rng.randrange(2, 240))
                changes.append(
                    ReferralCompleted(
                        referral_id=rid,
                        completed_at=t,
                        outcome=_pick(
                            rng,
                            {
                                ReferralOutcome.SERVICE_RECEIVED: 7,
                                ReferralOutcome.PARTIALLY_RECEIVED: 2,
                                ReferralOutcome.LOST_TO_FOLLOW_UP: 1,
                            },
                        ),
                    )
                )
        return t

    def _police(self, changes: list[CaseChange], t: datetime, police_did_it: bool) -> datetime:
        rng = self.rng
        if rng.random() > 0.4:
            return t
        t = t + timedelta(hours=rng.randrange(1, 96))
        changes.append(ConsentGiven(purpose=ConsentPurpose.POLICE_REPORT, given_at=t))
        district = rng.choice(DISTRICTS[self.country])
        changes.append(PoliceReportFiled(filed_at=t, district=district))
        t = t + timedelta(hours=rng.randrange(1, 72))
        if police_did_it and rng.random() < 0.5:
            changes.append(
                PoliceResponded(responded_at=t, response=PoliceResponse.PERPETRATOR_WAS_POLICE)
            )
            return t
        if rng.random() < 0.45:
            changes.append(PoliceResponded(responded_at=t, response=PoliceResponse.REFUSED))
            return t
        changes.append(
            PoliceResponded(
                responded_at=t,
                response=PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN,
                case_number=f"CR {rng.randrange(1, 999)}/{t:%m/%Y} (synthetic)",
            )
        )
        if rng.random() < 0.2:
            t = t + timedelta(days=rng.randrange(30, 200))
            changes.append(
                CourtCaseOpened(
                    opened_at=t, district=district, strategic_litigation=rng.random() < 0.2
                )
            )
            if rng.random() < 0.6:
                t = t + timedelta(days=rng.randrange(30, 300))
                changes.append(
                    CourtJudgmentGiven(
                        judged_at=t,
                        judgment=_pick(rng, {CourtJudgment.WON: 3, CourtJudgment.LOST: 2}),
                    )
                )
        return t

    def stories(self, n: int) -> Iterator[Story]:
        for _ in range(n):
            yield self.story()


def encode(change: CaseChange | IncidentReported) -> bytes:
    return msgspec.json.encode(change)
