"""Announcing each region version the aggregator takes, before it ingests anything under it.

    start with version N, not announced yet (TakenBook: the `region_taken` table)
        --> RegionTaken(N, after_seq = the store's position, the witness's position in the
            checkpoints stream and the checkpoints it has still to decide, the signed region
            file) signed by the aggregator key (federation/announcements.py)
        --> hx.<r>.aggregates._region (HX_<R>_AGGREGATES), Nats-Msg-Id
            region-taken:<N>:<after_seq>, PubAck awaited
        --> recorded in the store; only then does ingest start

A crash between the PubAck and the record publishes the announcement again on the next
start: nothing was ingested meanwhile, so after_seq and therefore the bytes and the message
id are the same; the stream deduplicates within its window and auditors count identical
copies once. Every events message with a sequence above after_seq is judged under N until
the next announcement, and so is every checkpoint the witness takes or still has to decide,
which is what an auditor replays (auditor/announcements.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import nats.js.errors
from nats.js.client import JetStreamContext

from handsoff.federation import announcements, subjects
from handsoff.federation.envelope import MSG_ID
from handsoff.federation.region import SignedRegion
from handsoff.keys import SigningKey
from handsoff.services.aggregator.ingest import IngestStore
from handsoff.services.errors import ServiceError

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS region_taken (
    version INTEGER PRIMARY KEY,
    after_seq INTEGER NOT NULL,
    signed BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Taken:
    """An announcement made (published and acknowledged)."""

    version: int
    after_seq: int
    signed: bytes


class TakenBook:
    """The announcements made, in the aggregator's SQLite file (the store's connection)."""

    def __init__(self, store: IngestStore) -> None:
        self._db: sqlite3.Connection = store.connection
        self._db.executescript(_SCHEMA)

    def latest(self) -> Taken | None:
        row = self._db.execute(
            "SELECT version, after_seq, signed FROM region_taken ORDER BY version DESC LIMIT 1"
        ).fetchone()
        return Taken(int(row[0]), int(row[1]), bytes(row[2])) if row else None

    def all(self) -> list[Taken]:
        rows = self._db.execute(
            "SELECT version, after_seq, signed FROM region_taken ORDER BY version"
        )
        return [Taken(int(v), int(a), bytes(s)) for v, a, s in rows]

    def record(self, taken: Taken) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO region_taken (version, after_seq, signed) VALUES (?, ?, ?)",
            (taken.version, taken.after_seq, taken.signed),
        )

    def record_all(self, made: Sequence[Taken]) -> None:
        for taken in made:
            self.record(taken)


class AnnounceError(ServiceError):
    """The version held is older than one announced already (a folder put back?)."""


async def announce(
    js: JetStreamContext,
    book: TakenBook,
    region: SignedRegion,
    key: SigningKey,
    position: int,
    checkpoints_position: int = 0,
    checkpoints_pending: Sequence[int] = (),
) -> Taken | None:
    """Announces `region` (the version held) unless it was announced already; `position`:
    the store's position now (nothing ingested under this version yet); the witness's now
    (nothing taken or decided under this version yet). The announcement made, or None."""
    doc = region.document
    latest = book.latest()
    if latest is not None and latest.version == doc.version:
        return None
    if latest is not None and latest.version > doc.version:
        raise AnnounceError(
            f"version {latest.version} of region {doc.region} was announced already; this "
            f"aggregator holds version {doc.version}: an aggregator never goes back"
        )
    taken = announcements.announcement(region, position, checkpoints_position, checkpoints_pending)
    signed = announcements.sign(taken, key)
    await js.publish(
        subjects.region_taken(doc.region),
        signed,
        headers={MSG_ID: announcements.msg_id(doc.version, position)},
        stream=subjects.aggregates_stream(doc.region),
    )
    made = Taken(doc.version, position, signed)
    book.record(made)
    return made


async def announced_at(js: JetStreamContext, region: str, version: int) -> datetime | None:
    """The stream time of the first announcement of `version` (what an auditor judges the
    version's grace by: region.grace_until), or None if there is none to read."""
    stream, subject = subjects.aggregates_stream(region), subjects.region_taken(region)
    seq = 1
    while True:
        try:
            m = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        try:
            if announcements.open_taken(m.data or b"", region).version == version:
                return m.time
        except announcements.TakenRejected:
            pass
        seq = (m.seq or seq) + 1
