"""Audit reports: one stable JSON schema for every audit, a terminal summary, an HTML page.

Schema "handsoff-audit-report/1" (fields are only ever added, never renamed or removed):

    schema     "handsoff-audit-report/1"
    kind       "region" | "node" | "bundle"
    subject    the region id, or the partner id of a node
    ok         true only when no finding has severity "error"
    checks     [{name, checked, failed}]  what was checked, how many items, how many failed
    findings   [{check, severity, reason, where, detail}]
               check     the check that found it (signatures, exactly_once, releases, ...)
               severity  "error" (the audit fails) or "warning" (worth a look)
               reason    a stable code (bad_signature, unknown_key, missing, conflict,
                         release_mismatch, ...)
               where     the event or release: "stream seq 17 (p1:4)", "release 3 incidents"
               detail    a sentence for people
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import msgspec

SCHEMA = "handsoff-audit-report/1"
Severity = Literal["error", "warning"]


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    check: str
    severity: Severity
    reason: str
    where: str
    detail: str


class Check(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    checked: int
    failed: int


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    schema: str = SCHEMA
    kind: Literal["region", "node", "bundle"]
    subject: str
    ok: bool
    checks: list[Check]
    findings: list[Finding]

    def json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"


@dataclass
class Collector:
    """Gathers counts and findings while an audit runs."""

    checked: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def count(self, check: str, n: int = 1) -> None:
        if check not in self.order:
            self.order.append(check)
        self.checked[check] += n

    def find(
        self, check: str, reason: str, where: str, detail: str, severity: Severity = "error"
    ) -> None:
        if check not in self.order:
            self.order.append(check)
        if severity == "error":
            self.failed[check] += 1
        self.findings.append(
            Finding(check=check, severity=severity, reason=reason, where=where, detail=detail)
        )

    def report(self, kind: Literal["region", "node", "bundle"], subject: str) -> AuditReport:
        return AuditReport(
            kind=kind,
            subject=subject,
            ok=not any(f.severity == "error" for f in self.findings),
            checks=[
                Check(name=c, checked=self.checked[c], failed=self.failed[c]) for c in self.order
            ],
            findings=self.findings,
        )


def summary(report: AuditReport, limit: int = 20) -> list[str]:
    """Lines for a terminal."""
    lines = [f"audit of {report.kind} {report.subject}: {'OK' if report.ok else 'FAILED'}"]
    for c in report.checks:
        state = "ok" if c.failed == 0 else f"{c.failed} FAILED"
        lines.append(f"  {c.name:16} {c.checked:9} checked  {state}")
    for f in report.findings[:limit]:
        lines.append(f"  {f.severity.upper():7} {f.check}/{f.reason} at {f.where}: {f.detail}")
    if len(report.findings) > limit:
        lines.append(
            f"  ... and {len(report.findings) - limit} more findings (see the JSON report)"
        )
    return lines


def to_html(report: AuditReport) -> str:
    """A self-contained page an auditor can hand on."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(c.name)}</td><td>{c.checked}</td>"
        f"<td class={'ok' if c.failed == 0 else 'bad'}>{c.failed}</td></tr>"
        for c in report.checks
    )
    findings = (
        "".join(
            f"<tr class={e(f.severity)}><td>{e(f.severity)}</td><td>{e(f.check)}</td>"
            f"<td>{e(f.reason)}</td><td>{e(f.where)}</td><td>{e(f.detail)}</td></tr>"
            for f in report.findings
        )
        or "<tr><td colspan=5>none</td></tr>"
    )
    verdict = "verified: every check passed" if report.ok else "FAILED: see the findings"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>handsoff audit: {e(report.kind)} {e(report.subject)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #bbb;padding:.3rem .6rem}}
.ok{{color:#1a6b1a}}.bad,.error{{color:#a00}}.warning{{color:#8a5a00}}
</style></head><body>
<h1>Audit of {e(report.kind)} {e(report.subject)}</h1>
<p><strong>{e(verdict)}</strong> (report schema {e(report.schema)})</p>
<h2>Checks</h2>
<table><thead><tr><th>check</th><th>items checked</th><th>failed</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>Findings</h2>
<table><thead><tr><th>severity</th><th>check</th><th>reason</th><th>where</th><th>detail</th>
</tr></thead><tbody>{findings}</tbody></table>
</body></html>
"""
