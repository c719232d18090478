"""Disclosure control for published count tables (issue #4). Pure and deterministic, no I/O.

A count of 1 or 2 in a small place can identify a person, so before the aggregator publishes
a table (rows = countries, columns = categories, say; or one row with a total) every entry,
margins included, is either its true number or ``SUPPRESSED``:

1. **Primary suppression.** An entry (cell, row total, column total or grand total) from 1 to
   ``k - 1`` is suppressed; ``k`` is configurable, default 5, at least 2.

   **Zeros are published.** A zero is nobody, and "no police violence reported in X" is a
   result in itself. A published zero enters the attacker's equations as a known constant
   like any other published number, and the exact check below accounts for it; that zeros
   are published also tells a reader every suppressed entry is at least 1, which the
   lower-bound step (2c) accounts for. Zeros are never chosen as complements while a non-zero entry
   will do (a zero can be a known structural zero, so hiding it protects nothing); a zero is
   taken only when a line has nothing else (a remembered entry that has fallen to 0).

2. **Complementary suppression**, so no suppressed entry can be worked out from the published
   numbers through additivity (cells add up to their row total and column total; row totals
   and column totals add up to the grand total).

   a. *Line rule.* Every line (a row with its total, a column with its total, the row of
      column totals with the grand total, the column of row totals with the grand total) holds
      either no suppressed entry or at least two. A line with exactly one gets a complement:
      a published entry of that line, chosen by (1) entries whose other line also holds
      exactly one suppressed entry first (one complement then settles two lines, which keeps
      the pattern small: a lone small cell costs a 2x2 rectangle, not a chain), (2) smallest
      non-zero value, zeros last, (3) position (rows, then columns, in table order, totals
      last). Lines are scanned in order (rows, then the totals row, then columns, then the
      totals column) until stable.

   b. *Exact check.* The line rule is not enough: two blocks of suppressed cells joined by a
      single suppressed cell satisfy it, yet that cell is the difference of the two blocks'
      row sums and column sums. So every pattern is checked exactly: the additivity equations
      restricted to the suppressed entries (published numbers move to the right-hand side) are
      put in reduced row echelon form over the rationals (``fractions.Fraction``, no floats);
      a suppressed entry is uniquely determined iff its pivot row has no free variable.
      Whether an entry is determined depends only on which entries are suppressed, never on
      the values. For the first determined entry (in position order) the published entry with
      the smallest non-zero value whose suppression (followed by the line rule again) makes
      it undetermined is added; repeat until nothing is determined.

   A single extra entry always suffices: a determined entry is a bridge between two parts
   of the suppressed pattern (see below), each part holds a row line and a column line (the
   line rule gives every touched line two suppressed entries), and every row line meets
   every column line in exactly one entry, so some entry joins the two parts.

   The equations of a two-way table with margins are, up to signs, those of a bipartite
   graph (lines are nodes, entries are edges). An entry is undetermined exactly when it
   lies on a cycle of suppressed entries: moving the values by +1/-1 alternately around
   that cycle gives another table with the same published numbers.

   c. *Lower bounds.* Undetermined is not enough: a reader also knows counts are whole
      numbers and, since zeros are published, that a suppressed entry is at least 1. Two
      suppressed cells of a row that must add up to 2 are then both 1, though no equation
      determines either. So every suppressed entry must also move by one *without going
      below its bound*: it must lie on a cycle of suppressed entries where each entry the
      move lowers is above its bound (module ``bounds`` shows this is exact). The first
      entry that cannot move gets the cheapest such cycle (Dijkstra over the published
      entries, by the same order as complements), then the line rule and the exact check
      run again, until every suppressed entry can move. Raising needs no bound, so hiding a
      cell with its margins always frees it. (The bound is 1 for every suppressed entry
      that is not 0; an entry that is 0, suppressed as a last resort or kept by
      ``SuppressionMemory`` after its count fell, has bound 0.)

3. **Statistics.** ``suppress_stat``: a median or percentile over fewer than ``k`` cases is
   not published.

4. **Consistency across releases of the same period** (late reports make a month's counts
   grow): ``SuppressionMemory`` remembers, per table name and period, every entry suppressed
   in any release (primary and complements): *once suppressed for a period, always
   suppressed for that period* -- later releases start from that set, then add their own
   primary and complementary suppressions. So the suppressed sets of a period only grow, a
   later release never publishes what an earlier one hid, and the difference of two
   releases (``difference``) has the later release's pattern as its unknowns, which the
   exact check has already cleared.

   *Growth bounds.* A reader who also assumes counts never fall between releases knows
   more: an entry is at least what an earlier release showed (or implied). A cell that
   turns small in a re-release, hidden among complements published before that did not
   grow, can be pinned that way though each release alone is safe. So the lower-bound step
   (2c) takes the period's history (``History``, in the memory, never published) as well:
   an entry can move if another whole history fits what every release published, and two
   kinds suffice. Earlier releases as they were and this one moved along a cycle: an entry
   this lowers must have grown since the previous release (and be above its bound). Or
   every release since an *epoch* (a release whose pattern grew) moved alike along a cycle
   of entries suppressed since then: an entry this lowers must have been lowerable at the
   epoch and be above its bound now. Each kind keeps every equation of every release, no
   suppressed entry below its bound and no entry falling between releases (for counts that
   really only grow; a retraction can lower one, and then the reader's premise is wrong).
   Only the first kind can use entries suppressed now for the first time, so when little
   changed between two releases a new small cell is freed through entries that grew, often
   its margins: fewer, larger releases hide less. The memory keeps per table and period
   the last release's non-zero values and each epoch's new entries and lowerable ones. A
   table unchanged since the last release of its period goes out again as it was (nothing
   new to learn, nothing re-checked). The tests check every release against a search for
   such histories on the equations.

5. **Nested tables** (``NestedTable``, ``protect_nested``, ``release_nested``): member rows
   (partners) nested in group rows (countries), for partner-level breakdowns. A group's
   cells are the sums of its members' cells, so the members, the groups and every margin
   are linked, and they are protected as *one* table: protecting the partner table and the
   country table apart would let a country's published cell give away a partner cell
   hidden in the partner table (a worked example is in the tests). The equations are those
   of the country table, plus each member's row and, in each group with members, each
   column of its members with the group's entry as total. A group with a single member
   has that member's entries as its own: the line rule hides them together.

   The same steps apply. Complements are taken as low as possible: members' cells,
   then members' totals, then the groups' cells, then the groups' totals and the column
   totals, the grand total last (countries and the region are what most readers need).
   The exact check needs more than one extra entry now and then (a partner row meets only
   its own country's columns), so instead of one candidate at a time a determined entry
   gets the cheapest path of published entries that closes a cycle through it (Dijkstra,
   costs by that order, then smallest value, zeros last). Leaving out the equations that
   follow from the others (each group's own row, when it has members), every entry is in
   exactly two equations with signs that make them a directed graph (entries are edges):
   so, as for a two-way table, a suppressed entry is determined exactly when it is a bridge
   of the suppressed entries' graph, and the lower-bound step (2c) carries over on the
   same graph. ``protect_nested`` finds bridges in linear time; the tests hold
   them equal to ``determined`` (the linear algebra over every equation) on arbitrary
   patterns. The memory keeps the groups' entries under the table's name, exactly where a
   plain table's release keeps them, and the members' under ``members_record(name)``, so
   a region that switches between partner and country breakdowns within a period keeps
   one pattern of countries that only grows.

Limits (documented, not handled here):

- No suppressed entry is fixed to one value (by the equations and the lower bounds), but an
  attacker may still bound it (a suppressed cell in a line with total 7 is at most 7): no
  minimum protection interval is enforced. Nor does the check model an attacker who uses
  how complements are chosen (smallest values first) to bound them further.
- Growth bounds (4) are checked for the two kinds of other history, not for every history
  a reader could construct (linear programming over all releases of the period); a
  release is safe if one of the two exists for each suppressed entry, so the check never
  passes a pinned entry, but it may hide more than the least needed. An entry of an
  earlier release stays free because its other history carries on into the later ones
  (moved alike), which holds while the table keeps its shape: a switch between partner
  and country breakdowns within a period starts the epochs again, and the releases before
  it are not checked again against what the releases after it show.
- One table at a time (a nested table is one table). Tables that share margins (two
  breakdowns of the same countries) must be protected together, or an entry hidden in one
  may be recovered from the other; release.py derives figures that repeat another table's
  entries from that table instead of protecting them twice. Inequalities between tables
  are not taken: a breakdown where an incident can count more than once (violence types,
  perpetrators) has totals at least the incident counts of the GBVIMS table.
- Margins are the sums of the cells. A total that also counts cases without a category must
  get an explicit "unknown" column, or additivity (and the check) does not describe it.
- The checker is cubic in the number of suppressed entries with a candidate loop on top:
  fine for region tables (tens of rows and columns), not for very large tables. (Nested
  tables use the linear bridge search instead.)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Final, Literal

import msgspec

from handsoff.services.aggregator.bounds import Circulations, cheapest_path

DEFAULT_K: Final = 5

Label = str
Position = tuple[Label | None, Label | None]
"""``(row, column)``; ``None`` stands for the total: ``(row, None)`` is a row total,
``(None, column)`` a column total, ``(None, None)`` the grand total."""


class Suppressed(enum.Enum):
    SUPPRESSED = "suppressed"


SUPPRESSED: Final = Suppressed.SUPPRESSED
Entry = int | Literal[Suppressed.SUPPRESSED]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"disclosure threshold k must be an integer >= 2, got {k!r}")


def _check_labels(kind: str, labels: Sequence[str]) -> None:
    if not labels:
        raise ValueError(f"a table needs at least one {kind}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate {kind} labels: {list(labels)!r}")
    if not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{kind} labels must be strings")


def _check_counts(
    counts: tuple[tuple[int, ...], ...], lines: int, columns: int, line_label: str
) -> None:
    if len(counts) != lines or any(len(line) != columns for line in counts):
        raise ValueError(f"counts must have one line per {line_label} and one value per column")
    for line in counts:
        for v in line:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"counts must be non-negative integers, got {v!r}")


class Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Counts ``counts[i][j]`` for ``rows[i]`` x ``columns[j]``; margins are derived."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        _check_labels("row", self.rows)
        _check_labels("column", self.columns)
        _check_counts(self.counts, len(self.rows), len(self.columns), "row")

    @classmethod
    def from_cells(
        cls,
        cells: Mapping[tuple[str, str], int],
        rows: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Table:
        """A two-way table; cells not given are 0. Without ``rows``/``columns`` the labels
        of ``cells`` are used, sorted."""
        row_labels = tuple(rows) if rows is not None else tuple(sorted({r for r, _ in cells}))
        col_labels = tuple(columns) if columns is not None else tuple(sorted({c for _, c in cells}))
        unknown = [key for key in cells if key[0] not in row_labels or key[1] not in col_labels]
        if unknown:
            raise ValueError(f"cells outside the given rows/columns: {unknown!r}")
        counts = tuple(tuple(cells.get((r, c), 0) for c in col_labels) for r in row_labels)
        return cls(rows=row_labels, columns=col_labels, counts=counts)

    @classmethod
    def one_way(cls, counts: Mapping[str, int], row: str = "all") -> Table:
        """A one-way table: one row (labelled ``row``) whose total is the grand total.

        Its column totals equal its cells and are suppressed with them."""
        columns = tuple(counts)
        return cls(rows=(row,), columns=columns, counts=(tuple(counts[c] for c in columns),))

    def values(self) -> dict[Position, int]:
        """Every entry, margins included."""
        out: dict[Position, int] = {}
        for r, line in zip(self.rows, self.counts, strict=True):
            for c, v in zip(self.columns, line, strict=True):
                out[(r, c)] = v
            out[(r, None)] = sum(line)
        for j, c in enumerate(self.columns):
            out[(None, c)] = sum(line[j] for line in self.counts)
        out[(None, None)] = sum(map(sum, self.counts))
        return out


class NestedTable(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Member rows nested in group rows (partners in their countries), x ``columns``.

    ``counts[i][j]`` for ``members[i]`` x ``columns[j]``; ``parents[i]`` is the group of
    ``members[i]``. A group's cells are the sums of its members' cells (all zero for a group
    without members) and every margin is derived as in ``Table``: a member's total, a
    group's cells and total, the column totals and the grand total."""

    groups: tuple[str, ...]
    members: tuple[str, ...]
    parents: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        _check_labels("row", self.groups)
        _check_labels("column", self.columns)
        if self.members:
            _check_labels("member", self.members)
        if set(self.members) & set(self.groups):
            raise ValueError("a member label cannot also be a group label")
        if len(self.parents) != len(self.members) or not set(self.parents) <= set(self.groups):
            raise ValueError("every member needs a parent among the groups")
        _check_counts(self.counts, len(self.members), len(self.columns), "member")

    @classmethod
    def from_cells(
        cls,
        cells: Mapping[tuple[str, str], int],
        members: Mapping[str, str],
        groups: Sequence[str],
        columns: Sequence[str],
    ) -> NestedTable:
        """``cells``: ``(member, column) -> count`` (0 when not given); ``members``: member
        -> its group, in row order."""
        unknown = [key for key in cells if key[0] not in members or key[1] not in columns]
        if unknown:
            raise ValueError(f"cells outside the given members/columns: {unknown!r}")
        return cls(
            groups=tuple(groups),
            members=tuple(members),
            parents=tuple(members.values()),
            columns=tuple(columns),
            counts=tuple(tuple(cells.get((m, c), 0) for c in columns) for m in members),
        )

    def group_table(self) -> Table:
        """The groups x columns table (each group's cells: the sums of its members')."""
        sums = {g: [0] * len(self.columns) for g in self.groups}
        for parent, line in zip(self.parents, self.counts, strict=True):
            sums[parent] = [a + b for a, b in zip(sums[parent], line, strict=True)]
        counts = tuple(tuple(sums[g]) for g in self.groups)
        return Table(rows=self.groups, columns=self.columns, counts=counts)

    def values(self) -> dict[Position, int]:
        """Every entry: the group table's, margins included, and each member's cells and
        total."""
        out = self.group_table().values()
        for m, line in zip(self.members, self.counts, strict=True):
            for c, v in zip(self.columns, line, strict=True):
                out[(m, c)] = v
            out[(m, None)] = sum(line)
        return out


class Published(msgspec.Struct, frozen=True):
    """A protected table: every entry (margins included) is a number or ``SUPPRESSED``.

    For a nested table (``NestedTable``), ``rows`` are the groups and ``members`` (each in
    the group ``parents`` names) have entries too: ``(member, column)`` and ``(member,
    None)``, the member's total."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    k: int
    entries: dict[Position, Entry]
    members: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()

    def get(self, position: Position) -> Entry:
        return self.entries[position]

    def cell(self, row: str, column: str) -> Entry:
        return self.entries[(row, column)]

    def row_total(self, row: str) -> Entry:
        return self.entries[(row, None)]

    def column_total(self, column: str) -> Entry:
        return self.entries[(None, column)]

    @property
    def grand_total(self) -> Entry:
        return self.entries[(None, None)]

    @property
    def suppressed(self) -> frozenset[Position]:
        return frozenset(p for p, v in self.entries.items() if v is SUPPRESSED)


class Stat(msgspec.Struct, frozen=True):
    n: int
    median: float
    p90: float


def suppress_stat(n: int, median: float, p90: float, k: int = DEFAULT_K) -> Stat | None:
    """The median and 90th percentile of ``n`` cases, or None when ``n < k``.

    (With ``n`` just above ``k`` the 90th percentile is close to the largest single value;
    callers wanting more margin can pass a larger ``k`` for percentiles.)"""
    _check_k(k)
    if n < k:
        return None
    return Stat(n=n, median=median, p90=p90)


# -- geometry ---------------------------------------------------------------------------


def _axes(rows: Sequence[str], columns: Sequence[str]) -> tuple[list[str | None], list[str | None]]:
    return [*rows, None], [*columns, None]


def _kids(members: Sequence[str], parents: Sequence[str]) -> dict[str, list[str]]:
    """group -> its members, in member order."""
    out: dict[str, list[str]] = {}
    for m, g in zip(members, parents, strict=True):
        out.setdefault(g, []).append(m)
    return out


def _order(
    rows: Sequence[str],
    columns: Sequence[str],
    members: Sequence[str] = (),
    parents: Sequence[str] = (),
) -> dict[Position, tuple[int, int]]:
    """Position order: rows (each group followed by its members), then columns, in table
    order, totals last."""
    kids = _kids(members, parents)
    ext_rows: list[str | None] = [x for r in rows for x in (r, *kids.get(r, ()))]
    ext_rows.append(None)
    ext_cols: list[str | None] = [*columns, None]
    return {(r, c): (i, j) for i, r in enumerate(ext_rows) for j, c in enumerate(ext_cols)}


def _lines(
    rows: Sequence[str],
    columns: Sequence[str],
    members: Sequence[str] = (),
    parents: Sequence[str] = (),
) -> list[list[Position]]:
    """Each additive line: its entries, the total last. A nested table adds each member's
    row and, in every group with members, each column of those members with the group's
    entry as its total (the group's own row then follows from these: it is kept, redundant)."""
    ext_rows, ext_cols = _axes(rows, columns)
    by_row = [[(r, c) for c in ext_cols] for r in ext_rows]
    by_col = [[(r, c) for r in ext_rows] for c in ext_cols]
    out = by_row + by_col
    if members:
        kids = _kids(members, parents)
        out += [[(m, c) for c in ext_cols] for m in members]
        out += [[*((m, c) for m in kids[g]), (g, c)] for g in rows if g in kids for c in ext_cols]
    return out


def determined(
    rows: Sequence[str],
    columns: Sequence[str],
    suppressed: Iterable[Position],
    *,
    members: Sequence[str] = (),
    parents: Sequence[str] = (),
) -> frozenset[Position]:
    """The suppressed entries whose value follows from the published entries of the table
    (``members``/``parents``: a nested table's member rows and their groups).

    Exact: reduced row echelon form over the rationals of the additivity equations (each
    line's entries minus its total is 0) restricted to the suppressed entries; an entry is
    determined iff it is a pivot whose row has no free variable. Depends only on the pattern.
    """
    order = _order(rows, columns, members, parents)
    chosen = set(suppressed)
    missing = [p for p in chosen if p not in order]
    if missing:
        raise ValueError(f"positions not in the table: {missing!r}")
    unknowns = sorted(chosen, key=order.__getitem__)
    index = {p: i for i, p in enumerate(unknowns)}
    width = len(unknowns)
    matrix: list[list[Fraction]] = []
    for line in _lines(rows, columns, members, parents):
        coefficients = [Fraction(0)] * width
        total = line[-1]
        for p in line:
            if p in index:
                coefficients[index[p]] = Fraction(-1 if p == total else 1)
        if any(coefficients):
            matrix.append(coefficients)
    pivots = _rref(matrix, width)
    out = {
        unknowns[col]
        for row, col in enumerate(pivots)
        if all(matrix[row][j] == 0 for j in range(width) if j != col)
    }
    return frozenset(out)


def _rref(matrix: list[list[Fraction]], width: int) -> list[int]:
    """Reduce ``matrix`` in place; return the pivot column of each leading row."""
    pivots: list[int] = []
    top = 0
    for col in range(width):
        if top == len(matrix):
            break
        found = next((i for i in range(top, len(matrix)) if matrix[i][col] != 0), None)
        if found is None:
            continue
        matrix[top], matrix[found] = matrix[found], matrix[top]
        lead = matrix[top][col]
        matrix[top] = [v / lead for v in matrix[top]]
        for i, line in enumerate(matrix):
            factor = line[col]
            if i != top and factor != 0:
                matrix[i] = [a - factor * b for a, b in zip(line, matrix[top], strict=True)]
        pivots.append(col)
        top += 1
    return pivots


def recoverable(published: Published) -> frozenset[Position]:
    """Suppressed entries of ``published`` that its published numbers give away (should be
    empty for anything ``protect`` returns)."""
    return determined(
        published.rows,
        published.columns,
        published.suppressed,
        members=published.members,
        parents=published.parents,
    )


def _arc_lines(
    rows: Sequence[str],
    columns: Sequence[str],
    members: Sequence[str] = (),
    parents: Sequence[str] = (),
) -> list[list[Position]]:
    """``_lines`` without the redundant ones (a group's own row, when it has members): every
    entry is then in exactly two lines, the arcs of ``bounds.Circulations``."""
    nested = set(parents)
    lines = _lines(rows, columns, members, parents)
    return [line for i, line in enumerate(lines) if not (i < len(rows) and rows[i] in nested)]


class Epoch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A release of a period whose pattern grew (or its first): the entries it suppressed
    first (it suppressed those of the epochs before it too), and which of all it suppressed
    could be lowered by one from it on (above their bound, grown since the release before)."""

    added: tuple[Position, ...]
    lowerable: tuple[Position, ...]


class History(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What protecting a re-release needs of the earlier releases of its period (kept by the
    aggregator, never published): the entries' values in the last one (those not 0), and
    the epochs since the table last changed shape (``nested``: with member rows or not)."""

    last: tuple[tuple[Position, int], ...] = ()
    epochs: tuple[Epoch, ...] = ()
    nested: bool = False


def _above_bound(values: Mapping[Position, int]) -> frozenset[Position]:
    """The entries that stay at or above what a reader knows of them if suppressed when
    lowered by one: at least 1 (zeros are published), so those of 2 or more (a 0 stays 0)."""
    return frozenset(p for p, v in values.items() if v >= 2)


def _lowerable(
    values: Mapping[Position, int], history: History, members: Collection[str]
) -> frozenset[Position]:
    """The entries another table may hold one lower in this release alone (earlier releases
    as they are): above their bound (at least 1 if suppressed, zeros being published; 0 for
    a 0) and, after an earlier release of the period, grown since it, for a reader who
    assumes counts never fall. An entry the last release did not have was 0 then (a new
    category or partner), except a partner's after a release without partners: unknown,
    so taken as not grown."""
    above = _above_bound(values)
    if not history.last and not history.epochs:  # the period's first release
        return frozenset(above)
    before = dict(history.last)
    unknown = members if not history.nested else ()
    return frozenset(
        p
        for p in above
        if values[p] > before.get(p, 0) and not (p[0] in unknown and p not in before)
    )


def _free_since_epochs(
    arcs: Circulations[Position], values: Mapping[Position, int], history: History, nested: bool
) -> frozenset[Position]:
    """The entries that can move in every release since one of the epochs at once: on a
    cycle of the epoch's suppressed entries whose lowered entries were lowerable then and
    are above their bound now (module docstring, 4)."""
    if history.nested != nested:
        return frozenset()
    above = _above_bound(values)
    free: set[Position] = set()
    hidden: set[Position] = set()
    for epoch in history.epochs:
        hidden.update(p for p in epoch.added if p in values)
        lowerable = above.intersection(epoch.lowerable)
        free |= hidden - arcs.pinned(hidden, lowerable)
    return frozenset(free)


def _unchanged(values: Mapping[Position, int], history: History, members: Collection[str]) -> bool:
    """Whether the table is what the last release of its period showed, entry for entry (its
    pattern then is the last epoch's: republished, it tells a reader nothing new)."""
    if not history.epochs or history.nested != bool(members):
        return False
    return dict(history.last) == {p: v for p, v in values.items() if v}


def _last_pattern(history: History) -> frozenset[Position]:
    return frozenset(p for epoch in history.epochs for p in epoch.added)


def pinned(
    published: Published, values: Mapping[Position, int], history: History | None = None
) -> frozenset[Position]:
    """Suppressed entries of ``published`` fixed to one value by its published numbers
    together with the lower bounds (a suppressed entry is at least 1; with ``history``, at
    least what it was in the earlier releases of its period), given the true ``values``
    (module ``bounds``; empty for anything ``protect`` returns). Includes every entry
    ``recoverable`` finds."""
    history = history or History()
    if _unchanged(values, history, published.members) and published.suppressed == _last_pattern(
        history
    ):
        return frozenset()  # the last release again
    lines = _arc_lines(published.rows, published.columns, published.members, published.parents)
    arcs = Circulations(lines)
    free = _free_since_epochs(arcs, values, history, bool(published.members))
    lowerable = _lowerable(values, history, published.members)
    return arcs.pinned(published.suppressed, lowerable) - free


def difference(earlier: Published, later: Published) -> Published:
    """What someone learns by subtracting two releases of the same table: later - earlier
    where both published a number, ``SUPPRESSED`` where either did not. Rows, members or
    columns only in ``later`` count as 0 (published) in ``earlier``."""
    if (
        not set(earlier.rows) <= set(later.rows)
        or not set(earlier.columns) <= set(later.columns)
        or not set(zip(earlier.members, earlier.parents, strict=True))
        <= set(zip(later.members, later.parents, strict=True))
    ):
        raise ValueError("the later release must keep every row and column of the earlier one")
    rows = {*earlier.rows, *earlier.members}
    entries: dict[Position, Entry] = {}
    for position, after in later.entries.items():
        r, c = position
        present = (r is None or r in rows) and (c is None or c in earlier.columns)
        before: Entry = earlier.entries[position] if present else 0
        if after is SUPPRESSED or before is SUPPRESSED:
            entries[position] = SUPPRESSED
        else:
            entries[position] = after - before
    return Published(
        rows=later.rows,
        columns=later.columns,
        k=later.k,
        entries=entries,
        members=later.members,
        parents=later.parents,
    )


# -- protection -------------------------------------------------------------------------


_TIER_COST: Final = 10**9  # a complement one tier up costs more than any path below it
_ZERO_COST: Final = 10**6  # within a tier, zeros last


def _costs(values: Mapping[Position, int], tier: Callable[[Position], int]) -> dict[Position, int]:
    """What suppressing each entry costs a path of complements: lowest tier first, then the
    smallest non-zero value, zeros last."""
    return {p: tier(p) * _TIER_COST + (v if v > 0 else _ZERO_COST) + 1 for p, v in values.items()}


def _free_pinned(
    hidden: set[Position],
    values: Mapping[Position, int],
    arcs: Circulations[Position],
    cost: Mapping[Position, int],
    order: Mapping[Position, tuple[int, int]],
    settle: Callable[[set[Position]], set[Position]],
    history: History,
    members: Collection[str],
) -> set[Position]:
    """``hidden``, settled (line rule, exact check), then for the first entry the lower
    bounds pin (module ``bounds``) the published entries of its cheapest freeing cycle,
    settled again, until no entry is pinned. Each round only adds entries, and adding never
    pins an entry again, so it ends."""
    hidden = settle(hidden)
    if _unchanged(values, history, members) and hidden == _last_pattern(history):
        return hidden  # the last release's numbers and pattern again: nothing new to learn
    lowerable = _lowerable(values, history, members)
    free: frozenset[Position] | None = None  # from the epochs, when first needed
    while stuck := arcs.pinned(hidden, lowerable):
        if free is None:
            free = _free_since_epochs(arcs, values, history, bool(members))
        if not (stuck := stuck - free):
            break
        target = min(stuck, key=order.__getitem__)
        freeing = arcs.freeing(target, hidden, lowerable, cost)
        if not freeing:  # pragma: no cover - raising along the margins always frees it
            return set(values)
        hidden = settle(hidden | set(freeing))
    return hidden


def _next_history(
    history: History, values: Mapping[Position, int], published: Published
) -> History:
    """``history`` after ``published``: its values, and an epoch if its pattern grew."""
    nested = bool(published.members)
    epochs = history.epochs if history.nested == nested else ()
    added = published.suppressed - _last_pattern(History(epochs=epochs))
    if added or not epochs:
        lowerable = _lowerable(values, history, published.members) & published.suppressed
        epoch = Epoch(
            added=tuple(sorted(added, key=_position_key)),
            lowerable=tuple(sorted(lowerable, key=_position_key)),
        )
        epochs = (*epochs, epoch)
    last = tuple(
        sorted(((p, v) for p, v in values.items() if v), key=lambda x: _position_key(x[0]))
    )
    return History(last=last, epochs=epochs, nested=nested)


def _margin_tier(p: Position) -> int:
    """0 for a cell, 1 for a row or column total, 2 for the grand total."""
    return (p[0] is None) + (p[1] is None)


def _primary(values: Mapping[Position, int], keep: Iterable[Position], k: int) -> set[Position]:
    """The entries suppressed from the start: those to keep suppressed, and every count
    from 1 to k-1."""
    hidden = set(keep)
    missing = sorted((p for p in hidden if p not in values), key=repr)
    if missing:
        raise ValueError(f"entries to keep suppressed are not in the table: {missing!r}")
    return hidden | {p for p, v in values.items() if 0 < v < k}


def _line_index(
    values: Mapping[Position, int], lines: Sequence[Sequence[Position]]
) -> dict[Position, list[int]]:
    """The numbers of the lines (sums) each entry belongs to."""
    line_of: dict[Position, list[int]] = {p: [] for p in values}
    for number, line in enumerate(lines):
        for p in line:
            line_of[p].append(number)
    return line_of


def _single(line: Sequence[Position], hidden: set[Position]) -> bool:
    """Whether exactly one entry of a line is suppressed (the line would give it away)."""
    return sum(p in hidden for p in line) == 1


def _close_lines(
    lines: Sequence[Sequence[Position]],
    start: set[Position],
    complement: Callable[[int, set[Position]], Position],
) -> set[Position]:
    """`start` plus complements until no line holds a single suppressed entry."""
    out = set(start)
    changed = True
    while changed:
        changed = False
        for number, line in enumerate(lines):
            if _single(line, out):
                out.add(complement(number, out))
                changed = True
    return out


def protect(
    table: Table,
    k: int = DEFAULT_K,
    *,
    keep: Iterable[Position] = (),
    history: History | None = None,
) -> Published:
    """Primary and complementary suppression of ``table``; ``keep``: entries that must stay
    suppressed, ``history``: the earlier releases of the period (both from
    ``SuppressionMemory``)."""
    _check_k(k)
    values = table.values()
    order = _order(table.rows, table.columns)
    lines = _lines(table.rows, table.columns)
    hidden = _primary(values, keep, k)
    line_of = _line_index(values, lines)

    def rank(p: Position) -> tuple[bool, int, tuple[int, int]]:
        # smallest non-zero value first, zeros last, ties by position
        return (values[p] == 0, values[p], order[p])

    def single(number: int, hidden: set[Position]) -> bool:
        return _single(lines[number], hidden)

    def complement(number: int, hidden: set[Position]) -> Position:
        # cells before margins and the grand total last (the totals are what readers need
        # most), then entries whose other line also holds a single suppressed entry (one
        # complement settles both lines), then the smallest non-zero value
        def key(p: Position) -> tuple[int, bool, tuple[bool, int, tuple[int, int]]]:
            other = next(n for n in line_of[p] if n != number)
            return (_margin_tier(p), not single(other, hidden), rank(p))

        return min((p for p in lines[number] if p not in hidden), key=key)

    def close_lines(start: set[Position]) -> set[Position]:
        return _close_lines(lines, start, complement)

    def settle(hidden: set[Position]) -> set[Position]:
        hidden = close_lines(hidden)
        while exposed := determined(table.rows, table.columns, hidden):
            target = min(exposed, key=order.__getitem__)
            candidates = (p for p in values if p not in hidden)
            for candidate in sorted(candidates, key=lambda p: (_margin_tier(p), rank(p))):
                trial = close_lines(hidden | {candidate})
                if target not in determined(table.rows, table.columns, trial):
                    hidden = trial
                    break
            else:  # pragma: no cover - one entry always suffices (module docstring)
                return set(values)  # defensive: hiding everything leaves nothing determined
        return hidden

    arcs = Circulations(_arc_lines(table.rows, table.columns))
    cost = _costs(values, _margin_tier)
    history = history or History()
    hidden = _free_pinned(hidden, values, arcs, cost, order, settle, history, ())

    entries: dict[Position, Entry] = {
        p: (SUPPRESSED if p in hidden else v)
        for p, v in sorted(values.items(), key=lambda item: order[item[0]])
    }
    return Published(rows=table.rows, columns=table.columns, k=k, entries=entries)


# -- nested tables -----------------------------------------------------------------------


def _nested_tier(p: Position, members: frozenset[str]) -> int:
    """0 a member's cell, 1 a member's total, 2 a group's cell, 3 a group's total or a column
    total, 4 the grand total: complements are taken as low as possible."""
    if p[0] is not None and p[0] in members:
        return 0 if p[1] is not None else 1
    return 2 + _margin_tier(p)


Node = tuple[str, str | None, str | None]


class _Graph:
    """The additivity equations of a nested table as a graph: each equation (line) a node,
    each entry an edge between the two equations that hold it once the redundant ones are
    left out (module docstring, nested tables). A suppressed entry is determined exactly
    when it is a bridge of the suppressed entries' graph (``bridges``; the tests hold it
    equal to the linear algebra of ``determined`` on arbitrary patterns)."""

    def __init__(self, table: NestedTable, order: Mapping[Position, tuple[int, int]]) -> None:
        group_of = dict(zip(table.members, table.parents, strict=True))
        nested = set(table.parents)

        def ends(p: Position) -> tuple[Node, Node]:
            r, c = p
            if r is None:  # a column total or the grand total: its column, the totals row
                return ("col", None, c), ("row", None, None)
            if r in group_of:  # a member's entry: its row, its group's column
                return ("row", r, None), ("col", group_of[r], c)
            # a group's entry: its column within the group (or its row, without members)
            inner: Node = ("col", r, c) if r in nested else ("row", r, None)
            return inner, ("col", None, c)

        self.ends = {p: ends(p) for p in sorted(order, key=order.__getitem__)}
        ids: dict[Node, int] = {}
        for u, v in self.ends.values():
            ids.setdefault(u, len(ids))
            ids.setdefault(v, len(ids))
        self.ids = ids
        self.adjacent: list[list[tuple[int, Position]]] = [[] for _ in ids]
        for p, (u, v) in self.ends.items():
            self.adjacent[ids[u]].append((ids[v], p))
            self.adjacent[ids[v]].append((ids[u], p))

    def bridges(self, hidden: Iterable[Position]) -> frozenset[Position]:
        """The entries of ``hidden`` on no cycle of ``hidden`` entries (Tarjan's bridges,
        iterative): exactly the suppressed entries ``determined`` finds, in linear time."""
        adjacent: dict[int, list[tuple[int, Position]]] = {}
        for p in hidden:
            u, v = (self.ids[x] for x in self.ends[p])
            adjacent.setdefault(u, []).append((v, p))
            adjacent.setdefault(v, []).append((u, p))
        seen: dict[int, int] = {}
        low: dict[int, int] = {}
        out: set[Position] = set()
        for root in adjacent:
            if root in seen:
                continue
            seen[root] = low[root] = len(seen)
            stack: list[tuple[int, Position | None, int]] = [(root, None, 0)]
            while stack:
                node, via, i = stack[-1]
                if i < len(adjacent[node]):
                    stack[-1] = (node, via, i + 1)
                    nxt, p = adjacent[node][i]
                    if p == via:
                        continue
                    if nxt in seen:
                        low[node] = min(low[node], seen[nxt])
                    else:
                        seen[nxt] = low[nxt] = len(seen)
                        stack.append((nxt, p, 0))
                    continue
                stack.pop()
                if stack and via is not None:
                    parent = stack[-1][0]
                    low[parent] = min(low[parent], low[node])
                    if low[node] > seen[parent]:
                        out.add(via)
        return frozenset(out)

    def join(
        self, target: Position, hidden: set[Position], cost: Mapping[Position, int]
    ) -> set[Position]:
        """The published entries of the cheapest path between the two ends of ``target``
        that avoids it (suppressed entries cost nothing): suppressing them puts ``target``
        on a cycle of suppressed entries, so it is no longer determined."""
        u, v = self.ends[target]
        out = {
            node: [(nxt, p, 0 if p in hidden else cost[p]) for nxt, p in edges if p != target]
            for node, edges in enumerate(self.adjacent)
        }
        found = cheapest_path(out, self.ids[u], self.ids[v])
        if found is None:  # pragma: no cover - every entry lies on a cycle of the table
            return set()
        return {p for p in found[1] if p not in hidden}


def protect_nested(
    table: NestedTable,
    k: int = DEFAULT_K,
    *,
    keep: Iterable[Position] = (),
    history: History | None = None,
) -> Published:
    """Primary and complementary suppression of a nested table, every entry protected
    jointly (members, groups, margins); ``keep`` and ``history`` as for ``protect``."""
    _check_k(k)
    values = table.values()
    shape = (table.groups, table.columns, table.members, table.parents)
    order = _order(*shape)
    lines = _lines(*shape)
    member_set = frozenset(table.members)
    hidden = _primary(values, keep, k)
    line_of = _line_index(values, lines)

    def rank(p: Position) -> tuple[int, bool, int, tuple[int, int]]:
        return (_nested_tier(p, member_set), values[p] == 0, values[p], order[p])

    def single(number: int, hidden: set[Position]) -> bool:
        return _single(lines[number], hidden)

    def complement(number: int, hidden: set[Position]) -> Position:
        # lowest tier first, then entries whose other lines hold a single suppressed entry
        # too (one complement settles several lines), then the smallest non-zero value
        def key(p: Position) -> tuple[int, int, tuple[int, bool, int, tuple[int, int]]]:
            settles = sum(single(n, hidden) for n in line_of[p] if n != number)
            return (rank(p)[0], -settles, rank(p))

        return min((p for p in lines[number] if p not in hidden), key=key)

    def close_lines(start: set[Position]) -> set[Position]:
        return _close_lines(lines, start, complement)

    cost = _costs(values, lambda p: _nested_tier(p, member_set))
    graph = _Graph(table, order)

    def settle(hidden: set[Position]) -> set[Position]:
        hidden = close_lines(hidden)
        while exposed := graph.bridges(hidden):
            target = min(exposed, key=order.__getitem__)
            joining = graph.join(target, hidden, cost)
            if not joining:  # pragma: no cover - defensive, as in protect
                return set(values)
            hidden = close_lines(hidden | joining)
        return hidden

    arcs = Circulations(_arc_lines(*shape))
    history = history or History()
    hidden = _free_pinned(hidden, values, arcs, cost, order, settle, history, table.members)

    entries: dict[Position, Entry] = {
        p: (SUPPRESSED if p in hidden else v)
        for p, v in sorted(values.items(), key=lambda item: order[item[0]])
    }
    return Published(
        rows=table.groups,
        columns=table.columns,
        k=k,
        entries=entries,
        members=table.members,
        parents=table.parents,
    )


# -- memory across releases -----------------------------------------------------------------


def _position_key(p: Position) -> tuple[bool, str, bool, str]:
    return (p[0] is None, p[0] or "", p[1] is None, p[1] or "")


class Remembered(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    table: str
    period: str
    suppressed: tuple[Position, ...]
    history: History = msgspec.field(default_factory=History)


class SuppressionMemory(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every entry suppressed so far, per table name and period, and what protecting the
    next release of the period needs of the earlier ones (``History``, under the table's
    name; msgspec-serialisable: ``msgspec.json.encode`` / ``msgspec.json.decode(data,
    type=SuppressionMemory)``)."""

    records: tuple[Remembered, ...] = ()

    def suppressed(self, table: str, period: str) -> frozenset[Position]:
        return frozenset(
            p
            for record in self.records
            if record.table == table and record.period == period
            for p in record.suppressed
        )

    def history(self, table: str, period: str) -> History:
        found = (r.history for r in self.records if (r.table, r.period) == (table, period))
        return next(found, History())

    def remember(
        self,
        table: str,
        period: str,
        positions: Iterable[Position],
        history: History | None = None,
    ) -> SuppressionMemory:
        merged = self.suppressed(table, period) | set(positions)
        others = [r for r in self.records if (r.table, r.period) != (table, period)]
        record = Remembered(
            table=table,
            period=period,
            suppressed=tuple(sorted(merged, key=_position_key)),
            history=history if history is not None else self.history(table, period),
        )
        records = sorted([*others, record], key=lambda r: (r.table, r.period))
        return SuppressionMemory(records=tuple(records))


def release(
    table: Table,
    *,
    name: str,
    period: str,
    memory: SuppressionMemory,
    k: int = DEFAULT_K,
) -> tuple[Published, SuppressionMemory]:
    """Protect a (re-)release of table ``name`` for ``period``: everything suppressed in an
    earlier release of that period stays suppressed, and nothing is pinned by what those
    releases showed either. Returns the published table and the memory to keep for the next
    release."""
    kept = memory.suppressed(name, period)
    history = memory.history(name, period)
    published = protect(table, k, keep=kept, history=history)
    history = _next_history(history, table.values(), published)
    return published, memory.remember(name, period, published.suppressed, history)


MEMBERS: Final = "/members"
"""Suffix of the memory record of a nested table's member entries."""


def members_record(name: str) -> str:
    return name + MEMBERS


def release_nested(
    table: NestedTable,
    *,
    name: str,
    period: str,
    memory: SuppressionMemory,
    k: int = DEFAULT_K,
) -> tuple[Published, SuppressionMemory]:
    """``release`` for a nested table. The group-level entries are remembered under ``name``,
    as a plain table's would be (so a region switching between partner and country
    breakdowns keeps one memory for them), the members' under ``members_record(name)``; the
    history (members' values too) under ``name``."""
    record = members_record(name)
    kept = memory.suppressed(name, period) | memory.suppressed(record, period)
    history = memory.history(name, period)
    published = protect_nested(table, k, keep=kept, history=history)
    history = _next_history(history, table.values(), published)
    members = set(table.members)
    mine = {p for p in published.suppressed if p[0] is not None and p[0] in members}
    memory = memory.remember(name, period, published.suppressed - mine, history)
    return published, memory.remember(record, period, mine)
