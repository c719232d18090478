"""Disclosure control: primary and complementary suppression, the exact check, statistics,
memory across releases, and a property test that nothing suppressed can be recovered from
what was published (each release alone and the differences between releases).

The property test does not trust the module's own solver alone: it also checks every pattern
with an independent criterion (a suppressed entry is recoverable iff it is a bridge of the
bipartite graph lines x entries restricted to suppressed entries), and a separate property
checks that the two agree on arbitrary patterns.

Nested tables (partners in their countries) get the same treatment: the exact check over
the larger set of equations (``determined`` with members), an independent graph criterion
written here (``nested_bridges``), properties that the two agree and that no suppressed
partner or country entry can be recovered from a release, from the differences between
releases, or across a switch between partner and country breakdowns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handsoff.services.aggregator.disclosure import (
    DEFAULT_K,
    SUPPRESSED,
    NestedTable,
    Position,
    Published,
    Stat,
    SuppressionMemory,
    Table,
    determined,
    difference,
    members_record,
    pinned,
    protect,
    protect_nested,
    recoverable,
    release,
    release_nested,
    suppress_stat,
)

# -- helpers --------------------------------------------------------------------------------


def grid(rows: str, columns: str, counts: list[list[int]]) -> Table:
    return Table(rows=tuple(rows), columns=tuple(columns), counts=tuple(map(tuple, counts)))


def lines(rows: tuple[str, ...], columns: tuple[str, ...]) -> list[list[Position]]:
    ext_rows: list[str | None] = [*rows, None]
    ext_cols: list[str | None] = [*columns, None]
    return [[(r, c) for c in ext_cols] for r in ext_rows] + [
        [(r, c) for r in ext_rows] for c in ext_cols
    ]


def bridges(suppressed: frozenset[Position]) -> frozenset[Position]:
    """Independent oracle: suppressed entries not on a cycle of suppressed entries, in the
    bipartite graph whose nodes are row lines and column lines and whose edges are entries."""

    def connected(
        without: Position, start: tuple[str, str | None], goal: tuple[str, str | None]
    ) -> bool:
        seen = {start}
        todo = deque([start])
        while todo:
            kind, label = todo.popleft()
            if (kind, label) == goal:
                return True
            for r, c in suppressed:
                if (r, c) == without:
                    continue
                if kind == "r" and r == label:
                    nxt = ("c", c)
                elif kind == "c" and c == label:
                    nxt = ("r", r)
                else:
                    continue
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    return frozenset(p for p in suppressed if not connected(p, ("r", p[0]), ("c", p[1])))


Release = tuple[Mapping[Position, int], frozenset[Position], list[list[Position]]]
"""A release as the oracle sees it: every entry's true value, what it suppressed, its
equations (each line's entries, the total last)."""


def moved_in_history(period: list[Release], target: int) -> frozenset[Position]:
    """Independent oracle for a reader who also assumes counts never fall between releases
    of a period: the entries x suppressed in release ``target`` for which another whole
    history fits what every release published, with x changed in that release, every
    equation of every release kept, no suppressed entry below its bound (at least 1, or 0
    for a 0) and no entry lower than in the release before. It searches changes of -1, 0 or
    +1 per suppressed entry and release (enough for the histories ``release`` guarantees:
    one cycle, moved by one in every release from some release on), on the equations
    straight, by backtracking: each equation's last unknown forced, a later release's
    change tried first."""
    variables = [
        (t, p) for t, (_, hidden, _) in enumerate(period) for p in sorted(hidden, key=repr)
    ]
    variables.sort(key=lambda tp: (tp[0] != target, -tp[0]))

    def fits(t: int, p: Position, d: int, change: Mapping[tuple[int, Position], int]) -> bool:
        values = period[t][0]
        if values[p] + d < min(values[p], 1):
            return False
        for u in (t - 1, t + 1):  # counts never fall between consecutive releases
            if 0 <= u < len(period) and p in period[u][0]:
                du = change.get((u, p), None if p in period[u][1] else 0)
                if du is None:
                    continue
                low, high = (u, t) if u < t else (t, u)
                dl, dh = (du, d) if u < t else (d, du)
                if period[low][0][p] + dl > period[high][0][p] + dh:
                    return False
        return True

    def complete(change: dict[tuple[int, Position], int]) -> bool:
        forced = True
        while forced:
            forced = False
            for t, (_, hidden, equations) in enumerate(period):
                for line in equations:
                    unknown = [p for p in line if p in hidden and (t, p) not in change]
                    known = sum(
                        change.get((t, p), 0) * (-1 if p == line[-1] else 1)
                        for p in line
                        if p not in unknown
                    )
                    if not unknown:
                        if known:
                            return False
                    elif len(unknown) == 1:
                        p = unknown[0]
                        d = -known * (-1 if p == line[-1] else 1)
                        if abs(d) > 1 or not fits(t, p, d, change):
                            return False
                        change[(t, p)] = d
                        forced = True
        rest = [v for v in variables if v not in change]
        if not rest:
            return True
        t, p = rest[0]
        tried = [change.get((t + 1, p)), change.get((t - 1, p)), 0, 1, -1]
        for d in dict.fromkeys(x for x in tried if x is not None):
            if fits(t, p, d, change) and complete({**change, (t, p): d}):
                return True
        return False

    hidden = period[target][1]
    return frozenset(
        x
        for x in hidden
        if any(fits(target, x, d, {}) and complete({(target, x): d}) for d in (1, -1))
    )


def moved_by_one(
    values: Mapping[Position, int],
    suppressed: frozenset[Position],
    equations: list[list[Position]],
) -> frozenset[Position]:
    """Independent oracle for the lower bounds of one release: the suppressed entries x for
    which another table fits what was published, with x changed, every equation kept and no
    suppressed entry below what a reader knows (``moved_in_history`` with a period of one
    release; unit changes are enough here: if x can change at all, a unit change along one
    cycle does)."""
    return moved_in_history([(values, suppressed, equations)], 0)


def assert_history_safe(period: list[Release]) -> None:
    """After every release of a period, nothing any of them suppressed is pinned for a
    reader who assumes counts never fall (the oracle above)."""
    for last in range(len(period)):
        for t in range(last + 1):
            assert moved_in_history(period[: last + 1], t) == period[t][1], (last, t)


def assert_nothing_pinned(
    published: Published, values: Mapping[Position, int], equations: list[list[Position]]
) -> None:
    """Nothing suppressed is fixed by the equations and the lower bounds together: by the
    module's check and by the oracle (every suppressed entry can move)."""
    assert pinned(published, values) == frozenset()
    assert moved_by_one(values, published.suppressed, equations) == published.suppressed


def hiding(
    hidden: frozenset[Position],
    values: Mapping[Position, int],
    rows: tuple[str, ...],
    columns: tuple[str, ...],
    members: Mapping[str, str] | None = None,
) -> Published:
    """`values` published with `hidden` suppressed (any pattern, protected or not);
    `members`: member -> group, for a nested table."""
    members = members or {}
    return Published(
        rows=rows,
        columns=columns,
        k=DEFAULT_K,
        entries={p: SUPPRESSED if p in hidden else v for p, v in values.items()},
        members=tuple(members),
        parents=tuple(members.values()),
    )


def assert_safe(published: Published, table: Table) -> None:
    values = table.values()
    assert set(published.entries) == set(values)
    for position, shown in published.entries.items():
        if shown is not SUPPRESSED:
            assert shown == values[position]
            assert not 0 < shown < published.k, position
    for line in lines(published.rows, published.columns):
        assert sum(published.entries[p] is SUPPRESSED for p in line) != 1, line
    assert recoverable(published) == frozenset()
    assert bridges(published.suppressed) == frozenset()
    assert_nothing_pinned(published, values, lines(published.rows, published.columns))


def assert_no_difference_recovers(
    published: list[Published],
    bridges_of: Callable[[Published], frozenset[object]] = lambda _: frozenset(),
) -> None:
    """Differencing any two releases (consecutive or not) recovers nothing: no entry is
    recoverable, and none is a bridge (`bridges_of` the difference)."""
    for i, earlier in enumerate(published):
        for later in published[i + 1 :]:
            diff = difference(earlier, later)
            assert recoverable(diff) == frozenset()
            assert bridges_of(diff) == frozenset()


# -- primary and complementary suppression ---------------------------------------------------


def test_nothing_small_nothing_suppressed() -> None:
    table = grid("XY", "AB", [[5, 0], [7, 9]])
    published = protect(table)
    assert published.suppressed == frozenset()
    assert published.cell("X", "B") == 0  # zeros are published
    assert published.row_total("X") == 5
    assert published.column_total("A") == 12
    assert published.grand_total == 21


def test_one_way_small_count_and_its_complement() -> None:
    table = Table.one_way({"a": 3, "b": 10, "c": 7, "d": 0})
    published = protect(table)
    assert published.entries == {
        ("all", "a"): SUPPRESSED,
        ("all", "b"): 10,
        ("all", "c"): SUPPRESSED,  # smallest non-zero published value (the 0 is skipped)
        ("all", "d"): 0,
        ("all", None): 20,
        (None, "a"): SUPPRESSED,  # a one-way table's column totals are its cells
        (None, "b"): 10,
        (None, "c"): SUPPRESSED,
        (None, "d"): 0,
        (None, None): 20,
    }
    assert_safe(published, table)


def test_two_way_small_cell_costs_a_rectangle() -> None:
    table = grid("XYZ", "ABC", [[2, 8, 9], [6, 12, 7], [10, 11, 13]])
    published = protect(table)
    assert published.suppressed == {("X", "A"), ("X", "B"), ("Y", "A"), ("Y", "B")}
    assert published.cell("X", "C") == 9
    assert published.row_total("X") == 19
    assert published.column_total("A") == 18
    assert published.grand_total == 78
    assert_safe(published, table)


def test_small_margin_is_suppressed_too() -> None:
    # row X totals 4: the row total and both of its non-zero cells are primary
    table = grid("XY", "AB", [[1, 3], [9, 8]])
    published = protect(table)
    assert {("X", "A"), ("X", "B"), ("X", None)} <= published.suppressed
    assert_safe(published, table)


def test_small_grand_total_hides_every_non_zero_entry() -> None:
    table = grid("XY", "AB", [[1, 0], [2, 1]])
    published = protect(table)
    values = table.values()
    assert published.suppressed == {p for p, v in values.items() if v > 0}
    assert published.cell("X", "B") == 0
    assert_safe(published, table)


def test_threshold_is_configurable() -> None:
    table = grid("XY", "AB", [[7, 20], [30, 40]])
    assert protect(table, k=5).suppressed == frozenset()
    assert ("X", "A") in protect(table, k=11).suppressed
    with pytest.raises(ValueError, match="k must be"):
        protect(table, k=1)


def test_table_validation() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        grid("X", "A", [[-1]])
    with pytest.raises(ValueError, match="duplicate"):
        Table(rows=("X", "X"), columns=("A",), counts=((1,), (2,)))
    with pytest.raises(ValueError, match="outside"):
        Table.from_cells({("X", "A"): 1}, rows=["Y"], columns=["A"])
    table = Table.from_cells({("X", "A"): 6, ("Y", "B"): 7})
    assert table.rows == ("X", "Y")
    assert table.counts == ((6, 0), (0, 7))


# -- the exact check ---------------------------------------------------------------------------

# Two 2x2 blocks of small cells joined by one small cell (0, c). Every line holds 0 or at
# least 2 suppressed entries, so the line rule is satisfied, yet (0, c) is the sum of rows 0
# and 1 minus the sum of columns a and b over the suppressed cells.
BRIDGED = grid(
    "0123",
    "abcd",
    [
        [1, 2, 3, 20],
        [2, 1, 30, 40],
        [50, 60, 2, 1],
        [70, 80, 1, 3],
    ],
)


def test_line_rule_misses_a_bridge_that_the_exact_check_catches() -> None:
    primary = frozenset(p for p, v in BRIDGED.values().items() if 0 < v < DEFAULT_K)
    for line in lines(BRIDGED.rows, BRIDGED.columns):
        assert sum(p in primary for p in line) in (0, 2, 3)
    assert determined(BRIDGED.rows, BRIDGED.columns, primary) == {("0", "c")}
    assert bridges(primary) == {("0", "c")}
    # the recovery, spelled out
    v = BRIDGED.values()
    rows_01 = v[("0", None)] - v[("0", "d")] + v[("1", None)] - v[("1", "c")] - v[("1", "d")]
    cols_ab = v[(None, "a")] - 50 - 70 + v[(None, "b")] - 60 - 80
    assert rows_01 - cols_ab == v[("0", "c")] == 3


def test_exact_check_adds_the_smallest_entry_that_closes_the_bridge() -> None:
    published = protect(BRIDGED)
    primary = {p for p, v in BRIDGED.values().items() if 0 < v < DEFAULT_K}
    assert published.suppressed == primary | {("0", "d")}  # 20: smallest joining entry
    assert_safe(published, BRIDGED)


def test_determined_rejects_unknown_positions() -> None:
    with pytest.raises(ValueError, match="not in the table"):
        determined(("X",), ("A",), [("Y", "A")])


patterns = st.tuples(st.integers(2, 4), st.integers(2, 4)).flatmap(
    lambda shape: st.tuples(
        st.just(shape),
        st.sets(
            st.tuples(
                st.sampled_from([*map(str, range(shape[0])), None]),
                st.sampled_from([*"abcd"[: shape[1]], None]),
            )
        ),
    )
)


@settings(max_examples=200, deadline=None)
@given(patterns)
def test_solver_agrees_with_the_graph_criterion(
    pattern: tuple[tuple[int, int], set[Position]],
) -> None:
    (n_rows, n_cols), suppressed = pattern
    rows = tuple(map(str, range(n_rows)))
    columns = tuple("abcd"[:n_cols])
    assert determined(rows, columns, suppressed) == bridges(frozenset(suppressed))


def test_two_small_cells_in_a_row_are_not_given_away_by_their_lower_bound() -> None:
    """(X, A) and (X, B) are 1 and 1, X's total 12 and (X, C) 10 are published: no equation
    determines either cell, but both are at least 1 (zeros are published) and add up to 2,
    so a rectangle with row Z would give both away (and Z's two with them). The lower-bound
    check hides (X, C) and (Z, C) too: then (X, A) can be anything from 1 to 10."""
    table = grid("XYZ", "ABC", [[1, 1, 10], [6, 7, 8], [5, 6, 9]])
    values = table.values()
    rectangle = frozenset({("X", "A"), ("X", "B"), ("Z", "A"), ("Z", "B")})
    assert determined(table.rows, table.columns, rectangle) == frozenset()
    equations = lines(table.rows, table.columns)
    assert moved_by_one(values, rectangle, equations) == frozenset()  # all four pinned

    published = protect(table)
    assert published.suppressed == rectangle | {("X", "C"), ("Z", "C")}
    assert published.row_total("X") == 12
    assert_safe(published, table)


def test_an_entry_with_its_margins_hidden_can_always_be_raised() -> None:
    # A lone 1 in a one-way table: the cell, its column total (the same number) and the
    # grand total move up together, so even an entry at its lower bound is not pinned.
    published = protect(Table.one_way({"A": 1, "B": 0}))
    assert published.suppressed == {("all", "A"), (None, "A"), ("all", None), (None, None)}
    assert pinned(published, Table.one_way({"A": 1, "B": 0}).values()) == frozenset()


valued_patterns = patterns.flatmap(
    lambda pattern: st.tuples(
        st.just(pattern),
        st.lists(st.integers(0, 3), min_size=16, max_size=16),  # cells, row-major
    )
)


@settings(max_examples=200, deadline=None)
@given(valued_patterns)
def test_pinned_agrees_with_the_oracle(
    case: tuple[tuple[tuple[int, int], set[Position]], list[int]],
) -> None:
    ((n_rows, n_cols), suppressed), cells = case
    rows = tuple(map(str, range(n_rows)))
    columns = tuple("abcd"[:n_cols])
    table = Table(
        rows=rows,
        columns=columns,
        counts=tuple(tuple(cells[4 * i + j] for j in range(n_cols)) for i in range(n_rows)),
    )
    values = table.values()
    hidden = frozenset(suppressed)
    shown = hiding(hidden, values, rows, columns)
    free = moved_by_one(values, hidden, lines(rows, columns))
    assert pinned(shown, values) == hidden - free
    assert recoverable(shown) <= pinned(shown, values)


# -- statistics --------------------------------------------------------------------------------


def test_stats_need_k_cases() -> None:
    assert suppress_stat(4, 12.0, 30.0) is None
    assert suppress_stat(0, 0.0, 0.0) is None
    assert suppress_stat(5, 12.0, 30.0) == Stat(n=5, median=12.0, p90=30.0)
    assert suppress_stat(9, 1.0, 2.0, k=10) is None
    assert suppress_stat(10, 1.0, 2.0, k=10) == Stat(n=10, median=1.0, p90=2.0)
    with pytest.raises(ValueError, match="k must be"):
        suppress_stat(10, 1.0, 2.0, k=0)


# -- memory across releases -------------------------------------------------------------------


def test_suppressed_once_stays_suppressed_for_the_period() -> None:
    memory = SuppressionMemory()
    first, memory = release(
        grid("XYZ", "ABC", [[2, 8, 9], [6, 12, 7], [10, 11, 13]]),
        name="by_type",
        period="2025-03",
        memory=memory,
    )
    assert first.suppressed == {("X", "A"), ("X", "B"), ("Y", "A"), ("Y", "B")}
    # late reports: (X, A) is now 6 >= k, nothing is small, yet the earlier pattern stays
    later_table = grid("XYZ", "ABC", [[6, 8, 9], [6, 12, 7], [10, 11, 13]])
    assert protect(later_table).suppressed == frozenset()
    second, memory = release(later_table, name="by_type", period="2025-03", memory=memory)
    assert second.suppressed == first.suppressed
    assert recoverable(difference(first, second)) == frozenset()
    # another period, or another table, starts afresh
    other, _ = release(later_table, name="by_type", period="2025-04", memory=memory)
    assert other.suppressed == frozenset()
    assert memory.suppressed("by_country", "2025-03") == frozenset()


def test_a_new_small_cell_adds_to_the_remembered_pattern() -> None:
    memory = SuppressionMemory()
    table = grid("XYZ", "ABC", [[2, 8, 9], [6, 12, 7], [10, 11, 0]])
    first, memory = release(table, name="t", period="p", memory=memory)
    assert first.suppressed == {("X", "A"), ("X", "B"), ("Y", "A"), ("Y", "B")}
    # a late report turns the published 0 at (Z, C) into a 3
    grown = grid("XYZ", "ABC", [[2, 8, 9], [6, 12, 7], [10, 11, 3]])
    # protected afresh, (X, B), hidden in the first release, would now be published
    assert protect(grown).suppressed == {("X", "A"), ("X", "C"), ("Z", "A"), ("Z", "C")}
    second, memory = release(grown, name="t", period="p", memory=memory)
    assert second.suppressed >= first.suppressed | {("Z", "C"), ("Z", "A"), ("Y", "C")}
    assert memory.suppressed("t", "p") == second.suppressed
    assert_safe(first, table)
    assert_safe(second, grown)
    assert recoverable(difference(first, second)) == frozenset()


def test_an_unchanged_table_is_released_again_as_it_was() -> None:
    """Nothing changed since the last release of the period: the same numbers and pattern
    go out again (they tell a reader nothing new), and the history stays as it was."""
    table = grid("XYZ", "ABC", [[2, 8, 9], [6, 12, 7], [10, 11, 3]])
    memory = SuppressionMemory()
    first, memory = release(table, name="t", period="p", memory=memory)
    history = memory.history("t", "p")
    again, memory = release(table, name="t", period="p", memory=memory)
    assert again == first
    assert memory.history("t", "p") == history
    assert pinned(again, table.values(), history) == frozenset()


def test_memory_round_trips_through_json() -> None:
    memory = SuppressionMemory()
    _, memory = release(
        Table.one_way({"a": 3, "b": 10, "c": 7}), name="t", period="p", memory=memory
    )
    _, memory = release(Table.one_way({"a": 1, "b": 10}), name="t", period="q", memory=memory)
    encoded = msgspec.json.encode(memory)
    decoded = msgspec.json.decode(encoded, type=SuppressionMemory)
    assert decoded == memory
    assert decoded.suppressed("t", "p") == {("all", "a"), ("all", "c"), (None, "a"), (None, "c")}
    assert msgspec.json.encode(decoded) == encoded  # deterministic


def test_memory_refuses_a_table_that_lost_a_suppressed_entry() -> None:
    memory = SuppressionMemory().remember("t", "p", [("gone", "a")])
    with pytest.raises(ValueError, match="not in the table"):
        release(Table.one_way({"a": 10}), name="t", period="p", memory=memory)


def test_difference_of_releases() -> None:
    first = protect(grid("XY", "AB", [[6, 7], [8, 9]]))
    second = protect(
        Table.from_cells(
            {("X", "A"): 6, ("X", "B"): 9, ("Y", "A"): 8, ("Y", "B"): 9, ("Z", "A"): 10}
        )
    )
    diff = difference(first, second)
    assert diff.cell("X", "B") == 2
    assert diff.cell("Z", "A") == 10  # a new row counts from 0
    assert diff.grand_total == 12
    with pytest.raises(ValueError, match="keep every row"):
        difference(second, first)


# -- the property ------------------------------------------------------------------------------

small = st.one_of(st.integers(0, 4), st.integers(0, 4), st.integers(0, 12), st.integers(0, 60))
growth = st.one_of(st.just(0), st.just(0), st.integers(0, 2), st.integers(0, 8))


SIDES = st.integers(2, 5)
KS = st.sampled_from([3, 5, 5, 10])
RE_RELEASES = st.integers(1, 3)


@st.composite
def release_sequences(
    draw: st.DrawFn,
    sides: st.SearchStrategy[int] = SIDES,
    ks: st.SearchStrategy[int] = KS,
    re_releases: st.SearchStrategy[int] = RE_RELEASES,
) -> tuple[int, list[Table]]:
    """k and the tables of a period, release after release (late reports: counts grow)."""
    rows = tuple(f"r{i}" for i in range(draw(sides)))
    columns = tuple(f"c{j}" for j in range(draw(sides)))
    k = draw(ks)
    counts = [[draw(small) for _ in columns] for _ in rows]
    tables = [Table(rows=rows, columns=columns, counts=tuple(map(tuple, counts)))]
    for _ in range(draw(re_releases)):
        counts = [[v + draw(growth) for v in line] for line in counts]
        tables.append(Table(rows=rows, columns=columns, counts=tuple(map(tuple, counts))))
    return k, tables


@settings(max_examples=200, deadline=None)
@given(release_sequences())
def test_no_suppressed_entry_is_recoverable_across_releases(case: tuple[int, list[Table]]) -> None:
    k, tables = case
    memory = SuppressionMemory()
    published: list[Published] = []
    for table in tables:
        shown, memory = release(table, name="t", period="2025-03", memory=memory, k=k)
        assert_safe(shown, table)  # each release alone
        if published:
            assert published[-1].suppressed <= shown.suppressed  # never unsuppressed
        published.append(shown)
    assert_no_difference_recovers(published, lambda diff: bridges(diff.suppressed))
    assert memory.suppressed("t", "2025-03") == published[-1].suppressed


@settings(max_examples=150, deadline=None)
@given(  # small enough for the history oracle's search
    release_sequences(st.integers(2, 3), st.sampled_from([3, 5]), st.integers(1, 2))
)
def test_growth_bounds_pin_nothing_across_releases(case: tuple[int, list[Table]]) -> None:
    k, tables = case
    memory = SuppressionMemory()
    period: list[Release] = []
    for table in tables:
        history = memory.history("t", "p")
        shown, memory = release(table, name="t", period="p", memory=memory, k=k)
        assert pinned(shown, table.values(), history) == frozenset()
        period.append((table.values(), shown.suppressed, lines(table.rows, table.columns)))
    assert_history_safe(period)


def test_growth_bounds_do_not_pin_a_new_small_cell() -> None:
    """A reader who assumes counts never fall between releases of a period gets more than
    equations: (Z, A) >= 10 (published first) and (X, A) + (Y, A) >= 8 (the first release's
    column A minus its published (Z, A)). Protected on its own equations and bounds, the
    second release would give (Z, C) away as 3 through them; only (Z, C) and its margins
    grew, so hiding it among cells is not enough and margins are hidden too."""
    first_table = grid("XYZ", "ABC", [[2, 8, 9], [6, 12, 7], [10, 11, 0]])
    second_table = grid("XYZ", "ABC", [[2, 8, 9], [6, 12, 7], [10, 11, 3]])
    memory = SuppressionMemory()
    first, memory = release(first_table, name="t", period="p", memory=memory)
    second, memory = release(second_table, name="t", period="p", memory=memory)

    def n(entry: object) -> int:
        assert isinstance(entry, int)
        return entry

    # what the first release's memory alone (no history) would publish: pinned by growth
    naive = protect(second_table, keep=first.suppressed)
    assert naive.suppressed == first.suppressed | {("Z", "C"), ("Z", "A"), ("Y", "C")}
    za_min = n(first.cell("Z", "A"))
    za_max = n(naive.column_total("A")) - (n(first.column_total("A")) - za_min)
    assert za_min == za_max == 10
    assert n(naive.row_total("Z")) - n(naive.cell("Z", "B")) - za_max == 3  # (Z, C)

    assert second.suppressed > naive.suppressed
    assert second.suppressed - naive.suppressed <= {
        (r, c) for r, c in second_table.values() if r is None or c is None
    }
    equations = lines(second.rows, second.columns)
    period = [
        (first_table.values(), first.suppressed, equations),
        (second_table.values(), second.suppressed, equations),
    ]
    assert_history_safe(period)
    naive_period = [period[0], (second_table.values(), naive.suppressed, equations)]
    assert ("Z", "C") not in moved_in_history(naive_period, 1)


# -- nested tables: partners in their countries ---------------------------------------------

Node = tuple[object, ...]


def nested_lines(published: Published) -> list[list[Position]]:
    """Every additive line of a nested table, the total last: the country table's, each
    partner's row, and each column of a country's partners with the country's entry."""
    out = lines(published.rows, published.columns)
    ext_cols: list[str | None] = [*published.columns, None]
    out += [[(m, c) for c in ext_cols] for m in published.members]
    for g in published.rows:
        kids = [m for m, p in zip(published.members, published.parents, strict=True) if p == g]
        if kids:
            out += [[*((m, c) for m in kids), (g, c)] for c in ext_cols]
    return out


def graph_bridges(
    suppressed: frozenset[Position], ends: Callable[[Position], tuple[Node, Node]]
) -> frozenset[Position]:
    """Suppressed entries (edges between the two equations `ends` names) on no cycle of
    suppressed entries: each edge removed in turn, is there still a path between its ends?"""
    edges = {p: ends(p) for p in suppressed}

    def connected(without: Position, start: Node, goal: Node) -> bool:
        seen, todo = {start}, deque([start])
        while todo:
            node = todo.popleft()
            if node == goal:
                return True
            for p, (a, b) in edges.items():
                if p == without or node not in (a, b):
                    continue
                nxt = b if node == a else a
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    return frozenset(p for p, (a, b) in edges.items() if not connected(p, a, b))


def nested_bridges(
    suppressed: frozenset[Position], members: Mapping[str, str]
) -> frozenset[Position]:
    """Independent oracle for nested tables. Keep the equations of each partner's row, of
    each column of a country's partners (the country's entry its total), of each region
    column (the countries' entries, the column total) and of the totals row; a country
    without partners keeps its own row instead. The rest follow from these. Every entry is
    then in exactly two of them, with signs that make the system a directed graph: an entry
    is recoverable iff it is a bridge."""
    nested = set(members.values())

    def ends(p: Position) -> tuple[Node, Node]:
        r, c = p
        if r is None:
            return ("region column", c), ("totals row",)
        if r in members:
            return ("partner row", r), ("country column", members[r], c)
        if r in nested:
            return ("country column", r, c), ("region column", c)
        return ("country row", r), ("region column", c)

    return graph_bridges(suppressed, ends)


def members_of(published: Published) -> dict[str, str]:
    return dict(zip(published.members, published.parents, strict=True))


def assert_nested_safe(published: Published, table: NestedTable) -> None:
    values = table.values()
    assert set(published.entries) == set(values)
    for position, shown in published.entries.items():
        if shown is not SUPPRESSED:
            assert shown == values[position]
            assert not 0 < shown < published.k, position
    for line in nested_lines(published):
        assert sum(published.entries[p] is SUPPRESSED for p in line) != 1, line
    assert recoverable(published) == frozenset()
    assert nested_bridges(published.suppressed, members_of(published)) == frozenset()
    assert_nothing_pinned(published, values, nested_lines(published))


def nested(
    cells: dict[tuple[str, str], int], groups: str, columns: str
) -> NestedTable:
    """Members are named "<group>/<name>"."""
    members = {m: m.split("/")[0] for m in sorted({m for m, _ in cells})}
    return NestedTable.from_cells(cells, members, tuple(groups), tuple(columns))


def test_a_small_partner_cell_is_hidden_among_partners_not_countries() -> None:
    # X's partners a and b: (a, A) = 2 is small, X's own cells are not (12, 17)
    table = nested(
        {("X/a", "A"): 2, ("X/a", "B"): 8, ("X/b", "A"): 10, ("X/b", "B"): 9,
         ("Y/c", "A"): 20, ("Y/c", "B"): 30},
        "XY",
        "AB",
    )  # fmt: skip
    published = protect_nested(table)
    # a rectangle of partner cells: the countries' figures and every margin stay published
    assert published.suppressed == {("X/a", "A"), ("X/a", "B"), ("X/b", "A"), ("X/b", "B")}
    assert published.cell("X", "A") == 12
    assert published.row_total("X/a") == 10
    assert_nested_safe(published, table)


def test_a_country_with_one_partner_is_suppressed_with_it() -> None:
    table = nested(
        {("X/a", "A"): 3, ("X/a", "B"): 9, ("Y/b", "A"): 8, ("Y/b", "B"): 12,
         ("Y/c", "A"): 7, ("Y/c", "B"): 6},
        "XY",
        "AB",
    )  # fmt: skip
    published = protect_nested(table)
    assert {("X/a", "A"), ("X", "A")} <= published.suppressed
    for column in ("A", "B", None):  # the partner's figures are its country's, hidden alike
        assert published.get(("X/a", column)) == published.get(("X", column))
    assert_nested_safe(published, table)


def test_partner_cells_are_recoverable_from_country_cells_without_joint_protection() -> None:
    """Why a country table and its partners are protected together. Protected apart, the
    partner table hides (X/a, A) = 2 in a rectangle with Y's only partner c, and the country
    table, having nothing small, publishes everything: (Y/c, A) is Y's cell and (X/a, A) is
    X's cell minus (X/b, A)."""
    table = nested(
        {("X/a", "A"): 2, ("X/a", "B"): 30, ("X/b", "A"): 40, ("X/b", "B"): 50,
         ("Y/c", "A"): 20, ("Y/c", "B"): 25},
        "XY",
        "AB",
    )  # fmt: skip
    partners = protect(Table(rows=table.members, columns=table.columns, counts=table.counts))
    assert partners.suppressed == {("X/a", "A"), ("X/a", "B"), ("Y/c", "A"), ("Y/c", "B")}
    countries = protect(table.group_table())
    assert countries.suppressed == frozenset()
    both = Published(
        rows=table.groups,
        columns=table.columns,
        k=DEFAULT_K,
        entries={
            **countries.entries,
            **{p: v for p, v in partners.entries.items() if p[0] is not None},
        },
        members=table.members,
        parents=table.parents,
    )
    assert recoverable(both) == partners.suppressed
    joint = protect_nested(table)
    assert_nested_safe(joint, table)
    assert joint.cell("X", "A") == 42  # the price is paid among partners where possible


def test_nested_determined_agrees_on_a_worked_example() -> None:
    # (X/a, A) and (X/b, A) suppressed: the country cell (X, A) is published, so the two
    # partner cells are tied to each other only -- and each to its own row total, which
    # is published: both are given away.
    groups, columns = ("X",), ("A", "B")
    members, parents = ("X/a", "X/b"), ("X", "X")
    pattern = {("X/a", "A"), ("X/b", "A")}
    found = determined(groups, columns, pattern, members=members, parents=parents)
    assert found == pattern == nested_bridges(frozenset(pattern), {"X/a": "X", "X/b": "X"})
    pattern |= {("X/a", "B"), ("X/b", "B")}
    assert determined(groups, columns, pattern, members=members, parents=parents) == frozenset()


def test_nested_table_validation() -> None:
    with pytest.raises(ValueError, match="parent"):
        NestedTable(groups=("X",), members=("m",), parents=("Y",), columns=("A",), counts=((1,),))
    with pytest.raises(ValueError, match="also be a group"):
        NestedTable(groups=("X",), members=("X",), parents=("X",), columns=("A",), counts=((1,),))
    with pytest.raises(ValueError, match="one line per member"):
        NestedTable(groups=("X",), members=("m",), parents=("X",), columns=("A",), counts=())
    with pytest.raises(ValueError, match="non-negative"):
        NestedTable(groups=("X",), members=("m",), parents=("X",), columns=("A",), counts=((-1,),))
    with pytest.raises(ValueError, match="outside"):
        NestedTable.from_cells({("n", "A"): 1}, {"m": "X"}, ["X"], ["A"])
    table = nested({("X/a", "A"): 2, ("X/b", "A"): 3}, "XY", "A")
    assert table.group_table().counts == ((5,), (0,))  # Y has no partners: all zero
    assert table.values()[("X/b", None)] == 3
    with pytest.raises(ValueError, match="not in the table"):
        protect_nested(table, keep=[("X/c", "A")])


def test_nested_memory_keeps_countries_where_a_plain_table_finds_them() -> None:
    table = nested(
        {("X/a", "A"): 3, ("X/a", "B"): 9, ("Y/b", "A"): 8, ("Y/b", "B"): 12,
         ("Y/c", "A"): 7, ("Y/c", "B"): 6},
        "XY",
        "AB",
    )  # fmt: skip
    first, memory = release_nested(table, name="t", period="p", memory=SuppressionMemory())
    hidden = first.suppressed
    partners = {p for p in hidden if p[0] in table.members}
    assert memory.suppressed(members_record("t"), "p") == partners
    assert memory.suppressed("t", "p") == hidden - partners
    # the region switches to country breakdowns: the countries' pattern carries over
    second, memory = release(table.group_table(), name="t", period="p", memory=memory)
    assert hidden - partners <= second.suppressed
    # and back: everything remembered stays suppressed
    third, _ = release_nested(table, name="t", period="p", memory=memory)
    assert hidden | second.suppressed <= third.suppressed
    assert_nested_safe(third, table)


def test_difference_of_nested_releases() -> None:
    first = protect_nested(nested({("X/a", "A"): 6, ("X/b", "A"): 7}, "X", "A"))
    second = protect_nested(
        nested({("X/a", "A"): 8, ("X/b", "A"): 7, ("Y/c", "A"): 9}, "XY", "A")
    )
    diff = difference(first, second)
    assert diff.cell("X/a", "A") == 2
    assert diff.cell("Y/c", "A") == 9  # a new partner counts from 0
    assert diff.members == second.members
    with pytest.raises(ValueError, match="keep every row"):
        difference(second, first)


nested_patterns = st.tuples(
    st.lists(st.integers(0, 3), min_size=1, max_size=3),  # partners per country
    st.integers(1, 3),  # columns
).flatmap(
    lambda shape: st.tuples(
        st.just(shape),
        st.sets(
            st.tuples(
                st.sampled_from(
                    [
                        None,
                        *(f"G{g}" for g in range(len(shape[0]))),
                        *(f"G{g}/m{i}" for g, n in enumerate(shape[0]) for i in range(n)),
                    ]
                ),
                st.sampled_from([None, *"abc"[: shape[1]]]),
            )
        ),
    )
)


@settings(max_examples=300, deadline=None)
@given(nested_patterns)
def test_nested_solver_agrees_with_the_graph_criterion(
    pattern: tuple[tuple[list[int], int], set[Position]],
) -> None:
    (sizes, n_cols), suppressed = pattern
    groups = tuple(f"G{g}" for g in range(len(sizes)))
    members = {f"G{g}/m{i}": f"G{g}" for g, n in enumerate(sizes) for i in range(n)}
    found = determined(
        groups,
        tuple("abc"[:n_cols]),
        suppressed,
        members=tuple(members),
        parents=tuple(members.values()),
    )
    assert found == nested_bridges(frozenset(suppressed), members)


@settings(max_examples=200, deadline=None)
@given(nested_patterns, st.lists(st.integers(0, 3), min_size=36, max_size=36))
def test_nested_pinned_agrees_with_the_oracle(
    pattern: tuple[tuple[list[int], int], set[Position]], cells: list[int]
) -> None:
    (sizes, n_cols), suppressed = pattern
    groups = tuple(f"G{g}" for g in range(len(sizes)))
    members = {f"G{g}/m{i}": f"G{g}" for g, n in enumerate(sizes) for i in range(n)}
    columns = tuple("abc"[:n_cols])
    counts = iter(cells)
    table = NestedTable.from_cells(
        {(m, c): next(counts) for m in members for c in columns}, members, groups, columns
    )
    values = table.values()
    hidden = frozenset(suppressed)
    shown = hiding(hidden, values, groups, columns, members)
    free = moved_by_one(values, hidden, nested_lines(shown))
    assert pinned(shown, values) == hidden - free
    assert recoverable(shown) <= pinned(shown, values)


PARTNERS_PER_COUNTRY = st.lists(st.integers(0, 3), min_size=1, max_size=3)
COLUMNS = st.integers(1, 4)


@st.composite
def nested_release_sequences(
    draw: st.DrawFn,
    sizes: st.SearchStrategy[list[int]] = PARTNERS_PER_COUNTRY,
    n_columns: st.SearchStrategy[int] = COLUMNS,
) -> tuple[int, list[NestedTable], list[bool]]:
    """k, the tables of a period release after release (late reports make counts grow, new
    partners appear), and for each release whether it breaks down by partner; ``sizes``:
    partners per country, ``n_columns``: how many columns."""
    per_group = draw(sizes)
    groups = tuple(f"G{g}" for g in range(len(per_group)))
    members = {f"G{g}/m{i}": f"G{g}" for g, n in enumerate(per_group) for i in range(n)}
    columns = tuple(f"c{j}" for j in range(draw(n_columns)))
    k = draw(st.sampled_from([3, 5, 5, 10]))
    counts = {m: [draw(small) for _ in columns] for m in members}

    def table() -> NestedTable:
        cells = {
            (m, c): v for m, line in counts.items() for c, v in zip(columns, line, strict=True)
        }
        return NestedTable.from_cells(cells, dict(sorted(members.items())), groups, columns)

    tables = [table()]
    for step in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):  # a partner's first report of the period
            g = draw(st.sampled_from(groups))
            members[f"{g}/new{step}"] = g
            counts[f"{g}/new{step}"] = [draw(small) for _ in columns]
        counts = {m: [v + draw(growth) for v in line] for m, line in counts.items()}
        tables.append(table())
    modes = draw(st.lists(st.booleans(), min_size=len(tables), max_size=len(tables)))
    return k, tables, modes


@settings(max_examples=100, deadline=None)
@given(
    nested_release_sequences(
        sizes=st.lists(st.integers(0, 2), min_size=1, max_size=2), n_columns=st.integers(1, 2)
    )
)
def test_growth_bounds_pin_no_partner_or_country_entry_across_releases(
    case: tuple[int, list[NestedTable], list[bool]],
) -> None:
    k, tables, _ = case
    memory = SuppressionMemory()
    period: list[Release] = []
    for table in tables:
        history = memory.history("t", "p")
        shown, memory = release_nested(table, name="t", period="p", memory=memory, k=k)
        assert pinned(shown, table.values(), history) == frozenset()
        period.append((table.values(), shown.suppressed, nested_lines(shown)))
    assert_history_safe(period)


def country_level(published: Published) -> Published:
    """The country table inside a (nested) release: what a country breakdown shows."""
    entries = {p: v for p, v in published.entries.items() if p[0] not in published.members}
    return Published(rows=published.rows, columns=published.columns, k=published.k, entries=entries)


@settings(max_examples=200, deadline=None)
@given(nested_release_sequences())
def test_no_suppressed_partner_or_country_entry_is_recoverable_across_releases(
    case: tuple[int, list[NestedTable], list[bool]],
) -> None:
    k, tables, _ = case
    memory = SuppressionMemory()
    published: list[Published] = []
    for table in tables:
        shown, memory = release_nested(table, name="t", period="2025-03", memory=memory, k=k)
        assert_nested_safe(shown, table)  # each release alone
        if published:
            assert published[-1].suppressed <= shown.suppressed  # never unsuppressed
        published.append(shown)
    assert_no_difference_recovers(
        published, lambda diff: nested_bridges(diff.suppressed, members_of(diff))
    )
    remembered = memory.suppressed("t", "2025-03") | memory.suppressed(
        members_record("t"), "2025-03"
    )
    assert remembered == published[-1].suppressed


@settings(max_examples=100, deadline=None)
@given(nested_release_sequences())
def test_switching_between_partner_and_country_breakdowns_keeps_countries_protected(
    case: tuple[int, list[NestedTable], list[bool]],
) -> None:
    """The region document may allow partner breakdowns for some releases of a period and
    not others: the countries' pattern only grows, every release is safe alone, and the
    country tables of any two releases difference to nothing recoverable."""
    k, tables, by_partner = case
    memory = SuppressionMemory()
    countries: list[Published] = []
    for table, partners in zip(tables, by_partner, strict=True):
        if partners:
            shown, memory = release_nested(table, name="t", period="p", memory=memory, k=k)
            assert_nested_safe(shown, table)
            shown = country_level(shown)
        else:
            shown, memory = release(table.group_table(), name="t", period="p", memory=memory, k=k)
            assert_safe(shown, table.group_table())
        if countries:
            assert countries[-1].suppressed <= shown.suppressed
        countries.append(shown)
    assert_no_difference_recovers(countries)
