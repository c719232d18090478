"""Structured log lines for the long-running services (`node serve`, `aggregator serve`).

One line per record, either logfmt (the default, readable on a terminal and parsed by Loki,
Vector, promtail, ...) or JSON:

    ts=2026-03-02T21:30:00.123Z level=info logger=handsoff.aggregator msg="release kept" release=3

Fields: `ts` (UTC), `level`, `logger`, `msg` (the record's message), then every `extra={...}`
field the call passed. Privacy: what a line holds is decided where it is logged (no personal
data, no case content, ever; tests/api/test_api_logs.py and the federation privacy canary
capture every logger at DEBUG to hold that). The formatter adds one safeguard of its own: an
exception is written as its type and where it was raised, never its message or a full
traceback, because messages of third-party exceptions can carry the values they choked on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Final, Literal

LogFormat = Literal["logfmt", "json"]
LOG_FORMATS: Final = ("logfmt", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

# Attributes every LogRecord has: anything else on a record came in through `extra`.
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}  # color_message: uvicorn's copy


def _fields(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "ts": datetime.fromtimestamp(record.created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            out.setdefault(key, value)
    if record.exc_info and record.exc_info[0] is not None:
        kind, _, tb = record.exc_info
        out["exc"] = kind.__name__
        frames = traceback.extract_tb(tb)
        if frames:
            last = frames[-1]
            out["exc_at"] = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} {last.name}"
    return out


def _logfmt_value(value: object) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


class StructuredFormatter(logging.Formatter):
    """A log record as one logfmt or JSON line (see the module's docstring)."""

    def __init__(self, fmt: LogFormat = "logfmt") -> None:
        super().__init__()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if self.fmt == "json":
            return json.dumps(fields, default=str, ensure_ascii=False, separators=(",", ":"))
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def configure_logging(fmt: LogFormat = "logfmt", level: str = "info") -> None:
    """At a service's entry point (never in a library, never in tests): every logger,
    uvicorn's included (started with `log_config=None`), writes structured lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """`--log-format` and `--log-level` for a serving command."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="logfmt",
        help="log lines as logfmt key=value pairs (default) or JSON, one per line on stderr",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
