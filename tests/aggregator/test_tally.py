"""The SQLite tally gives exactly the reference figures (indicators.compute of a Ledger)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.test_indicators import (
    M3,
    M4,
    M5,
    MONTHS,
    PARTNERS,
    Builder,
    Message,
    assert_region_sums,
    feed,
    message_lists,
    pseudonym,
    scenario,
    table,
)
from handsoff.events.codes import (
    Country,
    CourtJudgment,
    PerpetratorCategory,
    PoliceResponse,
    ServiceType,
    ViolenceType,
    core_type,
)
from handsoff.federation.shared import SharedIncident, SharedRetraction, validated
from handsoff.services.aggregator import tally
from handsoff.services.aggregator.indicators import (
    COURT_CASES_OPENED,
    COURT_CASES_WON,
    INCIDENTS,
    INCIDENTS_BY_PERPETRATOR,
    INCIDENTS_BY_VIOLENCE_TYPE,
    PARTNERS_REPORTING,
    POLICE_REPORTS_FILED,
    POLICE_RESPONSES,
    POLICE_SHARE,
    REFERRALS_ACCEPTED,
    REFERRALS_MADE,
    REGION,
    TIME_TO_FIRST_RESPONSE,
    Cell,
    Indicators,
    compute,
    median,
    nearest_rank,
)

V, P, S = ViolenceType, PerpetratorCategory, ServiceType
POLICE = P.POLICE_OR_LAW_ENFORCEMENT
TABLES = ("tally_fact", "tally_slot", "tally_retracted")


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    tally.create_schema(conn)
    yield conn
    conn.close()


def add(db: sqlite3.Connection, messages: list[Message]) -> None:
    """Adds `messages` in one transaction, as the ingest does per batch."""
    db.execute("BEGIN IMMEDIATE")
    for partner, number, event in messages:
        tally.add_facts(db, partner, number, event)
    db.execute("COMMIT")


def checked(db: sqlite3.Connection, messages: list[Message]) -> Indicators:
    """tally.compute of `db`, asserted equal to the reference for `messages`."""
    result = tally.compute(db)
    assert result == compute(feed(messages))
    return result


def rows(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: sorted(db.execute(f"SELECT * FROM {t}")) for t in TABLES}


def case_rows(db: sqlite3.Connection, partner: str, case: str) -> int:
    return sum(
        db.execute(
            f"SELECT count(*) FROM {t} WHERE partner = ? AND case_id = ?", (partner, case)
        ).fetchone()[0]
        for t in ("tally_fact", "tally_slot")
    )


# --- the schema and the transaction ---------------------------------------------------------


def test_empty_tally_gives_empty_tables(db: sqlite3.Connection) -> None:
    assert tally.compute(db) == Indicators(cells=(), stats=())
    tally.create_schema(db)  # idempotent
    assert tally.compute(db) == Indicators()


def test_add_facts_writes_in_the_callers_transaction_only(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    for message in scenario():
        tally.add_facts(db, *message)
        assert db.in_transaction  # never committed here
    inside = tally.compute(db)  # the caller's transaction sees its own writes, and stays open
    assert db.in_transaction
    assert inside == compute(feed(scenario()))
    db.execute("ROLLBACK")
    assert tally.compute(db) == Indicators()
    assert not db.in_transaction  # compute's own read transaction is closed
    assert rows(db) == {t: [] for t in TABLES}


def test_a_file_database_keeps_the_facts(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.sqlite"
    messages = scenario()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    tally.create_schema(conn)
    add(conn, messages[:7])
    add(conn, messages[7:])
    conn.close()
    conn = sqlite3.connect(path, isolation_level=None)
    tally.create_schema(conn)
    try:
        checked(conn, messages)
    finally:
        conn.close()


def test_add_facts_refuses_what_the_ledger_refuses(db: sqlite3.Connection) -> None:
    partner, number, event = scenario()[0]
    with pytest.raises(ValueError, match="carries an event of"):
        tally.add_facts(db, "za-one", number, event)
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="positive integer"):
            tally.add_facts(db, partner, bad, event)
    cell = Cell(indicator="x", period=M3, area="x", key="", value=1)
    with pytest.raises(ValueError, match="not a shared event"):
        tally.add_facts(db, partner, number, cell)  # type: ignore[arg-type]
    assert rows(db) == {t: [] for t in TABLES}


# --- the rules of indicators.py, one by one -------------------------------------------------


def test_exact_figures_of_the_small_scenario(db: sqlite3.Connection) -> None:
    messages = scenario()
    add(db, messages)
    result = checked(db, messages)
    assert table(result, INCIDENTS) == {
        (M3, "BW", ""): 1, (M3, "ZA", ""): 2, (M3, REGION, ""): 3,
        (M4, "BW", ""): 0, (M4, "ZA", ""): 1, (M4, REGION, ""): 1,
        (M5, "BW", ""): 0, (M5, REGION, ""): 0,
    }  # fmt: skip
    assert table(result, PARTNERS_REPORTING) == {
        (M3, "BW", ""): 1, (M3, "ZA", ""): 2, (M3, REGION, ""): 3,
        (M4, "BW", ""): 0, (M4, "ZA", ""): 1, (M4, REGION, ""): 1,
        (M5, "BW", ""): 0, (M5, REGION, ""): 0,
    }  # fmt: skip
    stats = {(s.period, s.area): (s.n, s.median, s.p90) for s in result.stats}
    assert stats == {
        (M3, "BW"): (1, 2.0, 2.0), (M3, "ZA"): (1, 10.0, 10.0), (M3, REGION): (2, 6.0, 10.0),
        (M4, "BW"): (0, None, None), (M4, "ZA"): (1, 30.0, 30.0), (M4, REGION): (1, 30.0, 30.0),
        (M5, "BW"): (0, None, None), (M5, REGION): (0, None, None),
    }  # fmt: skip
    assert msgspec.json.encode(result) == msgspec.json.encode(compute(feed(messages)))
    assert_region_sums(result)


def test_a_step_before_its_incident_counts_once_the_incident_arrives(
    db: sqlite3.Connection,
) -> None:
    b = Builder("za-one", Country.ZA)
    incident = b.incident("X", M3, [V.RAPE], [P.CLIENT])
    response = b.first_response("X", M4, 5)
    made = b.referral("X", M4, "r", S.HEALTH, "made")
    report = b.police_report("X", M5)
    add(db, [response, made, report])
    assert tally.compute(db) == Indicators()  # nothing without the incident
    add(db, [incident])
    result = checked(db, [incident, response, made, report])
    assert result.value(REFERRALS_MADE, M4, "ZA", "health") == 1
    assert result.value(POLICE_REPORTS_FILED, M5, REGION) == 1
    assert [(s.period, s.area, s.n, s.median) for s in result.stats if s.n] == [
        (M4, "ZA", 1, 5.0),
        (M4, REGION, 1, 5.0),
    ]


def test_steps_numbered_before_the_incident_count_with_it(db: sqlite3.Connection) -> None:
    b = Builder("za-one", Country.ZA)
    response = b.first_response("X", M3, 7)  # number 1: sent before the incident (number 2)
    incident = b.incident("X", M3, [V.RAPE], [P.CLIENT])
    messages = [incident, response]
    add(db, messages)
    assert checked(db, messages).value(INCIDENTS, M3, "ZA") == 1
    assert tally.compute(db).stats[0].n == 1


def test_retraction_removes_the_case_for_ever(db: sqlite3.Connection) -> None:
    messages = scenario()
    bw_messages = [m for m in messages if m[0] == "bw-one"]
    others = [m for m in messages if m[0] != "bw-one"]
    bw = Builder("bw-one", Country.BW)
    bw.messages = list(bw_messages)
    retraction = bw.retraction("A")
    late = bw.incident("A", "2026-06", [V.ROBBERY], [P.CLIENT])  # numbered after it
    case = pseudonym("bw-one/A")
    add(db, [*messages, retraction])
    expected = compute(feed(others))  # as if case A had never been shared
    assert tally.compute(db) == expected
    assert case_rows(db, "bw-one", case) == 0
    assert not any(c.area == "BW" for c in tally.compute(db).cells)
    # Later messages about the case, old numbers re-sent or new ones: ignored for ever.
    add(db, [late, *bw_messages, retraction])
    assert case_rows(db, "bw-one", case) == 0
    assert tally.compute(db) == expected == compute(feed([*messages, retraction, late]))


def test_retraction_first_then_everything_else(db: sqlite3.Connection) -> None:
    messages = scenario()
    retraction = ("bw-one", 99, SharedRetraction(partner="bw-one", case=pseudonym("bw-one/A")))
    # The retraction arrives first; messages numbered before it arrive after: all ignored.
    add(db, [retraction, *messages[::-1]])
    assert tally.compute(db) == compute(feed([m for m in messages if m[0] != "bw-one"]))
    checked(db, [retraction, *messages])


def test_retraction_of_one_partner_leaves_another_partners_same_pseudonym(
    db: sqlite3.Connection,
) -> None:
    a = Builder("za-one", Country.ZA)
    incident = a.incident("X", M3, [V.RAPE], [P.CLIENT])
    event = incident[2]
    other = ("za-two", 1, validated(msgspec.structs.replace(event, partner="za-two")))
    retract = ("za-one", 2, SharedRetraction(partner="za-one", case=event.case))
    messages = [incident, other, retract]
    add(db, messages)
    result = checked(db, messages)
    assert result.value(INCIDENTS, M3, "ZA") == 1
    assert result.value(PARTNERS_REPORTING, M3, "ZA") == 1


def test_once_per_case_steps_count_the_lowest_number(db: sqlite3.Connection) -> None:
    b = Builder("za-one", Country.ZA)
    b.incident("X", M3, [V.RAPE], [P.CLIENT])
    b.first_response("X", M3, 4)
    b.first_response("X", M4, 9)  # never sent by a conforming node: the first one counts
    b.referral("X", M3, "r", S.HEALTH, "made")
    b.referral("X", M4, "r", S.HEALTH, "made")
    b.referral("X", M4, "s", S.LEGAL_AID, "made")  # another referral: counts
    b.referral("X", M3, "r", S.HEALTH, "accepted")
    b.referral("X", M4, "r", S.SHELTER, "accepted")
    b.court_opened("X", M4)
    b.court_opened("X", M5)
    messages = b.messages
    add(db, messages[::-1])  # the later copies arrive first and are replaced
    result = checked(db, messages)
    assert [(s.period, s.area, s.n, s.median) for s in result.stats if s.n] == [
        (M3, "ZA", 1, 4.0),
        (M3, REGION, 1, 4.0),
    ]
    assert table(result, REFERRALS_MADE) == {
        (M3, "ZA", "health"): 1, (M3, REGION, "health"): 1,
        (M4, "ZA", "legal_aid"): 1, (M4, REGION, "legal_aid"): 1,
    }  # fmt: skip
    assert table(result, REFERRALS_ACCEPTED) == {(M3, "ZA", "health"): 1, (M3, REGION, "health"): 1}
    assert result.value(COURT_CASES_OPENED, M4, "ZA") == 1
    assert result.value(COURT_CASES_OPENED, M5, "ZA") == 0


def test_the_first_judgment_counts_even_when_lost(db: sqlite3.Connection) -> None:
    b = Builder("za-one", Country.ZA)
    b.incident("X", M3, [V.RAPE], [P.CLIENT])
    b.judgment("X", M4, CourtJudgment.LOST)
    b.judgment("X", M5, CourtJudgment.WON)  # a later judgment never replaces the first
    b.incident("Y", M3, [V.RAPE], [P.CLIENT])
    b.judgment("Y", M4, CourtJudgment.WON)
    b.judgment("Y", M5, CourtJudgment.LOST)
    add(db, b.messages[::-1])
    result = checked(db, b.messages)
    nonzero = {k: v for k, v in table(result, COURT_CASES_WON).items() if v}
    assert nonzero == {(M4, "ZA", ""): 1, (M4, REGION, ""): 1}
    assert {c.period for c in result.cells} == {M3, M4}  # a lost judgment adds no period


def test_a_lower_numbered_incident_replaces_the_one_counted(db: sqlite3.Connection) -> None:
    b = Builder("za-one", Country.ZA)
    first = b.incident("X", M3, [V.RAPE], [POLICE])
    second = b.incident("X", M4, [V.ROBBERY, V.PHYSICAL_ASSAULT], [P.CLIENT])
    response = b.first_response("X", M4, 3)
    add(db, [second, response])
    assert tally.compute(db).value(INCIDENTS, M4, "ZA") == 1
    add(db, [first])
    result = checked(db, [first, second, response])
    assert table(result, INCIDENTS_BY_VIOLENCE_TYPE) == {
        (M3, "ZA", "rape"): 1,
        (M3, REGION, "rape"): 1,
    }
    assert table(result, INCIDENTS_BY_PERPETRATOR) == {
        (M3, "ZA", POLICE.value): 1, (M3, REGION, POLICE.value): 1,
    }  # fmt: skip
    assert result.value(POLICE_SHARE, M3, REGION) == 1
    assert result.value(INCIDENTS, M4, "ZA") == 0  # M4 stays in the frame (the response)


def test_police_reports_and_responses_count_each_message(db: sqlite3.Connection) -> None:
    b = Builder("bw-one", Country.BW)
    b.incident("A", M3, [V.RAPE], [P.CLIENT])
    b.police_report("A", M3)
    b.police_response("A", M3, PoliceResponse.REFUSED)
    b.police_report("A", M3)  # refused at one station, filed again at another
    b.police_response("A", M3, PoliceResponse.REFUSED)
    b.police_response("A", M4, PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN)
    add(db, b.messages)
    add(db, b.messages)  # duplicates: nothing more
    result = checked(db, b.messages)
    assert result.value(POLICE_REPORTS_FILED, M3, "BW") == 2
    assert table(result, POLICE_RESPONSES) == {
        (M3, "BW", "refused"): 2, (M3, REGION, "refused"): 2,
        (M4, "BW", "accepted_case_number_given"): 1,
        (M4, REGION, "accepted_case_number_given"): 1,
    }  # fmt: skip


def test_region_sums_countries_and_partners_reporting_counts_distinct_partners(
    db: sqlite3.Connection,
) -> None:
    a = Builder("za-one", Country.ZA)
    a.incident("X", M3, [V.RAPE], [P.CLIENT])
    a.incident("Y", M3, [V.ROBBERY], [P.CLIENT])
    b = Builder("za-two", Country.NA)
    b.incident("Z", M3, [V.ROBBERY], [P.CLIENT])
    c = Builder("za-one", Country.NA)  # one partner working in two countries
    c.messages = list(a.messages)
    c.incident("W", M3, [V.ROBBERY], [P.CLIENT])
    messages = [*c.messages, *b.messages]
    add(db, messages)
    result = checked(db, messages)
    assert table(result, PARTNERS_REPORTING) == {
        (M3, "NA", ""): 2, (M3, "ZA", ""): 1, (M3, REGION, ""): 2,
    }  # fmt: skip
    assert table(result, INCIDENTS) == {
        (M3, "NA", ""): 2, (M3, "ZA", ""): 2, (M3, REGION, ""): 4,
    }  # fmt: skip
    assert_region_sums(result)


def test_partner_figures_nest_in_the_countries_of_their_events(db: sqlite3.Connection) -> None:
    a = Builder("za-one", Country.ZA)
    a.incident("X", M3, [V.RAPE], [POLICE])
    a.first_response("X", M3, 4)
    a.incident("Y", M3, [V.ROBBERY], [P.CLIENT])
    a.first_response("Y", M3, 9)
    b = Builder("za-one", Country.NA)  # the same partner, a case in another country
    b.messages = list(a.messages)
    b.incident("W", M4, [V.ROBBERY], [P.CLIENT])
    b.first_response("W", M4, 30)
    messages = b.messages
    add(db, messages)
    result = checked(db, messages)
    incidents = {
        (c.period, c.country, c.partner): c.value for c in result.partner_table(INCIDENTS)
    }
    assert incidents == {(M3, "ZA", "za-one"): 2, (M4, "NA", "za-one"): 1}
    police = {(c.period, c.country): c.value for c in result.partner_table(POLICE_SHARE)}
    assert police == {(M3, "ZA"): 1, (M4, "NA"): 0}
    stats = {(s.period, s.country): (s.n, s.median, s.p90) for s in result.partner_stats}
    assert stats == {(M3, "ZA"): (2, 6.5, 9.0), (M4, "NA"): (1, 30.0, 30.0)}
    assert_region_sums(result)


def test_partner_figures_are_read_from_indexes_without_sorting(db: sqlite3.Connection) -> None:
    plans = {
        name: " | ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", params))
        for name, query, params in (
            ("cells", tally._CELLS, {}),
            ("partner hours", tally._PARTNER_HOURS, {"percent": tally.P90}),
        )
    }
    assert "tally_fact_cells" in plans["cells"], plans
    assert "tally_fact_partner_hours" in plans["partner hours"], plans
    assert all("TEMP B-TREE" not in plan for plan in plans.values()), plans


def test_the_frame_has_zero_rows_where_any_fact_counts(db: sqlite3.Connection) -> None:
    b = Builder("za-one", Country.ZA)
    b.incident("X", M3, [V.RAPE], [P.CLIENT])
    b.first_response("X", M4, 12)  # M4: a response only
    b.referral("X", M5, "r", S.HEALTH, "made")  # M5: a referral only
    add(db, b.messages)
    result = checked(db, b.messages)
    for period in (M4, M5):
        for area in ("ZA", REGION):
            for indicator in (INCIDENTS, POLICE_SHARE, PARTNERS_REPORTING, COURT_CASES_WON):
                cells = [c for c in result.table(indicator) if (c.period, c.area) == (period, area)]
                assert [c.value for c in cells] == [0]
    assert [(s.period, s.area, s.n) for s in result.stats] == [
        (M3, "ZA", 0), (M3, REGION, 0), (M4, "ZA", 1), (M4, REGION, 1),
        (M5, "ZA", 0), (M5, REGION, 0),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "values",
    [
        [7],
        [3, 1, 2],
        [10, 1, 3, 2],
        list(range(1, 11)),
        list(range(1, 12)),
        list(range(1, 21)),
        [0, 0, 100],
        [5, 5, 5, 5],
        [200, 0, 3, 3, 9, 9, 9, 1, 150],
    ],
)
def test_median_and_nearest_rank_p90(db: sqlite3.Connection, values: list[int]) -> None:
    za, bw = Builder("za-one", Country.ZA), Builder("bw-one", Country.BW)
    for i, hours in enumerate(values):
        b = (za, bw)[i % 2]
        b.incident(f"c{i}", M3, [V.RAPE], [P.CLIENT])
        b.first_response(f"c{i}", M4, hours)
    messages = [*za.messages, *bw.messages]
    add(db, messages)
    result = checked(db, messages)
    by_area = {s.area: s for s in result.stats if s.period == M4}
    assert (by_area[REGION].n, by_area[REGION].median, by_area[REGION].p90) == (
        len(values),
        median(values),
        nearest_rank(values, 90),
    )
    za_values = values[0::2]
    assert (by_area["ZA"].median, by_area["ZA"].p90) == (
        median(za_values),
        nearest_rank(za_values, 90),
    )


def test_duplicates_change_no_row(db: sqlite3.Connection) -> None:
    messages = scenario()
    add(db, messages)
    before = rows(db)
    add(db, messages[::-1])
    assert rows(db) == before
    checked(db, messages)


# --- many messages, any order ---------------------------------------------------------------


def random_load(seed: int, cases: int) -> list[Message]:
    """Cases of 6 partners in 4 countries over 5 months; some steps repeated, some
    incidents missing, some cases retracted (and steps sent after the retraction)."""
    rnd = random.Random(seed)
    countries = [Country.ZA, Country.BW, Country.NA, Country.MZ]
    builders = [Builder(f"p{i}", countries[i % 4]) for i in range(6)]
    months = ["2025-11", "2025-12", "2026-01", "2026-02", "2026-03"]
    for i in range(cases):
        b, case = rnd.choice(builders), f"k{i}"

        def month() -> str:
            return rnd.choice(months)

        if rnd.random() < 0.95:
            types = rnd.sample(list(V), rnd.randint(1, 3))
            b.incident(case, month(), types, rnd.sample(list(P), rnd.randint(1, 2)))
        for _ in range(rnd.randint(0, 8)):
            match rnd.randrange(8):
                case 0 | 1:
                    b.first_response(case, month(), rnd.randint(0, 500))
                case 2:
                    stage = rnd.choice(["made", "accepted", "completed"])
                    b.referral(case, month(), rnd.choice("rs"), rnd.choice(list(S)), stage)
                case 3:
                    b.police_report(case, month())
                case 4:
                    b.police_response(case, month(), rnd.choice(list(PoliceResponse)))
                case 5:
                    b.court_opened(case, month())
                case 6:
                    b.judgment(case, month(), rnd.choice(list(CourtJudgment)))
                case _:
                    if rnd.random() < 0.2:
                        b.retraction(case)
    messages = [m for b in builders for m in b.messages]
    messages += rnd.sample(messages, len(messages) // 20)  # duplicates
    rnd.shuffle(messages)
    return messages


@pytest.mark.parametrize("seed", [1, 2])
def test_a_larger_random_load_matches_the_reference(db: sqlite3.Connection, seed: int) -> None:
    messages = random_load(seed, 600)
    for i in range(0, len(messages), 256):
        add(db, messages[i : i + 256])
    result = checked(db, messages)
    assert max(s.n for s in result.stats) > 50  # percentiles of many values
    assert_region_sums(result)


@st.composite
def renumbered_message_lists(draw: st.DrawFn) -> list[Message]:
    """message_lists, and what a conforming node never sends but the rules still define: a
    second incident for some cases, a case's events under another partner with the same
    pseudonym, and (half the time) every partner's messages renumbered at random, so a step
    or a retraction may carry a lower number than the incident or than other steps."""
    messages = draw(message_lists())
    countries = dict(PARTNERS)
    extra: list[Message] = []
    cases = sorted({(partner, event.case) for partner, _, event in messages})
    for partner, case in draw(st.lists(st.sampled_from(cases), max_size=3)) if cases else []:
        types = draw(st.lists(st.sampled_from(list(V)), min_size=1, max_size=3, unique=True))
        incident = SharedIncident(
            partner=partner,
            case=case,
            country=countries[partner],
            month=draw(st.sampled_from(MONTHS)),
            violence_types=types,
            gbvims_type=core_type(types),
            perpetrators=draw(
                st.lists(st.sampled_from(list(P)), min_size=1, max_size=2, unique=True)
            ),
        )
        extra.append((partner, 0, validated(incident)))
    if messages and draw(st.booleans()):
        source = draw(st.sampled_from(sorted({partner for partner, _, _ in messages})))
        target = draw(st.sampled_from([p for p in countries if p != source]))
        extra += [
            (target, 0, validated(msgspec.structs.replace(event, partner=target)))
            for partner, _, event in messages
            if partner == source
        ]
    renumber = draw(st.booleans())
    out: list[Message] = []
    for partner in countries:
        mine = [m for m in messages if m[0] == partner] + [m for m in extra if m[0] == partner]
        if renumber:
            numbers = draw(
                st.lists(
                    st.integers(1, 10_000), min_size=len(mine), max_size=len(mine), unique=True
                )
            )
        else:
            start = max((m[1] for m in mine), default=0)
            numbers = [m[1] or start + i for i, m in enumerate(mine, 1)]
        out += [(partner, n, event) for n, (_, _, event) in zip(numbers, mine, strict=True)]
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), messages=renumbered_message_lists())
def test_tally_equals_the_reference_for_any_messages_in_any_order(
    data: st.DataObject, messages: list[Message]
) -> None:
    duplicates = data.draw(st.lists(st.sampled_from(messages), max_size=10)) if messages else []
    arrival = data.draw(st.permutations(messages + duplicates))
    cuts = data.draw(st.sets(st.integers(0, len(arrival)), max_size=3)) | {len(arrival)}
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        tally.create_schema(conn)
        done = 0
        for cut in sorted(cuts):  # each cut one transaction; the figures at every cut
            add(conn, arrival[done:cut])
            done = cut
            assert tally.compute(conn) == compute(feed(arrival[:cut]))
        assert tally.compute(conn) == compute(feed(messages))
    finally:
        conn.close()


def test_time_to_first_response_is_a_statistic_not_a_cell(db: sqlite3.Connection) -> None:
    add(db, scenario())
    result = tally.compute(db)
    assert all(c.indicator != TIME_TO_FIRST_RESPONSE for c in result.cells)
    assert all(s.indicator == TIME_TO_FIRST_RESPONSE for s in result.stats)
