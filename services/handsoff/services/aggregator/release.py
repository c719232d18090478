"""A release: the indicators turned into protected, publishable statements. Pure, no I/O.

    exact Indicators --(disclosure.release per indicator and period)--> AggregateStatement
                                                                        (one per indicator)

Tables are countries x breakdown, with margins (a country's total, the region's total per
category, the region's grand total), protected together so no suppressed entry can be worked
out from them (disclosure.py). Three published indicators are *derived* from a protected
table instead of being protected on their own, because they share its margins:

- incidents: the row totals and grand total of incidents-by-gbvims-type (each incident has
  exactly one GBVIMS core type, so these margins are the incident counts);
- police-share: the police column of incidents-by-perpetrator over those incident totals;
- time-to-first-response: n is protected as a one-column table; the median and 90th
  percentile are published only where n is published and at least k.

Partner breakdowns. When the release header's `breakdowns` (the region document's rule) is
"partner", every count indicator but partners-reporting (0 or 1 by partner) is also
published by partner, each period's partner table right after its country table
(statements.py). A country's cells are the sums of its partners' (the partners of the
country their events name) and the region's the sums of the countries', so the country
table and its partners are protected as *one* nested table (disclosure.protect_nested): no
suppressed partner or country entry follows from the other's margins. Derived figures follow
as above: incidents by partner (the GBVIMS partner table's row totals), the police share by
partner, and the time to first response by partner (n protected in the nested n table,
median and p90 only where the partner's n is published and at least k). A period's partner
rows are the partners with a fact in it, and any remembered (a country without partner rows
had no fact in the period: its figures are 0, as a period missing from a release had none).
partners-reporting, a count of organisations, is largely implied by the partner tables
(which partners had incidents): the region agreed to name its partners. With "country", no
partner figure reaches a statement and a release is exactly what it was before partner
breakdowns (byte for byte).

The suppression memory (once suppressed for a period, always suppressed for it) is the only
state carried from one release to the next; the result depends on nothing else, so a rebuild
that replays the same inputs reproduces every release byte for byte.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from handsoff.events.codes import PerpetratorCategory
from handsoff.federation.statements import (
    PARTNER,
    SUPPRESSED,
    AggregateStatement,
    Figure,
    Inputs,
    PublishedShare,
    PublishedStat,
    PublishedTable,
)
from handsoff.services.aggregator import disclosure
from handsoff.services.aggregator import indicators as ind
from handsoff.services.aggregator.disclosure import (
    NestedTable,
    Published,
    SuppressionMemory,
    Table,
)

COUNT_COLUMN: Final = "count"
N_COLUMN: Final = "n"

# The statements of a release, in publication order (pinned names: NATS subject tokens).
PROTECTED: Final[tuple[str, ...]] = (
    ind.INCIDENTS_BY_GBVIMS_TYPE,
    ind.INCIDENTS_BY_VIOLENCE_TYPE,
    ind.INCIDENTS_BY_PERPETRATOR,
    ind.REFERRALS_MADE,
    ind.REFERRALS_ACCEPTED,
    ind.REFERRALS_COMPLETED,
    ind.POLICE_REPORTS_FILED,
    ind.POLICE_RESPONSES,
    ind.COURT_CASES_OPENED,
    ind.COURT_CASES_WON,
    ind.PARTNERS_REPORTING,
)
DERIVED: Final[tuple[str, ...]] = (ind.INCIDENTS, ind.POLICE_SHARE, ind.TIME_TO_FIRST_RESPONSE)
PUBLISHED: Final[tuple[str, ...]] = tuple(sorted(PROTECTED + DERIVED))
# The region document's `breakdowns` value that allows partner-level figures.
PARTNER_BREAKDOWNS: Final = "partner"
# The protected indicators also published by partner (under partner breakdowns).
BY_PARTNER: Final[tuple[str, ...]] = tuple(n for n in PROTECTED if n in ind.PARTNER_COUNTS)
# The n of time-to-first-response is protected under this memory name.
_RESPONSES_N: Final = "time-to-first-response-n"


@dataclass(frozen=True)
class ReleaseHeader:
    """What every statement of a release shares."""

    region: str
    region_version: int
    aggregator: str
    release: int
    k: int
    breakdowns: str
    as_of: datetime | None
    inputs: Inputs


@dataclass(frozen=True)
class Release:
    statements: tuple[AggregateStatement, ...]
    memory: SuppressionMemory

    def statement(self, indicator: str) -> AggregateStatement:
        return next(s for s in self.statements if s.indicator == indicator)


Pair = tuple[str, str]  # (country, partner)


def _frame(cells: Iterable[ind.Cell]) -> dict[str, dict[tuple[str, str], int]]:
    """period -> {(country, key): value}, country cells only (the region is the margin)."""
    out: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for c in cells:
        if c.area != ind.REGION:
            out[c.period][(c.area, c.key or COUNT_COLUMN)] = c.value
    return out


def _partner_frame(
    cells: Iterable[ind.PartnerCell],
) -> dict[str, dict[tuple[str, str, str], int]]:
    """period -> {(country, partner, key): value}."""
    out: dict[str, dict[tuple[str, str, str], int]] = defaultdict(dict)
    for c in cells:
        out[c.period][(c.country, c.partner, c.key or COUNT_COLUMN)] = c.value
    return out


def member(country: str, partner: str) -> str:
    """A partner's row label in a nested table and in the suppression memory (country codes
    and partner ids hold no '/', so the label is unambiguous and never a country's)."""
    return f"{country}/{partner}"


def _pair(label: str) -> Pair:
    country, partner = label.split("/", 1)
    return country, partner


def _labels(
    present: Iterable[str], remembered: Iterable[str | None], base: Iterable[str] = ()
) -> tuple[str, ...]:
    return tuple(sorted({*present, *base, *(x for x in remembered if x is not None)}))


class _Protector:
    def __init__(self, k: int, memory: SuppressionMemory, countries: Sequence[str]) -> None:
        self.k = k
        self.memory = memory
        self.countries = tuple(countries)

    def table(
        self, name: str, period: str, cells: Mapping[tuple[str, str], int], one_column: str | None
    ) -> Published:
        kept = self.memory.suppressed(name, period)
        rows = _labels((r for r, _ in cells), (r for r, _ in kept), self.countries)
        if one_column is not None:
            columns: tuple[str, ...] = (one_column,)
        else:
            columns = _labels((c for _, c in cells), (c for _, c in kept))
        if not columns:
            columns = (COUNT_COLUMN,)
        published, self.memory = disclosure.release(
            Table.from_cells(cells, rows, columns),
            name=name,
            period=period,
            memory=self.memory,
            k=self.k,
        )
        return published

    def nested(
        self,
        name: str,
        period: str,
        cells: Mapping[tuple[str, str, str], int],
        frame: Iterable[Pair],
        one_column: str | None,
    ) -> Published:
        """The countries and their partners, protected together. ``cells``: (country,
        partner, key) -> value; ``frame``: the (country, partner) rows of the period."""
        kept = self.memory.suppressed(name, period)
        kept_members = self.memory.suppressed(disclosure.members_record(name), period)
        pairs = {
            *frame,
            *((c, p) for c, p, _ in cells),
            *(_pair(r) for r, _ in kept_members if r is not None),
        }
        members = {member(c, p): c for c, p in sorted(pairs)}
        rows = _labels((c for c, _ in pairs), (r for r, _ in kept), self.countries)
        if one_column is not None:
            columns: tuple[str, ...] = (one_column,)
        else:
            columns = _labels((k for _, _, k in cells), (c for _, c in kept | kept_members))
        if not columns:
            columns = (COUNT_COLUMN,)
        table = NestedTable.from_cells(
            {(member(c, p), k): v for (c, p, k), v in cells.items()}, members, rows, columns
        )
        published, self.memory = disclosure.release_nested(
            table, name=name, period=period, memory=self.memory, k=self.k
        )
        return published


def _figure(entry: disclosure.Entry) -> Figure:
    return SUPPRESSED if entry is disclosure.SUPPRESSED else int(entry)


def _published(period: str, p: Published) -> PublishedTable:
    return PublishedTable(
        period=period,
        rows=p.rows,
        columns=p.columns,
        cells=tuple(tuple(_figure(p.cell(r, c)) for c in p.columns) for r in p.rows),
        row_totals=tuple(_figure(p.row_total(r)) for r in p.rows),
        column_totals=tuple(_figure(p.column_total(c)) for c in p.columns),
        total=_figure(p.grand_total),
    )


def _partners_published(period: str, p: Published) -> tuple[PublishedTable, ...]:
    """The partner table of a nested ``p`` (none without partners): its rows in their
    countries, the region's margins as column totals and total."""
    if not p.members:
        return ()
    pairs = [_pair(m) for m in p.members]
    return (
        PublishedTable(
            period=period,
            rows=tuple(x for _, x in pairs),
            columns=p.columns,
            cells=tuple(tuple(_figure(p.cell(m, c)) for c in p.columns) for m in p.members),
            row_totals=tuple(_figure(p.row_total(m)) for m in p.members),
            column_totals=tuple(_figure(p.column_total(c)) for c in p.columns),
            total=_figure(p.grand_total),
            dimension=PARTNER,
            countries=tuple(c for c, _ in pairs),
        ),
    )


def _areas(t: PublishedTable) -> list[tuple[str, Figure]]:
    """(area, total) for every country row and the region."""
    return [*zip(t.rows, t.row_totals, strict=True), (ind.REGION, t.total)]


def _incidents(gbvims: Sequence[PublishedTable]) -> tuple[PublishedTable, ...]:
    return tuple(
        PublishedTable(
            period=t.period,
            rows=t.rows,
            columns=(COUNT_COLUMN,),
            cells=tuple((v,) for v in t.row_totals),
            row_totals=t.row_totals,
            column_totals=(t.total,),
            total=t.total,
            dimension=t.dimension,
            countries=t.countries,
        )
        for t in gbvims
    )


def _share(police: Figure, incidents: Figure) -> float | None:
    if isinstance(police, int) and isinstance(incidents, int) and incidents > 0:
        return round(police / incidents, 4)
    return None


def _police_share(
    gbvims: Sequence[PublishedTable], perpetrators: Sequence[PublishedTable]
) -> tuple[PublishedShare, ...]:
    police_key = PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT.value
    by_period = {(t.period, t.dimension): t for t in perpetrators}
    out = []
    for t in gbvims:
        p = by_period.get((t.period, t.dimension))
        j = p.columns.index(police_key) if p is not None and police_key in p.columns else None
        if t.dimension == PARTNER:
            police_of: dict[Pair, Figure] = {}
            if p is not None and j is not None:
                rows = zip(p.countries, p.rows, p.cells, strict=True)
                police_of = {(c, x): line[j] for c, x, line in rows}
            for c, x, incidents in zip(t.countries, t.rows, t.row_totals, strict=True):
                police = police_of.get((c, x), 0)
                out.append(
                    PublishedShare(
                        period=t.period,
                        area=c,
                        police=police,
                        incidents=incidents,
                        share=_share(police, incidents),
                        partner=x,
                    )
                )
            continue
        for area, incidents in _areas(t):
            police = 0
            if p is not None and j is not None:
                if area == ind.REGION:
                    police = p.column_totals[j]
                elif area in p.rows:
                    police = p.cells[p.rows.index(area)][j]
            out.append(
                PublishedShare(
                    period=t.period,
                    area=area,
                    police=police,
                    incidents=incidents,
                    share=_share(police, incidents),
                )
            )
    return tuple(out)


def _shown(
    n: Figure, exact: ind.Stat | ind.PartnerStat | None, k: int
) -> tuple[float | None, float | None]:
    """(median, p90) where n is published and at least k, else (None, None)."""
    if exact is None or not isinstance(n, int) or n < k:
        return None, None
    return exact.median, exact.p90


def _stats(
    figures: ind.Indicators, protector: _Protector, k: int, by_partner: bool
) -> tuple[PublishedStat, ...]:
    by_period: dict[str, dict[str, ind.Stat]] = defaultdict(dict)
    for s in figures.stat_table(ind.TIME_TO_FIRST_RESPONSE):
        by_period[s.period][s.area] = s
    partners: dict[str, dict[Pair, ind.PartnerStat]] = defaultdict(dict)
    if by_partner:
        for x in figures.partner_stat_table(ind.TIME_TO_FIRST_RESPONSE):
            partners[x.period][(x.country, x.partner)] = x
    out = []
    for period in sorted(by_period):
        areas = by_period[period]
        mine = partners[period]
        if by_partner:
            cells = {(c, x, N_COLUMN): s.n for (c, x), s in mine.items()}
            p = protector.nested(_RESPONSES_N, period, cells, mine, N_COLUMN)
        else:
            by_country = {(a, N_COLUMN): s.n for a, s in areas.items() if a != ind.REGION}
            p = protector.table(_RESPONSES_N, period, by_country, N_COLUMN)
        for area, n in _areas(_published(period, p)):
            median, p90 = _shown(n, areas.get(area), k)
            out.append(PublishedStat(period=period, area=area, n=n, median=median, p90=p90))
        for label in p.members:
            country, partner = _pair(label)
            n = _figure(p.row_total(label))
            median, p90 = _shown(n, mine.get((country, partner)), k)
            out.append(
                PublishedStat(
                    period=period, area=country, n=n, median=median, p90=p90, partner=partner
                )
            )
    return tuple(out)


def build(
    figures: ind.Indicators,
    header: ReleaseHeader,
    countries: Sequence[str],
    memory: SuppressionMemory,
) -> Release:
    """Every statement of one release, and the suppression memory to keep."""
    protector = _Protector(header.k, memory, countries)
    by_partner = header.breakdowns == PARTNER_BREAKDOWNS
    rows: dict[str, set[Pair]] = defaultdict(set)
    if by_partner:
        for period, country, partner in figures.partner_frame():
            rows[period].add((country, partner))
    tables: dict[str, tuple[PublishedTable, ...]] = {}
    for name in PROTECTED:
        frame = _frame(figures.table(name))
        one_column = None if name in ind.BROKEN_DOWN else COUNT_COLUMN
        if by_partner and name in BY_PARTNER:
            mine = _partner_frame(figures.partner_table(name))
            out: list[PublishedTable] = []
            for period in sorted(frame.keys() | mine.keys()):
                p = protector.nested(name, period, mine[period], rows[period], one_column)
                out += (_published(period, p), *_partners_published(period, p))
            tables[name] = tuple(out)
            continue
        tables[name] = tuple(
            _published(period, protector.table(name, period, frame[period], one_column))
            for period in sorted(frame)
        )
    stats = _stats(figures, protector, header.k, by_partner)
    gbvims = tables[ind.INCIDENTS_BY_GBVIMS_TYPE]
    tables[ind.INCIDENTS] = _incidents(gbvims)
    shares = _police_share(gbvims, tables[ind.INCIDENTS_BY_PERPETRATOR])

    def statement(name: str) -> AggregateStatement:
        return AggregateStatement(
            region=header.region,
            region_version=header.region_version,
            aggregator=header.aggregator,
            release=header.release,
            indicator=name,
            k=header.k,
            breakdowns=header.breakdowns,
            as_of=header.as_of,
            inputs=header.inputs,
            tables=tables.get(name, ()),
            stats=stats if name == ind.TIME_TO_FIRST_RESPONSE else (),
            shares=shares if name == ind.POLICE_SHARE else (),
        )

    statements = tuple(statement(name) for name in PUBLISHED)
    return Release(statements=statements, memory=protector.memory)
