"""How much of a month disclosure control hides, by how often the aggregator releases.

    .venv/bin/python -m bench.suppression [--incidents N] [--seed S]

A simulated month: 5 countries x 8 violence types (types weighted unevenly, as real ones
are), N incidents (default 300) arriving one at a time. For each release cadence (a
release after every 1, 10, 50 incidents, and one at the end) every release goes through
``disclosure.release`` with the period's memory, and the script prints how many of the
table's entries (cells and margins) the last release suppresses, and how many margins, with
the growth check (the memory's history) and without it (each release protected with the
suppressed set carried over only, as before the check). Not a timing: nothing here is
noisy, the figures are exact for a seed.
"""

from __future__ import annotations

import argparse
import random

from handsoff.services.aggregator.disclosure import (
    Published,
    SuppressionMemory,
    Table,
    protect,
    release,
)

COUNTRIES = tuple(f"C{i}" for i in range(5))
TYPES = tuple(f"T{j}" for j in range(8))


def month(every: int, incidents: int, seed: int, history: bool) -> Published:
    """The last release of the month when releasing after ``every`` incidents."""
    rnd = random.Random(seed)
    weights = [rnd.random() ** 2 for _ in TYPES]
    counts = dict.fromkeys(((r, c) for r in COUNTRIES for c in TYPES), 0)
    memory = SuppressionMemory()
    last: Published | None = None
    for i in range(1, incidents + 1):
        counts[(rnd.choice(COUNTRIES), rnd.choices(TYPES, weights)[0])] += 1
        if i % every and i != incidents:
            continue
        table = Table.from_cells(counts, COUNTRIES, TYPES)
        if history:
            last, memory = release(table, name="t", period="p", memory=memory)
        else:
            last = protect(table, keep=memory.suppressed("t", "p"))
            memory = memory.remember("t", "p", last.suppressed)
    assert last is not None
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"{len(COUNTRIES)} countries x {len(TYPES)} types, {args.incidents} incidents, "
        f"seed {args.seed}: entries suppressed in the month's last release"
    )
    print(f"{'release after':>14} {'with growth check':>20} {'without':>14}")
    for every in (1, 10, 50, args.incidents):
        row = []
        for history in (True, False):
            shown = month(every, args.incidents, args.seed, history)
            margins = sum(1 for r, c in shown.suppressed if r is None or c is None)
            row.append(f"{len(shown.suppressed)}/{len(shown.entries)} ({margins} margins)")
        label = "all" if every == args.incidents else str(every)
        print(f"{label:>14} {row[0]:>20} {row[1]:>14}")


if __name__ == "__main__":
    main()
