"""The aggregator's ingest: a durable JetStream consumer of the region's events stream.

    HX_<R>_EVENTS --(pull consumer "aggregator", ack explicit)--> verify every message
        accepted -> accepted(partner, number, stream_seq, payload)       \\  one SQLite
        rejected -> rejected(stream_seq, reason) + HX_<R>_QUARANTINE     /  transaction
        position(stream_seq) of the last message processed               /  per batch
    then the batch is acked.

Every message is verified before it counts (envelope.open_message: region membership, key
valid at the stream's timestamp, signature, signer = partner of the subject, schema). A
message is identified for ever by (partner, number): `accepted` has that primary key, so a
duplicate published after the stream's duplicate window changes nothing; a *different*
payload under a number already accepted is rejected ("conflict").

Every message that stands for a (partner, number) in its partner's published log
(checkpoints.published_leaf: accepted or not) also leaves its leaf hash in
`published_leaves`, the first per (partner, number) in stream order: what the witness checks
partners' signed checkpoints against (witness.py).

Crash safety: the accepted rows, the rejected rows and the new position are committed in one
transaction, and only then are the messages acked. A crash before the commit loses nothing
(the messages are redelivered); a crash after it counts nothing twice (redelivered messages
at or below the stored position are skipped, and the primary key holds anyway). Quarantine
copies are published before the commit with a message id derived from the source stream
sequence, so a republish after a crash is deduplicated by the quarantine stream.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from handsoff.federation import checkpoints, envelope, shared, subjects
from handsoff.federation.errors import EnvelopeRejected
from handsoff.federation.region import KeyTable, RegionDocument
from handsoff.keys.merkle import leaf_hash
from handsoff.services.aggregator import tally
from handsoff.services.aggregator.indicators import Ledger

CONSUMER: Final = "aggregator"
REJECT_REASON: Final = "Hx-Reject-Reason"
ORIGINAL_SUBJECT: Final = "Hx-Original-Subject"
ORIGINAL_MSG_ID: Final = "Hx-Original-Msg-Id"
ORIGINAL_SEQ: Final = "Hx-Original-Seq"

# --- the store ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    stream_seq: int
    partner: str
    number: int
    payload: bytes
    leaf: bytes  # RFC 6962 leaf hash of envelope.leaf(): what a release commits to
    event: shared.SharedEvent | None = field(default=None, compare=False)  # decoded payload


@dataclass(frozen=True)
class Rejected:
    stream_seq: int
    reason: str


@dataclass(frozen=True)
class Published:
    """A message of a partner's published log (checkpoints.published_leaf), accepted or not."""

    stream_seq: int
    partner: str
    number: int
    leaf: bytes


@dataclass(frozen=True)
class Batch:
    """What one batch of messages established, up to and including stream seq `position`."""

    position: int
    accepted: Sequence[Accepted] = ()
    rejected: Sequence[Rejected] = ()
    as_of: datetime | None = None  # the stream timestamp of message `position`
    published: Sequence[Published] = ()  # in stream order (accepted ones count anyway)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    partner TEXT NOT NULL,
    number INTEGER NOT NULL,
    stream_seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    leaf BLOB NOT NULL,
    PRIMARY KEY (partner, number)
);
CREATE INDEX IF NOT EXISTS accepted_in_stream_order ON accepted (stream_seq);
CREATE TABLE IF NOT EXISTS rejected (
    stream_seq INTEGER PRIMARY KEY,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_seq INTEGER NOT NULL,
    as_of TEXT
);
"""

_PUBLISHED_SCHEMA = (
    """CREATE TABLE published_leaves (
    partner TEXT NOT NULL,
    number INTEGER NOT NULL,
    stream_seq INTEGER NOT NULL,
    leaf BLOB NOT NULL,
    PRIMARY KEY (partner, number)
)""",
    # A store made before checkpoints (issue #6) starts from its accepted envelopes.
    """INSERT INTO published_leaves (partner, number, stream_seq, leaf)
    SELECT partner, number, stream_seq, leaf FROM accepted""",
)
_HAS_PUBLISHED = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'published_leaves'"


class IngestStore:
    """The aggregator's figures and position: one SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if not self._db.execute(_HAS_PUBLISHED).fetchone():
            self._create_published()
        tally.create_schema(self._db)

    def _create_published(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if not db.execute(_HAS_PUBLISHED).fetchone():  # not made meanwhile by another
                for statement in _PUBLISHED_SCHEMA:
                    db.execute(statement)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """For the tables kept beside the figures (releases) in the same file."""
        return self._db

    def position(self) -> int:
        row = self._db.execute("SELECT stream_seq FROM position WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def payload_of(self, partner: str, number: int) -> bytes | None:
        row = self._db.execute(
            "SELECT payload FROM accepted WHERE partner = ? AND number = ?", (partner, number)
        ).fetchone()
        return bytes(row[0]) if row else None

    def payloads_of(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        """`payload_of` for many (partner, number) at once: one query per batch."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, int], bytes] = {}
        for start in range(0, len(wanted), 400):  # SQLite allows 32,766 parameters
            part = wanted[start : start + 400]
            placeholders = ", ".join(["(?, ?)"] * len(part))  # only placeholders: no values
            rows = self._db.execute(
                "SELECT partner, number, payload FROM accepted "  # noqa: S608
                f"WHERE (partner, number) IN (VALUES {placeholders})",
                [v for key in part for v in key],
            )
            found.update({(str(p), int(n)): bytes(b) for p, n, b in rows})
        return found

    def record(self, batch: Batch) -> None:
        """Accepted rows, rejected rows and the position in one transaction. A (partner,
        number) already accepted, or a stream seq already rejected, changes nothing; the
        position never moves back."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO accepted (partner, number, stream_seq, payload, leaf) "
                "VALUES (?, ?, ?, ?, ?)",
                [(a.partner, a.number, a.stream_seq, a.payload, a.leaf) for a in batch.accepted],
            )
            for a in batch.accepted:
                event = a.event if a.event is not None else shared.decode(a.payload)
                tally.add_facts(db, a.partner, a.number, event)
            db.executemany(
                "INSERT OR IGNORE INTO rejected (stream_seq, reason) VALUES (?, ?)",
                [(r.stream_seq, r.reason) for r in batch.rejected],
            )
            db.executemany(
                "INSERT OR IGNORE INTO published_leaves (partner, number, stream_seq, leaf) "
                "VALUES (?, ?, ?, ?)",
                [
                    *((p.partner, p.number, p.stream_seq, p.leaf) for p in batch.published),
                    *((a.partner, a.number, a.stream_seq, a.leaf) for a in batch.accepted),
                ],
            )
            db.execute(
                "INSERT INTO position (id, stream_seq, as_of) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET as_of = excluded.as_of, "
                "stream_seq = excluded.stream_seq WHERE excluded.stream_seq > stream_seq",
                (batch.position, batch.as_of.isoformat() if batch.as_of else None),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def as_of(self) -> datetime | None:
        row = self._db.execute("SELECT as_of FROM position WHERE id = 1").fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def leaves(self) -> Iterator[bytes]:
        """The leaf hash of every accepted envelope, in stream order (streamed)."""
        for (leaf,) in self._db.execute("SELECT leaf FROM accepted ORDER BY stream_seq"):
            yield bytes(leaf)

    def accepted_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM accepted").fetchone()[0])

    def ledger(self) -> Ledger:
        """The ledger of every accepted message (decoded again from the stored payloads)."""
        ledger = Ledger()
        rows = self._db.execute("SELECT partner, number, payload FROM accepted ORDER BY stream_seq")
        for partner, number, payload in rows:
            ledger.add(partner, number, shared.decode(payload))
        return ledger

    def published_count(self, partner: str, upto: int) -> int:
        """How many of a partner's messages 1..upto the stream has shown so far."""
        row = self._db.execute(
            "SELECT count(*) FROM published_leaves WHERE partner = ? AND number <= ?",
            (partner, upto),
        ).fetchone()
        return int(row[0])

    def published_leaves(self, partner: str, after: int, upto: int) -> Iterator[bytes]:
        """The leaf hashes of a partner's published messages after..upto, in number order."""
        rows = self._db.execute(
            "SELECT leaf FROM published_leaves WHERE partner = ? AND number > ? AND number <= ? "
            "ORDER BY number",
            (partner, after, upto),
        )
        for (leaf,) in rows:
            yield bytes(leaf)

    def rejected_by_reason(self) -> dict[str, int]:
        rows = self._db.execute("SELECT reason, count(*) FROM rejected GROUP BY reason")
        return {str(reason): int(n) for reason, n in rows}


async def quarantine(
    js: JetStreamContext,
    region: str,
    reason: str,
    subject: str,
    headers: Mapping[str, str],
    data: bytes,
    *,
    seq: int,
    msg_id: str,
) -> None:
    """A copy of a rejected message on hx.<region>.quarantine.<reason>, with why and where
    from. Nats-* headers of the original (its message id, any expectation) are not copied:
    they would deduplicate or refuse the copy; `msg_id` (derived from the source sequence)
    deduplicates a republish after a crash."""
    copied = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
    copied.update(
        {
            REJECT_REASON: reason,
            ORIGINAL_SUBJECT: subject,
            ORIGINAL_SEQ: str(seq),
            envelope.MSG_ID: msg_id,
        }
    )
    original_id = headers.get(envelope.MSG_ID)
    if original_id is not None:
        copied[ORIGINAL_MSG_ID] = original_id
    await js.publish(
        subjects.quarantine(region, reason),
        data,
        headers=copied,
        stream=subjects.quarantine_stream(region),
    )


async def resume_durable(
    js: JetStreamContext,
    stream: str,
    subject: str,
    durable: str,
    *,
    after: int,
    ack_wait: float,
) -> JetStreamContext.PullSubscription:
    """The durable pull consumer `durable`, recreated to start right after stream sequence
    `after`: the local store, not the server, is the authority on what was processed, and
    starting exactly after it means messages a crash left unacked come first, in order."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(stream, durable)
    return await js.pull_subscribe(
        subject,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_wait=ack_wait,
        ),
    )


# --- the consumer ---------------------------------------------------------------------------


@dataclass
class IngestResult:
    """What `run_once` / `drain` did (skipped: redelivered at or below the position)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    waiting: int = 0  # after a gap in the sequence: nak'ed, taken once the gap is filled

    def add(self, other: IngestResult) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.update(other.rejected)
        self.skipped += other.skipped
        self.waiting += other.waiting

    @property
    def messages(self) -> int:
        return (
            self.accepted
            + self.duplicates
            + sum(self.rejected.values())
            + self.skipped
            + self.waiting
        )


class Ingest:
    """Verifies and records the region's events through the durable consumer "aggregator"."""

    def __init__(
        self,
        region: RegionDocument,
        store: IngestStore,
        js: JetStreamContext,
        *,
        batch: int = 256,
        fetch_timeout: float = 1.0,
        ack_wait: float = 30.0,
        replay: bool = False,
        judge: Callable[[int, datetime], envelope.KeyDirectory] | None = None,
    ) -> None:
        self.region = region
        self.store = store
        self.js = js
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.ack_wait = ack_wait
        # A replay (rebuild, audit) reads the stream through its own ordered consumer:
        # nothing to ack, and the quarantine holds the live aggregator's rejects already.
        self.replay = replay
        self._keys = KeyTable(region)
        # A rebuild judges each message (stream seq, time) by the version the aggregator
        # announced for it (history.RegionHistory.keys_for); a live aggregator by `region`,
        # the one version it holds.
        self._judge = judge
        self._sub: JetStreamContext.PullSubscription | None = None

    def announced(self, at: datetime | None) -> None:
        """The version held was announced at `at` (its stream time): its grace for messages
        under earlier versions runs from then too, as an auditor judges it."""
        self._keys = KeyTable(self.region, at)

    async def start(self) -> None:
        """(Re)creates the durable consumer right after the stored position."""
        self._sub = await resume_durable(
            self.js,
            subjects.events_stream(self.region.region),
            subjects.all_events(self.region.region),
            CONSUMER,
            after=self.store.position(),
            ack_wait=self.ack_wait,
        )

    async def stop(self) -> None:
        """Stops pulling; the durable consumer (and its position on the server) stays."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def run_once(self) -> IngestResult:
        """Fetches one batch (waiting up to fetch_timeout) and processes it."""
        if self._sub is None:
            raise RuntimeError("Ingest.start() first")
        try:
            msgs = await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
            return IngestResult()
        return await self.process(msgs)

    async def drain(self) -> IngestResult:
        """Processes batches until a fetch returns nothing."""
        total = IngestResult()
        while True:
            result = await self.run_once()
            if result.messages == 0:
                return total
            total.add(result)

    async def process(self, msgs: Sequence[Msg]) -> IngestResult:
        result = IngestResult()
        position = self.store.position()
        new_position, as_of = position, None
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        published: list[Published] = []
        later: list[Msg] = []
        verified: list[tuple[Msg, int, envelope.Opened, bytes]] = []
        # The stream's sequence has no holes (delete and purge are denied), so messages are
        # taken strictly in order: one after a gap waits (nak) until the gap is filled.
        for m in sorted(msgs, key=lambda m: m.metadata.sequence.stream):
            seq = m.metadata.sequence.stream
            if seq <= position:
                result.skipped += 1
                continue
            if later or seq != new_position + 1:
                later.append(m)
                continue
            new_position, as_of = seq, m.metadata.timestamp
            stands_for = checkpoints.published_leaf(m.subject, m.headers, m.data)
            if stands_for is not None:
                published.append(Published(seq, *stands_for))
            at = m.metadata.timestamp
            keys = self._keys if self._judge is None else self._judge(seq, at)
            try:
                opened = envelope.open_message(
                    keys, m.subject, m.headers, m.data, at, shared.decode
                )
            except EnvelopeRejected as e:
                await self._reject(m, seq, e.reason, rejected, result)
                continue
            leaf = (  # an envelope that verifies always stands for its number
                stands_for.leaf
                if stands_for is not None
                else leaf_hash(envelope.leaf(m.subject, m.headers or {}, m.data))
            )
            verified.append((m, seq, opened, leaf))
        # Exactly once, for ever: against what the store holds (one query for the batch) and
        # what this batch already took.
        held = self.store.payloads_of((o.partner, o.number) for _, _, o, _ in verified)
        for m, seq, opened, leaf in verified:
            key = (opened.partner, opened.number)
            taken = held.get(key)
            if taken is not None and taken != m.data:
                await self._reject(m, seq, "conflict", rejected, result)
                continue
            if taken is not None:
                result.duplicates += 1
                continue
            held[key] = m.data
            accepted.append(
                Accepted(seq, opened.partner, opened.number, m.data, leaf, opened.event)
            )
            result.accepted += 1
        if new_position > position:
            self.store.record(Batch(new_position, accepted, rejected, as_of, published))
        if not self.replay:
            await self._ack(m for m in msgs if m not in later)
            for m in later:
                await m.nak()
        result.waiting = len(later)
        return result

    async def _reject(
        self, m: Msg, seq: int, reason: str, rejected: list[Rejected], result: IngestResult
    ) -> None:
        if not self.replay:
            await self._quarantine(m, seq, reason)
        rejected.append(Rejected(seq, reason))
        result.rejected[reason] += 1

    async def _quarantine(self, m: Msg, seq: int, reason: str) -> None:
        await quarantine(
            self.js,
            self.region.region,
            reason,
            m.subject,
            m.headers or {},
            m.data,
            seq=seq,
            msg_id=f"quarantine:{seq}",
        )

    async def _ack(self, msgs: Iterable[Msg]) -> None:
        for m in msgs:
            await m.ack()
