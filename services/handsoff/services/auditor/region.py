"""`handsoff audit region`: the region's streams from the start, public keys only.

HX_<R>_AGGREGATES  the aggregator's announcements of the region versions it took
                   (announcements.py), then every signed statement: the aggregator's
                   signature, one version of each (release, indicator), grouped into
                   releases, each cut under a version announced before it
membership         every version of the region document given and announced, checked as
                   a chain anchored in the versions given (membership.check_history)
HX_<R>_EVENTS      every envelope in order (EventReplay): signatures, membership and key
                   validity at the stream's timestamp, exactly once per (partner,
                   number), no gaps; each release recomputed at its position and compared;
                   which region versions the senders name (membership.VersionUse). Each
                   message is judged by the version the aggregator announced for its
                   sequence number (the newest announcement with after_seq below it), or,
                   before the first announcement (an aggregator from before them), by the
                   version in force at its stream time (federation/history.py)
HX_<R>_CHECKPOINTS every checkpoint and cosignature (checkpoints.py)

`region`: the signed versions the auditor holds (a sequence of SignedRegion: checked as a
chain together with the announced ones, and the anchor of that chain), or versions already
checked, as one document (every message judged by it, whatever its time, unless announced
otherwise) or a RegionHistory; an announced document must then be one of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from handsoff.federation import statements, subjects
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import RegionDocument, SignedRegion
from handsoff.federation.statements import AggregateStatement, StatementRejected
from handsoff.services.auditor import announcements
from handsoff.services.auditor.announcements import ANNOUNCEMENTS, Announced
from handsoff.services.auditor.checkpoints import audit_checkpoints
from handsoff.services.auditor.examine import Examined
from handsoff.services.auditor.membership import VersionUse, check_history
from handsoff.services.auditor.replay import RELEASES, EventReplay, PublishedRelease
from handsoff.services.auditor.report import AuditReport, Collector

READ_TIMEOUT_S = 10.0
Progress = Callable[[int, int], None]  # (done, total)
# What an audit is given: signed versions to check as a chain (and anchor it in), or
# versions already checked.
Versions = RegionDocument | RegionHistory | Sequence[SignedRegion]


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


class _Named(msgspec.Struct, frozen=True):
    region_version: int


_NAMED = msgspec.json.Decoder(_Named)


def _named_version(signed: bytes) -> int | None:
    """The region version a signed statement names (not verified: to pick the key)."""
    try:
        return _NAMED.decode(statements.statement_bytes(signed)).region_version
    except (msgspec.DecodeError, ValueError):
        return None


async def read_checkpoints(js: JetStreamContext, region: str) -> list[StreamMessage]:
    """The checkpoints stream in stream order: partners' checkpoints and the witness's
    cosignatures."""
    stream = subjects.checkpoints_stream(region)
    checkpoints = await read_all(js, stream, subjects.all_checkpoints(region))
    checkpoints += await read_all(js, stream, subjects.all_witness(region))
    return sorted(checkpoints, key=lambda m: m.seq)


async def read_streams(
    js: JetStreamContext, region: str
) -> tuple[list[StreamMessage], list[StreamMessage], list[StreamMessage]]:
    """(events, aggregates, checkpoints) of the region, as stored (what a bundle holds)."""
    events = await read_all(js, subjects.events_stream(region), subjects.all_events(region))
    aggregates = await read_all(
        js, subjects.aggregates_stream(region), subjects.all_aggregates(region)
    )
    return events, aggregates, await read_checkpoints(js, region)


def published_releases(
    messages: Iterable[StreamMessage],
    region: RegionDocument | RegionHistory,
    found: Collector,
    announced: Sequence[Announced] = (),
) -> list[PublishedRelease]:
    """Each statement verified with the aggregator key of the version it was cut under:
    once the aggregator announces versions (`announced`, in the same stream), the version
    it names if announced before it, else the one announced last before it; before that,
    the version in force when it was stored. A release cut under a version not announced
    before it, once there are announcements, is `unannounced`."""
    history = RegionHistory.of(region)
    taken = sorted(announced, key=lambda a: a.seq)
    held: dict[int, RegionDocument] = {}
    last: RegionDocument | None = None
    unannounced: dict[int, set[int]] = defaultdict(set)
    by_release: dict[int, dict[str, tuple[AggregateStatement, bytes]]] = defaultdict(dict)
    for m in messages:
        while taken and taken[0].seq < m.seq:
            a = taken.pop(0)
            last = held[a.version] = history.version(a.version) or a.opened.region.document
        where = f"aggregates seq {m.seq}"
        found.count("statements")
        if last is None:
            doc = history.in_force(m.time)
        else:
            named = _named_version(m.data)
            doc = held.get(named, last) if named is not None else last
        try:
            s = statements.verify(m.data, doc)
        except StatementRejected as e:
            found.find("statements", e.reason, where, str(e))
            continue
        if last is not None and s.region_version not in held:
            unannounced[s.region_version].add(s.release)
        held_statement = by_release[s.release].get(s.indicator)
        if held_statement is not None and held_statement[1] != m.data:
            found.find(
                "statements",
                "conflict",
                f"release {s.release} {s.indicator}",
                "published twice with different contents",
            )
            continue
        by_release[s.release][s.indicator] = (s, m.data)
    for version, numbers in sorted(unannounced.items()):
        found.find(
            ANNOUNCEMENTS,
            "unannounced",
            f"region version {version}",
            f"release(s) {', '.join(map(str, sorted(numbers)))} were cut under it, but the "
            "aggregator, which announces the versions it takes, had not announced it before "
            "publishing them",
        )
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


def _region_id(region: Versions) -> str:
    if isinstance(region, RegionDocument | RegionHistory):
        return region.region
    if not region:
        raise ValueError("no region document to audit with")
    return region[0].document.region


@dataclass(frozen=True)
class Judged:
    """What the aggregates stream establishes before the events are replayed."""

    history: RegionHistory  # the versions, with the announcements judged by (`taken`)
    releases: list[PublishedRelease]
    announced: list[Announced]  # the announcements judged by, in order


def judged(
    region: Versions,
    aggregates: Iterable[StreamMessage],
    found: Collector,
    *,
    trusted: SignedRegion | Sequence[SignedRegion] | None = None,
) -> Judged:
    """The history the events are judged by (the versions checked as a chain, with the
    aggregator's announcements as its schedule) and the published releases, from the
    aggregates stream (module docstring). `trusted`: the versions that anchor the chain, if
    not `region` itself (a bundle's history is anchored in the auditor's own files)."""
    statement_msgs, taken_msgs = announcements.split(aggregates)
    opened = announcements.open_all(taken_msgs, _region_id(region), found)
    if isinstance(region, RegionDocument | RegionHistory):
        history = RegionHistory.of(region)
    elif opened:  # the announced documents, chained with the versions given
        anchors = trusted if trusted is not None else list(region)
        history = check_history(
            [*region, *(a.opened.region for a in opened)], found, trusted=anchors
        )
    else:
        history = check_history(list(region), found, trusted=trusted)
    effective = announcements.schedule(opened, history, found)
    history = history.with_taken(
        [(a.after_seq, a.version) for a in effective],
        {a.version: a.time for a in effective if a.time is not None},
    )
    releases = published_releases(statement_msgs, history, found, effective)
    return Judged(history, releases, effective)


def _replay(
    history: RegionHistory, releases: Sequence[PublishedRelease], found: Collector
) -> tuple[EventReplay, VersionUse]:
    """The replay of the events, with the releases to recompute, and what watches the
    versions the messages and releases name."""
    used = VersionUse(history)
    for published in releases:
        first = next(iter(published.statements.values()))
        used.note_release(published.number, first.region_version)
    return EventReplay(history.latest, found, releases, history=history), used


def audit_messages(
    region: Versions,
    events: Iterable[StreamMessage],
    aggregates: Iterable[StreamMessage],
    *,
    total: int = 0,
    progress: Progress | None = None,
    found: Collector | None = None,
    kind: Literal["region", "bundle"] = "region",
    workers: int = 1,
    checkpoints: Iterable[StreamMessage] = (),
    trusted: SignedRegion | Sequence[SignedRegion] | None = None,
) -> AuditReport:
    """The region audit over messages already read (from the streams or a bundle);
    `workers` > 1 verifies signatures in that many processes (parallel.py)."""
    found = found or Collector()
    j = judged(region, aggregates, found, trusted=trusted)
    history = j.history
    replay, used = _replay(history, j.releases, found)
    if workers > 1:
        from handsoff.services.auditor.parallel import ParallelVerifier

        with ParallelVerifier(history, workers) as verifier:
            for done, (m, examined) in enumerate(verifier.examined(events), 1):
                used.note(m.headers, m.time, m.seq)
                replay.add(m.seq, m.subject, m.headers, m.data, m.time, examined)
                if progress is not None:
                    progress(done, total)
    else:
        for done, m in enumerate(events, 1):
            used.note(m.headers, m.time, m.seq)
            replay.add(m.seq, m.subject, m.headers, m.data, m.time)
            if progress is not None:
                progress(done, total)
    replay.finish()
    used.report(found)
    decided = announcements.Decided(history, j.announced)
    audit_checkpoints(history, replay.published(), checkpoints, found, decided)
    return found.report(kind, history.region)


async def audit_region(
    js: JetStreamContext,
    region: Versions,
    progress: Progress | None = None,
    *,
    found: Collector | None = None,
    workers: int = 1,
) -> AuditReport:
    """The streams read as they are replayed (memory does not grow with the events).
    `region`: the signed versions the auditor holds (checked here, with the announced
    ones), or versions already checked (`found` then holds their membership check).
    `workers` > 1: envelopes examined in that many processes while the stream is read."""
    r = _region_id(region)
    found = found or Collector()
    aggregates = await read_all(js, subjects.aggregates_stream(r), subjects.all_aggregates(r))
    j = judged(region, aggregates, found)
    history = j.history
    replay, used = _replay(history, j.releases, found)
    done = 0

    def fold(m: StreamMessage, examined: Examined | None, total: int) -> None:
        nonlocal done
        used.note(m.headers, m.time, m.seq)
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
    checkpoints = await read_checkpoints(js, r)
    decided = announcements.Decided(history, j.announced)
    audit_checkpoints(history, replay.published(), checkpoints, found, decided)
    return found.report("region", r)
