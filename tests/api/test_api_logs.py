"""No personal data in any log line: not on success, not on any error path.

Every logger (the node's, FastAPI's, uvicorn's, eventsourcing's, the test client's) is
captured at DEBUG while a whole case life runs over HTTP with a marker in every personal
field, followed by failing requests that carry personal values: bad input (422, the value in
a wrongly typed field), conflicts (409), unknown cases (404), refused tokens (401/403), a
body too large (413) and an integrity failure (500, which the node does log).

The same canary covers the operations endpoints (/healthz, /readyz, /metrics): nothing they
answer may hold a marker, a personal value or a case id; and the access log names routes
(`/cases/{case_id}`), never the ids in the path.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from fastapi.testclient import TestClient

from handsoff.services.node.node import Node

NAMED_LOGGERS = ("handsoff", "handsoff.api", "uvicorn", "uvicorn.error", "uvicorn.access",
                 "fastapi", "starlette", "eventsourcing", "httpx2", "httpx", "httpcore")

LIFE = (
    ("first-response", "paralegal"), ("consent-given", "paralegal"),
    ("referral-made", "paralegal"), ("referral-accepted", "paralegal"),
    ("referral-completed", "paralegal"), ("police-consent", "paralegal"),
    ("police-report", "paralegal"), ("police-response", "paralegal"),
    ("court-case", "paralegal"), ("consent-withdrawn", "paralegal"),
    ("consent-correction", "supervisor"), ("close", "supervisor"),
)


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG on every logger, including any that does not propagate to the root."""
    caplog.set_level(logging.DEBUG)
    for name in NAMED_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    detached = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            if logger.level > logging.DEBUG:
                caplog.set_level(logging.DEBUG, logger=name)
            if not logger.propagate:
                logger.addHandler(caplog.handler)
                detached.append(logger)
    try:
        yield caplog
    finally:
        for logger in detached:
            logger.removeHandler(caplog.handler)


def _path(step: str) -> str:
    return "consent-given" if step == "police-consent" else step


def _record_text(record: logging.LogRecord) -> str:
    """Everything a handler could write out of a record."""
    parts = [logging.Formatter().format(record), repr(record.msg), repr(record.args),
             repr(record.__dict__)]
    return "\n".join(parts)


def _tamper(node: Node, case_id: UUID, version: int) -> None:
    """Flips one byte of one stored event's encrypted body, behind the node's back."""
    db = sqlite3.connect(node.paths.data / "cases.sqlite")
    try:
        rowid, state = db.execute(
            "SELECT rowid, state FROM stored_events WHERE originator_id=? AND "
            "originator_version=?", (case_id.hex, version)).fetchone()
        changed = bytearray(state)
        changed[-1] ^= 0x01
        db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (bytes(changed), rowid))
        db.commit()
    finally:
        db.close()


def test_no_personal_data_in_any_log_line(every_log: pytest.LogCaptureFixture,
                                          client: TestClient, principals: Any, lifecycle: Any,
                                          node: Node) -> None:
    h = principals.headers
    personal = lifecycle.personal_values
    incident = msgspec.to_builtins(lifecycle.incident())

    # A whole life over HTTP, and reading it back (the history holds the personal data).
    r = client.post("/cases", json=incident, headers=h("paralegal"))
    assert r.status_code == 201, r.text
    case_id, version = r.json()["case_id"], 1
    for step, role in LIFE:
        r = client.post(f"/cases/{case_id}/{_path(step)}",
                        json=lifecycle.body(version, step), headers=h(role))
        assert r.status_code == 200, (step, r.text)
        version += 1
    read = client.get(f"/cases/{case_id}", headers=h("supervisor"))
    assert all(value in read.text for value in personal)
    for path in ("/cases", f"/cases/{case_id}/seals", "/verification"):
        assert client.get(path, headers=h("supervisor")).status_code == 200
    ops = [client.get("/healthz"), client.get("/readyz"),
           client.get("/metrics", headers=h("auditor"))]
    assert [r.status_code for r in ops] == [200, 200, 200]
    assert 'handsoff_node_events_recorded_total{log="cases"}' in ops[2].text
    ops_text = "\n".join(r.text for r in ops)
    assert [v for v in [lifecycle.marker, *personal, case_id, case_id.replace("-", "")]
            if v in ops_text] == []
    other, other_version = lifecycle.ready_for("court-judgment")
    assert client.post(f"/cases/{other}/court-withdrawal",
                       json=lifecycle.body(other_version, "court-withdrawal"),
                       headers=h("paralegal")).status_code == 200

    # 422: personal values in wrongly typed or unknown-code fields, and in malformed JSON.
    name, contact, narrative, responder, note, case_number = personal
    bad = [
        ("/cases", {**incident, "survivor_gender": name}),
        ("/cases", {**incident, "perpetrator_count": narrative}),
        ("/cases", {**incident, "survivor_name": [name]}),
        ("/cases", {**incident, "occurred_at": contact}),
        ("/cases", {**incident, "narrative": narrative * 200}),
        ("/cases", {**incident, name: contact}),
        (f"/cases/{other}/first-response",
         {"expected_version": other_version + 1,
          "change": {"responded_at": responder, "responder_role": note,
                     "responder": responder}}),
        (f"/cases/{other}/first-response", {"expected_version": case_number}),
    ]
    for url, body in bad:
        r = client.post(url, json=body, headers=h("paralegal"))
        assert r.status_code == 422, (url, r.text)
    echoed = client.post("/cases", json={**incident, "survivor_gender": name},
                         headers=h("paralegal"))
    assert name in echoed.text  # the sender gets the offending value back, the log does not
    r = client.post("/cases", content=b'{"survivor_name": "' + name.encode() + b'",',
                    headers={**h("paralegal"), "Content-Type": "application/json"})
    assert r.status_code == 422

    # 409: stale version and a change after close, each carrying personal data.
    r = client.post(f"/cases/{other}/first-response",
                    json=lifecycle.body(1, "first-response"), headers=h("paralegal"))
    assert r.status_code == 409, r.text
    r = client.post(f"/cases/{case_id}/referral-made",
                    json=lifecycle.body(version, "referral-made", referral_id="again"),
                    headers=h("paralegal"))
    assert r.status_code == 409, r.text
    # 404, 401, 403 and 413 with personal data in the body.
    r = client.post(f"/cases/{uuid4()}/first-response",
                    json=lifecycle.body(1, "first-response"), headers=h("paralegal"))
    assert r.status_code == 404
    for who, status in (("no token", 401), ("wrong token", 401), ("auditor", 403)):
        r = client.post("/cases", json=incident, headers=h(who))
        assert r.status_code == status
    big = {**incident, "narrative": narrative + " " * (node.config.max_body_bytes + 1)}
    assert client.post("/cases", json=big, headers=h("paralegal")).status_code == 413

    # 500: an event altered on disk. The node logs this one (naming the event only).
    _tamper(node, UUID(case_id), 2)
    r = client.get(f"/cases/{case_id}", headers=h("paralegal"))
    assert r.status_code == 500
    assert r.json()["detail"].startswith("integrity failure: cases event ")

    records = every_log.records
    node_errors = [r for r in records if r.name == "handsoff.api"]
    assert [r.levelno for r in node_errors] == [logging.ERROR]  # the capture sees the node
    assert f"cases event {case_id} v2" in node_errors[0].getMessage()
    assert any(r.name == "httpx2" for r in records)  # and the client's request lines
    access = [r for r in records if r.name == "handsoff.access"]
    assert {"/cases", "/cases/{case_id}", "/metrics"} <= {r.__dict__["route"] for r in access}
    assert [r for r in access if case_id in _record_text(r)] == []
    leaks = [(r.name, value) for r in records for value in [lifecycle.marker, *personal]
             if value in _record_text(r)]
    assert leaks == []
    assert lifecycle.marker not in every_log.text
