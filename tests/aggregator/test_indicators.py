"""Regional indicators: exact figures, idempotence, any arrival order, retraction everywhere."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from typing import TypedDict

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handsoff.events.codes import (
    Country,
    CourtJudgment,
    PerpetratorCategory,
    PoliceResponse,
    ReferralOutcome,
    ServiceType,
    ViolenceType,
    core_type,
)
from handsoff.federation.envelope import Opened, message_id
from handsoff.federation.shared import (
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
    validated,
)
from handsoff.services.aggregator.indicators import (
    COUNT_INDICATORS,
    COURT_CASES_OPENED,
    COURT_CASES_WON,
    INCIDENTS,
    INCIDENTS_BY_GBVIMS_TYPE,
    INCIDENTS_BY_PERPETRATOR,
    INCIDENTS_BY_VIOLENCE_TYPE,
    INDICATORS,
    PARTNER_COUNTS,
    PARTNERS_REPORTING,
    POLICE_REPORTS_FILED,
    POLICE_RESPONSES,
    POLICE_SHARE,
    REFERRALS_ACCEPTED,
    REFERRALS_COMPLETED,
    REFERRALS_MADE,
    REGION,
    TIME_TO_FIRST_RESPONSE,
    Cell,
    Indicators,
    Ledger,
    LedgerConflict,
    LedgerError,
    Stat,
    by_key,
    compute,
    compute_from,
    median,
    nearest_rank,
)

V, P, S = ViolenceType, PerpetratorCategory, ServiceType
POLICE = P.POLICE_OR_LAW_ENFORCEMENT
Message = tuple[str, int, SharedEvent]


def pseudonym(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


class Step(TypedDict):
    partner: str
    case: str
    country: Country
    month: str


class Builder:
    """Shared events of one partner's cases, numbered as the relay would (1, 2, 3 ...)."""

    def __init__(self, partner: str, country: Country) -> None:
        self.partner, self.country = partner, country
        self.messages: list[Message] = []

    def _add(self, event: SharedEvent) -> Message:
        message = (self.partner, len(self.messages) + 1, validated(event))
        self.messages.append(message)
        return message

    def _step(self, case: str, month: str) -> Step:
        return {
            "partner": self.partner,
            "case": pseudonym(f"{self.partner}/{case}"),
            "country": self.country,
            "month": month,
        }

    def incident(
        self, case: str, month: str, types: list[ViolenceType], perps: list[PerpetratorCategory]
    ) -> Message:
        return self._add(
            SharedIncident(
                **self._step(case, month),
                violence_types=types,
                gbvims_type=core_type(types),
                perpetrators=perps,
            )
        )

    def first_response(self, case: str, month: str, hours: int) -> Message:
        return self._add(
            SharedFirstResponse(**self._step(case, month), hours_to_first_response=hours)
        )

    def referral(
        self, case: str, month: str, ref: str, service: ServiceType, stage: str
    ) -> Message:
        step, referral = self._step(case, month), pseudonym(f"{case}/{ref}")
        if stage == "made":
            return self._add(SharedReferralMade(**step, referral=referral, service=service))
        if stage == "accepted":
            return self._add(SharedReferralAccepted(**step, referral=referral, service=service))
        return self._add(
            SharedReferralCompleted(
                **step,
                referral=referral,
                service=service,
                outcome=ReferralOutcome.SERVICE_RECEIVED,
                hours_to_complete=20,
            )
        )

    def police_report(self, case: str, month: str) -> Message:
        return self._add(SharedPoliceReportFiled(**self._step(case, month)))

    def police_response(self, case: str, month: str, response: PoliceResponse) -> Message:
        return self._add(SharedPoliceResponse(**self._step(case, month), response=response))

    def court_opened(self, case: str, month: str) -> Message:
        return self._add(SharedCourtCaseOpened(**self._step(case, month)))

    def judgment(self, case: str, month: str, judgment: CourtJudgment) -> Message:
        return self._add(SharedCourtJudgment(**self._step(case, month), judgment=judgment))

    def retraction(self, case: str) -> Message:
        return self._add(
            SharedRetraction(partner=self.partner, case=pseudonym(f"{self.partner}/{case}"))
        )


def scenario() -> list[Message]:
    """Case A in Botswana with everything; B, C, D in South Africa from two partners."""
    bw, za = Builder("bw-one", Country.BW), Builder("za-one", Country.ZA)
    za2 = Builder("za-two", Country.ZA)
    bw.incident("A", "2026-03", [V.RAPE, V.ARBITRARY_ARREST], [POLICE, P.CLIENT])
    bw.first_response("A", "2026-03", 2)
    bw.referral("A", "2026-03", "r1", S.HEALTH_PEP, "made")
    bw.referral("A", "2026-03", "r1", S.HEALTH_PEP, "accepted")
    bw.referral("A", "2026-04", "r1", S.HEALTH_PEP, "completed")
    bw.police_report("A", "2026-03")
    bw.police_response("A", "2026-03", PoliceResponse.REFUSED)
    bw.police_report("A", "2026-04")
    bw.police_response("A", "2026-04", PoliceResponse.ACCEPTED_CASE_NUMBER_GIVEN)
    bw.court_opened("A", "2026-04")
    bw.judgment("A", "2026-05", CourtJudgment.WON)
    za.incident("B", "2026-03", [V.ROBBERY, V.PHYSICAL_ASSAULT], [P.CLIENT])
    za.first_response("B", "2026-03", 10)
    za2.incident("C", "2026-03", [V.POLICE_HARASSMENT, V.EXTORTION_OR_BRIBERY], [POLICE])
    za2.first_response("C", "2026-04", 30)
    za2.referral("C", "2026-03", "r2", S.LEGAL_AID, "made")
    za.incident("D", "2026-04", [V.NON_PAYMENT], [P.CLIENT])
    za.court_opened("D", "2026-04")
    za.judgment("D", "2026-05", CourtJudgment.LOST)
    return [*bw.messages, *za.messages, *za2.messages]


def feed(messages: list[Message]) -> Ledger:
    ledger = Ledger()
    for partner, number, event in messages:
        ledger.add(partner, number, event)
    return ledger


def table(result: Indicators, indicator: str) -> dict[tuple[str, str, str], int]:
    return dict(by_key(result.table(indicator)))


M3, M4, M5 = "2026-03", "2026-04", "2026-05"


def test_exact_figures_of_a_small_scenario() -> None:
    messages = scenario()
    result = compute(feed(messages))
    # Totals have a cell for every (period, area) where anything counts, zeros included.
    assert table(result, INCIDENTS) == {
        (M3, "BW", ""): 1, (M3, "ZA", ""): 2, (M3, REGION, ""): 3,
        (M4, "BW", ""): 0, (M4, "ZA", ""): 1, (M4, REGION, ""): 1,
        (M5, "BW", ""): 0, (M5, REGION, ""): 0,
    }  # fmt: skip
    assert table(result, INCIDENTS_BY_VIOLENCE_TYPE) == {
        (M3, "BW", "rape"): 1, (M3, "BW", "arbitrary_arrest"): 1,
        (M3, "ZA", "robbery"): 1, (M3, "ZA", "physical_assault"): 1,
        (M3, "ZA", "police_harassment"): 1, (M3, "ZA", "extortion_or_bribery"): 1,
        (M3, REGION, "rape"): 1, (M3, REGION, "arbitrary_arrest"): 1,
        (M3, REGION, "robbery"): 1, (M3, REGION, "physical_assault"): 1,
        (M3, REGION, "police_harassment"): 1, (M3, REGION, "extortion_or_bribery"): 1,
        (M4, "ZA", "non_payment"): 1, (M4, REGION, "non_payment"): 1,
    }  # fmt: skip
    assert table(result, INCIDENTS_BY_GBVIMS_TYPE) == {
        (M3, "BW", "rape"): 1,
        (M3, "ZA", "physical_assault"): 1, (M3, "ZA", "psychological_abuse"): 1,
        (M3, REGION, "rape"): 1, (M3, REGION, "physical_assault"): 1,
        (M3, REGION, "psychological_abuse"): 1,
        (M4, "ZA", "denial_of_resources"): 1, (M4, REGION, "denial_of_resources"): 1,
    }  # fmt: skip
    police, client = POLICE.value, P.CLIENT.value
    assert table(result, INCIDENTS_BY_PERPETRATOR) == {
        (M3, "BW", police): 1, (M3, "BW", client): 1,
        (M3, "ZA", police): 1, (M3, "ZA", client): 1,
        (M3, REGION, police): 2, (M3, REGION, client): 2,
        (M4, "ZA", client): 1, (M4, REGION, client): 1,
    }  # fmt: skip
    assert {k: v for k, v in table(result, POLICE_SHARE).items() if v} == {
        (M3, "BW", ""): 1, (M3, "ZA", ""): 1, (M3, REGION, ""): 2,
    }  # fmt: skip
    assert table(result, POLICE_SHARE)[(M4, "ZA", "")] == 0  # published as a zero
    assert table(result, REFERRALS_MADE) == {
        (M3, "BW", "health_pep"): 1, (M3, "ZA", "legal_aid"): 1,
        (M3, REGION, "health_pep"): 1, (M3, REGION, "legal_aid"): 1,
    }  # fmt: skip
    assert table(result, REFERRALS_ACCEPTED) == {
        (M3, "BW", "health_pep"): 1, (M3, REGION, "health_pep"): 1,
    }  # fmt: skip
    assert table(result, REFERRALS_COMPLETED) == {
        (M4, "BW", "health_pep"): 1, (M4, REGION, "health_pep"): 1,
    }  # fmt: skip
    nonzero = {k: v for k, v in table(result, POLICE_REPORTS_FILED).items() if v}
    assert nonzero == {
        (M3, "BW", ""): 1,
        (M3, REGION, ""): 1,
        (M4, "BW", ""): 1,
        (M4, REGION, ""): 1,
    }
    assert table(result, POLICE_RESPONSES) == {
        (M3, "BW", "refused"): 1, (M3, REGION, "refused"): 1,
        (M4, "BW", "accepted_case_number_given"): 1,
        (M4, REGION, "accepted_case_number_given"): 1,
    }  # fmt: skip
    nonzero = {k: v for k, v in table(result, COURT_CASES_OPENED).items() if v}
    assert nonzero == {(M4, "BW", ""): 1, (M4, "ZA", ""): 1, (M4, REGION, ""): 2}
    nonzero = {k: v for k, v in table(result, COURT_CASES_WON).items() if v}
    assert nonzero == {(M5, "BW", ""): 1, (M5, REGION, ""): 1}  # the lost judgment: nowhere
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
    assert all(s.indicator == TIME_TO_FIRST_RESPONSE for s in result.stats)
    assert result.value(INCIDENTS, M3, REGION) == 3
    assert result.value(INCIDENTS, "2020-01", REGION) == 0


def test_output_is_sorted_and_round_trips() -> None:
    messages = scenario()
    result = compute(feed(messages))
    keys = [(c.indicator, c.period, c.area, c.key) for c in result.cells]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    stat_keys = [(s.indicator, s.period, s.area) for s in result.stats]
    assert stat_keys == sorted(stat_keys)
    assert {c.indicator for c in result.cells} == set(COUNT_INDICATORS)
    raw = msgspec.json.encode(result)
    assert msgspec.json.decode(raw, type=Indicators) == result
    assert all(type(c.key) is str for c in result.cells)  # codes as plain strings


def test_indicator_names_are_pinned_subject_tokens() -> None:
    assert INDICATORS == (
        "court-cases-opened",
        "court-cases-won",
        "incidents",
        "incidents-by-gbvims-type",
        "incidents-by-perpetrator",
        "incidents-by-violence-type",
        "partners-reporting",
        "police-reports-filed",
        "police-responses",
        "police-share",
        "referrals-accepted-by-service",
        "referrals-completed-by-service",
        "referrals-made-by-service",
        "time-to-first-response",
    )
    assert all(re.fullmatch(r"[a-z0-9-]+", name) for name in INDICATORS)
    with pytest.raises(KeyError):
        compute(Ledger()).table(TIME_TO_FIRST_RESPONSE)
    with pytest.raises(KeyError):
        compute(Ledger()).stat_table(INCIDENTS)


def test_empty_ledger_gives_empty_tables() -> None:
    assert compute(Ledger()) == Indicators(cells=(), stats=())


def test_duplicates_change_nothing() -> None:
    messages = scenario()
    ledger = feed(messages)
    once = compute(ledger)
    assert ledger.messages == len(messages)
    for partner, number, event in messages:
        assert ledger.add(partner, number, event) is False
    assert ledger.messages == len(messages)
    assert compute(ledger) == once


def test_add_opened_uses_partner_and_number() -> None:
    messages = scenario()
    partner, number, event = messages[0]
    ledger = Ledger()
    assert ledger.add_opened(Opened(partner, message_id(partner, number), number, event))
    assert not ledger.add(partner, number, event)
    assert compute(ledger).value(INCIDENTS, M3, "BW") == 1


def test_a_step_before_its_incident_counts_once_the_incident_arrives() -> None:
    b = Builder("za-one", Country.ZA)
    incident = b.incident("X", M3, [V.RAPE], [P.CLIENT])
    response = b.first_response("X", M4, 5)
    made = b.referral("X", M4, "r", S.HEALTH, "made")
    ledger = feed([response, made])
    assert compute(ledger) == Indicators()  # nothing without the incident
    ledger.add(*incident)
    result = compute(ledger)
    assert [(s.period, s.area, s.n, s.median) for s in result.stats if s.n] == [
        (M4, "ZA", 1, 5.0),
        (M4, REGION, 1, 5.0),
    ]
    assert result.value(REFERRALS_MADE, M4, "ZA", "health") == 1
    assert result == compute(feed([incident, response, made]))


def test_out_of_order_arrival_gives_the_same_result() -> None:
    messages = scenario()
    assert compute(feed(messages[::-1])) == compute(feed(messages))
    odd_first = messages[1::2] + messages[0::2]
    assert compute(feed(odd_first)) == compute(feed(messages))


def test_once_per_case_steps_count_once_and_the_first_sent_wins() -> None:
    b = Builder("za-one", Country.ZA)
    b.incident("X", M3, [V.RAPE], [P.CLIENT])
    b.first_response("X", M3, 4)
    b.first_response("X", M4, 9)  # never sent by a conforming node: the first one counts
    b.referral("X", M3, "r", S.HEALTH, "made")
    b.referral("X", M4, "r", S.HEALTH, "made")
    result = compute(feed(b.messages[::-1]))
    assert [(s.period, s.area, s.n, s.median) for s in result.stats if s.n] == [
        (M3, "ZA", 1, 4.0),
        (M3, REGION, 1, 4.0),
    ]
    assert result.value(REFERRALS_MADE, M3, "ZA", "health") == 1
    assert result.value(REFERRALS_MADE, M4, "ZA", "health") == 0


def test_retraction_removes_the_case_from_every_table_and_later_messages_are_ignored() -> None:
    messages = scenario()
    bw_messages = [m for m in messages if m[0] == "bw-one"]
    others = [m for m in messages if m[0] != "bw-one"]
    expected = compute(feed(others))  # as if case A had never been shared
    bw = Builder("bw-one", Country.BW)
    bw.messages = list(bw_messages)
    retraction = bw.retraction("A")
    ledger = feed(messages)
    assert ledger.add(*retraction) is True
    assert ledger.is_retracted("bw-one", pseudonym("bw-one/A"))
    assert compute(ledger) == expected
    assert compute(ledger).value(INCIDENTS, M3, "BW") == 0
    assert not any(c.area == "BW" for c in compute(ledger).cells)
    # Later messages about the case, old numbers re-sent or new ones: ignored for ever.
    late = bw.incident("A", "2026-06", [V.ROBBERY], [P.CLIENT])
    assert ledger.add(*late) is True  # new, but counts nowhere
    assert ledger.add(*late) is False
    for message in bw_messages:
        assert ledger.add(*message) is False
    assert ledger.add(*retraction) is False
    assert compute(ledger) == expected
    # The retraction first, then everything else: the same.
    assert compute(feed([retraction, *messages[::-1], late])) == expected


def test_retraction_of_one_partner_leaves_another_partners_same_pseudonym() -> None:
    a = Builder("za-one", Country.ZA)
    a.incident("X", M3, [V.RAPE], [P.CLIENT])
    event = a.messages[0][2]
    assert isinstance(event, SharedIncident)
    # The same pseudonym from another partner is another case.
    other = ("za-two", 1, validated(msgspec.structs.replace(event, partner="za-two")))
    retract = ("za-one", 2, SharedRetraction(partner="za-one", case=event.case))
    result = compute(feed([a.messages[0], other, retract]))
    assert result.value(INCIDENTS, M3, "ZA") == 1
    assert result.value(PARTNERS_REPORTING, M3, "ZA") == 1


def test_region_is_the_sum_of_countries_for_counts() -> None:
    messages = scenario()
    assert_region_sums(compute(feed(messages)))


def assert_region_sums(result: Indicators) -> None:
    sums: dict[tuple[str, str, str], int] = defaultdict(int)
    region: dict[tuple[str, str, str], int] = {}
    for cell in result.cells:
        if cell.indicator == PARTNERS_REPORTING:
            continue
        where = (cell.indicator, cell.period, cell.key)
        if cell.area == REGION:
            region[where] = cell.value
        else:
            sums[where] += cell.value
    assert region == dict(sums)
    # Distinct partners: never more than the sum, never fewer than the largest country.
    by_period: dict[str, list[Cell]] = defaultdict(list)
    for cell in result.table(PARTNERS_REPORTING):
        by_period[cell.period].append(cell)
    for cells in by_period.values():
        countries = [c.value for c in cells if c.area != REGION]
        (total,) = [c.value for c in cells if c.area == REGION]
        assert max(countries) <= total <= sum(countries)
    region_n = {(s.period): s.n for s in result.stats if s.area == REGION}
    country_n: dict[str, int] = defaultdict(int)
    for s in result.stats:
        if s.area != REGION:
            country_n[s.period] += s.n
    assert region_n == dict(country_n)
    assert_partner_sums(result)


def assert_partner_sums(result: Indicators) -> None:
    """Partners nest in countries: a country cell is the sum of its partners' (every count
    but partners-reporting), so is a country's n of first responses, and partners-reporting
    counts the partners with an incident; the frames agree."""
    sums: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for pc in result.partner_cells:
        sums[(pc.indicator, pc.period, pc.country, pc.key)] += pc.value
    countries = {
        (c.indicator, c.period, c.area, c.key): c.value
        for c in result.cells
        if c.area != REGION and c.indicator in PARTNER_COUNTS
    }
    assert {k: v for k, v in countries.items() if v} == {k: v for k, v in sums.items() if v}
    assert {pc.indicator for pc in result.partner_cells} <= set(PARTNER_COUNTS)
    reporting: dict[tuple[str, str], int] = defaultdict(int)
    for pc in result.partner_table(INCIDENTS):
        reporting[(pc.period, pc.country)] += pc.value > 0
    for c in result.table(PARTNERS_REPORTING):
        if c.area != REGION:
            assert c.value == reporting[(c.period, c.area)]
    n: dict[tuple[str, str], int] = defaultdict(int)
    for ps in result.partner_stats:
        n[(ps.period, ps.country)] += ps.n
    assert {(s.period, s.area): s.n for s in result.stats if s.area != REGION} == dict(n)
    frame = {(p, c) for p, c, _ in result.partner_frame()}
    assert frame == {(s.period, s.area) for s in result.stats if s.area != REGION}


def test_partner_figures_of_a_small_scenario() -> None:
    result = compute(feed(scenario()))
    incidents = {
        (c.period, c.country, c.partner): c.value for c in result.partner_table(INCIDENTS)
    }
    assert incidents == {
        (M3, "BW", "bw-one"): 1, (M3, "ZA", "za-one"): 1, (M3, "ZA", "za-two"): 1,
        (M4, "BW", "bw-one"): 0, (M4, "ZA", "za-one"): 1, (M4, "ZA", "za-two"): 0,
        (M5, "BW", "bw-one"): 0,
    }  # fmt: skip
    # za-two's first response came in April: it is in April's partner frame
    stats = {(s.period, s.country, s.partner): (s.n, s.median) for s in result.partner_stats}
    assert stats[(M3, "ZA", "za-one")] == (1, 10.0)
    assert stats[(M4, "ZA", "za-two")] == (1, 30.0)
    assert stats[(M5, "BW", "bw-one")] == (0, None)
    assert {(c.period, c.partner, c.key) for c in result.partner_table(REFERRALS_MADE)} == {
        (M3, "bw-one", "health_pep"), (M3, "za-two", "legal_aid"),
    }  # fmt: skip
    assert all(c.indicator != PARTNERS_REPORTING for c in result.partner_cells)
    with pytest.raises(KeyError):
        result.partner_table(PARTNERS_REPORTING)
    with pytest.raises(KeyError):
        result.partner_stat_table(INCIDENTS)
    keys = [(c.indicator, c.period, c.country, c.partner, c.key) for c in result.partner_cells]
    assert keys == sorted(keys)
    assert_partner_sums(result)


def test_a_partners_figures_are_its_own_messages_figures() -> None:
    messages = scenario()
    assert_partners_alone(messages, compute(feed(messages)))


def assert_partners_alone(messages: list[Message], result: Indicators) -> None:
    """A partner's figures in a country are what its messages alone give that country."""
    for partner in {p for p, _, _ in messages}:
        alone = compute(feed([m for m in messages if m[0] == partner]))
        got = {
            (c.indicator, c.period, c.country, c.key): c.value
            for c in result.partner_cells
            if c.partner == partner
        }
        assert got == {
            (c.indicator, c.period, c.area, c.key): c.value
            for c in alone.cells
            if c.area != REGION and c.indicator in PARTNER_COUNTS
        }
        stats = {
            (s.period, s.country): (s.n, s.median, s.p90)
            for s in result.partner_stats
            if s.partner == partner
        }
        assert stats == {
            (s.period, s.area): (s.n, s.median, s.p90) for s in alone.stats if s.area != REGION
        }


def test_partners_reporting_counts_distinct_partners() -> None:
    a = Builder("za-one", Country.ZA)
    a.incident("X", M3, [V.RAPE], [P.CLIENT])
    a.incident("Y", M3, [V.ROBBERY], [P.CLIENT])
    b = Builder("za-two", Country.NA)
    b.incident("Z", M3, [V.ROBBERY], [P.CLIENT])
    c = Builder("za-one", Country.NA)  # one partner working in two countries
    c.messages = list(a.messages)
    c.incident("W", M3, [V.ROBBERY], [P.CLIENT])
    result = compute(feed([*c.messages, *b.messages]))
    assert table(result, PARTNERS_REPORTING) == {
        (M3, "NA", ""): 2, (M3, "ZA", ""): 1, (M3, REGION, ""): 2,
    }  # fmt: skip
    assert table(result, INCIDENTS) == {
        (M3, "NA", ""): 2, (M3, "ZA", ""): 2, (M3, REGION, ""): 4,
    }  # fmt: skip


def test_ledger_refuses_what_it_cannot_take() -> None:
    messages = scenario()
    partner, number, event = messages[0]
    ledger = Ledger()
    with pytest.raises(LedgerError, match="carries an event of"):
        ledger.add("za-one", number, event)
    with pytest.raises(LedgerError, match="positive integer"):
        ledger.add(partner, 0, event)
    with pytest.raises(LedgerError, match="not a shared event"):
        ledger.add(partner, number, Cell(indicator="x", period=M3, area="x", key="", value=1))  # type: ignore[arg-type]
    assert ledger.messages == 0
    ledger.add(partner, number, event)
    _, _, other = messages[1]
    with pytest.raises(LedgerConflict):
        ledger.add(partner, number, other)
    assert compute(ledger) == compute(feed(messages[:1]))


@pytest.mark.parametrize(
    ("values", "mid", "p90"),
    [
        ([], None, None),
        ([7], 7.0, 7.0),
        ([3, 1, 2], 2.0, 3.0),
        ([10, 1, 3, 2], 2.5, 10.0),
        (list(range(1, 11)), 5.5, 9.0),
        (list(range(1, 12)), 6.0, 10.0),
        (list(range(1, 21)), 10.5, 18.0),
        ([0, 0, 100], 0.0, 100.0),
        ([5, 5, 5, 5], 5.0, 5.0),
    ],
)
def test_median_and_nearest_rank_p90(
    values: list[int], mid: float | None, p90: float | None
) -> None:
    assert median(values) == mid
    assert nearest_rank(values, 90) == p90


def test_nearest_rank_bounds() -> None:
    assert nearest_rank([4, 1, 9], 100) == 9.0
    assert nearest_rank([4, 1, 9], 1) == 1.0
    assert nearest_rank([4, 1, 9], 50) == 4.0
    for bad in (0, 101):
        with pytest.raises(ValueError, match="percentile"):
            nearest_rank([1], bad)


def test_stat_is_a_struct_with_fixed_fields() -> None:
    assert Stat.__struct_fields__ == ("indicator", "period", "area", "n", "median", "p90")
    assert Cell.__struct_fields__ == ("indicator", "period", "area", "key", "value")


# --- any order, duplicates sprinkled -------------------------------------------------------

PARTNERS = [("bw-one", Country.BW), ("za-one", Country.ZA), ("za-two", Country.ZA)]
MONTHS = ["2026-01", "2026-02", "2026-03"]


@st.composite
def message_lists(draw: st.DrawFn) -> list[Message]:
    builders = [Builder(p, c) for p, c in PARTNERS]
    for i in range(draw(st.integers(1, 6))):
        b = draw(st.sampled_from(builders))
        case = f"c{i}"

        def month() -> str:
            return draw(st.sampled_from(MONTHS))

        steps = draw(st.lists(st.sampled_from(range(9)), max_size=8))
        if draw(st.booleans()):  # the incident may be missing (still in flight)
            types = draw(st.lists(st.sampled_from(list(V)), min_size=1, max_size=3, unique=True))
            perps = draw(st.lists(st.sampled_from(list(P)), min_size=1, max_size=3, unique=True))
            b.incident(case, month(), types, perps)
        for step in steps:
            service = draw(st.sampled_from(list(S)))
            match step:
                case 0:
                    b.first_response(case, month(), draw(st.integers(0, 200)))
                case 1 | 2 | 3:
                    stage = ("made", "accepted", "completed")[step - 1]
                    b.referral(case, month(), draw(st.sampled_from(["r", "s"])), service, stage)
                case 4:
                    b.police_report(case, month())
                case 5:
                    b.police_response(case, month(), draw(st.sampled_from(list(PoliceResponse))))
                case 6:
                    b.court_opened(case, month())
                case 7:
                    b.judgment(case, month(), draw(st.sampled_from(list(CourtJudgment))))
                case _:
                    b.retraction(case)
    return [m for b in builders for m in b.messages]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), messages=message_lists())
def test_any_permutation_with_duplicates_gives_the_same_result(
    data: st.DataObject, messages: list[Message]
) -> None:
    expected = compute_from(messages)
    duplicates = data.draw(st.lists(st.sampled_from(messages), max_size=10)) if messages else []
    shuffled = data.draw(st.permutations(messages + duplicates))
    assert compute_from(shuffled) == expected
    assert_region_sums(expected)
    assert_partners_alone(messages, expected)
