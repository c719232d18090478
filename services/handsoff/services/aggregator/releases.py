"""Cutting releases: figures at a stream position, protected, signed, kept, published.

    IngestStore at position P --tally--> exact Indicators --release.build--> statements
        --sign (aggregator key)--> releases table + suppression memory   (one transaction)
        --> ReleaseFeed (HTTP/SSE) --> hx.<r>.aggregates.<indicator> + KV bucket of latest

A release is a pure function of (the accepted envelopes up to P, the previous releases'
suppression memory, k, the region's breakdown rule): no clock, no randomness (Ed25519
signatures are deterministic). So `rebuild` reproduces every release byte for byte.

A release is stored before it is published; the stored `published` mark moves after the
PubAcks. After a crash, what was stored but not marked is published again under the same
message ids (`release-<n>-<indicator>`), which the stream deduplicates within its window.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext

from handsoff.federation import statements, subjects
from handsoff.federation.envelope import MSG_ID
from handsoff.federation.region import RegionDocument
from handsoff.federation.statements import AggregateStatement, Inputs
from handsoff.keys import SigningKey
from handsoff.keys.merkle import MerkleTree
from handsoff.services.aggregator import release, tally
from handsoff.services.aggregator.disclosure import DEFAULT_K, SuppressionMemory
from handsoff.services.aggregator.feed import LatestRelease, ReleaseFeed
from handsoff.services.aggregator.ingest import IngestStore

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS releases (
    release INTEGER NOT NULL,
    indicator TEXT NOT NULL,
    signed BLOB NOT NULL,
    PRIMARY KEY (release, indicator)
);
CREATE TABLE IF NOT EXISTS release_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    release INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    memory BLOB NOT NULL,
    published INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class ReleaseState:
    release: int  # the newest release kept
    last_seq: int  # the stream position it was computed at
    memory: SuppressionMemory
    published: int  # the newest release whose statements were all acknowledged by NATS


def msg_id(number: int, indicator: str) -> str:
    return f"release-{number}-{indicator}"


class ReleaseBook:
    """The releases kept in the aggregator's SQLite file (the store's connection)."""

    def __init__(self, store: IngestStore) -> None:
        self.store = store
        self._db: sqlite3.Connection = store.connection
        self._db.executescript(_SCHEMA)

    def state(self) -> ReleaseState | None:
        row = self._db.execute(
            "SELECT release, last_seq, memory, published FROM release_state WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        memory = msgspec.json.decode(row[2], type=SuppressionMemory)
        return ReleaseState(int(row[0]), int(row[1]), memory, int(row[3]))

    def numbers(self) -> tuple[int, int]:
        """(the newest release kept, the newest published): one row, no memory decoded."""
        row = self._db.execute(
            "SELECT release, published FROM release_state WHERE id = 1"
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def signed(self, number: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT signed FROM releases WHERE release = ? ORDER BY indicator", (number,)
        )
        return [bytes(r[0]) for r in rows]

    def keep(
        self, number: int, last_seq: int, memory: SuppressionMemory, signed: Sequence[bytes]
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for raw in signed:
                indicator = msgspec.json.decode(
                    statements.statement_bytes(raw), type=AggregateStatement
                ).indicator
                db.execute(
                    "INSERT INTO releases (release, indicator, signed) VALUES (?, ?, ?)",
                    (number, indicator, raw),
                )
            db.execute(
                "INSERT INTO release_state (id, release, last_seq, memory, published) "
                "VALUES (1, ?, ?, ?, 0) ON CONFLICT (id) DO UPDATE SET "
                "release = excluded.release, last_seq = excluded.last_seq, "
                "memory = excluded.memory",
                (number, last_seq, msgspec.json.encode(memory)),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def mark_published(self, number: int) -> None:
        self._db.execute(
            "UPDATE release_state SET published = max(published, ?) WHERE id = 1", (number,)
        )

    def latest(self) -> LatestRelease | None:
        state = self.state()
        if state is None:
            return None
        return ReleaseFeed.from_signed(state.release, self.signed(state.release))


def commitment(store: IngestStore) -> tuple[int, str]:
    """(how many envelopes were accepted, hex RFC 6962 root over their leaves)."""
    tree = MerkleTree()
    for leaf in store.leaves():
        tree.append(leaf)
    return tree.size, tree.root().hex()


@dataclass(frozen=True)
class Cutter:
    """Computes the next release from the store (pure given the store's contents)."""

    region: RegionDocument
    key: SigningKey
    k: int = DEFAULT_K

    def cut(
        self,
        store: IngestStore,
        number: int,
        memory: SuppressionMemory,
        *,
        k: int | None = None,
        breakdowns: str | None = None,
        region_version: int | None = None,
    ) -> tuple[release.Release, list[bytes]]:
        accepted, root = commitment(store)
        header = release.ReleaseHeader(
            region=self.region.region,
            region_version=region_version if region_version is not None else self.region.version,
            aggregator=self.region.aggregator.id,
            release=number,
            k=k if k is not None else self.k,
            breakdowns=breakdowns if breakdowns is not None else self.region.breakdowns,
            as_of=store.as_of(),
            inputs=Inputs(
                stream=subjects.events_stream(self.region.region),
                first_seq=1,
                last_seq=store.position(),
                accepted=accepted,
                commitment=root,
            ),
        )
        countries = sorted({p.country for p in self.region.partners})
        made = release.build(tally.compute(store.connection), header, countries, memory)
        return made, [statements.sign(s, self.key) for s in made.statements]


async def ensure_latest_bucket(js: JetStreamContext, region: str, replicas: int = 1) -> None:
    bucket = subjects.latest_bucket(region)
    try:
        await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                description=f"handsoff region {region}: latest signed statement per indicator",
                history=1,
                storage=StorageType.FILE,
                replicas=replicas,  # as many as the region's streams in a cluster
            )
        )


async def publish(js: JetStreamContext, region: str, latest: LatestRelease) -> None:
    """Every statement of a release on its subject (kept in the aggregates stream) and in
    the KeyValue bucket of latest statements."""
    kv = await js.key_value(subjects.latest_bucket(region))
    for s, raw in zip(latest.statements, latest.signed, strict=True):
        await js.publish(
            subjects.aggregates(region, s.indicator),
            raw,
            headers={MSG_ID: msg_id(latest.number, s.indicator)},
            stream=subjects.aggregates_stream(region),
        )
        await kv.put(s.indicator, raw)
