"""`handsoff aggregator rebuild`: replay the events stream into a fresh store and reproduce
every published release, byte for byte.

    HX_<R>_AGGREGATES (the release history,  --> the region versions announced, checked as a
      and the versions taken)                    chain from the folder's versions; for each
                                                 release n, its inputs.last_seq
    HX_<R>_EVENTS (ordered consumer, from 1) --> fresh IngestStore, up to exactly last_seq,
                                                 each message judged by the version announced
                                                 for it (as the aggregator did)
                                             --> cut release n (k, breakdowns and region
                                                 version as the statement names them, the
                                                 countries of that version)
                                             --> compare with what was published

A release depends only on the accepted envelopes up to its position and on the suppression
memory of the releases before it (releases.py), so an honest aggregator's history is
reproduced exactly, across changes of the region version too; a difference names the
release and indicator. Messages before the first announcement (an aggregator from before
announcements) are judged by the version in force at their stream time, as auditors do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from handsoff.federation import statements, subjects
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import RegionDocument, SignedRegion
from handsoff.federation.statements import AggregateStatement
from handsoff.keys import SigningKey
from handsoff.services.aggregator.announce import Taken, TakenBook
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.ingest import Ingest, IngestStore
from handsoff.services.aggregator.releases import Cutter, ReleaseBook
from handsoff.services.auditor import announcements
from handsoff.services.auditor.region import Versions, judged, read_all
from handsoff.services.auditor.report import Collector

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


@dataclass(frozen=True)
class History:
    """What the aggregates stream says: the versions the events are judged by (with the
    aggregator's announcements), the releases, and the announcements themselves."""

    region: RegionHistory
    releases: list[Published]
    taken: list[Taken]


def _region_id(region: Versions) -> str:
    if isinstance(region, RegionDocument | RegionHistory):
        return region.region
    return region[0].document.region


async def published_history(js: JetStreamContext, region: Versions) -> History:
    """Every release in the aggregates stream, verified, in order (a statement published
    twice with the same bytes counts once), and the region versions announced, checked as a
    chain from `region` (the folder's versions) exactly as an auditor checks them
    (auditor/region.judged). Anything that would fail an audit of them is an error here
    (StatementRejected: the first finding, and how many more)."""
    r = _region_id(region)
    msgs = await read_all(js, subjects.aggregates_stream(r), subjects.all_aggregates(r))
    found = Collector()
    j = judged(region, msgs, found)
    errors = [f for f in found.findings if f.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise statements.StatementRejected(
            first.reason, f"{first.check}/{first.reason} at {first.where}: {first.detail}{more}"
        )
    signed: dict[tuple[int, str], bytes] = {}
    for m in announcements.split(msgs)[0]:  # verified by `judged`; duplicates are identical
        s = _STATEMENT.decode(statements.statement_bytes(m.data))
        signed.setdefault((s.release, s.indicator), m.data)
    releases = [
        Published(
            p.number,
            tuple(p.statements.values()),
            {i: signed[(p.number, i)] for i in p.statements},
        )
        for p in j.releases
    ]
    taken = [Taken(a.version, a.after_seq, a.opened.signed) for a in j.announced]
    return History(j.history, releases, taken)


_STATEMENT = msgspec.json.Decoder(AggregateStatement)


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
    js: JetStreamContext,
    region: RegionDocument | Sequence[SignedRegion],
    store: IngestStore,
    key: SigningKey,
) -> RebuildReport:
    """Replays into `store` (fresh) and compares every published release. `region`: the
    versions the aggregator folder holds (every one it took: `AggregatorPaths.region_versions`),
    the anchor of the versions announced; or one document."""
    if store.position() != 0:
        raise ValueError("rebuild needs a fresh store")
    report = RebuildReport()
    published = await published_history(js, region)
    history = published.region
    latest = history.latest
    book = ReleaseBook(store)
    TakenBook(store).record_all(published.taken)  # serving from this store announces on
    ingest = Ingest(latest, store, js, replay=True, judge=history.keys_for)
    reader = _EventReader(js, latest.region)
    memory = SuppressionMemory()
    try:
        for release in published.releases:
            first = release.statements[0]
            await _ingest_until(ingest, reader, first.inputs.last_seq)
            # the countries and aggregator of the version the release was cut under
            as_of = store.as_of()
            doc = history.version(first.region_version) or (
                history.in_force(as_of) if as_of is not None else latest
            )
            made, signed = Cutter(doc, key).cut(
                store,
                release.number,
                memory,
                k=first.k,
                breakdowns=first.breakdowns,
                region_version=first.region_version,
            )
            memory = made.memory
            book.keep(release.number, store.position(), memory, signed)
            book.mark_published(release.number)
            report.releases += 1
            problems = _compare(release.number, release, signed)
            report.differences += problems
            report.identical += not problems
        end = (await js.stream_info(subjects.events_stream(latest.region))).state.last_seq
        await _ingest_until(ingest, reader, end)
    finally:
        await reader.close()
    report.position = store.position()
    return report
