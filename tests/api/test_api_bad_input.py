"""Bad input is refused with a clear message naming the field, and nothing is written.

Every case compares both logs (highest notification id and every stored event) before and
after the request. Messages and field paths are asserted exactly as the API words them: body
fields come from msgspec ("change.responded_at", "violence_types[0]"), parameters from
FastAPI ("query.limit", "path.case_id").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest
from fastapi.testclient import TestClient

from handsoff.services.node.node import Node
from support import T0, incident

LIMIT = 64 * 1024  # NodeConfig.max_body_bytes default; checked against the node below
INCIDENT: dict[str, Any] = msgspec.to_builtins(incident("bad-input"))
AFTER = (T0 + timedelta(hours=3)).isoformat()
FIRST_RESPONSE = {"responded_at": AFTER, "responder_role": "paralegal", "responder": "Lindi"}
UPDATE = {"expected_version": 1, "change": FIRST_RESPONSE}
STEP = "/cases/{case}/first-response"


class Raw(bytes):
    """A body sent as these exact bytes (not JSON-encoded by the test)."""


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def _without(base: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != key}


def _step(**changes: Any) -> dict[str, Any]:
    return _with(UPDATE, change=_with(FIRST_RESPONSE, **changes))


# (id, method, url, body, detail, field); all answered 422.
BAD_INPUT: list[tuple[str, str, str, Any, str, str | None]] = [
    # wrong types
    ("int for text", "POST", "/cases", _with(INCIDENT, survivor_name=5),
     "Expected `str`, got `int` - at `$.survivor_name`", "survivor_name"),
    ("text for int", "POST", "/cases", _with(INCIDENT, perpetrator_count="2"),
     "Expected `int | null`, got `str` - at `$.perpetrator_count`", "perpetrator_count"),
    ("text for list", "POST", "/cases", _with(INCIDENT, violence_types="rape"),
     "Expected `array`, got `str` - at `$.violence_types`", "violence_types"),
    ("list for object", "POST", "/cases", [INCIDENT],
     "Expected `object`, got `array`", None),
    ("nested wrong type", "POST", STEP, _step(responder=5),
     "Expected `str`, got `int` - at `$.change.responder`", "change.responder"),
    ("change null", "POST", STEP, _with(UPDATE, change=None),
     "Expected `object`, got `null` - at `$.change`", "change"),
    ("not a date", "POST", "/cases", _with(INCIDENT, occurred_at="yesterday"),
     "Invalid RFC3339 encoded datetime - at `$.occurred_at`", "occurred_at"),
    # unknown codes
    ("unknown violence type", "POST", "/cases",
     _with(INCIDENT, violence_types=["alien_abduction"]),
     "Invalid enum value 'alien_abduction' - at `$.violence_types[0]`", "violence_types[0]"),
    ("unknown second violence type", "POST", "/cases",
     _with(INCIDENT, violence_types=["rape", "alien_abduction"]),
     "Invalid enum value 'alien_abduction' - at `$.violence_types[1]`", "violence_types[1]"),
    ("unknown country", "POST", "/cases", _with(INCIDENT, country="XX"),
     "Invalid enum value 'XX' - at `$.country`", "country"),
    ("unknown responder role", "POST", STEP, _step(responder_role="boss"),
     "Invalid enum value 'boss' - at `$.change.responder_role`", "change.responder_role"),
    ("another step's change", "POST", STEP, _step(type="case_closed/1"),
     "Invalid value 'case_closed/1' - at `$.change.type`", "change.type"),
    ("another change type", "POST", "/cases", _with(INCIDENT, type="first_response_given/1"),
     "Invalid value 'first_response_given/1' - at `$.type`", "type"),
    ("unknown user role", "POST", "/users", {"name": "lerato", "role": "root"},
     "Invalid enum value 'root' - at `$.role`", "role"),
    # patterns and lengths
    ("district is a place name", "POST", "/cases", _with(INCIDENT, district="Gaborone"),
     "Expected `str` matching regex '^[A-Z]{2}-[A-Za-z0-9_-]{1,40}$' - at `$.district`",
     "district"),
    ("referral id pattern", "POST", "/cases/{case}/referral-made",
     {"expected_version": 1, "change": {"referral_id": "Legal 1", "service": "legal_aid",
                                        "made_at": AFTER, "to_organisation": "Legal Aid"}},
     "Expected `str` matching regex '^[a-z0-9][a-z0-9-]{0,39}$' - at `$.change.referral_id`",
     "change.referral_id"),
    ("user name pattern", "POST", "/users", {"name": "Bad Name", "role": "paralegal"},
     "Expected `str` matching regex '^[a-z0-9][a-z0-9._-]{0,63}$' - at `$.name`", "name"),
    ("narrative too long", "POST", "/cases", _with(INCIDENT, narrative="x" * 4001),
     "Expected `str` of length <= 4000 - at `$.narrative`", "narrative"),
    ("empty name", "POST", "/cases", _with(INCIDENT, survivor_name=""),
     "Expected `str` of length >= 1 - at `$.survivor_name`", "survivor_name"),
    ("empty organisation", "POST", "/cases/{case}/consent-given",
     {"expected_version": 1, "change": {"purpose": "referral", "organisation": "",
                                        "given_at": AFTER}},
     "Expected `str` of length >= 1 - at `$.change.organisation`", "change.organisation"),
    ("no perpetrators counted", "POST", "/cases", _with(INCIDENT, perpetrator_count=0),
     "Expected `int` >= 1 - at `$.perpetrator_count`", "perpetrator_count"),
    # missing required fields (the top level has no path, so no field; nested: the object)
    ("missing narrative", "POST", "/cases", _without(INCIDENT, "narrative"),
     "Object missing required field `narrative`", "narrative"),
    ("missing nested field", "POST", STEP,
     _with(UPDATE, change=_without(FIRST_RESPONSE, "responder")),
     "Object missing required field `responder` - at `$.change`", "change.responder"),
    ("missing change", "POST", STEP, _without(UPDATE, "change"),
     "Object missing required field `change`", "change"),
    # unknown extra fields
    ("extra field", "POST", "/cases", _with(INCIDENT, extra=1),
     "Object contains unknown field `extra`", "extra"),
    ("extra nested field", "POST", STEP, _step(foo="bar"),
     "Object contains unknown field `foo` - at `$.change`", "change.foo"),
    ("extra user field", "POST", "/users", {"name": "lerato", "role": "admin", "admin": True},
     "Object contains unknown field `admin`", "admin"),
    # naive datetimes
    ("naive occurred_at", "POST", "/cases", _with(INCIDENT, occurred_at="2026-03-02T21:30:00"),
     "Expected `datetime` with a timezone component - at `$.occurred_at`", "occurred_at"),
    ("naive responded_at", "POST", STEP, _step(responded_at="2026-03-03T00:30:00"),
     "Expected `datetime` with a timezone component - at `$.change.responded_at`",
     "change.responded_at"),
    # empty lists
    ("no violence types", "POST", "/cases", _with(INCIDENT, violence_types=[]),
     "Expected `array` of length >= 1 - at `$.violence_types`", "violence_types"),
    ("no perpetrators", "POST", "/cases", _with(INCIDENT, perpetrators=[]),
     "Expected `array` of length >= 1 - at `$.perpetrators`", "perpetrators"),
    # malformed JSON
    ("malformed JSON", "POST", "/cases", Raw(b"{not json"),
     "malformed JSON: JSON is malformed: object keys must be strings (byte 1)", None),
    ("truncated JSON", "POST", STEP, Raw(b'{"expected_version": 1, "change": {'),
     "malformed JSON: Input data was truncated", None),
    ("empty body", "POST", "/cases", Raw(b""), "malformed JSON: Input data was truncated", None),
    ("trailing garbage", "POST", "/users", Raw(b'{"name": "lerato", "role": "admin"} x'),
     "malformed JSON: JSON is malformed: trailing characters (byte 37)", None),
    # expected_version
    ("expected_version 0", "POST", STEP, _with(UPDATE, expected_version=0),
     "Expected `int` >= 1 - at `$.expected_version`", "expected_version"),
    ("expected_version -1", "POST", STEP, _with(UPDATE, expected_version=-1),
     "Expected `int` >= 1 - at `$.expected_version`", "expected_version"),
    ("expected_version text", "POST", STEP, _with(UPDATE, expected_version="1"),
     "Expected `int`, got `str` - at `$.expected_version`", "expected_version"),
    ("expected_version float", "POST", STEP, _with(UPDATE, expected_version=1.5),
     "Expected `int`, got `float` - at `$.expected_version`", "expected_version"),
    ("expected_version bool", "POST", STEP, _with(UPDATE, expected_version=True),
     "Expected `int`, got `bool` - at `$.expected_version`", "expected_version"),
    ("expected_version null", "POST", STEP, _with(UPDATE, expected_version=None),
     "Expected `int`, got `null` - at `$.expected_version`", "expected_version"),
    ("expected_version missing", "POST", STEP, _without(UPDATE, "expected_version"),
     "Object missing required field `expected_version`", "expected_version"),
    # path and query parameters
    ("invalid case id in a command", "POST", "/cases/not-a-uuid/first-response", UPDATE,
     "Input should be a valid UUID, invalid character: found `n` at 0 - at path.case_id",
     "path.case_id"),
    ("invalid case id", "GET", "/cases/1234", None,
     "Input should be a valid UUID, invalid length: found 4 - at path.case_id",
     "path.case_id"),
    ("invalid case id for seals", "GET", "/cases/{case}x/seals", None,
     "Input should be a valid UUID, invalid character: found `x` at 36 - at path.case_id",
     "path.case_id"),
    ("invalid user name", "DELETE", "/users/Bad%20Name", None,
     "String should match pattern '^[a-z0-9][a-z0-9._-]{0,63}$' - at path.name", "path.name"),
    ("unknown status", "GET", "/cases?status=bogus", None,
     "Input should be 'open' or 'closed' - at query.status", "query.status"),
    ("unknown country filter", "GET", "/cases?country=XX", None,
     "Input should be 'AO', 'BW', 'KM', 'CD', 'SZ', 'LS', 'MG', 'MW', 'MU', 'MZ', 'NA', 'SC', "
     "'ZA', 'TZ', 'ZM' or 'ZW' - at query.country", "query.country"),
    ("limit 0", "GET", "/cases?limit=0", None,
     "Input should be greater than or equal to 1 - at query.limit", "query.limit"),
    ("limit too high", "GET", "/cases?limit=201", None,
     "Input should be less than or equal to 200 - at query.limit", "query.limit"),
    ("limit not a number", "GET", "/cases?limit=abc", None,
     "Input should be a valid integer, unable to parse string as an integer - at query.limit",
     "query.limit"),
    ("negative offset", "GET", "/cases?offset=-1", None,
     "Input should be greater than or equal to 0 - at query.offset", "query.offset"),
    ("bad date filter", "GET", "/cases?reported_from=not-a-date", None,
     "Input should be a valid datetime or date, invalid character in year - at "
     "query.reported_from", "query.reported_from"),
    ("district filter too long", "GET", "/cases?district=" + "x" * 61, None,
     "String should have at most 60 characters - at query.district", "query.district"),
]


@pytest.fixture(scope="module")
def case(module_lifecycle: Any) -> str:
    return str(module_lifecycle.new_case())


@pytest.fixture(scope="module")
def as_role(module_principals: Any) -> Callable[[str, str], dict[str, str]]:
    """Headers of a role allowed to call `url` (the supervisor may call every case route)."""

    def headers(method: str, url: str) -> dict[str, str]:
        admin = url.startswith("/users")
        return module_principals.headers("admin" if admin else "supervisor")
    return headers


@pytest.fixture
def unchanged(module_snap: Callable[[], Any]) -> Iterator[None]:
    """Fails the test if anything was written to either log during it."""
    before = module_snap()
    yield
    assert module_snap() == before


def test_the_limit_is_the_nodes(module_node: Node) -> None:
    assert module_node.config.max_body_bytes == LIMIT


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("method", "url", "body", "detail", "field"),
                         [pytest.param(*c[1:], id=c[0]) for c in BAD_INPUT])
def test_bad_input_is_refused(method: str, url: str, body: Any, detail: str, field: str | None,
                              case: str, module_client: TestClient,
                              as_role: Callable[[str, str], dict[str, str]]) -> None:
    url = url.format(case=case)
    headers = as_role(method, url)
    if isinstance(body, Raw):
        r = module_client.request(method, url, content=bytes(body),
                                  headers={**headers, "Content-Type": "application/json"})
    else:
        r = module_client.request(method, url, json=body, headers=headers)

    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": detail, "field": field}


def _padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with trailing whitespace (still valid JSON) to `size` bytes."""
    raw = msgspec.json.encode(body)
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def _chunks(raw: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(raw), size):
        yield raw[i : i + size]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("url", "body"), [
    ("/cases", INCIDENT), (STEP, UPDATE), ("/users", {"name": "lerato", "role": "paralegal"}),
])
def test_oversized_bodies_are_413(url: str, body: dict[str, Any], chunked: bool, case: str,
                                  module_client: TestClient,
                                  as_role: Callable[[str, str], dict[str, str]]) -> None:
    url = url.format(case=case)
    raw = _padded(body, LIMIT + 1)
    headers = {**as_role("POST", url), "Content-Type": "application/json"}

    r = module_client.post(url, content=_chunks(raw) if chunked else raw, headers=headers)

    sent = r.request.headers
    if chunked:
        assert "content-length" not in sent
        assert sent["transfer-encoding"] == "chunked"
    else:
        assert sent["content-length"] == str(LIMIT + 1)
    assert r.status_code == 413, r.text
    assert r.json() == {"detail": f"request body larger than {LIMIT} bytes", "field": None}


@pytest.mark.usefixtures("unchanged")
def test_a_huge_declared_length_is_refused_before_reading(
        module_client: TestClient, as_role: Callable[[str, str], dict[str, str]]) -> None:
    # Content-Length alone decides: the client says 10 GB is coming, the server does not wait.
    headers = {**as_role("POST", "/cases"), "Content-Type": "application/json",
               "Content-Length": str(10 * 1024**3)}
    r = module_client.post("/cases", content=b"{}", headers=headers)
    assert r.status_code == 413
    assert r.json()["detail"] == f"request body larger than {LIMIT} bytes"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_read(chunked: bool, module_client: TestClient,
                                             module_node: Node,
                                             as_role: Callable[[str, str], dict[str, str]]
                                             ) -> None:
    raw = _padded(INCIDENT, LIMIT)
    headers = {**as_role("POST", "/cases"), "Content-Type": "application/json"}
    r = module_client.post("/cases", content=_chunks(raw) if chunked else raw, headers=headers)
    assert r.status_code == 201, r.text
    assert module_node.cases.state(UUID(r.json()["case_id"])).version == 1

