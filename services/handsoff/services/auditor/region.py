"""`handsoff audit region`: the region's streams from the start, public keys only.

membership         every version of the region document given, checked as a chain
                   (membership.check_history); each message below is judged against the
                   version in force at its stream time (federation/history.py)
HX_<R>_AGGREGATES  every signed statement: the aggregator's signature, one version of
                   each (release, indicator), grouped into releases
HX_<R>_EVENTS      every envelope in order (EventReplay): signatures, membership and key
                   validity at the stream's timestamp, exactly once per (partner,
                   number), no gaps; each release recomputed at its position and compared;
                   which region versions the senders name (membership.VersionUse)
HX_<R>_CHECKPOINTS every checkpoint and cosignature (checkpoints.py)

`region` may be one document (every message judged by it, whatever its time) or a
RegionHistory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from handsoff.federation import statements, subjects
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import RegionDocument
from handsoff.federation.statements import AggregateStatement, StatementRejected
from handsoff.services.auditor.checkpoints import audit_checkpoints
from handsoff.services.auditor.examine import Examined
from handsoff.services.auditor.membership import VersionUse
from handsoff.services.auditor.replay import RELEASES, EventReplay, PublishedRelease
from handsoff.services.auditor.report import AuditReport, Collector

READ_TIMEOUT_S = 10.0
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class StreamMessage:
    """One stored message, as read back from a stream or from a bundle."""

    seq: int
    time: datetime
    subject: str
    headers: dict[str, str]
    data: bytes


async def read_stream(
    js: JetStreamContext, stream: str, subject: str
) -> AsyncIterator[tuple[int, StreamMessage]]:
    """(total, message) for every message of `stream` on `subject`, in order, from the
    start, as they stand when the read begins (later ones are left for the next audit)."""
    info = await js.stream_info(stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    if total == 0:
        return
    sub = await js.subscribe(
        subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        for _ in range(total):
            m = await sub.next_msg(timeout=READ_TIMEOUT_S)
            md = m.metadata
            headers = dict(m.headers or {})
            yield total, StreamMessage(md.sequence.stream, md.timestamp, m.subject, headers, m.data)
    finally:
        await sub.unsubscribe()


async def read_all(js: JetStreamContext, stream: str, subject: str) -> list[StreamMessage]:
    return [m async for _, m in read_stream(js, stream, subject)]


def published_releases(
    messages: Iterable[StreamMessage],
    region: RegionDocument | RegionHistory,
    found: Collector,
) -> list[PublishedRelease]:
    """Each statement verified with the aggregator key of the version in force when it was
    stored."""
    history = RegionHistory.of(region)
    by_release: dict[int, dict[str, tuple[AggregateStatement, bytes]]] = defaultdict(dict)
    for m in messages:
        where = f"aggregates seq {m.seq}"
        found.count("statements")
        try:
            s = statements.verify(m.data, history.in_force(m.time))
        except StatementRejected as e:
            found.find("statements", e.reason, where, str(e))
            continue
        held = by_release[s.release].get(s.indicator)
        if held is not None and held[1] != m.data:
            found.find(
                "statements",
                "conflict",
                f"release {s.release} {s.indicator}",
                "published twice with different contents",
            )
            continue
        by_release[s.release][s.indicator] = (s, m.data)
    out = []
    for number in sorted(by_release):
        group = {i: s for i, (s, _) in by_release[number].items()}
        inputs = {s.inputs for s in group.values()}
        if len(inputs) != 1:
            found.find(
                RELEASES,
                "inputs",
                f"release {number}",
                "its statements name different inputs",
            )
            continue
        out.append(PublishedRelease(number, group))
    return out


def _replay(
    history: RegionHistory, aggregates: Iterable[StreamMessage], found: Collector
) -> tuple[EventReplay, VersionUse]:
    """The replay of the events, with the releases to recompute, and what watches the
    versions the messages and releases name."""
    used = VersionUse(history)
    releases = published_releases(aggregates, history, found)
    for published in releases:
        first = next(iter(published.statements.values()))
        used.note_release(published.number, first.region_version)
    return EventReplay(history.latest, found, releases, history=history), used


def audit_messages(
    region: RegionDocument | RegionHistory,
    events: Iterable[StreamMessage],
    aggregates: Iterable[StreamMessage],
    *,
    total: int = 0,
    progress: Progress | None = None,
    found: Collector | None = None,
    kind: Literal["region", "bundle"] = "region",
    workers: int = 1,
    checkpoints: Iterable[StreamMessage] = (),
) -> AuditReport:
    """The region audit over messages already read (from the streams or a bundle);
    `workers` > 1 verifies signatures in that many processes (parallel.py)."""
    found = found or Collector()
    history = RegionHistory.of(region)
    replay, used = _replay(history, aggregates, found)
    if workers > 1:
        from handsoff.services.auditor.parallel import ParallelVerifier

        with ParallelVerifier(history, workers) as verifier:
            for done, (m, examined) in enumerate(verifier.examined(events), 1):
                used.note(m.headers, m.time)
                replay.add(m.seq, m.subject, m.headers, m.data, m.time, examined)
                if progress is not None:
                    progress(done, total)
    else:
        for done, m in enumerate(events, 1):
            used.note(m.headers, m.time)
            replay.add(m.seq, m.subject, m.headers, m.data, m.time)
            if progress is not None:
                progress(done, total)
    replay.finish()
    used.report(found)
    audit_checkpoints(history, replay.published(), checkpoints, found)
    return found.report(kind, history.region)


async def audit_region(
    js: JetStreamContext,
    region: RegionDocument | RegionHistory,
    progress: Progress | None = None,
    *,
    found: Collector | None = None,
    workers: int = 1,
) -> AuditReport:
    """The streams read as they are replayed (memory does not grow with the events).
    `found`: a collector holding the membership check already (membership.check_history).
    `workers` > 1: envelopes examined in that many processes while the stream is read."""
    history = RegionHistory.of(region)
    r = history.region
    found = found or Collector()
    aggregates = await read_all(js, subjects.aggregates_stream(r), subjects.all_aggregates(r))
    replay, used = _replay(history, aggregates, found)
    done = 0

    def fold(m: StreamMessage, examined: Examined | None, total: int) -> None:
        nonlocal done
        used.note(m.headers, m.time)
        replay.add(m.seq, m.subject, m.headers, m.data, m.time, examined)
        done += 1
        if progress is not None:
            progress(done, total)

    events = read_stream(js, subjects.events_stream(r), subjects.all_events(r))
    if workers > 1:
        from handsoff.services.auditor.parallel import CHUNK, ParallelVerifier

        total = 0
        with ParallelVerifier(history, workers) as verifier:
            chunk: list[StreamMessage] = []
            async for total, m in events:
                chunk.append(m)
                if len(chunk) == CHUNK:
                    for m_, examined in verifier.feed(chunk):
                        fold(m_, examined, total)
                    chunk = []
            if chunk:
                for m_, examined in verifier.feed(chunk):
                    fold(m_, examined, total)
            for m_, examined in verifier.flush():
                fold(m_, examined, total)
    else:
        async for total, m in events:
            fold(m, None, total)
    replay.finish()
    used.report(found)
    stream = subjects.checkpoints_stream(r)
    checkpoints = await read_all(js, stream, subjects.all_checkpoints(r))
    checkpoints += await read_all(js, stream, subjects.all_witness(r))
    checkpoints.sort(key=lambda m: m.seq)
    audit_checkpoints(history, replay.published(), checkpoints, found)
    return found.report("region", r)
