"""Regional indicators from partners' shared events: a pure fold, no I/O, no clock.

    Ledger.add(partner, number, event)   verified messages in, any order, duplicates allowed
    compute(ledger) -> Indicators        every table, by month and country and for the region

What a message counts for. The ledger holds, for each case (partner, case pseudonym), the
messages received about it, by message number. The result depends only on the *set* of
messages received, never on their order:

- A message is identified for ever by (partner, number) (the envelope's `<partner>:<n>`).
  Receiving it again changes nothing (`add` returns False). A different event under a number
  already seen is refused (LedgerConflict) and changes nothing.
- A case counts only once its SharedIncident has arrived: a first response, referral, police
  or court step received before its incident waits in the ledger and counts from the moment
  the incident arrives. (Every shared case starts with its incident: the share policy
  releases the backlog in log order, so a step without its incident is still in flight.)
- A SharedRetraction removes its case (partner, case pseudonym) from every table: the
  ledger forgets every message of the case and ignores any later one about it, for ever,
  whatever its number (one sent before the retraction but arriving after it included).
- Steps the case rules allow only once per case (the incident, the first response, the court
  case being opened and judged) and per referral (made, accepted, completed) count once: if
  a partner ever sent two, the one with the lowest message number (the first sent) counts.
  Police reports and police responses count each message (a survivor refused at one station
  may file again at another).

Only consented cases are ever shared, so nothing here counts or infers unconsented cases.

Periods and areas. Each fact counts in the `month` and `country` of the event that records
it (the incident in the month it occurred, the first response in the month of the response,
each referral step in its own month...), and again in the area "region" (all countries).

Tables. `Indicators.cells` holds the counts, `Indicators.stats` the time to first response.
The frame of a result is every (period, area) in which at least one fact counts. Indicators
with a breakdown (`key` = a violence type, perpetrator category, service or police response)
list only the keys with a count above zero: an absent cell is 0. Indicators without one
(`key` = "") and the time statistic have a row for every (period, area) of the frame, zero
(or n = 0, median and p90 None) included, so a figure that falls to zero is still published.
For every count indicator except `partners-reporting`, a region cell is the sum of the
countries' cells; partners-reporting counts distinct partners in the region. Output is
sorted by (indicator, period, area, key). No small-cell suppression happens here: that is
the publication step's job, which needs these exact figures.

Partners. `Indicators.partner_cells` and `partner_stats` hold the same figures by partner,
nested in the country of the events (a partner normally reports in its own country; one
that also has events in another country has a row in each): for every count indicator
except `partners-reporting` (by partner it would be 0 or 1), a country cell is the sum of
its partners' cells. The partner frame is every (period, country, partner) in which at least
one fact of that partner counts; the same zero rows as above are filled in over it. Sorted
by (indicator, period, country, partner, key). The release publishes them only where the
region document allows partner breakdowns.

Percentiles (hours, `time-to-first-response`):

- median: the middle value of the sorted hours, or the mean of the two middle values when
  n is even (so 1, 2, 3, 10 -> 2.5);
- p90: nearest rank, the smallest value with at least 90% of the values at or below it,
  i.e. the ceil(0.9 n)-th smallest (computed in integers, so no rounding error):
  1..10 -> 9, 1..11 -> 10, 1..20 -> 18, one value -> that value;
- None for both when n = 0.

The indicator names below are pinned: they become NATS subject tokens
(hx.<region>.aggregates.<indicator>), so they are lowercase letters, digits and '-'.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

import msgspec

from handsoff.events.codes import CourtJudgment, PerpetratorCategory
from handsoff.federation.envelope import Opened
from handsoff.federation.shared import (
    SHARED_TYPES,
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
)

REGION: Final = "region"
TOTAL: Final = ""  # the key of a cell without a breakdown

# Pinned indicator names (NATS subject tokens).
INCIDENTS_BY_VIOLENCE_TYPE: Final = "incidents-by-violence-type"  # key: ViolenceType
INCIDENTS_BY_GBVIMS_TYPE: Final = "incidents-by-gbvims-type"  # key: GbvimsCoreType
INCIDENTS: Final = "incidents"
INCIDENTS_BY_PERPETRATOR: Final = "incidents-by-perpetrator"  # key: PerpetratorCategory
POLICE_SHARE: Final = "police-share"  # incidents with police among the perpetrators
TIME_TO_FIRST_RESPONSE: Final = "time-to-first-response"  # Stat, hours
REFERRALS_MADE: Final = "referrals-made-by-service"  # key: ServiceType
REFERRALS_ACCEPTED: Final = "referrals-accepted-by-service"
REFERRALS_COMPLETED: Final = "referrals-completed-by-service"
POLICE_REPORTS_FILED: Final = "police-reports-filed"
POLICE_RESPONSES: Final = "police-responses"  # key: PoliceResponse
COURT_CASES_OPENED: Final = "court-cases-opened"
COURT_CASES_WON: Final = "court-cases-won"
PARTNERS_REPORTING: Final = "partners-reporting"  # distinct partners with an incident

# Indicators whose cells have a key (only keys above zero are listed).
BROKEN_DOWN: Final[tuple[str, ...]] = (
    INCIDENTS_BY_VIOLENCE_TYPE,
    INCIDENTS_BY_GBVIMS_TYPE,
    INCIDENTS_BY_PERPETRATOR,
    REFERRALS_MADE,
    REFERRALS_ACCEPTED,
    REFERRALS_COMPLETED,
    POLICE_RESPONSES,
)
# Indicators with one cell (key "") for every (period, area) of the frame, zeros included.
TOTALS: Final[tuple[str, ...]] = (
    INCIDENTS,
    POLICE_SHARE,
    POLICE_REPORTS_FILED,
    COURT_CASES_OPENED,
    COURT_CASES_WON,
    PARTNERS_REPORTING,
)
COUNT_INDICATORS: Final[tuple[str, ...]] = tuple(sorted(BROKEN_DOWN + TOTALS))
# Count indicators also computed by partner (partners-reporting is not: 0 or 1 by partner).
PARTNER_COUNTS: Final[tuple[str, ...]] = tuple(
    i for i in COUNT_INDICATORS if i != PARTNERS_REPORTING
)
STAT_INDICATORS: Final[tuple[str, ...]] = (TIME_TO_FIRST_RESPONSE,)
INDICATORS: Final[tuple[str, ...]] = tuple(sorted(COUNT_INDICATORS + STAT_INDICATORS))


class LedgerError(ValueError):
    """A message the ledger cannot take; the ledger is unchanged."""


class LedgerConflict(LedgerError):
    """A different event under a (partner, number) already received."""


class Cell(msgspec.Struct, frozen=True, kw_only=True):
    """One count: `indicator` in `period` (YYYY-MM) and `area` (country code or "region")."""

    indicator: str
    period: str
    area: str
    key: str  # violence type, perpetrator category, service, police response; "" for totals
    value: int


class Stat(msgspec.Struct, frozen=True, kw_only=True):
    """A distribution of whole hours: how many, median and 90th percentile (module doc)."""

    indicator: str
    period: str
    area: str
    n: int
    median: float | None
    p90: float | None


class PartnerCell(msgspec.Struct, frozen=True, kw_only=True):
    """One count of one partner: `indicator` in `period`, `country` and `partner`."""

    indicator: str
    period: str
    country: str
    partner: str
    key: str
    value: int


class PartnerStat(msgspec.Struct, frozen=True, kw_only=True):
    """The time to first response of one partner's cases in `period` and `country`."""

    indicator: str
    period: str
    country: str
    partner: str
    n: int
    median: float | None
    p90: float | None


class Indicators(msgspec.Struct, frozen=True, kw_only=True):
    """Every table of one computation, each sorted by (indicator, period, area, key); the
    partner tables by (indicator, period, country, partner, key)."""

    cells: tuple[Cell, ...] = ()
    stats: tuple[Stat, ...] = ()
    partner_cells: tuple[PartnerCell, ...] = ()
    partner_stats: tuple[PartnerStat, ...] = ()

    def table(self, indicator: str) -> tuple[Cell, ...]:
        """The cells of one count indicator."""
        if indicator not in COUNT_INDICATORS:
            raise KeyError(f"{indicator!r} is not a count indicator")
        return tuple(c for c in self.cells if c.indicator == indicator)

    def stat_table(self, indicator: str) -> tuple[Stat, ...]:
        if indicator not in STAT_INDICATORS:
            raise KeyError(f"{indicator!r} is not a statistic")
        return tuple(s for s in self.stats if s.indicator == indicator)

    def partner_table(self, indicator: str) -> tuple[PartnerCell, ...]:
        """The partner cells of one count indicator (not partners-reporting)."""
        if indicator not in PARTNER_COUNTS:
            raise KeyError(f"{indicator!r} is not counted by partner")
        return tuple(c for c in self.partner_cells if c.indicator == indicator)

    def partner_stat_table(self, indicator: str) -> tuple[PartnerStat, ...]:
        if indicator not in STAT_INDICATORS:
            raise KeyError(f"{indicator!r} is not a statistic")
        return tuple(s for s in self.partner_stats if s.indicator == indicator)

    def partner_frame(self) -> frozenset[tuple[str, str, str]]:
        """Every (period, country, partner) in which a fact of the partner counts."""
        return frozenset((s.period, s.country, s.partner) for s in self.partner_stats)

    def value(self, indicator: str, period: str, area: str, key: str = TOTAL) -> int:
        """A count; 0 when there is no such cell."""
        return sum(
            c.value
            for c in self.table(indicator)
            if (c.period, c.area, c.key) == (period, area, key)
        )


# --- percentiles ----------------------------------------------------------------------------


def median(values: Iterable[int]) -> float | None:
    """The middle value, or the mean of the two middle ones (n even); None if empty."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    mid = n // 2
    if n % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def nearest_rank(values: Iterable[int], percent: int) -> float | None:
    """The `percent`-th percentile by nearest rank: the ceil(percent * n / 100)-th smallest
    value (at least the 1st); None if empty."""
    if not 0 < percent <= 100:
        raise ValueError("a percentile is in 1..100")
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    rank = max(1, -(-percent * n // 100))  # ceil in integers
    return float(ordered[rank - 1])


# --- the ledger -----------------------------------------------------------------------------

CaseKey = tuple[str, str]  # (partner, case pseudonym)


class CaseFacts:
    """The messages received about one case (not retracted), by message number, and the
    facts they establish (module doc: which message counts)."""

    __slots__ = ("_messages", "key")

    def __init__(self, key: CaseKey) -> None:
        self.key = key
        self._messages: dict[int, SharedEvent] = {}

    def __len__(self) -> int:
        return len(self._messages)

    def get(self, number: int) -> SharedEvent | None:
        return self._messages.get(number)

    def put(self, number: int, event: SharedEvent) -> None:
        self._messages[number] = event

    def _in_order(self) -> Iterator[SharedEvent]:
        for number in sorted(self._messages):
            yield self._messages[number]

    @property
    def incident(self) -> SharedIncident | None:
        return next((e for e in self._in_order() if isinstance(e, SharedIncident)), None)

    def counted(self) -> Iterator[SharedEvent]:
        """The events that count, lowest message number first; none without the incident."""
        if self.incident is None:
            return
        once: set[tuple[str, ...]] = set()
        for event in self._in_order():
            match event:
                case SharedReferralMade() | SharedReferralAccepted() | SharedReferralCompleted():
                    slot: tuple[str, ...] | None = (type(event).__name__, event.referral)
                case SharedPoliceReportFiled() | SharedPoliceResponse():
                    slot = None
                case _:
                    slot = (type(event).__name__,)
            if slot is not None:
                if slot in once:
                    continue
                once.add(slot)
            yield event


class Ledger:
    """Verified messages of every partner, folded per case; idempotent, order-independent."""

    __slots__ = ("_cases", "_retracted", "_seen")

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], str] = {}  # (partner, number) -> case pseudonym
        self._cases: dict[CaseKey, CaseFacts] = {}
        self._retracted: set[CaseKey] = set()

    def add(self, partner: str, number: int, event: SharedEvent) -> bool:
        """Takes one verified message. True if it was new (even if it counts nowhere, its
        case being retracted), False for a duplicate, which changes nothing. LedgerError
        (ledger unchanged) for a message that is not a shared event of `partner`, or a
        different event under a number already received (LedgerConflict)."""
        if type(event) not in SHARED_TYPES:
            raise LedgerError(f"{type(event).__name__} is not a shared event")
        if event.partner != partner:
            raise LedgerError(f"message {partner}:{number} carries an event of {event.partner}")
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise LedgerError(f"message number {number!r} is not a positive integer")
        key: CaseKey = (partner, event.case)
        seen_case = self._seen.get((partner, number))
        if seen_case is not None:
            facts = self._cases.get((partner, seen_case))
            if seen_case != event.case or (facts is not None and facts.get(number) != event):
                raise LedgerConflict(f"message {partner}:{number} differs from the one received")
            return False
        self._seen[(partner, number)] = event.case
        if key in self._retracted:
            return True
        if isinstance(event, SharedRetraction):
            self._retracted.add(key)
            self._cases.pop(key, None)
            return True
        facts = self._cases.get(key)
        if facts is None:
            facts = self._cases[key] = CaseFacts(key)
        facts.put(number, event)
        return True

    def add_opened(self, opened: Opened) -> bool:
        """`add` for a message opened (verified) by handsoff.federation.envelope."""
        return self.add(opened.partner, opened.number, opened.event)

    def cases(self) -> Iterator[CaseFacts]:
        """Cases not retracted (with or without their incident yet), in a fixed order."""
        for key in sorted(self._cases):
            yield self._cases[key]

    def is_retracted(self, partner: str, case: str) -> bool:
        return (partner, case) in self._retracted

    @property
    def messages(self) -> int:
        """Distinct messages received, those of retracted cases included."""
        return len(self._seen)


# --- computing the tables -------------------------------------------------------------------


_REFERRALS: Mapping[type, str] = {
    SharedReferralMade: REFERRALS_MADE,
    SharedReferralAccepted: REFERRALS_ACCEPTED,
    SharedReferralCompleted: REFERRALS_COMPLETED,
}


PartnerKey = tuple[str, str, str]  # (period, country, partner)


class _Tally:
    """Counts by partner; the country and region figures are their sums."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str, str]] = Counter()
        self.hours: defaultdict[PartnerKey, list[int]] = defaultdict(list)
        self.frame: set[PartnerKey] = set()

    def count(self, indicator: str, event: SharedEvent, key: str = TOTAL) -> None:
        assert not isinstance(event, SharedRetraction)
        where = (event.month, str(event.country), event.partner)
        self.counts[(indicator, *where, str(key))] += 1
        self.frame.add(where)

    def fact(self, event: SharedEvent) -> None:
        match event:
            case SharedIncident():
                self.incident(event)
            case SharedFirstResponse():
                where = (event.month, str(event.country), event.partner)
                self.hours[where].append(event.hours_to_first_response)
                self.frame.add(where)
            case SharedReferralMade() | SharedReferralAccepted() | SharedReferralCompleted():
                self.count(_REFERRALS[type(event)], event, event.service)
            case SharedPoliceReportFiled():
                self.count(POLICE_REPORTS_FILED, event)
            case SharedPoliceResponse():
                self.count(POLICE_RESPONSES, event, event.response)
            case SharedCourtCaseOpened():
                self.count(COURT_CASES_OPENED, event)
            case SharedCourtJudgment():
                if event.judgment == CourtJudgment.WON:
                    self.count(COURT_CASES_WON, event)
            case SharedRetraction():  # pragma: no cover - the ledger never keeps one
                raise AssertionError("a retraction is not a fact")

    def incident(self, event: SharedIncident) -> None:
        self.count(INCIDENTS, event)
        for violence in event.violence_types:
            self.count(INCIDENTS_BY_VIOLENCE_TYPE, event, violence)
        self.count(INCIDENTS_BY_GBVIMS_TYPE, event, event.gbvims_type)
        for perpetrator in event.perpetrators:
            self.count(INCIDENTS_BY_PERPETRATOR, event, perpetrator)
        if PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT in event.perpetrators:
            self.count(POLICE_SHARE, event)

    def cells(self) -> tuple[list[Cell], list[PartnerCell]]:
        return area_cells(self.counts, self.frame)

    def stats(self) -> tuple[list[Stat], list[PartnerStat]]:
        by_area: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
        for (period, country, _), hours in self.hours.items():
            by_area[(period, country)] += hours
            by_area[(period, REGION)] += hours
        frame = {(period, area) for period, country, _ in self.frame for area in (country, REGION)}
        out = [
            _stat(period, area, by_area.get((period, area), [])) for period, area in sorted(frame)
        ]
        mine = []
        for period, country, partner in sorted(self.frame):
            s = _stat(period, country, self.hours.get((period, country, partner), []))
            mine.append(
                PartnerStat(
                    indicator=TIME_TO_FIRST_RESPONSE,
                    period=period,
                    country=country,
                    partner=partner,
                    n=s.n,
                    median=s.median,
                    p90=s.p90,
                )
            )
        return out, mine


def _stat(period: str, area: str, hours: Sequence[int]) -> Stat:
    return Stat(
        indicator=TIME_TO_FIRST_RESPONSE,
        period=period,
        area=area,
        n=len(hours),
        median=median(hours),
        p90=nearest_rank(hours, 90),
    )


def area_cells(
    counts: Mapping[tuple[str, str, str, str, str], int], frame: Iterable[PartnerKey]
) -> tuple[list[Cell], list[PartnerCell]]:
    """The sorted country/region cells and partner cells from the partner counts
    {(indicator, period, country, partner, key): n > 0} and the partner frame (shared with
    tally.py, which counts in SQL)."""
    values: dict[tuple[str, str, str, str], int] = {}
    mine: dict[tuple[str, str, str, str, str], int] = dict(counts)
    reporting: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for (indicator, period, country, partner, key), n in counts.items():
        for area in (country, REGION):
            cell = (indicator, period, area, key)
            values[cell] = values.get(cell, 0) + n
            if indicator == INCIDENTS:
                reporting[(period, area)].add(partner)
    areas: set[tuple[str, str]] = set()
    for period, country, partner in frame:
        areas.add((period, country))
        areas.add((period, REGION))
        for indicator in TOTALS:
            if indicator != PARTNERS_REPORTING:
                mine.setdefault((indicator, period, country, partner, TOTAL), 0)
    for period, area in areas:
        for indicator in TOTALS:
            values.setdefault((indicator, period, area, TOTAL), 0)
        values[(PARTNERS_REPORTING, period, area, TOTAL)] = len(reporting.get((period, area), ()))
    cells = [
        Cell(indicator=i, period=p, area=a, key=k, value=v)
        for (i, p, a, k), v in sorted(values.items())
    ]
    partner_cells = [
        PartnerCell(indicator=i, period=p, country=c, partner=m, key=k, value=v)
        for (i, p, c, m, k), v in sorted(mine.items())
    ]
    return cells, partner_cells


def compute(ledger: Ledger) -> Indicators:
    """Every indicator, by month and country and for the region, from what `ledger` holds."""
    tally = _Tally()
    for case in ledger.cases():
        for event in case.counted():
            tally.fact(event)
    cells, partner_cells = tally.cells()
    stats, partner_stats = tally.stats()
    return Indicators(
        cells=tuple(cells),
        stats=tuple(stats),
        partner_cells=tuple(partner_cells),
        partner_stats=tuple(partner_stats),
    )


def compute_from(messages: Iterable[tuple[str, int, SharedEvent]]) -> Indicators:
    """`compute` of a ledger fed `messages` (partner, number, event), duplicates allowed."""
    ledger = Ledger()
    for partner, number, event in messages:
        ledger.add(partner, number, event)
    return compute(ledger)


def by_key(cells: Sequence[Cell]) -> Mapping[tuple[str, str, str], int]:
    """{(period, area, key): value} of cells of one indicator (a test and report helper)."""
    return {(c.period, c.area, c.key): c.value for c in cells}
