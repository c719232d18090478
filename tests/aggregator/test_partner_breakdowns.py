"""Partner-level breakdowns in releases: published only where the region document allows
them, nested in their countries, protected jointly with the country tables and across
releases, equal to the exact figures wherever a number is published; statistics and shares
by partner follow the same rules; with country breakdowns nothing partner-level appears."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.dashboard_release import COUNTRIES, messages
from aggregator.test_indicators import Message, feed, message_lists
from handsoff.events.codes import PerpetratorCategory
from handsoff.federation import statements
from handsoff.federation.statements import (
    COUNTRY,
    PARTNER,
    SUPPRESSED,
    AggregateStatement,
    Figure,
    Inputs,
    PublishedTable,
)
from handsoff.keys import SigningKey
from handsoff.services.aggregator import disclosure, release
from handsoff.services.aggregator import indicators as ind
from handsoff.services.aggregator.disclosure import Published, SuppressionMemory, recoverable
from handsoff.services.aggregator.feed import CSV_HEADER, PARTNER_CSV_HEADER, LatestRelease
from handsoff.services.aggregator.indicators import Indicators, compute
from handsoff.services.aggregator.release import BY_PARTNER, COUNT_COLUMN, Release

K = 5
KEY = SigningKey.from_seed(bytes(32))
POLICE = PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT.value


def header(number: int, breakdowns: str, k: int = K) -> release.ReleaseHeader:
    return release.ReleaseHeader(
        region="sadc",
        region_version=2,
        aggregator="sadc-aggregator",
        release=number,
        k=k,
        breakdowns=breakdowns,
        as_of=datetime(2026, 9, 30, tzinfo=UTC),
        inputs=Inputs(
            stream="HX_SADC_EVENTS", first_seq=1, last_seq=number, accepted=number, commitment=""
        ),
    )


def build(
    figures: Indicators,
    breakdowns: str,
    memory: SuppressionMemory | None = None,
    number: int = 1,
    k: int = K,
) -> Release:
    return release.build(
        figures, header(number, breakdowns, k), COUNTRIES, memory or SuppressionMemory()
    )


@pytest.fixture(scope="module")
def figures() -> Indicators:
    return compute(feed(messages(500, partners=True)))


@pytest.fixture(scope="module")
def by_partner(figures: Indicators) -> Release:
    return build(figures, "partner")


# -- reading a release back ------------------------------------------------------------------


def entry(v: Figure) -> disclosure.Entry:
    return disclosure.SUPPRESSED if v == SUPPRESSED else int(v)


def as_published(country: PublishedTable, partners: PublishedTable | None, k: int) -> Published:
    """A period's country table and its partner table as the nested table an attacker sees
    (every published number, the margins included)."""
    entries: dict[disclosure.Position, disclosure.Entry] = {}
    for r, line, total in zip(country.rows, country.cells, country.row_totals, strict=True):
        for c, v in zip(country.columns, line, strict=True):
            entries[(r, c)] = entry(v)
        entries[(r, None)] = entry(total)
    for c, v in zip(country.columns, country.column_totals, strict=True):
        entries[(None, c)] = entry(v)
    entries[(None, None)] = entry(country.total)
    members: list[str] = []
    parents: list[str] = []
    if partners is not None:
        assert partners.columns == country.columns
        assert partners.column_totals == country.column_totals
        assert partners.total == country.total
        rows = zip(
            partners.countries, partners.rows, partners.cells, partners.row_totals, strict=True
        )
        for c_, p_, line, total in rows:
            label = release.member(c_, p_)
            members.append(label)
            parents.append(c_)
            for c, v in zip(partners.columns, line, strict=True):
                entries[(label, c)] = entry(v)
            entries[(label, None)] = entry(total)
    return Published(
        rows=country.rows,
        columns=country.columns,
        k=k,
        entries=entries,
        members=tuple(members),
        parents=tuple(parents),
    )


def pairs(s: AggregateStatement) -> dict[str, tuple[PublishedTable, PublishedTable | None]]:
    """period -> (country table, partner table or None), checking the order: each period's
    partner table right after its country table."""
    out: dict[str, tuple[PublishedTable, PublishedTable | None]] = {}
    for t in s.tables:
        if t.dimension == COUNTRY:
            assert t.period not in out
            out[t.period] = (t, None)
        else:
            country, none = out[t.period]
            assert none is None
            assert list(out)[-1] == t.period
            out[t.period] = (country, t)
    return out


def exact_partner(figures: Indicators, name: str) -> dict[tuple[str, str, str, str], int]:
    return {
        (c.period, c.country, c.partner, c.key or COUNT_COLUMN): c.value
        for c in figures.partner_table(name)
    }


def exact_country(figures: Indicators, name: str) -> dict[tuple[str, str, str], int]:
    return {(c.period, c.area, c.key or COUNT_COLUMN): c.value for c in figures.table(name)}


def assert_partner_release(made: Release, figures: Indicators, k: int = K) -> None:
    """Every partner table of a release: nested in its countries, its numbers the exact
    figures, nothing 1..k-1, and no suppressed partner or country entry recoverable from
    the country table, the partner table and their margins together."""
    frame = defaultdict(set)
    for period, country, partner in figures.partner_frame():
        frame[period].add((country, partner))
    for name in (*BY_PARTNER, ind.INCIDENTS):
        exact = exact_partner(figures, name)
        countries = exact_country(figures, name)
        for period, (country, partners) in pairs(made.statement(name)).items():
            assert partners is not None, (name, period)
            assert partners.dimension == PARTNER
            rows = list(zip(partners.countries, partners.rows, strict=True))
            assert rows == sorted(rows)
            assert set(rows) >= frame[period]  # every partner with a fact, maybe remembered
            assert set(partners.countries) <= set(country.rows)
            shown = as_published(country, partners, k)
            assert recoverable(shown) == frozenset(), (name, period)
            for (r, c), v in shown.entries.items():
                if v is disclosure.SUPPRESSED:
                    continue
                assert not 0 < v < k, (name, period, r, c)
                if r is None:
                    continue  # the region's margins: sums of the countries' (checked below)
                columns = country.columns if c is None else (c,)
                if "/" in r:
                    country_code, partner = r.split("/", 1)
                    got = sum(exact.get((period, country_code, partner, x), 0) for x in columns)
                else:
                    got = sum(countries.get((period, r, x), 0) for x in columns)
                assert v == got, (name, period, r, c)
            region = {
                x: sum(countries.get((period, r, x), 0) for r in country.rows)
                for x in country.columns
            }
            assert [entry(v) for v in country.column_totals] == [
                disclosure.SUPPRESSED if v == SUPPRESSED else region[x]
                for x, v in zip(country.columns, country.column_totals, strict=True)
            ]
            # a country with a single partner: that partner's figures are the country's
            per_country = defaultdict(list)
            for i, (c_, _) in enumerate(rows):
                per_country[c_].append(i)
            for c_, (i, *more) in per_country.items():
                if not more:
                    j = country.rows.index(c_)
                    assert partners.cells[i] == country.cells[j], (name, period, c_)
                    assert partners.row_totals[i] == country.row_totals[j]


# -- country breakdowns: nothing partner-level ---------------------------------------------


def test_country_breakdowns_publish_nothing_by_partner(figures: Indicators) -> None:
    assert figures.partner_cells  # the figures are there: the rule keeps them out
    made = build(figures, "country")
    for s in made.statements:
        assert s.breakdowns == "country"
        assert all(t.dimension == COUNTRY and t.countries == () for t in s.tables)
        assert all(x.partner is None for x in s.stats)
        assert all(x.partner is None for x in s.shares)
        raw = statements.sign(s, KEY)
        for word in (b'"dimension"', b'"countries"', b'"partner"', b"-hands-off", b"-sisters"):
            assert word not in raw, (s.indicator, word)
    memory = msgspec.json.encode(made.memory)
    assert disclosure.MEMBERS.encode() not in memory
    signed = tuple(statements.sign(s, KEY) for s in made.statements)
    latest = LatestRelease(1, made.statements, signed)
    assert not latest.has_partners()
    rows = list(csv.reader(io.StringIO(latest.csv())))
    assert tuple(rows[0]) == CSV_HEADER
    assert not any("-hands-off" in v or "-sisters" in v for row in rows for v in row)


# -- partner breakdowns ------------------------------------------------------------------------


def test_partner_breakdowns_publish_every_count_by_partner(
    figures: Indicators, by_partner: Release
) -> None:
    assert_partner_release(by_partner, figures)
    # suppression happened, among partners and (where it had to) among countries
    hidden = [
        v
        for name in BY_PARTNER
        for t in by_partner.statement(name).tables
        if t.dimension == PARTNER
        for line in t.cells
        for v in line
    ]
    assert SUPPRESSED in hidden
    assert any(isinstance(v, int) and v >= K for v in hidden)
    # partners-reporting is not broken down by partner (0 or 1 each)
    assert all(t.dimension == COUNTRY for t in by_partner.statement(ind.PARTNERS_REPORTING).tables)
    assert set(BY_PARTNER) == set(release.PROTECTED) - {ind.PARTNERS_REPORTING}


def test_country_tables_keep_their_shape_under_partner_breakdowns(
    figures: Indicators, by_partner: Release
) -> None:
    """The country tables of a partner release have the periods, rows and columns of a
    country release (their numbers are the exact figures: assert_partner_release); only
    the suppression pattern differs, complements being taken among partners first.
    partners-reporting, not broken down by partner, is protected exactly as before."""
    by_country = build(figures, "country")
    for name in release.PUBLISHED:
        mine = [t for t in by_partner.statement(name).tables if t.dimension == COUNTRY]
        theirs = by_country.statement(name).tables
        assert [(t.period, t.rows, t.columns) for t in mine] == [
            (t.period, t.rows, t.columns) for t in theirs
        ]
    assert by_partner.statement(ind.PARTNERS_REPORTING) == msgspec.structs.replace(
        by_country.statement(ind.PARTNERS_REPORTING), breakdowns="partner"
    )


def test_partner_statistics_need_k_published_cases(
    figures: Indicators, by_partner: Release
) -> None:
    exact = {(s.period, s.country, s.partner): s for s in figures.partner_stats}
    mine = [x for x in by_partner.statement(ind.TIME_TO_FIRST_RESPONSE).stats if x.partner]
    assert {(x.period, x.area, x.partner) for x in mine} >= set(exact)
    shown = 0
    for x in mine:
        s = exact[(x.period, x.area, x.partner or "")]
        if x.n == SUPPRESSED:
            assert 0 < s.n < K or (x.median, x.p90) == (None, None)
            assert (x.median, x.p90) == (None, None)
            continue
        assert x.n == s.n
        if s.n >= K:
            assert (x.median, x.p90) == (s.median, s.p90)
            shown += 1
        else:
            assert s.n == 0
            assert (x.median, x.p90) == (None, None)
    assert shown > 0
    assert any(x.n == SUPPRESSED for x in mine)
    # per period: the partners' n nest in the countries' n like any count
    by_period: dict[str, list[statements.PublishedStat]] = defaultdict(list)
    for x in by_partner.statement(ind.TIME_TO_FIRST_RESPONSE).stats:
        by_period[x.period].append(x)
    for period, entries in by_period.items():
        countries = [x for x in entries if x.partner is None and x.area != ind.REGION]
        region = next(x for x in entries if x.area == ind.REGION)
        partners = [x for x in entries if x.partner is not None]
        country = PublishedTable(
            period=period,
            rows=tuple(x.area for x in countries),
            columns=("n",),
            cells=tuple((x.n,) for x in countries),
            row_totals=tuple(x.n for x in countries),
            column_totals=(region.n,),
            total=region.n,
        )
        table = PublishedTable(
            period=period,
            rows=tuple(x.partner or "" for x in partners),
            columns=("n",),
            cells=tuple((x.n,) for x in partners),
            row_totals=tuple(x.n for x in partners),
            column_totals=(region.n,),
            total=region.n,
            dimension=PARTNER,
            countries=tuple(x.area for x in partners),
        )
        assert recoverable(as_published(country, table, K)) == frozenset(), period


def test_partner_shares_come_from_the_protected_partner_tables(by_partner: Release) -> None:
    gbvims = pairs(by_partner.statement(ind.INCIDENTS_BY_GBVIMS_TYPE))
    perpetrators = pairs(by_partner.statement(ind.INCIDENTS_BY_PERPETRATOR))
    shares = [x for x in by_partner.statement(ind.POLICE_SHARE).shares if x.partner]
    assert shares
    for x in shares:
        incidents = gbvims[x.period][1]
        assert incidents is not None
        i = list(zip(incidents.countries, incidents.rows, strict=True)).index((x.area, x.partner))
        assert x.incidents == incidents.row_totals[i]
        table = perpetrators[x.period][1]
        police: Figure = 0
        if table is not None and POLICE in table.columns:
            j = list(zip(table.countries, table.rows, strict=True)).index((x.area, x.partner))
            police = table.cells[j][table.columns.index(POLICE)]
        assert x.police == police
        if isinstance(x.police, int) and isinstance(x.incidents, int) and x.incidents:
            assert x.share == round(x.police / x.incidents, 4)
        else:
            assert x.share is None


def test_releases_of_a_period_never_unsuppress_and_differences_give_nothing_away() -> None:
    """Late reports make a month grow release after release; the region switches to country
    breakdowns for one release and back: every release is safe, no entry (partner or
    country) is ever published after being suppressed, and the difference of any two
    releases recovers nothing."""
    memory = SuppressionMemory()
    made: list[tuple[str, Release]] = []
    rules = ("partner", "partner", "country", "partner")
    for number, (cases, rule) in enumerate(zip((80, 110, 140, 180), rules, strict=True), 1):
        figures = compute(feed(messages(cases, partners=True)))
        r = build(figures, rule, memory, number)
        if rule == "partner":
            assert_partner_release(r, figures)
        memory = r.memory
        made.append((rule, r))
    for name in BY_PARTNER:
        seen: list[dict[str, Published]] = []
        for _, r in made:
            tables = pairs(r.statement(name))
            seen.append({p: as_published(c, t, K) for p, (c, t) in tables.items()})
        for i, earlier in enumerate(seen):
            for later in seen[i + 1 :]:
                for period, shown in earlier.items():
                    before, after = shown, later[period]
                    if not after.members:  # a country release after a partner one
                        before = country_only(before)
                    assert before.suppressed <= after.suppressed, (name, period)
                    diff = disclosure.difference(before, after)
                    assert recoverable(diff) == frozenset(), (name, period)


def country_only(p: Published) -> Published:
    entries = {x: v for x, v in p.entries.items() if x[0] not in p.members}
    return Published(rows=p.rows, columns=p.columns, k=p.k, entries=entries)


def test_a_partner_release_is_reproduced_byte_for_byte(figures: Indicators) -> None:
    first = build(figures, "partner")
    again = build(compute(feed(messages(500, partners=True))), "partner")
    assert [statements.sign(s, KEY) for s in first.statements] == [
        statements.sign(s, KEY) for s in again.statements
    ]
    assert msgspec.json.encode(first.memory) == msgspec.json.encode(again.memory)


@settings(max_examples=40, deadline=None)
@given(message_lists(), st.sampled_from([2, 3, 5]))
def test_any_messages_make_safe_partner_releases(messages: list[Message], k: int) -> None:
    """Generated messages (partners in one and two-partner countries, retractions, steps
    before their incident): each release over a growing prefix is safe and exact."""
    memory = SuppressionMemory()
    for number, end in enumerate(sorted({len(messages) // 2, len(messages)}), 1):
        figures = compute(feed(messages[:end]))
        made = build(figures, "partner", memory, number, k)
        assert_partner_release(made, figures, k)
        memory = made.memory


# -- the feeds -----------------------------------------------------------------------------------


def test_csv_names_partners_only_in_a_partner_release(by_partner: Release) -> None:
    signed = tuple(statements.sign(s, KEY) for s in by_partner.statements)
    latest = LatestRelease(1, by_partner.statements, signed)
    assert latest.has_partners()
    rows = list(csv.DictReader(io.StringIO(latest.csv())))
    assert tuple(rows[0]) == PARTNER_CSV_HEADER
    mine = [r for r in rows if r["partner"]]
    assert {r["area"] for r in mine} <= set(COUNTRIES)
    t = pairs(by_partner.statement(ind.INCIDENTS_BY_VIOLENCE_TYPE))
    period = max(t)
    partners = t[period][1]
    assert partners is not None
    for c_, p_, line in zip(partners.countries, partners.rows, partners.cells, strict=True):
        for column, v in zip(partners.columns, line, strict=True):
            (row,) = [
                r
                for r in mine
                if (r["indicator"], r["period"], r["area"], r["partner"], r["breakdown"])
                == (ind.INCIDENTS_BY_VIOLENCE_TYPE, period, c_, p_, column)
            ]
            assert row["value"] == str(v)
    assert any(r["partner"] and r["measure"] == "median_hours" for r in rows)
    assert any(r["partner"] and r["measure"] == "share" for r in rows)
    # the country and region rows are those of a country release, with an empty partner
    assert all(r["area"] == ind.REGION for r in rows if r["area"] not in COUNTRIES)


def test_partner_tables_are_a_pinned_explicit_wire_format() -> None:
    t = PublishedTable(
        period="2026-01",
        rows=("za-one", "za-two"),
        columns=("count",),
        cells=((7,), ("suppressed",)),
        row_totals=(7, "suppressed"),
        column_totals=("suppressed",),
        total="suppressed",
        dimension=PARTNER,
        countries=("ZA", "ZA"),
    )
    raw = msgspec.json.encode(t)
    assert b'"dimension":"partner","countries":["ZA","ZA"]' in raw
    assert msgspec.json.decode(raw, type=PublishedTable) == t
    # a country table is encoded exactly as before partner breakdowns existed
    plain = msgspec.structs.replace(t, dimension=COUNTRY, countries=())
    assert msgspec.json.encode(plain) == (
        b'{"period":"2026-01","rows":["za-one","za-two"],"columns":["count"],'
        b'"cells":[[7],["suppressed"]],"row_totals":[7,"suppressed"],'
        b'"column_totals":["suppressed"],"total":"suppressed"}'
    )
    with pytest.raises(msgspec.ValidationError, match="countries"):
        msgspec.json.decode(raw.replace(b',"countries":["ZA","ZA"]', b""), type=PublishedTable)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw.replace(b'"partner"', b'"district"'), type=PublishedTable)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(raw[:-1] + b',"extra":1}', type=PublishedTable)
    share = statements.PublishedShare(
        period="2026-01", area="ZA", police=1, incidents=9, share=None, partner="za-one"
    )
    assert msgspec.json.decode(msgspec.json.encode(share), type=statements.PublishedShare) == share
