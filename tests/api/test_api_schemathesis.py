"""Property-based tests from the node's own OpenAPI document (schemathesis), for every role.

Each operation is fuzzed with schema-valid and schema-invalid requests, carrying a valid token
of each role in turn, against one real node (module scope, so it is not re-initialised per
example). Path parameters are random, or the id of an existing case (one closed after its
whole life, one just reported) so the write and read paths behind the 404 are reached too.

Checks: no 5xx, every response matches its documented schema, status code, content type and
headers, and schema-invalid data is rejected.

Driven through `operation.as_strategy()` and Hypothesis rather than `schema.parametrize()`:
the lazy fixture loader of schemathesis 4.32 sets `request.node._nodeid`, which pytest 9.2 no
longer has (AttributeError), and an eager schema would need a node at import time.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support import PASSPHRASE

ROLES = ("paralegal", "supervisor", "auditor", "admin")
OPERATIONS = (
    "POST /cases",
    "POST /cases/{case_id}/first-response",
    "POST /cases/{case_id}/referral-made",
    "POST /cases/{case_id}/referral-accepted",
    "POST /cases/{case_id}/referral-declined",
    "POST /cases/{case_id}/referral-completed",
    "POST /cases/{case_id}/police-report",
    "POST /cases/{case_id}/police-response",
    "POST /cases/{case_id}/court-case",
    "POST /cases/{case_id}/court-judgment",
    "POST /cases/{case_id}/court-withdrawal",
    "POST /cases/{case_id}/consent-given",
    "POST /cases/{case_id}/consent-withdrawn",
    "POST /cases/{case_id}/consent-correction",
    "POST /cases/{case_id}/close",
    "GET /cases",
    "GET /cases/{case_id}",
    "GET /cases/{case_id}/seals",
    "GET /verification",
    "GET /keys",
    "GET /status",
    "GET /referrals",
    "GET /referrals/{referral_id}",
    "POST /referrals/{referral_id}/accepted",
    "POST /referrals/{referral_id}/declined",
    "POST /referrals/{referral_id}/completed",
    "POST /keys/rotate",
    "POST /checkpoint",
    "GET /users",
    "POST /users",
    "DELETE /users/{name}",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
)
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.fixture(scope="module")
def api_schema(module_app: FastAPI) -> Any:
    # As `handsoff node serve` runs it: with its passphrase, so POST /keys/rotate rotates for
    # real (without it the answer is a documented 503, tested in test_api_commands.py).
    module_app.state.passphrase = PASSPHRASE
    return schemathesis.openapi.from_asgi("/openapi.json", module_app)


@pytest.fixture(scope="module")
def existing_cases(module_lifecycle: Any) -> list[str]:
    closed, _ = module_lifecycle.full_case()
    fresh = module_lifecycle.new_case()
    return [str(closed), str(fresh)]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    labels = [op.ok().label for op in api_schema.get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
@pytest.mark.parametrize("role", ROLES)
def test_api_conforms_to_its_schema(api_schema: Any, module_principals: Any,
                                    existing_cases: list[str], role: str, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    strategies = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]
    if "{case_id}" in path:
        strategies += [
            operation.as_strategy(generation_mode=mode, path_parameters={"case_id": case_id})
            for mode in GenerationMode for case_id in existing_cases]
    headers = module_principals.headers(role)

    @FUZZ
    @given(case=st.one_of(strategies))
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    fuzz()
