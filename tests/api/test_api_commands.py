"""Every command and query of the node's HTTP API, over HTTP, against a real node.

Each lifecycle step is taken on a fresh case that is ready for it; the test checks the
status, the returned CaseView (version and exactly the fields the step changes), and the new
entry of the case's history (its "type" tag, who recorded it, the change as sent).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from handsoff.events import (
    Country,
    PerpetratorCategory,
    ViolenceType,
)
from handsoff.services.api.app import STEPS
from handsoff.services.node.node import Node
from support import PASSPHRASE, T0

JSON = dict[str, Any]
STEP_PATHS = [s.path for s in STEPS]
SUPERVISOR_ONLY = {"consent-correction", "close"}
GABORONE = timezone(timedelta(hours=2))

# The CaseView fields each step sets, from the view before the step and the change as sent.
EXPECTED_CHANGE: dict[str, Callable[[JSON, JSON], JSON]] = {
    "first-response": lambda before, c: {
        "first_response_at": c["responded_at"], "first_response_role": c["responder_role"]},
    "referral-made": lambda before, c: {"referrals": {c["referral_id"]: {
        "service": c["service"], "to_organisation": c["to_organisation"],
        "made_at": c["made_at"], "status": "made", "decline_reason": None, "outcome": None,
        "to_partner": None}}},
    "referral-accepted": lambda before, c: {"referrals": {c["referral_id"]: {
        **before["referrals"][c["referral_id"]], "status": "accepted"}}},
    "referral-declined": lambda before, c: {"referrals": {c["referral_id"]: {
        **before["referrals"][c["referral_id"]], "status": "declined",
        "decline_reason": c["reason"]}}},
    "referral-completed": lambda before, c: {"referrals": {c["referral_id"]: {
        **before["referrals"][c["referral_id"]], "status": "completed",
        "outcome": c["outcome"]}}},
    "police-report": lambda before, c: {"police": {
        "filed_at": c["filed_at"], "district": c["district"], "response": None,
        "responded_at": None}},
    "police-response": lambda before, c: {"police": {
        **before["police"], "response": c["response"], "responded_at": c["responded_at"]}},
    "court-case": lambda before, c: {"court": {
        "opened_at": c["opened_at"], "district": c["district"],
        "strategic_litigation": c["strategic_litigation"], "status": "open",
        "judgment": None, "withdrawal_reason": None}},
    "court-judgment": lambda before, c: {"court": {
        **before["court"], "status": "judged", "judgment": c["judgment"]}},
    "court-withdrawal": lambda before, c: {"court": {
        **before["court"], "status": "withdrawn", "withdrawal_reason": c["reason"]}},
    "consent-given": lambda before, c: {"consents": [
        {"purpose": c["purpose"], "organisation": c["organisation"], "given": True}]},
    "consent-withdrawn": lambda before, c: {"consents": [
        {"purpose": c["purpose"], "organisation": c["organisation"], "given": False}]},
    "consent-correction": lambda before, c: {"consents": [
        {"purpose": c["purpose"], "organisation": None, "given": c["given"]}]},
    "close": lambda before, c: {
        "status": "closed", "closed_at": c["closed_at"], "closed_reason": c["reason"]},
}
TAG = {
    "first-response": "first_response_given/1",
    "referral-made": "referral_made/1",
    "referral-accepted": "referral_accepted/1",
    "referral-declined": "referral_declined/1",
    "referral-completed": "referral_completed/1",
    "police-report": "police_report_filed/1",
    "police-response": "police_responded/1",
    "court-case": "court_case_opened/1",
    "court-judgment": "court_judgment_given/1",
    "court-withdrawal": "court_case_withdrawn/1",
    "consent-given": "consent_given/1",
    "consent-withdrawn": "consent_withdrawn/1",
    "consent-correction": "consent_corrected/1",
    "close": "case_closed/1",
}


def _get_case(client: TestClient, principals: Any, case_id: UUID | str) -> JSON:
    r = client.get(f"/cases/{case_id}", headers=principals.headers("paralegal"))
    assert r.status_code == 200, r.text
    body: JSON = r.json()
    return body


def _problem(r: Any, status: int, detail: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": detail, "field": field}


def test_the_expectations_cover_every_step() -> None:
    assert set(EXPECTED_CHANGE) == set(TAG) == set(STEP_PATHS)
    assert len(STEP_PATHS) == 14


def test_report_incident_opens_a_case(client: TestClient, principals: Any, lifecycle: Any,
                                      node: Node) -> None:
    change = lifecycle.incident()
    sent = msgspec.to_builtins(change)
    r = client.post("/cases", json=sent, headers=principals.headers("paralegal"))

    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"case_id", "version"}
    assert created["version"] == 1
    case_id = UUID(created["case_id"])
    assert node.cases.state(case_id).version == 1
    detail = _get_case(client, principals, case_id)
    assert detail["case"]["version"] == 1
    assert detail["case"]["status"] == "open"
    assert detail["case"]["incident"] == {
        "occurred_at": sent["occurred_at"], "country": "BW", "district": "BW-Gaborone",
        "violence_types": ["physical_assault", "extortion_or_bribery"],
        "gbvims_type": "physical_assault", "perpetrators": ["police_or_law_enforcement"],
        "perpetrator_count": 2, "location_type": "street", "survivor_age_band": "25_29",
        "survivor_gender": "trans_woman"}
    [entry] = detail["history"]
    assert entry["version"] == 1
    assert entry["recorded_by"] == principals.name("paralegal")
    assert entry["change"] == sent
    assert entry["change"]["type"] == "incident_reported/1"


@pytest.mark.parametrize("step", STEP_PATHS)
def test_each_step_over_http(step: str, client: TestClient, principals: Any, lifecycle: Any,
                             node: Node) -> None:
    role = "supervisor" if step in SUPERVISOR_ONLY else "paralegal"
    case_id, version = lifecycle.ready_for(step)
    before = _get_case(client, principals, case_id)
    body = lifecycle.body(version, step)

    r = client.post(f"/cases/{case_id}/{step}", json=body, headers=principals.headers(role))

    assert r.status_code == 200, r.text
    view = r.json()
    assert view["case_id"] == str(case_id)
    assert view["version"] == version + 1
    expected = EXPECTED_CHANGE[step](before["case"], body["change"])
    for name, value in expected.items():
        assert view[name] == value, name
        assert before["case"][name] != value, f"{name} was already {value!r}"
    unchanged = set(view) - set(expected) - {"version"}
    assert {k: view[k] for k in unchanged} == {k: before["case"][k] for k in unchanged}
    assert lifecycle.marker not in r.text  # a CaseView holds no personal data

    after = _get_case(client, principals, case_id)
    assert after["case"] == view
    assert after["history"][:-1] == before["history"]
    entry = after["history"][-1]
    assert entry["version"] == version + 1
    assert entry["change"]["type"] == TAG[step]
    assert entry["change"] == body["change"]
    assert entry["recorded_by"] == principals.name(role)
    assert node.cases.state(case_id).version == version + 1


# Every step on one case, in an order the rules allow (court withdrawal has its own case).
LIFE = (
    ("first-response", "paralegal"), ("consent-given", "paralegal"),
    ("referral-made", "paralegal"), ("referral-accepted", "paralegal"),
    ("referral-completed", "paralegal"), ("police-consent", "paralegal"),
    ("police-report", "paralegal"), ("police-response", "paralegal"),
    ("court-case", "paralegal"), ("court-judgment", "paralegal"),
    ("consent-withdrawn", "paralegal"), ("consent-correction", "supervisor"),
    ("close", "supervisor"),
)


def test_a_whole_case_life_over_http(client: TestClient, principals: Any, lifecycle: Any,
                                     node: Node) -> None:
    r = client.post("/cases", json=msgspec.to_builtins(lifecycle.incident()),
                    headers=principals.headers("paralegal"))
    assert r.status_code == 201, r.text
    case_id, version = r.json()["case_id"], 1
    for step, role in LIFE:
        path = "consent-given" if step == "police-consent" else step
        r = client.post(f"/cases/{case_id}/{path}", json=lifecycle.body(version, step),
                        headers=principals.headers(role))
        assert r.status_code == 200, (step, r.text)
        version += 1
        assert r.json()["version"] == version

    detail = _get_case(client, principals, case_id)
    assert detail["case"]["status"] == "closed"
    assert [e["version"] for e in detail["history"]] == list(range(1, version + 1))
    assert [e["change"]["type"] for e in detail["history"]] == ["incident_reported/1"] + [
        "consent_given/1" if s == "police-consent" else TAG[s] for s, _ in LIFE]
    assert [e["recorded_by"] for e in detail["history"]] == [
        principals.name("paralegal")] + [principals.name(role) for _, role in LIFE]
    for value in lifecycle.personal_values:  # the history is where personal data lives
        assert value in str(detail["history"])


def test_court_withdrawal_follows_an_open_court_case(client: TestClient, principals: Any,
                                                     lifecycle: Any) -> None:
    case_id, version = lifecycle.ready_for("court-judgment")
    judged = client.post(f"/cases/{case_id}/court-judgment",
                         json=lifecycle.body(version, "court-judgment"),
                         headers=principals.headers("paralegal"))
    assert judged.status_code == 200
    r = client.post(f"/cases/{case_id}/court-withdrawal",
                    json=lifecycle.body(version + 1, "court-withdrawal"),
                    headers=principals.headers("paralegal"))
    _problem(r, 409, "the court case was already judged")


# --- queries -------------------------------------------------------------------------------


@pytest.fixture
def varied_cases(lifecycle: Any, node: Node) -> dict[str, UUID]:
    """Five cases that differ in one filterable field each; reported an hour apart."""
    h = timedelta(hours=1)
    cases = {
        "bw": lifecycle.new_case(reported_at=T0 + 1 * h),
        "za": lifecycle.new_case(
            reported_at=T0 + 2 * h, country=Country.ZA, district="ZA-GT-JHB"),
        "rape": lifecycle.new_case(
            reported_at=T0 + 3 * h, violence_types=[ViolenceType.RAPE],
            perpetrators=[PerpetratorCategory.CLIENT], perpetrator_count=1),
        "other-district": lifecycle.new_case(reported_at=T0 + 4 * h, district="BW-Francistown"),
        "closed": lifecycle.new_case(reported_at=T0 + 5 * h),
    }
    lifecycle.record(cases["closed"], "close")
    return cases


@pytest.mark.parametrize(("query", "expected"), [
    ({}, ["closed", "other-district", "rape", "za", "bw"]),
    ({"status": "open"}, ["other-district", "rape", "za", "bw"]),
    ({"status": "closed"}, ["closed"]),
    ({"country": "ZA"}, ["za"]),
    ({"country": "BW"}, ["closed", "other-district", "rape", "bw"]),
    ({"country": "MW"}, []),
    ({"district": "BW-Francistown"}, ["other-district"]),
    ({"violence_type": "rape"}, ["rape"]),
    ({"violence_type": "extortion_or_bribery"}, ["closed", "other-district", "za", "bw"]),
    ({"perpetrator": "client"}, ["rape"]),
    ({"perpetrator": "police_or_law_enforcement"}, ["closed", "other-district", "za", "bw"]),
    # reported_from is inclusive, reported_to exclusive
    ({"reported_from": (T0 + timedelta(hours=3)).isoformat()}, ["closed", "other-district",
                                                                "rape"]),
    ({"reported_to": (T0 + timedelta(hours=3)).isoformat()}, ["za", "bw"]),
    ({"reported_from": (T0 + timedelta(hours=2)).isoformat(),
      "reported_to": (T0 + timedelta(hours=4)).isoformat()}, ["rape", "za"]),
    # A bound in another offset is the same instant.
    ({"reported_from": (T0 + timedelta(hours=3)).astimezone(GABORONE).isoformat()},
     ["closed", "other-district", "rape"]),
    # A naive bound is read as UTC (it only narrows a search).
    ({"reported_to": (T0 + timedelta(hours=3)).replace(tzinfo=None).isoformat()}, ["za", "bw"]),
    ({"status": "open", "country": "BW", "violence_type": "physical_assault"},
     ["other-district", "bw"]),
])
def test_list_filters(query: dict[str, str], expected: list[str], client: TestClient,
                      principals: Any, varied_cases: dict[str, UUID]) -> None:
    r = client.get("/cases", params=query, headers=principals.headers("paralegal"))

    assert r.status_code == 200, r.text
    page = r.json()
    names = {str(v): k for k, v in varied_cases.items()}
    assert [names[c["case_id"]] for c in page["cases"]] == expected  # newest report first
    assert page["total"] == len(expected)
    assert (page["offset"], page["limit"]) == (0, 50)


def test_list_pages_through_the_cases(client: TestClient, principals: Any,
                                      varied_cases: dict[str, UUID], lifecycle: Any) -> None:
    newest_first = ["closed", "other-district", "rape", "za", "bw"]
    names = {str(v): k for k, v in varied_cases.items()}
    seen = []
    for offset in (0, 2, 4):
        r = client.get("/cases", params={"offset": offset, "limit": 2},
                       headers=principals.headers("paralegal"))
        assert r.status_code == 200, r.text
        page = r.json()
        assert (page["total"], page["offset"], page["limit"]) == (5, offset, 2)
        seen += [names[c["case_id"]] for c in page["cases"]]
        assert lifecycle.marker not in r.text  # lists hold no personal data
    assert seen == newest_first
    r = client.get("/cases", params={"offset": 5}, headers=principals.headers("paralegal"))
    assert r.json() == {"total": 5, "offset": 5, "limit": 50, "cases": []}
    r = client.get("/cases", params={"offset": 1, "limit": 1, "status": "open"},
                   headers=principals.headers("paralegal"))
    assert r.json()["total"] == 4
    assert [c["case_id"] for c in r.json()["cases"]] == [str(varied_cases["rape"])]


def test_list_summaries_are_case_views(client: TestClient, principals: Any,
                                       varied_cases: dict[str, UUID]) -> None:
    r = client.get("/cases", params={"status": "closed"}, headers=principals.headers("supervisor"))
    [summary] = r.json()["cases"]
    assert summary == _get_case(client, principals, varied_cases["closed"])["case"]


def test_seals_of_a_case(client: TestClient, principals: Any, lifecycle: Any,
                         node: Node) -> None:
    case_id, version = lifecycle.ready_for("referral-accepted")
    r = client.get(f"/cases/{case_id}/seals", headers=principals.headers("auditor"))

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["case_id"] == str(case_id)
    seals = body["seals"]
    assert [s["version"] for s in seals] == list(range(1, version + 1))
    assert [s["topic"] for s in seals] == [
        "handsoff.case:incident_reported/1", "handsoff.case:consent_given/1",
        "handsoff.case:referral_made/1"]
    kid = node.keyring.current.kid
    for s in seals:
        assert s["verified"] is True
        assert s["problem"] is None
        assert s["kid"] == kid
        assert len(bytes.fromhex(s["signature"])) == 64
    assert seals[0]["prev"] == "00" * 32
    assert len({s["prev"] for s in seals}) == len(seals)  # each links to its predecessor
    assert lifecycle.marker not in r.text


def test_verification_reports_every_log(client: TestClient, principals: Any, lifecycle: Any,
                                        node: Node) -> None:
    lifecycle.ready_for("referral-accepted")  # 3 events in one case
    lifecycle.new_case()
    r = client.get("/verification", headers=principals.headers("auditor"))

    assert r.status_code == 200, r.text
    assert r.json() == {
        "partner": "sisonke-bw",
        "keyring_intact": True,
        "keys": [node.keyring.current.kid],
        # admin: the node's initialisation and the four users of the tests
        "logs": [
            {"log": "admin", "events": 5, "aggregates": 5, "intact": True, "failure": None},
            {"log": "cases", "events": 4, "aggregates": 2, "intact": True, "failure": None},
            {"log": "inbound", "events": 0, "aggregates": 0, "intact": True, "failure": None},
        ],
        "problem": None,
    }


def _key_views(node: Node) -> list[JSON]:
    return [{"kid": k.kid, "public_key": k.public_key.hex(),
             "activated_at": k.activated_at.isoformat(),
             "retired_at": k.retired_at.isoformat() if k.retired_at else None,
             "predecessor": k.predecessor} for k in node.keyring.keys]


def test_keys_lists_the_public_keys(client: TestClient, principals: Any, node: Node) -> None:
    for role in ("admin", "auditor"):
        r = client.get("/keys", headers=principals.headers(role))
        assert r.status_code == 200, r.text
        assert r.json() == _key_views(node)
        [key] = r.json()
        assert key["retired_at"] is None
        assert key["predecessor"] is None


def test_rotation_needs_the_passphrase(client: TestClient, principals: Any, node: Node,
                                       snap: Callable[[], Any]) -> None:
    keys, before = _key_views(node), snap()
    r = client.post("/keys/rotate", headers=principals.headers("admin"))

    _problem(r, 503, "this server was started without its passphrase")
    assert _key_views(node) == keys
    assert snap() == before


def test_rotation_over_http(app: FastAPI, client: TestClient, principals: Any, lifecycle: Any,
                            node: Node) -> None:
    app.state.passphrase = PASSPHRASE
    case_id, version = lifecycle.ready_for("first-response")
    old = node.keyring.current.kid

    r = client.post("/keys/rotate", headers=principals.headers("admin"))

    assert r.status_code == 200, r.text
    keys = r.json()
    assert keys == _key_views(node)
    assert [k["kid"] for k in keys] == [old, node.keyring.current.kid]
    assert keys[0]["retired_at"] is not None
    assert keys[1]["predecessor"] == old
    assert keys[1]["retired_at"] is None
    # New events are signed by the new key; the old ones still verify.
    step = client.post(f"/cases/{case_id}/first-response",
                       json=lifecycle.body(version, "first-response"),
                       headers=principals.headers("paralegal"))
    assert step.status_code == 200, step.text
    seals = client.get(f"/cases/{case_id}/seals", headers=principals.headers("auditor")).json()
    assert [s["kid"] for s in seals["seals"]] == [old, keys[1]["kid"]]
    assert all(s["verified"] for s in seals["seals"])
    report = client.get("/verification", headers=principals.headers("auditor")).json()
    assert report["keys"] == [old, keys[1]["kid"]]
    assert report["logs"][0]["events"] == 6  # init, four users, the rotation
    assert all(log["intact"] for log in report["logs"])


# --- users ---------------------------------------------------------------------------------


def test_users_are_listed(client: TestClient, principals: Any) -> None:
    r = client.get("/users", headers=principals.headers("admin"))
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"name": "thandi", "role": "paralegal", "active": True},
        {"name": "naledi", "role": "supervisor", "active": True},
        {"name": "kagiso", "role": "auditor", "active": True},
        {"name": "mpho", "role": "admin", "active": True},
    ]


def test_add_use_and_revoke_a_user(client: TestClient, principals: Any, node: Node) -> None:
    admin = principals.headers("admin")
    r = client.post("/users", json={"name": "lerato", "role": "paralegal"}, headers=admin)

    assert r.status_code == 201, r.text
    issued = r.json()
    assert (issued["name"], issued["role"]) == ("lerato", "paralegal")
    token = issued["token"]
    assert token.startswith("hx_")
    assert token not in str(node.admin.recorder.select_notifications(start=None, limit=100))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/cases", headers=headers).status_code == 200
    listed = client.get("/users", headers=admin).json()
    assert {"name": "lerato", "role": "paralegal", "active": True} in listed

    r = client.delete("/users/lerato", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "lerato", "role": "paralegal", "active": False}
    revoked = client.get("/cases", headers=headers)
    _problem(revoked, 401, "invalid or revoked token")
    assert revoked.headers["www-authenticate"] == "Bearer"
    assert {"name": "lerato", "role": "paralegal", "active": False} in client.get(
        "/users", headers=admin).json()

    _problem(client.delete("/users/lerato", headers=admin), 404,
             "user 'lerato' is already revoked")
    _problem(client.delete("/users/nobody", headers=admin), 404, "no user named 'nobody'")


def test_adding_an_existing_user_conflicts(client: TestClient, principals: Any,
                                           snap: Callable[[], Any]) -> None:
    before = snap()
    r = client.post("/users", json={"name": "thandi", "role": "admin"},
                    headers=principals.headers("admin"))
    _problem(r, 409, "user 'thandi' already exists", "name")
    assert snap() == before


def test_a_revoked_user_cannot_come_back(client: TestClient, principals: Any) -> None:
    admin = principals.headers("admin")
    assert client.delete("/users/thandi", headers=admin).status_code == 200
    r = client.post("/users", json={"name": "thandi", "role": "paralegal"}, headers=admin)
    _problem(r, 409, "user 'thandi' already exists", "name")
    _problem(client.get("/cases", headers=principals.headers("paralegal")), 401,
             "invalid or revoked token")


# --- 404 and 409 ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "role"), [
    ("GET", "/cases/{id}", "paralegal"),
    ("GET", "/cases/{id}/seals", "auditor"),
    *[("POST", f"/cases/{{id}}/{step}",
       "supervisor" if step in SUPERVISOR_ONLY else "paralegal") for step in STEP_PATHS],
])
def test_unknown_case_is_404(method: str, path: str, role: str, client: TestClient,
                             principals: Any, lifecycle: Any, snap: Callable[[], Any]) -> None:
    lifecycle.new_case()  # the node has a case, just not this one
    unknown = uuid4()
    step = path.rsplit("/", 1)[-1]
    body = lifecycle.body(1, step) if method == "POST" else None
    before = snap()

    r = client.request(method, path.format(id=unknown), json=body,
                       headers=principals.headers(role))

    _problem(r, 404, f"case {unknown} not found")
    assert snap() == before


@pytest.mark.parametrize("stale", [1, 3, 100])
def test_stale_expected_version_conflicts(stale: int, client: TestClient, principals: Any,
                                          lifecycle: Any, snap: Callable[[], Any]) -> None:
    case_id, version = lifecycle.ready_for("referral-made")
    assert version == 2
    before = snap()

    r = client.post(f"/cases/{case_id}/referral-made",
                    json=lifecycle.body(stale, "referral-made"),
                    headers=principals.headers("paralegal"))

    _problem(r, 409, f"case {case_id} is at version 2, not {stale}: reload it and retry",
             "expected_version")
    assert snap() == before


def test_a_change_after_close_conflicts(client: TestClient, principals: Any, lifecycle: Any,
                                        snap: Callable[[], Any]) -> None:
    case_id, version = lifecycle.ready_for("first-response")
    version = lifecycle.record(case_id, "close")
    before = snap()

    r = client.post(f"/cases/{case_id}/first-response",
                    json=lifecycle.body(version, "first-response"),
                    headers=principals.headers("paralegal"))

    _problem(r, 409, "case is closed")
    assert snap() == before
    assert _get_case(client, principals, case_id)["case"]["version"] == version


@pytest.mark.parametrize(("step", "prepared", "detail"), [
    ("referral-accepted", (), "referral 'legal-1' was never made"),
    ("police-response", ("police-consent",), "police response needs a police report first"),
    ("court-judgment", (), "there is no court case"),
    ("consent-withdrawn", (),
     "consent for referral to 'Legal Aid Botswana' is not currently given"),
    ("first-response", ("first-response",), "the first response was already recorded"),
])
def test_rule_violations_conflict(step: str, prepared: tuple[str, ...], detail: str,
                                  client: TestClient, principals: Any, lifecycle: Any,
                                  snap: Callable[[], Any]) -> None:
    case_id = lifecycle.new_case()
    version = lifecycle.record(case_id, *prepared)
    before = snap()
    r = client.post(f"/cases/{case_id}/{step}", json=lifecycle.body(version, step),
                    headers=principals.headers("paralegal"))
    _problem(r, 409, detail)
    assert snap() == before


@pytest.mark.parametrize(("overrides", "detail"), [
    ({"district": "ZA-GT-JHB"}, "district 'ZA-GT-JHB' is not in BW"),
    ({"reported_at": T0 - timedelta(hours=1)}, "reported_at is before the incident occurred"),
    ({"violence_types": [ViolenceType.RAPE, ViolenceType.RAPE]},
     "violence type 'rape' is listed twice"),
])
def test_an_incident_breaking_the_rules_is_refused_as_documented(
        overrides: dict[str, Any], detail: str, app: FastAPI, client: TestClient,
        principals: Any, lifecycle: Any, snap: Callable[[], Any]) -> None:
    # These rules concern the report itself, not a case's state: 422, as documented.
    documented = {int(code) for code in app.openapi()["paths"]["/cases"]["post"]["responses"]}
    before = snap()
    r = client.post("/cases", json=msgspec.to_builtins(lifecycle.incident(**overrides)),
                    headers=principals.headers("paralegal"))
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": detail, "field": None}
    assert snap() == before
    assert r.status_code in documented, f"{r.status_code} is not documented: {documented}"


def test_health_needs_no_token(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
