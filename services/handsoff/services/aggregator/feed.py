"""The latest release as coordinators see it: JSON, CSV rows, and a wait for the next one.

The aggregator's publisher sets each new release here; the HTTP routes read from it. Many
readers, one writer, all on the event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from handsoff.federation.statements import PARTNER, AggregateStatement, statement_bytes
from handsoff.services.aggregator.indicators import REGION

CSV_HEADER = ("release", "indicator", "period", "area", "breakdown", "measure", "value")
# A release with partner breakdowns: a partner's rows name it (area: its country); the
# column is empty on country and region rows, and absent from releases without partners.
PARTNER_CSV_HEADER = (
    "release",
    "indicator",
    "period",
    "area",
    "partner",
    "breakdown",
    "measure",
    "value",
)
TOTAL = "total"


@dataclass(frozen=True)
class LatestRelease:
    number: int
    statements: tuple[AggregateStatement, ...]
    signed: tuple[bytes, ...]  # the signed form of each statement, same order

    def json(self) -> bytes:
        """{"release": n, "statements": [signed statement, ...]} (each verifiable as is)."""
        return b'{"release":%d,"statements":[%b]}' % (self.number, b",".join(self.signed))

    def signed_statement(self, indicator: str) -> bytes | None:
        for s, raw in zip(self.statements, self.signed, strict=True):
            if s.indicator == indicator:
                return raw
        return None

    def has_partners(self) -> bool:
        """Whether the release publishes partner-level figures."""
        return any(
            any(t.dimension == PARTNER for t in s.tables)
            or any(x.partner is not None for x in s.stats)
            or any(x.partner is not None for x in s.shares)
            for s in self.statements
        )

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        partners = self.has_partners()
        writer.writerow(PARTNER_CSV_HEADER if partners else CSV_HEADER)
        for s in self.statements:
            for period, area, partner, *rest in _rows(s):
                if partners:
                    writer.writerow((self.number, s.indicator, period, area, partner, *rest))
                else:
                    writer.writerow((self.number, s.indicator, period, area, *rest))
        return out.getvalue()


def _rows(s: AggregateStatement) -> Iterator[tuple[object, ...]]:
    """(period, area, partner, breakdown, measure, value) for every published figure; a
    partner table's region margins are its country table's, so they are not repeated."""
    for t in s.tables:
        one_column = len(t.columns) == 1
        if t.dimension == PARTNER:
            rows = zip(t.countries, t.rows, t.cells, t.row_totals, strict=True)
            for country, partner, cells, total in rows:
                if one_column:
                    yield (t.period, country, partner, "", "count", total)
                    continue
                for column, value in zip(t.columns, cells, strict=True):
                    yield (t.period, country, partner, column, "count", value)
                yield (t.period, country, partner, TOTAL, "count", total)
            continue
        for row, cells, total in zip(t.rows, t.cells, t.row_totals, strict=True):
            if one_column:
                yield (t.period, row, "", "", "count", total)
                continue
            for column, value in zip(t.columns, cells, strict=True):
                yield (t.period, row, "", column, "count", value)
            yield (t.period, row, "", TOTAL, "count", total)
        if not one_column:
            for column, value in zip(t.columns, t.column_totals, strict=True):
                yield (t.period, REGION, "", column, "count", value)
        yield (t.period, REGION, "", "" if one_column else TOTAL, "count", t.total)
    for st in s.stats:
        who = st.partner or ""
        yield (st.period, st.area, who, "", "n", st.n)
        yield (st.period, st.area, who, "", "median_hours", _blank(st.median))
        yield (st.period, st.area, who, "", "p90_hours", _blank(st.p90))
    for sh in s.shares:
        who = sh.partner or ""
        yield (sh.period, sh.area, who, "", "police", sh.police)
        yield (sh.period, sh.area, who, "", "incidents", sh.incidents)
        yield (sh.period, sh.area, who, "", "share", _blank(sh.share))


def _blank(value: float | None) -> object:
    return "" if value is None else value


class ReleaseFeed:
    """Holds the latest release and wakes whoever waits for a newer one."""

    def __init__(self) -> None:
        self._latest: LatestRelease | None = None
        self._changed = asyncio.Condition()

    @property
    def latest(self) -> LatestRelease | None:
        return self._latest

    async def publish(
        self, number: int, statements: Sequence[AggregateStatement], signed: Sequence[bytes]
    ) -> None:
        async with self._changed:
            self._latest = LatestRelease(number, tuple(statements), tuple(signed))
            self._changed.notify_all()

    async def wait_newer(self, than: int, timeout: float) -> LatestRelease | None:
        """The latest release once its number is above `than`, or None after `timeout`."""

        def newer() -> bool:
            return self._latest is not None and self._latest.number > than

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(newer), timeout)
            except TimeoutError:
                return None
        return self._latest

    @staticmethod
    def from_signed(number: int, signed: Sequence[bytes]) -> LatestRelease:
        """A release read back from storage (already verified when it was made)."""
        from msgspec.json import decode

        statements = tuple(decode(statement_bytes(b), type=AggregateStatement) for b in signed)
        return LatestRelease(number, statements, tuple(signed))
