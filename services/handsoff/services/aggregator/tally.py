"""Regional indicators kept in SQLite: the same figures as `indicators.compute`, flat memory.

    create_schema(db)                         the tables and indexes (IF NOT EXISTS)
    add_facts(db, partner, number, event)     one verified message, inside the caller's
                                              transaction (never BEGIN or COMMIT here)
    compute(db) -> Indicators                 == indicators.compute(ledger) of the same messages

`indicators.py` is the reference model and its module docstring the specification: for any
set of messages, in any order, duplicates included, `compute(db)` equals
`indicators.compute(ledger)` of a ledger fed the same messages. The rules are kept as each
message arrives, so the tables hold only what counts (or will count once the incident
arrives), and `compute` is a few GROUP BY and window queries streamed from indexes: Python
holds the result tables only, never the messages.

    tally_retracted(partner, case_id)
        Cases retracted. A retraction deletes the case's rows from the two other tables, and
        any later message about the case, whatever its number, is dropped on arrival.
    tally_slot(partner, case_id, slot, number)
        For each step counted once per case (incident, first response, court case opened,
        judgment) or per referral (made, accepted, completed: the slot names the referral),
        the lowest message number received. Only that message has rows in tally_fact: a
        lower number arriving later replaces them, a higher one (or a duplicate) is dropped.
        A judgment "lost" holds its slot with no fact (a later "won" cannot count).
    tally_fact(partner, case_id, number, indicator, cell_key, month, country, hours, live)
        One row per count a message adds to a country cell (an incident adds several:
        incidents, each violence type, its GBVIMS type, each perpetrator, police-share),
        and one row per first response (indicator time-to-first-response, with `hours`).
        Police reports and responses have no slot: one row per message. `live` is 1 once the
        case's incident has arrived (a step received before it waits with live = 0).

A message is identified by (partner, number): the slot keeps the lowest number and the fact
rows have (partner, case_id, number, indicator, cell_key) as primary key, so a message
received again changes nothing. The cells are counted by partner (one ordered scan of an
index); country and region cells are their sums, and partners-reporting the distinct
partners with an incident (`indicators.area_cells`, shared with the reference).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Final

from handsoff.events.codes import CourtJudgment, PerpetratorCategory
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
from handsoff.services.aggregator.indicators import (
    COURT_CASES_OPENED,
    COURT_CASES_WON,
    INCIDENTS,
    INCIDENTS_BY_GBVIMS_TYPE,
    INCIDENTS_BY_PERPETRATOR,
    INCIDENTS_BY_VIOLENCE_TYPE,
    POLICE_REPORTS_FILED,
    POLICE_RESPONSES,
    POLICE_SHARE,
    REFERRALS_ACCEPTED,
    REFERRALS_COMPLETED,
    REFERRALS_MADE,
    REGION,
    TIME_TO_FIRST_RESPONSE,
    TOTAL,
    Indicators,
    PartnerKey,
    PartnerStat,
    Stat,
    area_cells,
    median,
)

P90: Final = 90

_SCHEMA: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS tally_retracted (
        partner TEXT NOT NULL,
        case_id TEXT NOT NULL,
        PRIMARY KEY (partner, case_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS tally_slot (
        partner TEXT NOT NULL,
        case_id TEXT NOT NULL,
        slot TEXT NOT NULL,
        number INTEGER NOT NULL,
        PRIMARY KEY (partner, case_id, slot)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS tally_fact (
        partner TEXT NOT NULL,
        case_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        indicator TEXT NOT NULL,
        cell_key TEXT NOT NULL,
        month TEXT NOT NULL,
        country TEXT NOT NULL,
        hours INTEGER,
        live INTEGER NOT NULL,
        PRIMARY KEY (partner, case_id, number, indicator, cell_key)
    ) WITHOUT ROWID
    """,
    # The cells by partner, partners-reporting and the frame: one ordered scan of live rows.
    """
    CREATE INDEX IF NOT EXISTS tally_fact_cells
    ON tally_fact (live, indicator, month, country, cell_key, partner)
    """,
    # The hours of first responses in order, by (month, country) and by month (region).
    """
    CREATE INDEX IF NOT EXISTS tally_fact_hours
    ON tally_fact (live, month, country, hours) WHERE hours IS NOT NULL
    """,
    """
    CREATE INDEX IF NOT EXISTS tally_fact_region_hours
    ON tally_fact (live, month, hours) WHERE hours IS NOT NULL
    """,
    """
    CREATE INDEX IF NOT EXISTS tally_fact_partner_hours
    ON tally_fact (live, month, country, partner, hours) WHERE hours IS NOT NULL
    """,
)

_INCIDENT_SLOT: Final = SharedIncident.__name__
_REFERRALS: Final[dict[type[SharedEvent], str]] = {
    SharedReferralMade: REFERRALS_MADE,
    SharedReferralAccepted: REFERRALS_ACCEPTED,
    SharedReferralCompleted: REFERRALS_COMPLETED,
}

# One round trip: is the case retracted, its incident's number, the number held in `slot`.
_LOOKUP: Final = """
SELECT
    EXISTS (SELECT 1 FROM tally_retracted WHERE partner = :partner AND case_id = :case),
    (SELECT number FROM tally_slot
     WHERE partner = :partner AND case_id = :case AND slot = :incident),
    (SELECT number FROM tally_slot
     WHERE partner = :partner AND case_id = :case AND slot = :slot)
"""
_INSERT_FACT: Final = """
INSERT OR IGNORE INTO tally_fact
    (partner, case_id, number, indicator, cell_key, month, country, hours, live)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_CELLS: Final = """
SELECT indicator, month, country, partner, cell_key, count(*)
FROM tally_fact WHERE live = 1
GROUP BY indicator, month, country, cell_key, partner
"""
# The hours at the ranks the statistics need, with n: the two middle ranks (equal when n is
# odd) and the nearest rank ceil(percent * n / 100), in integers. One window (n over the
# whole partition, row_number ignores the frame), read in order from the partial index:
# no sort.
_RANKS: Final = "nth IN ((n + 1) / 2, n / 2 + 1, (:percent * n + 99) / 100)"
_COUNTRY_HOURS: Final = f"""
SELECT month, country, n, nth, hours FROM (
    SELECT month, country, hours,
        row_number() OVER w AS nth,
        count(*) OVER w AS n
    FROM tally_fact WHERE live = 1 AND hours IS NOT NULL
    WINDOW w AS (
        PARTITION BY month, country ORDER BY hours
        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
    )
) WHERE {_RANKS}
"""  # noqa: S608 - constant text, no value is formatted in
_REGION_HOURS: Final = f"""
SELECT month, :region, n, nth, hours FROM (
    SELECT month, hours,
        row_number() OVER w AS nth,
        count(*) OVER w AS n
    FROM tally_fact WHERE live = 1 AND hours IS NOT NULL
    WINDOW w AS (
        PARTITION BY month ORDER BY hours
        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
    )
) WHERE {_RANKS}
"""  # noqa: S608 - constant text, no value is formatted in
_PARTNER_HOURS: Final = f"""
SELECT month, country, partner, n, nth, hours FROM (
    SELECT month, country, partner, hours,
        row_number() OVER w AS nth,
        count(*) OVER w AS n
    FROM tally_fact WHERE live = 1 AND hours IS NOT NULL
    WINDOW w AS (
        PARTITION BY month, country, partner ORDER BY hours
        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
    )
) WHERE {_RANKS}
"""  # noqa: S608 - constant text, no value is formatted in


def create_schema(db: sqlite3.Connection) -> None:
    """Creates the tally's tables and indexes if they are missing (no commit of its own)."""
    for statement in _SCHEMA:
        db.execute(statement)


FactRow = tuple[str, str, int | None]  # (indicator, cell key, hours)


def _slot(event: SharedEvent) -> str | None:
    """The slot a once-per-case or once-per-referral step fills; None for police steps."""
    match event:
        case SharedReferralMade() | SharedReferralAccepted() | SharedReferralCompleted():
            return f"{type(event).__name__}:{event.referral}"
        case SharedPoliceReportFiled() | SharedPoliceResponse():
            return None
        case _:
            return type(event).__name__


def _facts(event: SharedEvent) -> list[FactRow]:
    """The country cells `event` adds one to (and the hours of a first response)."""
    match event:
        case SharedIncident():
            rows: list[FactRow] = [(INCIDENTS, TOTAL, None)]
            rows += [(INCIDENTS_BY_VIOLENCE_TYPE, str(v), None) for v in event.violence_types]
            rows.append((INCIDENTS_BY_GBVIMS_TYPE, str(event.gbvims_type), None))
            rows += [(INCIDENTS_BY_PERPETRATOR, str(p), None) for p in event.perpetrators]
            if PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT in event.perpetrators:
                rows.append((POLICE_SHARE, TOTAL, None))
            return rows
        case SharedFirstResponse():
            return [(TIME_TO_FIRST_RESPONSE, TOTAL, event.hours_to_first_response)]
        case SharedReferralMade() | SharedReferralAccepted() | SharedReferralCompleted():
            return [(_REFERRALS[type(event)], str(event.service), None)]
        case SharedPoliceReportFiled():
            return [(POLICE_REPORTS_FILED, TOTAL, None)]
        case SharedPoliceResponse():
            return [(POLICE_RESPONSES, str(event.response), None)]
        case SharedCourtCaseOpened():
            return [(COURT_CASES_OPENED, TOTAL, None)]
        case SharedCourtJudgment():
            return [(COURT_CASES_WON, TOTAL, None)] if event.judgment == CourtJudgment.WON else []
        case _:  # pragma: no cover - a retraction is handled before
            raise AssertionError(f"{type(event).__name__} has no facts")


def _check(partner: str, number: int, event: SharedEvent) -> None:
    """What Ledger.add refuses (LedgerError), as a ValueError."""
    if type(event) not in SHARED_TYPES:
        raise ValueError(f"{type(event).__name__} is not a shared event")
    if event.partner != partner:
        raise ValueError(f"message {partner}:{number} carries an event of {event.partner}")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"message number {number!r} is not a positive integer")


def add_facts(db: sqlite3.Connection, partner: str, number: int, event: SharedEvent) -> None:
    """Records the facts of one verified message (partner, number) in the caller's open
    transaction. Idempotent: a message received again changes nothing. ValueError (nothing
    written) for an event that is not a shared event of `partner` or a number below 1."""
    _check(partner, number, event)
    case = event.case
    if isinstance(event, SharedRetraction):
        db.execute(
            "INSERT OR IGNORE INTO tally_retracted (partner, case_id) VALUES (?, ?)",
            (partner, case),
        )
        db.execute("DELETE FROM tally_fact WHERE partner = ? AND case_id = ?", (partner, case))
        db.execute("DELETE FROM tally_slot WHERE partner = ? AND case_id = ?", (partner, case))
        return
    slot = _slot(event)
    retracted, incident, held = db.execute(
        _LOOKUP, {"partner": partner, "case": case, "incident": _INCIDENT_SLOT, "slot": slot}
    ).fetchone()
    if retracted:
        return
    if slot is not None:
        if held is not None:
            if held <= number:  # a duplicate, or a later copy of a step already counted
                return
            db.execute(
                "DELETE FROM tally_fact WHERE partner = ? AND case_id = ? AND number = ?",
                (partner, case, held),
            )
        db.execute(
            "INSERT OR REPLACE INTO tally_slot (partner, case_id, slot, number) "
            "VALUES (?, ?, ?, ?)",
            (partner, case, slot, number),
        )
    if isinstance(event, SharedIncident):
        if incident is None:  # the case starts counting: the steps that waited for it too
            db.execute(
                "UPDATE tally_fact SET live = 1 WHERE partner = ? AND case_id = ? AND live = 0",
                (partner, case),
            )
        live = 1
    else:
        live = int(incident is not None)
    month, country = event.month, str(event.country)
    rows = [
        (partner, case, number, indicator, key, month, country, hours, live)
        for indicator, key, hours in _facts(event)
    ]
    if len(rows) == 1:  # most steps: execute is cheaper than executemany
        db.execute(_INSERT_FACT, rows[0])
    elif rows:
        db.executemany(_INSERT_FACT, rows)


def compute(db: sqlite3.Connection) -> Indicators:
    """Every indicator, as `indicators.compute` would give for the messages added to `db`.
    Reads in one transaction (a snapshot) unless the caller already has one open."""
    own = not db.in_transaction
    if own:
        db.execute("BEGIN")
    try:
        counts: dict[tuple[str, str, str, str, str], int] = {}
        frame: set[PartnerKey] = set()
        for indicator, month, country, partner, key, n in db.execute(_CELLS):
            frame.add((month, country, partner))
            if indicator != TIME_TO_FIRST_RESPONSE:
                counts[(indicator, month, country, partner, key)] = n
        cells, partner_cells = area_cells(counts, frame)
        stats, partner_stats = _stats(db, frame)
        return Indicators(
            cells=tuple(cells),
            stats=tuple(stats),
            partner_cells=tuple(partner_cells),
            partner_stats=tuple(partner_stats),
        )
    finally:
        if own:
            db.execute("COMMIT")


def _figures(n: int, at: Mapping[int, int]) -> tuple[float | None, float | None]:
    """(median, p90) from the hours at the ranks _RANKS selects, n of them in all."""
    if n == 0:
        return None, None
    return median(at[r] for r in {(n + 1) // 2, n // 2 + 1}), float(at[(P90 * n + 99) // 100])


def _stats(
    db: sqlite3.Connection, frame: Iterable[PartnerKey]
) -> tuple[list[Stat], list[PartnerStat]]:
    ranked: dict[tuple[str, str], tuple[int, dict[int, int]]] = {}
    params = {"region": REGION, "percent": P90}
    for query in (_COUNTRY_HOURS, _REGION_HOURS):
        for month, area, n, rank, hours in db.execute(query, params):
            ranked.setdefault((month, area), (n, {}))[1][rank] = hours
    mine: dict[PartnerKey, tuple[int, dict[int, int]]] = {}
    for month, country, partner, n, rank, hours in db.execute(_PARTNER_HOURS, params):
        mine.setdefault((month, country, partner), (n, {}))[1][rank] = hours
    partners = sorted(frame)
    areas = sorted({(p, a) for p, country, _ in partners for a in (country, REGION)})
    out = []
    for period, area in areas:
        n, at = ranked.get((period, area), (0, {}))
        mid, p90 = _figures(n, at)
        out.append(
            Stat(
                indicator=TIME_TO_FIRST_RESPONSE, period=period, area=area, n=n, median=mid, p90=p90
            )
        )
    by_partner = []
    for period, country, partner in partners:
        n, at = mine.get((period, country, partner), (0, {}))
        mid, p90 = _figures(n, at)
        by_partner.append(
            PartnerStat(
                indicator=TIME_TO_FIRST_RESPONSE,
                period=period,
                country=country,
                partner=partner,
                n=n,
                median=mid,
                p90=p90,
            )
        )
    return out, by_partner
