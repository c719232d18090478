"""Property-based tests from the node's own OpenAPI document (schemathesis), once per role."""

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
    "POST /keys/rotate",
    "GET /users",
    "POST /users",
    "DELETE /users/{name}",
    "GET /healthz",
)
STATS: dict = {}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture(scope="module")
def api_schema(module_app: FastAPI) -> Any:
    # As `handsoff node serve` runs it: with its passphrase, so POST /keys/rotate really rotates.
    module_app.state.passphrase = PASSPHRASE
    return schemathesis.openapi.from_asgi("/openapi.json", module_app)


@pytest.fixture(scope="module")
def existing_case(module_lifecycle: Any) -> str:
    case_id, _ = module_lifecycle.full_case()
    return str(case_id)


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    labels = {op.ok().label for op in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
@pytest.mark.parametrize("role", ROLES)
def test_api_conforms(
    api_schema: Any, module_principals: Any, existing_case: str, role: str, label: str
) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    strategies = [operation.as_strategy(generation_mode=m) for m in GenerationMode]
    if "{case_id}" in path:
        strategies += [
            operation.as_strategy(generation_mode=m, path_parameters={"case_id": existing_case})
            for m in GenerationMode
        ]
    headers = module_principals.headers(role)

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        r = case.call_and_validate(headers=headers, checks=CHECKS)
        STATS.setdefault((role, label), []).append(r.status_code)

    fuzz()


def test_zz_stats() -> None:
    import collections
    for k, v in STATS.items():
        print(k, len(v), dict(collections.Counter(v)))
