"""A small HTTP client for a node's API, as a paralegal's tool would use it (stdlib only)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any
from uuid import UUID

import msgspec

from handsoff.events import CaseChange, CaseClosed, ConsentCorrected, IncidentReported
from handsoff.services.errors import ServiceError
from handsoff.services.simulate import Story


class ApiError(ServiceError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class _Created(msgspec.Struct):
    case_id: UUID
    version: int


class _Versioned(msgspec.Struct):
    version: int


class NodeClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(  # noqa: S310 (the URL is the operator's own node)
            self.base_url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise ApiError(e.code, detail) from None
        except urllib.error.URLError as e:
            raise ServiceError(f"cannot reach {self.base_url}: {e.reason}") from None

    def report(self, incident: IncidentReported) -> tuple[UUID, int]:
        created = msgspec.json.decode(
            self.request("POST", "/cases", msgspec.json.encode(incident)), type=_Created
        )
        return created.case_id, created.version

    def record(self, case_id: UUID, expected_version: int, step: str, change: CaseChange) -> int:
        body = msgspec.json.encode({"expected_version": expected_version, "change": change})
        raw = self.request("POST", f"/cases/{case_id}/{step}", body)
        return msgspec.json.decode(raw, type=_Versioned).version

    def get(self, path: str) -> Any:
        return msgspec.json.decode(self.request("GET", path))


def record_story(paralegal: NodeClient, story: Story, supervisor: NodeClient | None) -> int:
    """Records one synthetic story as a paralegal's tool would; steps only a supervisor may
    record (closing, consent corrections) are skipped without a supervisor's client.
    Returns the number of changes recorded."""
    from handsoff.services.api.app import STEPS  # the path of each step

    step_of = {s.change: s.path for s in STEPS}
    case_id, version = paralegal.report(story.incident)
    recorded = 1
    for change in story.changes:
        supervised = isinstance(change, CaseClosed | ConsentCorrected)
        if supervised and supervisor is None:
            continue
        client = supervisor if supervised and supervisor is not None else paralegal
        version = client.record(case_id, version, step_of[type(change)], change)
        recorded += 1
    return recorded
