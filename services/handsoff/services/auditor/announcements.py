"""The `announcements` check of a region audit: the region versions the aggregator says it
took (federation/announcements.py), read from the aggregates stream.

Each announcement is opened (its aggregator's signature, under the key of the version it
announces, and agreement with the document it carries); the documents they carry join the
versions given to the audit and are checked with them as one chain (membership.check_history,
anchored in the versions the auditor trusts). Then, in stream order, the schedule the events
are judged by (history.RegionHistory `taken`):

    an identical copy of an announcement (a republish after a crash)   counted once
    a document that is not among the versions the chain takes          not_chained
    the same version again, differently                                conflict
    a lower version, or a lower after_seq (events or checkpoints),
    than the one before                                                backwards

Checkpoints are judged the same way (`Decided`): by the version the aggregator's witness
held when it decided them, which the announcements say by the checkpoints stream's
sequence (`checkpoints_after_seq`, `checkpoints_pending`).

Findings name the announcement (`announcement of version N (aggregates seq S)`) or the
version (`unannounced`: releases cut under a version the aggregator had not announced before
publishing them, once it announces at all; reported by region.published_releases).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from handsoff.federation import subjects
from handsoff.federation.announcements import Opened, TakenRejected, open_taken
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import RegionDocument
from handsoff.services.auditor.report import Collector

if TYPE_CHECKING:  # region.py imports this module
    from handsoff.services.auditor.region import StreamMessage

ANNOUNCEMENTS = "announcements"


@dataclass(frozen=True)
class Announced:
    """A verified announcement and where it is in the aggregates stream."""

    seq: int
    opened: Opened
    time: datetime | None = None  # its stream time: the version's grace runs from it too

    @property
    def version(self) -> int:
        return self.opened.version

    @property
    def after_seq(self) -> int:
        return self.opened.after_seq

    @property
    def checkpoints_after_seq(self) -> int:
        return self.opened.taken.checkpoints_after_seq

    @property
    def where(self) -> str:
        return f"announcement of version {self.version} (aggregates seq {self.seq})"


def split(messages: Iterable[StreamMessage]) -> tuple[list[StreamMessage], list[StreamMessage]]:
    """The aggregates stream's (statements, announcements), each in stream order."""
    statements: list[StreamMessage] = []
    taken: list[StreamMessage] = []
    for m in messages:
        (taken if subjects.is_region_taken(m.subject) else statements).append(m)
    return statements, taken


def open_all(messages: Iterable[StreamMessage], region: str, found: Collector) -> list[Announced]:
    """Every announcement that verifies against the document it carries (the others are
    findings), in stream order."""
    out: list[Announced] = []
    for m in messages:
        found.count(ANNOUNCEMENTS)
        try:
            opened = open_taken(m.data, region)
        except TakenRejected as e:
            found.find(ANNOUNCEMENTS, e.reason, f"announcement (aggregates seq {m.seq})", str(e))
            continue
        out.append(Announced(m.seq, opened, m.time))
    return out


def schedule(
    announced: Sequence[Announced], history: RegionHistory, found: Collector
) -> list[Announced]:
    """The announcements the events are judged by, in order (module docstring); `history`:
    the versions the chain took (the documents announced among them)."""
    effective: list[Announced] = []
    seen: set[bytes] = set()
    for a in sorted(announced, key=lambda a: a.seq):
        if a.opened.signed in seen:
            continue  # the same announcement published again after a crash: one
        seen.add(a.opened.signed)
        doc = history.version(a.version)
        if doc is None or doc != a.opened.region.document:
            found.find(
                ANNOUNCEMENTS,
                "not_chained",
                a.where,
                f"the document it carries is not a version of the region's chain from the "
                f"versions trusted here (see the membership findings of version {a.version}); "
                "the messages after it are judged by the announcement before it",
            )
            continue
        last = effective[-1] if effective else None
        if last is not None and a.version == last.version:
            found.find(
                ANNOUNCEMENTS,
                "conflict",
                a.where,
                f"version {a.version} announced again, after events seq {a.after_seq}; it was "
                f"announced after events seq {last.after_seq} (aggregates seq {last.seq})",
            )
            continue
        if last is not None and (
            a.version < last.version
            or a.after_seq < last.after_seq
            or a.checkpoints_after_seq < last.checkpoints_after_seq
        ):
            found.find(
                ANNOUNCEMENTS,
                "backwards",
                a.where,
                f"version {a.version} after events seq {a.after_seq} (checkpoints seq "
                f"{a.checkpoints_after_seq}), announced after version {last.version} after "
                f"events seq {last.after_seq} (checkpoints seq {last.checkpoints_after_seq}; "
                f"aggregates seq {last.seq}): an aggregator takes only newer versions, and "
                "its positions never go back",
            )
            continue
        effective.append(a)
    return effective


class Decided:
    """The version each checkpoint was decided under by the aggregator's witness: the one
    announced last before the witness took it (its checkpoints stream sequence above the
    announcement's `checkpoints_after_seq`), or a later one whose announcement lists it as
    still to decide; before the first announcement, the version in force at its stream
    time. `announced`: the announcements judged by (`schedule`)."""

    def __init__(self, history: RegionHistory, announced: Sequence[Announced]) -> None:
        self._history = history
        self._docs = [history.version(a.version) or a.opened.region.document for a in announced]
        self._after = [a.checkpoints_after_seq for a in announced]
        self._pending = [frozenset(a.opened.taken.checkpoints_pending) for a in announced]

    def __call__(self, seq: int, at: datetime) -> RegionDocument:
        k = bisect_left(self._after, seq) - 1  # the last announcement before it was taken
        while k + 1 < len(self._after) and seq in self._pending[k + 1]:
            k += 1  # still to decide when the next version was taken
        return self._docs[k] if k >= 0 else self._history.in_force(at)
