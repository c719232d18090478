"""The aggregator as witness of the partners' signed checkpoints (issue #6).

    HX_<R>_CHECKPOINTS --(pull consumer "witness", hx.<r>.checkpoints.>)--> inbox (SQLite)
    then, per partner, in stream order:
        open_checkpoint: partner's key valid at the stream timestamp, signature, region,
            subject (federation/checkpoints.py)
        check_checkpoint: no smaller than the last witnessed size (rollback), the proof from
            previous_size holds (inconsistent), the root is the root of the partner's
            published log as ingest read it from the events stream (mismatch)
      passes  -> witnessed(partner, size, root, frontier, cosignature), one transaction
                 -> the cosignature on hx.<r>.witness.<partner>, marked published
      refused -> witness_rejected(seq, partner, reason) + a copy on hx.<r>.quarantine.<reason>
      waits   -> stays in the inbox while ingest has not yet read every envelope it covers

Waiting is bounded: when a checkpoint arrives the witness notes the events stream's last
sequence (`events_high`). The partner can only have checkpointed envelopes stored before its
checkpoint, hence at or below that sequence; once ingest has processed up to there, an
envelope still missing was never published, and the checkpoint is refused (`unpublished`).
A waiting checkpoint holds back that partner's later ones only, never other partners'.

The witness keeps, per partner, the frontier of the last witnessed tree (keys/merkle.py), so
checking a new checkpoint reads only the leaves published since.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, NamedTuple

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from handsoff.federation import checkpoints, envelope, subjects
from handsoff.federation.checkpoints import Checkpoint, CheckpointRejected, Witnessed
from handsoff.federation.region import RegionDocument
from handsoff.keys import SigningKey
from handsoff.keys.merkle import HASH_LEN, MerkleTree
from handsoff.services.aggregator.ingest import (
    IngestStore,
    quarantine,
    resume_durable,
)

log = logging.getLogger("handsoff.witness")

CONSUMER: Final = "witness"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS witness_inbox (
    stream_seq INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    headers BLOB NOT NULL,
    data BLOB NOT NULL,
    at TEXT NOT NULL,
    events_high INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS witness_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS witnessed (
    partner TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    frontier BLOB NOT NULL,
    stream_seq INTEGER NOT NULL,
    cosignature BLOB NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (partner, size)
);
CREATE TABLE IF NOT EXISTS witness_rejected (
    stream_seq INTEGER PRIMARY KEY,
    partner TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class _Held(NamedTuple):
    """A checkpoint taken from the stream, not decided yet."""

    stream_seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    at: datetime
    events_high: int


class _Latest(NamedTuple):
    witnessed: Witnessed
    frontier: tuple[bytes, ...]


@dataclass
class WitnessResult:
    cosigned: int = 0
    repeated: int = 0  # equal to the checkpoint witnessed last: nothing new to cosign
    waiting: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class WitnessBook:
    """The witness's state, in the aggregator's SQLite file (the store's connection)."""

    def __init__(self, store: IngestStore) -> None:
        self.store = store
        self._db: sqlite3.Connection = store.connection
        self._db.executescript(_SCHEMA)

    def position(self) -> int:
        row = self._db.execute("SELECT stream_seq FROM witness_position WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def take(self, held: Sequence[_Held], position: int) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO witness_inbox "
                "(stream_seq, subject, headers, data, at, events_high) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        h.stream_seq,
                        h.subject,
                        msgspec.json.encode(h.headers),
                        h.data,
                        h.at.isoformat(),
                        h.events_high,
                    )
                    for h in held
                ],
            )
            db.execute(
                "INSERT INTO witness_position (id, stream_seq) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET stream_seq = excluded.stream_seq "
                "WHERE excluded.stream_seq > stream_seq",
                (position,),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def undecided(self) -> list[int]:
        """The stream sequences of the checkpoints taken and not decided yet."""
        rows = self._db.execute("SELECT stream_seq FROM witness_inbox ORDER BY stream_seq")
        return [int(seq) for (seq,) in rows]

    def inbox(self) -> list[_Held]:
        rows = self._db.execute(
            "SELECT stream_seq, subject, headers, data, at, events_high FROM witness_inbox "
            "ORDER BY stream_seq"
        )
        return [
            _Held(
                int(seq),
                str(subject),
                msgspec.json.decode(headers, type=dict[str, str]),
                bytes(data),
                datetime.fromisoformat(at),
                int(high),
            )
            for seq, subject, headers, data, at, high in rows
        ]

    def latest(self, partner: str) -> _Latest | None:
        row = self._db.execute(
            "SELECT size, root, frontier FROM witnessed WHERE partner = ? "
            "ORDER BY size DESC LIMIT 1",
            (partner,),
        ).fetchone()
        if row is None:
            return None
        raw = bytes(row[2])
        frontier = tuple(raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN))
        return _Latest(Witnessed(int(row[0]), bytes(row[1])), frontier)

    def witness(self, held: _Held, checkpoint: Checkpoint, tree: MerkleTree, signed: bytes) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO witnessed "
                "(partner, size, root, frontier, stream_seq, cosignature) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    checkpoint.partner,
                    checkpoint.size,
                    checkpoint.root_bytes,
                    b"".join(tree.frontier),
                    held.stream_seq,
                    signed,
                ),
            )
            db.execute("DELETE FROM witness_inbox WHERE stream_seq = ?", (held.stream_seq,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def drop(self, held: _Held) -> None:
        """A repeat of the checkpoint witnessed last: decided, nothing to keep."""
        self._db.execute("DELETE FROM witness_inbox WHERE stream_seq = ?", (held.stream_seq,))

    def reject(self, held: _Held, partner: str, reason: str, detail: str) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO witness_rejected (stream_seq, partner, reason, detail) "
                "VALUES (?, ?, ?, ?)",
                (held.stream_seq, partner, reason, detail),
            )
            db.execute("DELETE FROM witness_inbox WHERE stream_seq = ?", (held.stream_seq,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def unpublished(self) -> list[tuple[str, int, bytes]]:
        rows = self._db.execute(
            "SELECT partner, size, cosignature FROM witnessed WHERE published = 0 "
            "ORDER BY stream_seq"
        )
        return [(str(p), int(n), bytes(c)) for p, n, c in rows]

    def mark_published(self, partner: str, size: int) -> None:
        self._db.execute(
            "UPDATE witnessed SET published = 1 WHERE partner = ? AND size = ?", (partner, size)
        )

    def cosignature(self, partner: str, size: int) -> bytes | None:
        row = self._db.execute(
            "SELECT cosignature FROM witnessed WHERE partner = ? AND size = ?", (partner, size)
        ).fetchone()
        return bytes(row[0]) if row else None

    def rejections(self) -> list[tuple[int, str, str, str]]:
        """(checkpoint stream seq, partner, reason, detail) of every refused checkpoint."""
        rows = self._db.execute(
            "SELECT stream_seq, partner, reason, detail FROM witness_rejected ORDER BY stream_seq"
        )
        return [(int(s), str(p), str(r), str(d)) for s, p, r, d in rows]

    def status(self) -> dict[str, object]:
        db = self._db
        sizes = db.execute("SELECT partner, max(size) FROM witnessed GROUP BY partner")
        rejected = db.execute("SELECT reason, count(*) FROM witness_rejected GROUP BY reason")
        return {
            "position": self.position(),
            "witnessed": {str(p): int(n) for p, n in sizes},
            "cosigned": int(db.execute("SELECT count(*) FROM witnessed").fetchone()[0]),
            "unpublished": int(
                db.execute("SELECT count(*) FROM witnessed WHERE published = 0").fetchone()[0]
            ),
            "waiting": int(db.execute("SELECT count(*) FROM witness_inbox").fetchone()[0]),
            "rejected": {str(r): int(n) for r, n in rejected},
        }


class _Wait(Exception):
    """The checkpoint covers envelopes ingest has not read yet."""


class Witness:
    """Checks and countersigns the region's checkpoints (see the module docstring)."""

    def __init__(
        self,
        region: RegionDocument,
        key: SigningKey,
        store: IngestStore,
        js: JetStreamContext,
        *,
        batch: int = 64,
        fetch_timeout: float = 0.05,
        ack_wait: float = 30.0,
    ) -> None:
        self.region = region
        self.key = key
        self.store = store
        self.book = WitnessBook(store)
        self.js = js
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.ack_wait = ack_wait
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        """(Re)creates the durable consumer after the stored position (the store is the
        authority, as for ingest) and publishes cosignatures a crash left unpublished."""
        stream = subjects.checkpoints_stream(self.region.region)
        info = await self.js.stream_info(stream)
        if subjects.all_witness(self.region.region) not in (info.config.subjects or []):
            log.warning(
                "stream %s does not capture %s: cosignatures cannot be published until the "
                "region's streams are updated (handsoff region streams)",
                stream,
                subjects.all_witness(self.region.region),
            )
        self._sub = await resume_durable(
            self.js,
            stream,
            subjects.all_checkpoints(self.region.region),
            CONSUMER,
            after=self.book.position(),
            ack_wait=self.ack_wait,
        )
        await self.publish_pending()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def step(self) -> WitnessResult:
        """Takes what arrived into the inbox, decides what can be decided, publishes."""
        await self._take()
        result = await self.decide()
        await self.publish_pending()
        return result

    async def _take(self) -> None:
        if self._sub is None:
            raise RuntimeError("Witness.start() first")
        try:
            msgs = await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return
        position = self.book.position()
        fresh = [m for m in msgs if m.metadata.sequence.stream > position]
        if fresh:
            # Every envelope a checkpoint can cover was stored before the checkpoint, so at
            # or below the events stream's last sequence now.
            events = await self.js.stream_info(subjects.events_stream(self.region.region))
            high = int(events.state.last_seq)
            self.book.take(
                [_held(m, high) for m in fresh],
                max(m.metadata.sequence.stream for m in fresh),
            )
        for m in msgs:
            await m.ack()

    async def decide(self) -> WitnessResult:
        result = WitnessResult()
        waiting: set[str] = set()  # a partner's later checkpoints wait behind its first
        for held in self.book.inbox():
            try:
                partner = subjects.partner_of(held.subject)
            except ValueError:
                partner = "?"
            if partner in waiting:
                result.waiting += 1
                continue
            try:
                checkpoint, tree, repeat = self._check(held)
            except _Wait:
                waiting.add(partner)
                result.waiting += 1
                continue
            except CheckpointRejected as e:
                log.warning("checkpoint %d refused: %s", held.stream_seq, e)
                await self._quarantine(held, e.reason)
                self.book.reject(held, partner, e.reason, e.detail)
                result.rejected[e.reason] += 1
                continue
            if repeat:
                self.book.drop(held)
                result.repeated += 1
                continue
            signed = checkpoints.cosign(checkpoint, self.region.aggregator.id, self.key)
            self.book.witness(held, checkpoint, tree, signed)
            result.cosigned += 1
            log.info("cosigned %s's checkpoint of size %d", checkpoint.partner, checkpoint.size)
        return result

    def _check(self, held: _Held) -> tuple[Checkpoint, MerkleTree, bool]:
        checkpoint = checkpoints.open_checkpoint(held.data, self.region, held.at, held.subject)
        partner, size = checkpoint.partner, checkpoint.size
        latest = self.book.latest(partner)
        witnessed = latest.witnessed if latest else None
        if witnessed is None or size >= witnessed.size:
            have = self.store.published_count(partner, size)
            if have < size:
                if self.store.position() < held.events_high:
                    raise _Wait
                raise CheckpointRejected(
                    "unpublished",
                    f"{partner}'s checkpoint of size {size} covers {size - have} message(s) "
                    "the events stream does not hold",
                )
        trees: dict[int, MerkleTree] = {}

        def root_at(k: int) -> bytes:
            if latest is not None and k >= latest.witnessed.size:
                tree = MerkleTree.from_frontier(latest.witnessed.size, latest.frontier)
                tree.extend(self.store.published_leaves(partner, latest.witnessed.size, k))
            else:
                tree = MerkleTree()
                tree.extend(self.store.published_leaves(partner, 0, k))
            trees[k] = tree
            return tree.root()

        checkpoints.check_checkpoint(checkpoint, witnessed, root_at)
        repeat = witnessed is not None and size == witnessed.size
        return checkpoint, trees[size], repeat

    async def _quarantine(self, held: _Held, reason: str) -> None:
        await quarantine(
            self.js,
            self.region.region,
            reason,
            held.subject,
            held.headers,
            held.data,
            seq=held.stream_seq,
            msg_id=f"quarantine:checkpoint:{held.stream_seq}",
        )

    async def publish_pending(self) -> None:
        """Publishes the cosignatures kept but not yet acknowledged (idempotent message ids)."""
        for partner, size, signed in self.book.unpublished():
            try:
                await self.js.publish(
                    subjects.witness(self.region.region, partner),
                    signed,
                    headers={envelope.MSG_ID: checkpoints.cosignature_msg_id(partner, size)},
                    stream=subjects.checkpoints_stream(self.region.region),
                )
            except (nats.errors.Error, nats.js.errors.Error) as e:
                log.warning("cosignature %s/%d not published yet (%s)", partner, size, e)
                return
            self.book.mark_published(partner, size)

    def status(self) -> dict[str, object]:
        return self.book.status()


def _held(m: Msg, events_high: int) -> _Held:
    return _Held(
        m.metadata.sequence.stream,
        m.subject,
        dict(m.headers or {}),
        bytes(m.data),
        m.metadata.timestamp,
        events_high,
    )
