"""Structured log lines: the formatter (logfmt and JSON, extras, exceptions without their
messages) and `handsoff node serve`, whose every stderr line is one structured record."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx2 as httpx
import pytest

from handsoff.services.logs import StructuredFormatter
from handsoff.services.natsserver import free_port, wait_for_port
from support import PASSPHRASE, make_node


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("Survivor Jane, +267 555 0100")
        except ValueError:
            exc_info = sys.exc_info()
    r = logging.LogRecord("handsoff.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    r.__dict__.update(extra)
    return r


def logfmt_pairs(line: str) -> dict[str, str]:
    """A small logfmt reader (quoted values with \\" and \\\\ escapes)."""
    out, i = {}, 0
    while i < len(line):
        eq = line.index("=", i)
        key, i = line[i:eq], eq + 1
        if line[i : i + 1] == '"':
            i += 1
            value = []
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                    value.append({"n": "\n", "r": "\r"}.get(line[i], line[i]))
                else:
                    value.append(line[i])
                i += 1
            out[key], i = "".join(value), i + 2
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            out[key], i = line[i:end], end + 1
    return out


def test_logfmt_lines_carry_the_extras_quoted_where_needed() -> None:
    line = StructuredFormatter("logfmt").format(
        record("release %s kept", 3, position=120, error='a "b"\nc', empty="")
    )
    assert "\n" not in line
    assert line.startswith("ts=")
    fields = logfmt_pairs(line)
    assert fields["level"] == "warning"
    assert fields["logger"] == "handsoff.test"
    assert fields["msg"] == "release 3 kept"
    assert (fields["position"], fields["error"], fields["empty"]) == ("120", 'a "b"\nc', "")
    assert fields["ts"].endswith("Z")


def test_json_lines() -> None:
    line = StructuredFormatter("json").format(record("hello %s", "there", n=1))
    data = json.loads(line)
    assert (data["level"], data["msg"], data["n"]) == ("warning", "hello there", 1)
    assert set(data) == {"ts", "level", "logger", "msg", "n"}


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_an_exception_is_its_type_and_place_never_its_message(fmt: str) -> None:
    line = StructuredFormatter(fmt).format(record("failed", exc=True))  # type: ignore[arg-type]
    assert "ValueError" in line
    assert "test_logs.py" in line
    assert "Survivor" not in line
    # the phone number, not "555" alone: a timestamp's milliseconds can be .555
    assert "+267" not in line
    assert "555 0100" not in line
    assert "Traceback" not in line


def test_node_serve_writes_one_structured_record_per_line(tmp_path: Path) -> None:
    make_node(tmp_path / "node").close()
    port = free_port()
    env = dict(os.environ, HANDSOFF_PASSPHRASE=PASSPHRASE.decode())
    env.pop("HANDSOFF_PASSPHRASE_FILE", None)
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "handsoff.services.cli",
                "node",
                "serve",
                "--dir",
                str(tmp_path / "node"),
                "--port",
                str(port),
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    case_id = uuid.uuid4()
    try:
        wait_for_port(port, 30, proc)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").json()["ready"] is True
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/cases/{case_id}").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    lines = stderr.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON record
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's lines too
    access = [r for r in records if r["logger"] == "handsoff.access"]
    assert [(r["method"], r["route"], r["status"]) for r in access] == [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 401),
        ("GET", "/cases/{case_id}", 401),
    ]
    text = stderr.read_text()
    assert str(case_id) not in text
    assert "127.0.0.1:" not in text.replace(f"127.0.0.1:{port}", "")  # no client address
