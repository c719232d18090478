"""A realistic, deterministic release for the dashboard tests: five countries over nine
months, some of them small enough that many cells are suppressed (k = 5).

Release 2 adds more cases to release 1's and carries its suppression memory, as the
aggregator does from one release to the next.

With partner breakdowns (`breakdowns="partner"`), two countries have two partners each, so
the partner tables nest more than one partner in a country.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

from aggregator.test_indicators import Builder, Message, feed
from handsoff.events.codes import (
    Country,
    PerpetratorCategory,
    PoliceResponse,
    ServiceType,
    ViolenceType,
)
from handsoff.federation import statements
from handsoff.federation.statements import Inputs
from handsoff.keys import SigningKey
from handsoff.services.aggregator import release
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.feed import LatestRelease
from handsoff.services.aggregator.indicators import compute

COUNTRIES = ("BW", "MZ", "NA", "ZA", "ZW")
# (partner, country) of the region with partner breakdowns: MZ and ZA have two partners.
PARTNERS = (
    ("bw-hands-off", "BW"),
    ("mz-hands-off", "MZ"),
    ("mz-sisters", "MZ"),
    ("na-hands-off", "NA"),
    ("za-hands-off", "ZA"),
    ("za-sweat", "ZA"),
    ("zw-hands-off", "ZW"),
)
MONTHS = tuple(f"2026-{m:02d}" for m in range(1, 10))
K = 5
SEED = 7
KEY = SigningKey.from_seed(bytes(32))


def messages(cases: int, seed: int = SEED, *, partners: bool = False) -> list[Message]:
    """The shared events of `cases` cases; the first n cases are the same for any larger n.
    `partners`: from the PARTNERS (else one partner a country)."""
    rng = random.Random(seed)
    if partners:
        builders = [Builder(p, Country(c)) for p, c in PARTNERS]
    else:
        builders = [Builder(f"{c.lower()}-hands-off", Country(c)) for c in COUNTRIES]
    for i in range(cases):
        # The last country (ZW) reports rarely: its figures are mostly suppressed.
        b = rng.choice(builders[:-1] if rng.random() < 0.9 else builders)
        case, month = f"c{i}", rng.choice(MONTHS)
        types = rng.sample(list(ViolenceType), rng.randint(1, 2))
        police = rng.random() >= 0.6
        perps = (
            [PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT]
            if police
            else rng.sample(list(PerpetratorCategory), 1)
        )
        b.incident(case, month, types, perps)
        if rng.random() < 0.8:
            b.first_response(case, month, rng.randint(0, 72))
        if rng.random() < 0.5:
            service = rng.choice(list(ServiceType))
            b.referral(case, month, "r", service, "made")
            if rng.random() < 0.7:
                b.referral(case, month, "r", service, "accepted")
                if rng.random() < 0.5:
                    b.referral(case, month, "r", service, "completed")
        if rng.random() < 0.3:
            b.police_report(case, month)
            b.police_response(case, month, rng.choice(list(PoliceResponse)))
        if rng.random() < 0.1:
            b.court_opened(case, month)
    return [m for b in builders for m in b.messages]


def make_release(
    number: int,
    cases: int,
    memory: SuppressionMemory | None = None,
    *,
    breakdowns: str = "country",
) -> tuple[LatestRelease, SuppressionMemory]:
    """Release `number` over `cases` cases, signed, as the feed holds it."""
    msgs = messages(cases, partners=breakdowns == "partner")
    header = release.ReleaseHeader(
        region="sadc",
        region_version=3,
        aggregator="sadc-aggregator",
        release=number,
        k=K,
        breakdowns=breakdowns,
        as_of=datetime(2026, 9, 30, 17, 45, 12, tzinfo=UTC),
        inputs=Inputs(
            stream="HX_SADC_EVENTS",
            first_seq=1,
            last_seq=len(msgs) + 3,  # a few envelopes were quarantined
            accepted=len(msgs),
            commitment=hashlib.sha256(f"{SEED}/{cases}".encode()).hexdigest(),
        ),
    )
    built = release.build(
        compute(feed(msgs)),
        header,
        COUNTRIES,
        memory if memory is not None else SuppressionMemory(),
    )
    signed = tuple(statements.sign(s, KEY) for s in built.statements)
    return LatestRelease(number, built.statements, signed), built.memory
