"""`handsoff audit region`: the region's streams from the start, public keys only.

HX_<R>_AGGREGATES  every signed statement: the aggregator's signature, one version of
                   each (release, indicator), grouped into releases
HX_<R>_EVENTS      every envelope in order (EventReplay): signatures, membership and key
                   validity at the stream's timestamp, exactly once per (partner,
                   number), no gaps; each release recomputed at its position and compared
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
from handsoff.federation.region import RegionDocument
from handsoff.federation.statements import AggregateStatement, StatementRejected
from handsoff.services.auditor.checkpoints import audit_checkpoints
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
    messages: Iterable[StreamMessage], region: RegionDocument, found: Collector
) -> list[PublishedRelease]:
    by_release: dict[int, dict[str, tuple[AggregateStatement, bytes]]] = defaultdict(dict)
    for m in messages:
        where = f"aggregates seq {m.seq}"
        found.count("statements")
        try:
            s = statements.verify(m.data, region)
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


def audit_messages(
    region: RegionDocument,
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
    replay = EventReplay(region, found, published_releases(aggregates, region, found))
    if workers > 1:
        from handsoff.services.auditor.parallel import ParallelVerifier

        with ParallelVerifier(region, workers) as verifier:
            for done, (m, examined) in enumerate(verifier.examined(events), 1):
                replay.add(m.seq, m.subject, m.headers, m.data, m.time, examined)
                if progress is not None:
                    progress(done, total)
    else:
        for done, m in enumerate(events, 1):
            replay.add(m.seq, m.subject, m.headers, m.data, m.time)
            if progress is not None:
                progress(done, total)
    replay.finish()
    audit_checkpoints(region, replay.published(), checkpoints, found)
    return found.report(kind, region.region)


async def audit_region(
    js: JetStreamContext, region: RegionDocument, progress: Progress | None = None
) -> AuditReport:
    """The streams read as they are replayed (memory does not grow with the events)."""
    r = region.region
    found = Collector()
    aggregates = await read_all(js, subjects.aggregates_stream(r), subjects.all_aggregates(r))
    replay = EventReplay(region, found, published_releases(aggregates, region, found))
    done = 0
    async for total, m in read_stream(js, subjects.events_stream(r), subjects.all_events(r)):
        replay.add(m.seq, m.subject, m.headers, m.data, m.time)
        done += 1
        if progress is not None:
            progress(done, total)
    replay.finish()
    stream = subjects.checkpoints_stream(r)
    checkpoints = await read_all(js, stream, subjects.all_checkpoints(r))
    checkpoints += await read_all(js, stream, subjects.all_witness(r))
    checkpoints.sort(key=lambda m: m.seq)
    audit_checkpoints(region, replay.published(), checkpoints, found)
    return found.report("region", r)
