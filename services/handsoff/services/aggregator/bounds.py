"""Lower bounds in disclosure control: no suppressed entry may be pinned by them.

The exact check of ``disclosure`` works on the additivity equations alone. Whoever reads a
release knows more: counts are whole numbers, and a suppressed entry is at least 1 (zeros
are published, the module says so). A row whose two suppressed cells must add up to 2
gives both away as 1, though no equation determines either. So every suppressed entry must
take at least two values among the tables of whole numbers that fit what was published and
these lower bounds.

Why a graph settles it. Leaving out the redundant equations, every entry is in exactly two
equations (lines), as a part (+1) or as the total (-1). Multiplying some equations by -1 (a
2-colouring of the lines, which a table's structure admits; checked when built) makes every
entry +1 in one of its lines and -1 in the other: an *arc* from the second to the first, in
a directed graph whose nodes are the lines. The changes to the suppressed entries that keep
every equation are then exactly the circulations on their arcs. Another table that fits
differs from the true one by an integer circulation that lowers no entry below its bound;
it splits into simple cycles that follow its signs, and one of them passes through any
entry it changes. So an entry can take another value iff it lies on a cycle of the
*residual* graph: every suppressed entry's arc forwards (raising it, always allowed) and,
when its value is above its bound (its *slack* is at least 1), backwards (lowering it by
one). Moving one unit around such a cycle gives a second table that fits.

Raising needs no slack: a cell with its row total, column total and grand total suppressed
can always be raised (all four go up together), so hiding enough always frees an entry.
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Hashable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class Circulations(Generic[P]):
    """The lines of a table (each a sequence of entries, its total last) as a directed
    graph: ``arc[p]`` is entry ``p``'s (tail, head), nodes numbered by line."""

    def __init__(self, lines: Sequence[Sequence[P]]) -> None:
        where: dict[P, list[tuple[int, int]]] = {}
        for number, line in enumerate(lines):
            for p in line:
                where.setdefault(p, []).append((number, -1 if p == line[-1] else 1))
        odd = [p for p, seen in where.items() if len(seen) != 2]
        if odd:
            raise ValueError(f"entries not in exactly two lines: {odd!r}")
        sign = _colouring(len(lines), where)
        self.arc: dict[P, tuple[int, int]] = {}
        for p, ((a, in_a), (b, _)) in where.items():
            self.arc[p] = (b, a) if sign[a] * in_a > 0 else (a, b)

    def pinned(self, hidden: Iterable[P], lowerable: Container[P]) -> frozenset[P]:
        """The entries of ``hidden`` on no cycle of the residual graph: those the equations
        and the bounds fix to one value (``lowerable``: the entries above their bound)."""
        chosen = set(hidden)
        out: dict[int, list[tuple[int, P]]] = {}
        for p, (tail, head) in self.arc.items():  # dict order: deterministic
            if p in chosen:
                out.setdefault(tail, []).append((head, p))
                if p in lowerable:
                    out.setdefault(head, []).append((tail, p))
        fixed: set[P] = set()
        for p in chosen:
            tail, head = self.arc[p]
            up = _reaches(out, head, tail, p)
            if not up and not (p in lowerable and _reaches(out, tail, head, p)):
                fixed.add(p)
        return frozenset(fixed)

    def freeing(
        self, target: P, hidden: Iterable[P], lowerable: Container[P], cost: Mapping[P, int]
    ) -> list[P]:
        """The published entries of the cheapest cycle through ``target`` in the residual
        graph of every entry (a suppressed one costs nothing, a published one ``cost[p]``,
        lowerable if in ``lowerable`` as if suppressed): suppressing them lets ``target``
        move. Raising ``target`` is tried, and lowering it if it is lowerable."""
        chosen = set(hidden)
        out: dict[int, list[tuple[int, P, int]]] = {}
        for p, (tail, head) in self.arc.items():
            if p == target:
                continue
            price = 0 if p in chosen else cost[p]
            out.setdefault(tail, []).append((head, p, price))
            if p in lowerable:
                out.setdefault(head, []).append((tail, p, price))
        tail, head = self.arc[target]
        paths = [cheapest_path(out, head, tail)]
        if target in lowerable:
            paths.append(cheapest_path(out, tail, head))
        found = [path for path in paths if path is not None]
        if not found:  # pragma: no cover - raising along the margins is always possible
            return []
        _, entries = min(found, key=lambda path: path[0])
        return [p for p in entries if p not in chosen]


def _colouring(count: int, where: Mapping[P, list[tuple[int, int]]]) -> list[int]:
    """A sign per line such that every entry is +1 in one of its lines and -1 in the
    other; ValueError if there is none."""
    neighbours: list[list[tuple[int, int]]] = [[] for _ in range(count)]
    for (a, in_a), (b, in_b) in where.values():
        flip = -in_a * in_b  # sign[b] = sign[a] * flip
        neighbours[a].append((b, flip))
        neighbours[b].append((a, flip))
    sign = [0] * count
    for start in range(count):
        if sign[start]:
            continue
        sign[start] = 1
        todo = [start]
        while todo:
            a = todo.pop()
            for b, flip in neighbours[a]:
                if not sign[b]:
                    sign[b] = sign[a] * flip
                    todo.append(b)
                elif sign[b] != sign[a] * flip:
                    raise ValueError("the table's equations do not form a directed graph")
    return sign


def _reaches(out: Mapping[int, list[tuple[int, P]]], start: int, goal: int, avoid: P) -> bool:
    seen = {start}
    todo = [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for nxt, p in out.get(node, ()):
            if p != avoid and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def cheapest_path(
    out: Mapping[int, list[tuple[int, P, int]]], start: int, goal: int
) -> tuple[int, list[P]] | None:
    """Dijkstra over ``out`` (node -> (next node, entry, price)): the cost and the entries
    of the cheapest path from ``start`` to ``goal``, or None (deterministic for a given
    ``out``: the releases depend on it)."""
    dist = {start: 0}
    back: dict[int, tuple[int, P]] = {}
    heap = [(0, start)]
    while heap:
        d, node = heapq.heappop(heap)
        if d > dist[node]:
            continue
        if node == goal:
            entries: list[P] = []
            while node != start:
                node, p = back[node]
                entries.append(p)
            return d, entries
        for nxt, p, price in out.get(node, ()):
            nd = d + price
            if nd < dist.get(nxt, nd + 1):
                dist[nxt] = nd
                back[nxt] = (node, p)
                heapq.heappush(heap, (nd, nxt))
    return None
