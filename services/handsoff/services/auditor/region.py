"""`handsoff audit region`: the region's streams from the start, public keys only.

HX_<R>_AGGREGATES  every signed statement: the aggregator's signature, one version of
                   each (release, indicator), grouped into releases
HX_<R>_EVENTS      every envelope in order (EventReplay): signatures, membership and key
                   validity at the stream's timestamp, exactly once per (partner,
                   number), no gaps; each release recomputed at its position and compared
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from handsoff.federation import statements, subjects
from handsoff.federation.region import RegionDocument
from handsoff.federation.statements import AggregateStatement, StatementRejected
from handsoff.services.auditor.replay import RELEASES, EventReplay, PublishedRelease
from handsoff.services.auditor.report import AuditReport, Collector

READ_TIMEOUT_S = 10.0
Progress = Callable[[int, int], None]  # (done, total)


async def read_stream(
    js: JetStreamContext, stream: str, subject: str
) -> AsyncIterator[tuple[int, Msg]]:
    """(total, message) for every message of a stream, in order, from the start."""
    info = await js.stream_info(stream)
    total, last = info.state.messages, info.state.last_seq
    if total == 0:
        return
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            m = await sub.next_msg(timeout=READ_TIMEOUT_S)
            yield total, m
            if m.metadata.sequence.stream >= last:
                return
    finally:
        await sub.unsubscribe()


async def published_releases(
    js: JetStreamContext, region: RegionDocument, found: Collector
) -> list[PublishedRelease]:
    by_release: dict[int, dict[str, tuple[AggregateStatement, bytes]]] = defaultdict(dict)
    stream = subjects.aggregates_stream(region.region)
    async for _, m in read_stream(js, stream, subjects.all_aggregates(region.region)):
        where = f"aggregates seq {m.metadata.sequence.stream}"
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


async def audit_region(
    js: JetStreamContext, region: RegionDocument, progress: Progress | None = None
) -> AuditReport:
    found = Collector()
    releases = await published_releases(js, region, found)
    replay = EventReplay(region, found, releases)
    stream = subjects.events_stream(region.region)
    done = 0
    async for total, m in read_stream(js, stream, subjects.all_events(region.region)):
        replay.add(m.metadata.sequence.stream, m.subject, m.headers, m.data, m.metadata.timestamp)
        done += 1
        if progress is not None:
            progress(done, total)
    replay.finish()
    return found.report("region", region.region)
