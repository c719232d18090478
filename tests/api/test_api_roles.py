"""Who may call what: every route of the app against every role, no token and a wrong token.

MATRIX is the specification, written out by hand; a test checks it names every route of the
app, so a new route cannot go untested. Every allowed call must succeed (on state prepared so
that it can), every other one is refused before anything is written. Auditors and admins see
no personal data, in any answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Route

from handsoff.events import ServiceType
from handsoff.events.inbound import InboundReferralAccepted, ReferralReceived
from handsoff.services.node.admin import Role
from handsoff.services.node.node import Node
from support import PASSPHRASE, T0

P, S, AU, AD = "paralegal", "supervisor", "auditor", "admin"
NO_TOKEN, WRONG_TOKEN = "no token", "wrong token"
PRINCIPALS = (P, S, AU, AD, NO_TOKEN, WRONG_TOKEN)

# (method, path) -> (status on success, roles allowed). Everyone else: 403, or 401 without a
# valid token.
MATRIX: dict[tuple[str, str], tuple[int, frozenset[str]]] = {
    ("POST", "/cases"): (201, frozenset({P, S})),
    ("POST", "/cases/{case_id}/first-response"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/referral-made"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/referral-accepted"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/referral-declined"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/referral-completed"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/police-report"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/police-response"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/court-case"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/court-judgment"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/court-withdrawal"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/consent-given"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/consent-withdrawn"): (200, frozenset({P, S})),
    ("POST", "/cases/{case_id}/consent-correction"): (200, frozenset({S})),
    ("POST", "/cases/{case_id}/close"): (200, frozenset({S})),
    ("GET", "/cases"): (200, frozenset({P, S})),
    ("GET", "/cases/{case_id}"): (200, frozenset({P, S})),
    ("GET", "/cases/{case_id}/seals"): (200, frozenset({AU, S})),
    ("GET", "/verification"): (200, frozenset({AU, S})),
    ("GET", "/status"): (200, frozenset({P, S, AU, AD})),
    ("GET", "/metrics"): (200, frozenset({P, S, AU, AD})),
    ("GET", "/referrals"): (200, frozenset({P, S})),
    ("GET", "/referrals/{referral_id}"): (200, frozenset({P, S})),
    ("POST", "/referrals/{referral_id}/accepted"): (200, frozenset({P, S})),
    ("POST", "/referrals/{referral_id}/declined"): (200, frozenset({P, S})),
    ("POST", "/referrals/{referral_id}/completed"): (200, frozenset({P, S})),
    ("GET", "/keys"): (200, frozenset({AD, AU})),
    ("POST", "/keys/rotate"): (200, frozenset({AD})),
    # Publishes a checkpoint through the node's link; this node has joined no region, so the
    # admin's answer is the documented 409 (published for real in test_witness.py).
    ("POST", "/checkpoint"): (409, frozenset({AD})),
    ("GET", "/users"): (200, frozenset({AD})),
    ("POST", "/users"): (201, frozenset({AD})),
    ("DELETE", "/users/{name}"): (200, frozenset({AD})),
}
# Served without a token: the API documentation and the liveness and readiness probes.
UNGUARDED = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/healthz", "/readyz"}
NEEDS = {
    frozenset({P, S}): "paralegal, supervisor",
    frozenset({S}): "supervisor",
    frozenset({AU, S}): "auditor, supervisor",
    frozenset({AD, AU}): "admin, auditor",
    frozenset({AD}): "admin",
    frozenset({P, S, AU, AD}): "admin, auditor, paralegal, supervisor",
}


def _routes(app: FastAPI) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        if route.path in UNGUARDED:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


class Calls:
    """Builds, for any route, a request that its allowed roles can make successfully now."""

    def __init__(self, node: Node, lifecycle: Any) -> None:
        self.node = node
        self.lifecycle = lifecycle
        self.full_case, _ = lifecycle.full_case()  # a marker in every personal field
        self._names = (f"user-{n}" for n in itertools.count())
        self._messages = itertools.count(1)

    def inbound_request(self, method: str, path: str) -> tuple[str, Any]:
        """A referral received from another partner, ready for the step in `path`."""
        referral_id = self.node.inbound.receive(ReferralReceived(
            from_partner="p9", message_id=f"p9:{next(self._messages)}", reply_token=b"t",
            service=ServiceType.LEGAL_AID, made_at=T0, received_at=T0 + timedelta(hours=1),
            survivor_contact=self.lifecycle.marker))
        assert referral_id is not None
        step = path.rsplit("/", 1)[1]
        if method == "GET" or step == "{referral_id}":
            return f"/referrals/{referral_id}", None
        version = 1
        if step == "completed":
            self.node.inbound.record_change(referral_id, 1, InboundReferralAccepted(
                accepted_at=T0 + timedelta(hours=2)), "test")
            version = 2
        change = {
            "accepted": {"accepted_at": "2026-03-03T00:00:00Z"},
            "declined": {"declined_at": "2026-03-03T00:00:00Z", "reason": "not_eligible"},
            "completed": {"completed_at": "2026-03-04T00:00:00Z", "outcome": "service_received"},
        }[step]
        return f"/referrals/{referral_id}/{step}", {"expected_version": version, "change": change}

    def request(self, method: str, path: str) -> tuple[str, Any]:
        """(url, JSON body or None)."""
        if path == "/cases" and method == "POST":
            return path, msgspec.to_builtins(self.lifecycle.incident())
        if path.startswith("/cases/{case_id}/") and method == "POST":
            step = path.rsplit("/", 1)[1]
            case_id, version = self.lifecycle.ready_for(step)
            return f"/cases/{case_id}/{step}", self.lifecycle.body(version, step)
        if "{case_id}" in path:
            return path.format(case_id=self.full_case), None
        if path.startswith("/referrals/{referral_id}"):
            return self.inbound_request(method, path)
        if path == "/users" and method == "POST":
            return path, {"name": next(self._names), "role": "paralegal"}
        if path == "/users/{name}":
            name = next(self._names)
            self.node.add_user(name, Role.PARALEGAL, "test")
            return f"/users/{name}", None
        return path, None


@pytest.fixture(scope="module")
def calls(module_node: Node, module_lifecycle: Any, module_app: FastAPI) -> Calls:
    module_app.state.passphrase = PASSPHRASE  # so the admin's rotation succeeds
    return Calls(module_node, module_lifecycle)


def test_matrix_covers_every_route(module_app: FastAPI) -> None:
    assert _routes(module_app) == set(MATRIX)


def test_unguarded_routes_answer_without_a_token(module_client: TestClient) -> None:
    for path in sorted(UNGUARDED):
        r = module_client.get(path)
        assert r.status_code == 200, path


@pytest.mark.parametrize("who", PRINCIPALS)
@pytest.mark.parametrize("route", list(MATRIX), ids=" ".join)
def test_role_matrix(route: tuple[str, str], who: str, calls: Calls, module_client: TestClient,
                     module_principals: Any, module_snap: Callable[[], Any]) -> None:
    method, path = route
    success, allowed = MATRIX[route]
    url, body = calls.request(method, path)
    before = module_snap()

    r = module_client.request(method, url, json=body, headers=module_principals.headers(who))

    if who in allowed:
        assert r.status_code == success, r.text
        writes = method != "GET" and success < 400
        assert (module_snap() != before) == writes
    else:
        expected = {
            NO_TOKEN: (401, "missing bearer token"),
            WRONG_TOKEN: (401, "invalid or revoked token"),
        }.get(who, (403, f"role {who} may not do this (needs: {NEEDS[allowed]})"))
        assert (r.status_code, r.json()) == (expected[0], {"detail": expected[1], "field": None})
        if r.status_code == 401:
            assert r.headers["www-authenticate"] == "Bearer"
        else:
            assert "www-authenticate" not in r.headers
        assert module_snap() == before  # refused before anything was written
    if who not in (P, S):
        assert calls.lifecycle.marker not in r.text


@pytest.mark.parametrize("authorization", [
    "Basic dGhhbmRpOnNlY3JldA==",
    "Bearer",
    "Bearer ",
    "hx_notabearer",
])
def test_malformed_authorization_is_401(authorization: str, module_client: TestClient) -> None:
    r = module_client.get("/cases", headers={"Authorization": authorization})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("who", [AU, AD])
def test_auditor_and_admin_never_receive_personal_data(
        who: str, calls: Calls, module_client: TestClient, module_principals: Any) -> None:
    lifecycle = calls.lifecycle
    answered = []
    for (method, path), (success, allowed) in MATRIX.items():
        url, body = calls.request(method, path)
        r = module_client.request(method, url, json=body,
                                  headers=module_principals.headers(who))
        if who in allowed:
            assert r.status_code == success, (method, path, r.text)
            answered.append(path)
        for value in [lifecycle.marker, *lifecycle.personal_values]:
            assert value not in r.text, (method, path)
    assert answered  # each of them does get answers

    # The same data is there for the paralegal: the check above could see it.
    r = module_client.get(f"/cases/{calls.full_case}", headers=module_principals.headers(P))
    assert r.status_code == 200
    for value in lifecycle.personal_values:
        assert value in r.text
    seals = module_client.get(f"/cases/{calls.full_case}/seals",
                              headers=module_principals.headers(who))
    if who == AU:
        assert seals.status_code == 200
        assert len(seals.json()["seals"]) == r.json()["case"]["version"]


def test_the_case_list_holds_no_personal_data(calls: Calls, module_client: TestClient,
                                              module_principals: Any) -> None:
    r = module_client.get("/cases", params={"limit": 200}, headers=module_principals.headers(P))
    assert r.status_code == 200
    assert str(calls.full_case) in r.text
    assert calls.lifecycle.marker not in r.text
