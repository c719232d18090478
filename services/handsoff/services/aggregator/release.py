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
from handsoff.services.aggregator.disclosure import Published, SuppressionMemory, Table

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


def _frame(cells: Iterable[ind.Cell]) -> dict[str, dict[tuple[str, str], int]]:
    """period -> {(country, key): value}, country cells only (the region is the margin)."""
    out: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for c in cells:
        if c.area != ind.REGION:
            out[c.period][(c.area, c.key or COUNT_COLUMN)] = c.value
    return out


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
    by_period = {t.period: t for t in perpetrators}
    out = []
    for t in gbvims:
        p = by_period.get(t.period)
        for area, incidents in _areas(t):
            police: Figure = 0
            if p is not None and police_key in p.columns:
                j = p.columns.index(police_key)
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


def _stats(stats: Sequence[ind.Stat], protector: _Protector, k: int) -> tuple[PublishedStat, ...]:
    by_period: dict[str, dict[str, ind.Stat]] = defaultdict(dict)
    for s in stats:
        by_period[s.period][s.area] = s
    out = []
    for period in sorted(by_period):
        areas = by_period[period]
        cells = {(a, N_COLUMN): s.n for a, s in areas.items() if a != ind.REGION}
        t = _published(period, protector.table(_RESPONSES_N, period, cells, N_COLUMN))
        for area, n in _areas(t):
            exact = areas.get(area)
            shown = exact if isinstance(n, int) and n >= k else None
            out.append(
                PublishedStat(
                    period=period,
                    area=area,
                    n=n,
                    median=shown.median if shown is not None else None,
                    p90=shown.p90 if shown is not None else None,
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
    tables: dict[str, tuple[PublishedTable, ...]] = {}
    for name in PROTECTED:
        frame = _frame(figures.table(name))
        one_column = None if name in ind.BROKEN_DOWN else COUNT_COLUMN
        tables[name] = tuple(
            _published(period, protector.table(name, period, frame[period], one_column))
            for period in sorted(frame)
        )
    stats = _stats(figures.stat_table(ind.TIME_TO_FIRST_RESPONSE), protector, header.k)
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
