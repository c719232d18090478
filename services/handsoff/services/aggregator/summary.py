"""Regional headline figures of a release, month by month, as text (demo, terminals).

Only what the release published: a suppressed figure is shown as "<k" (fewer than k cases,
or hidden so a small figure elsewhere cannot be worked out), never as a number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from handsoff.federation.statements import COUNTRY, SUPPRESSED, AggregateStatement, Figure
from handsoff.services.aggregator import indicators as ind

COLUMNS = (
    ("month", 8),
    ("incidents", 9),
    ("by police", 9),
    ("1st response h p50/p90", 22),
    ("referrals made/done", 19),
    ("police reports", 14),
    ("court opened/won", 16),
)


def _total(s: AggregateStatement | None, period: str) -> Figure:
    if s is None:
        return 0
    for t in s.tables:
        if t.period == period and t.dimension == COUNTRY:  # partner tables repeat the total
            return t.total
    return 0


def _shown(value: Figure | float | None, k: int) -> str:
    if value is None:
        return "-"
    if value == SUPPRESSED:
        return f"<{k}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _periods(statements: Iterable[AggregateStatement]) -> list[str]:
    return sorted(
        {t.period for s in statements for t in s.tables}
        | {x.period for s in statements for x in s.stats}
    )


def region_lines(statements: Sequence[AggregateStatement]) -> list[str]:
    """A table of the region's figures per month (the latest release's statements)."""
    if not statements:
        return ["(no release yet)"]
    by = {s.indicator: s for s in statements}
    k = statements[0].k
    header = "  ".join(name.rjust(width) for name, width in COLUMNS)
    lines = [header]
    for period in _periods(statements):
        share = next(
            (x for x in by[ind.POLICE_SHARE].shares if (x.period, x.area) == (period, ind.REGION)),
            None,
        )
        stat = next(
            (
                x
                for x in by[ind.TIME_TO_FIRST_RESPONSE].stats
                if (x.period, x.area) == (period, ind.REGION)
            ),
            None,
        )
        police = "-" if share is None or share.share is None else f"{100 * share.share:.0f}%"
        response = "-" if stat is None else f"{_shown(stat.median, k)}/{_shown(stat.p90, k)}"

        def total(name: str, period: str = period) -> str:
            return _shown(_total(by.get(name), period), k)

        cells = (
            period,
            total(ind.INCIDENTS),
            police,
            response,
            f"{total(ind.REFERRALS_MADE)}/{total(ind.REFERRALS_COMPLETED)}",
            total(ind.POLICE_REPORTS_FILED),
            f"{total(ind.COURT_CASES_OPENED)}/{total(ind.COURT_CASES_WON)}",
        )
        lines.append(
            "  ".join(c.rjust(width) for c, (_, width) in zip(cells, COLUMNS, strict=True))
        )
    lines.append(f"(<{k}: suppressed, fewer than {k} cases or hidden to protect a small figure)")
    return lines
