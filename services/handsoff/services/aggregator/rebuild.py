"""`handsoff aggregator rebuild`: replay the events stream into a fresh store and reproduce
every published release, byte for byte.

    HX_<R>_AGGREGATES (the release history)  --> for each release n, its inputs.last_seq
    HX_<R>_EVENTS (ordered consumer, from 1) --> fresh IngestStore, up to exactly last_seq
                                             --> cut release n (k, breakdowns and region
                                                 version as the statement names them)
                                             --> compare with what was published

A release depends only on the accepted envelopes up to its position and on the suppression
memory of the releases before it (releases.py), so an honest aggregator's history is
reproduced exactly; a difference names the release and indicator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from handsoff.federation import statements, subjects
from handsoff.federation.region import RegionDocument
from handsoff.federation.statements import AggregateStatement
from handsoff.keys import SigningKey
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.ingest import Ingest, IngestStore
from handsoff.services.aggregator.releases import Cutter, ReleaseBook
from handsoff.services.auditor.region import read_all

READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class Published:
    number: int
    statements: tuple[AggregateStatement, ...]
    signed: dict[str, bytes]  # indicator -> signed bytes as published


@dataclass
class RebuildReport:
    releases: int = 0
    identical: int = 0
    differences: list[str] = field(default_factory=list)
    position: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences and self.identical == self.releases


async def published_releases(js: JetStreamContext, region: RegionDocument) -> list[Published]:
    """Every release in the aggregates stream, verified, in order (a statement published
    twice with the same bytes counts once; different bytes for the same release and
    indicator is an error)."""
    msgs = await read_all(
        js, subjects.aggregates_stream(region.region), subjects.all_aggregates(region.region)
    )
    by_release: dict[int, dict[str, tuple[AggregateStatement, bytes]]] = defaultdict(dict)
    for m in msgs:
        s = statements.verify(m.data, region)
        held = by_release[s.release].get(s.indicator)
        if held is not None and held[1] != m.data:
            raise statements.StatementRejected(
                "conflict", f"release {s.release} {s.indicator}: published twice, differently"
            )
        by_release[s.release][s.indicator] = (s, m.data)
    return [
        Published(
            n,
            tuple(s for s, _ in by_release[n].values()),
            {i: raw for i, (_, raw) in by_release[n].items()},
        )
        for n in sorted(by_release)
    ]


class _EventReader:
    """The events stream from the start, handed out up to a given sequence."""

    def __init__(self, js: JetStreamContext, region: str) -> None:
        self.js, self.region = js, region
        self._sub: JetStreamContext.PushSubscription | None = None
        self._held: Msg | None = None

    async def until(self, last_seq: int, batch: int = 256) -> list[Msg]:
        if self._sub is None:
            self._sub = await self.js.subscribe(
                subjects.all_events(self.region),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
        out: list[Msg] = []
        while len(out) < batch:
            m = self._held
            if m is None:
                try:
                    m = await self._sub.next_msg(timeout=READ_TIMEOUT)
                except nats.errors.TimeoutError:
                    break
            if m.metadata.sequence.stream > last_seq:
                self._held = m
                break
            self._held = None
            out.append(m)
        return out

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def _ingest_until(ingest: Ingest, reader: _EventReader, last_seq: int) -> None:
    while ingest.store.position() < last_seq:
        msgs = await reader.until(last_seq)
        if not msgs:
            raise statements.StatementRejected(
                "inputs", f"the events stream ends before sequence {last_seq}"
            )
        await ingest.process(msgs)


def _compare(n: int, published: Published, rebuilt: Sequence[bytes]) -> list[str]:
    out = []
    mine = {
        msgspec.json.decode(statements.statement_bytes(b), type=AggregateStatement).indicator: b
        for b in rebuilt
    }
    for indicator in sorted(set(mine) | set(published.signed)):
        a, b = mine.get(indicator), published.signed.get(indicator)
        if b is None:
            out.append(f"release {n} {indicator}: rebuilt, but never published")
        elif a is None:
            out.append(f"release {n} {indicator}: published, but not rebuilt")
        elif a != b:
            out.append(f"release {n} {indicator}: rebuilt statement differs from the published")
    return out


async def rebuild(
    js: JetStreamContext, region: RegionDocument, store: IngestStore, key: SigningKey
) -> RebuildReport:
    """Replays into `store` (fresh) and compares every published release."""
    if store.position() != 0:
        raise ValueError("rebuild needs a fresh store")
    report = RebuildReport()
    history = await published_releases(js, region)
    book = ReleaseBook(store)
    ingest = Ingest(region, store, js, replay=True)
    reader = _EventReader(js, region.region)
    cutter = Cutter(region, key)
    memory = SuppressionMemory()
    try:
        for published in history:
            first = published.statements[0]
            await _ingest_until(ingest, reader, first.inputs.last_seq)
            made, signed = cutter.cut(
                store,
                published.number,
                memory,
                k=first.k,
                breakdowns=first.breakdowns,
                region_version=first.region_version,
            )
            memory = made.memory
            book.keep(published.number, store.position(), memory, signed)
            book.mark_published(published.number)
            report.releases += 1
            problems = _compare(published.number, published, signed)
            report.differences += problems
            report.identical += not problems
        end = (await js.stream_info(subjects.events_stream(region.region))).state.last_seq
        await _ingest_until(ingest, reader, end)
    finally:
        await reader.close()
    report.position = store.position()
    return report
