"""The eventsourcing library's own recorder contract, run against the node's recorders.

Every recorder here is built the way a node builds it, through
`handsoff.services.node.persistence` (`store_env` + `application_recorder`): SQLite on a
real file in a fresh temporary directory, PostgreSQL in a fresh schema created with
`ensure_postgres_schema`. The test methods themselves come from
`eventsourcing.tests.persistence` (abstract `unittest.TestCase` classes), modelled on
how the library's own tests/persistence_tests/test_sqlite.py, test_postgres.py and
test_noninterleaving_notification_ids.py use them.

The library's suite is imported as a module (not its classes by name) so that pytest
does not collect the abstract bases themselves.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import unittest
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import AggregateRecorder, ApplicationRecorder, StoredEvent
from eventsourcing.tests import persistence as contract
from psycopg import sql

from handsoff.services.node.config import NodeConfig, PostgresSettings
from handsoff.services.node.persistence import (
    application_recorder,
    ensure_postgres_schema,
    store_env,
)

APP_NAME = "ContractCheck"  # any application name; it names the Postgres table
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
THREAD_JOIN_TIMEOUT = 30.0


@functools.cache
def _postgres_dbname() -> tuple[str | None, str]:
    """(database to use, "") on the local server, or (None, why it is unusable)."""
    password = os.environ.get("PGPASSWORD") or None
    reason = "no database to connect to"
    for dbname in ("test", "postgres"):
        try:
            with psycopg.connect(
                host=PG_HOST,
                port=PG_PORT,
                user=PG_USER,
                password=password,
                dbname=dbname,
                connect_timeout=3,
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            reason = str(e).strip() or type(e).__name__
            continue
        return dbname, ""
    return None, reason


class _NodeRecorders(unittest.TestCase):
    """Builds recorders through the node's functions and closes them after each test."""

    config: NodeConfig
    data_dir: Path

    def setUp(self) -> None:
        super().setUp()
        self._recorders: list[ApplicationRecorder] = []
        self._threads_before = set(threading.enumerate())

    def tearDown(self) -> None:
        # The library's test_concurrent_no_conflicts returns without joining its two
        # reader threads (it only sets their stop flag), and a reader still inside
        # sqlite3 when its connection is closed crashes the interpreter (SIGSEGV). So
        # wait for every non-daemon thread the test started (the psycopg pool's own
        # workers are daemon threads and stop when the pool is closed) ...
        me = threading.current_thread()
        stray = [
            t
            for t in threading.enumerate()
            if t not in self._threads_before and not t.daemon and t is not me
        ]
        for thread in stray:
            thread.join(timeout=THREAD_JOIN_TIMEOUT)
        if alive := [t.name for t in stray if t.is_alive()]:
            # Closing under a running thread could crash the run; leak the pools instead.
            self.fail(f"threads still running {THREAD_JOIN_TIMEOUT} s after the test: {alive}")
        # ... then close every pool explicitly rather than leaving it to the garbage
        # collector: an open psycopg pool keeps its server connections and worker
        # threads, and from Python 3.13 an unclosed sqlite3 connection is a
        # ResourceWarning, an error under filterwarnings=error.
        for recorder in self._recorders:
            recorder.datastore.close()  # type: ignore[attr-defined]
        self._recorders.clear()
        super().tearDown()

    def create_recorder(self) -> ApplicationRecorder:
        env = store_env(self.config, self.data_dir, APP_NAME)
        recorder = application_recorder(env, APP_NAME)
        self._recorders.append(recorder)
        return recorder


class _SQLiteNode(_NodeRecorders):
    def setUp(self) -> None:
        super().setUp()
        self._tmp = tempfile.TemporaryDirectory(prefix="hx-recorder-")
        self.data_dir = Path(self._tmp.name)
        self.config = NodeConfig(partner="p1", country="BW")

    def tearDown(self) -> None:
        super().tearDown()  # close the connections before deleting the files
        self._tmp.cleanup()

    def create_recorder(self) -> ApplicationRecorder:
        recorder = super().create_recorder()
        # Guard the premise of this module: a real file, not an in-memory database.
        db_file = self.data_dir / f"{APP_NAME.lower()}.sqlite"
        assert db_file.is_file(), f"{db_file} was not created"
        return recorder


class _PostgresNode(_NodeRecorders):
    def setUp(self) -> None:
        dbname, reason = _postgres_dbname()
        if dbname is None:
            raise unittest.SkipTest(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {reason}")
        super().setUp()
        self.pg = PostgresSettings(
            schema=f"hx_test_{uuid.uuid4().hex[:12]}",
            dbname=dbname,
            host=PG_HOST,
            port=PG_PORT,
            user=PG_USER,
            password_env="PGPASSWORD" if os.environ.get("PGPASSWORD") else None,
        )
        ensure_postgres_schema(self.pg)
        self.addCleanup(self._drop_schema)  # runs after tearDown has closed the pools
        self.config = NodeConfig(partner="p1", country="BW", backend="postgres", postgres=self.pg)
        self.data_dir = Path("/nonexistent")  # unused by the Postgres backend

    def _drop_schema(self) -> None:
        with psycopg.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            password=self.pg.password() or None,
            dbname=self.pg.dbname,
            autocommit=True,
        ) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.pg.schema))
            )


class _AsAggregateRecorder(AggregateRecorder):
    """The node's application recorder, seen through the aggregate-recorder contract.

    The node builds no plain aggregate recorders, but its application recorder is one
    too, and the aggregate contract (`test_insert_and_select`) is the only part of the
    library's suite that checks what the hash-chained event store relies on:
    `select_events` with gt/lte/desc/limit, IntegrityError on a version conflict, atomic
    multi-event inserts. The contract asserts that `insert_events` returns None (an
    aggregate recorder's result), whereas an application recorder returns notification
    ids; this adapter checks there is one id per event and returns None. Everything else
    is the node's recorder, unchanged.
    """

    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.recorder = recorder

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        ids = self.recorder.insert_events(stored_events, **kwargs)
        # For an empty list the Postgres recorder returns None and SQLite returns [].
        assert len(ids or []) == len(stored_events), (ids, stored_events)

    def select_events(
        self,
        originator_id: uuid.UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return self.recorder.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)


class _AggregateContract:
    """Mixin (not a TestCase, so pytest does not collect it): wraps the node's recorder."""

    def create_recorder(self) -> _AsAggregateRecorder:
        return _AsAggregateRecorder(super().create_recorder())  # type: ignore[misc]


# --- SQLite (the default backend: one file per application) -------------------------


class TestSQLiteAggregateRecorderContract(
    _AggregateContract, _SQLiteNode, contract.AggregateRecorderTestCase
):
    pass


class TestSQLiteApplicationRecorderContract(
    _SQLiteNode, contract.ApplicationRecorderTestCase[ApplicationRecorder]
):
    # Not part of the library's reusable case, but the node's consumers rely on it:
    # SQLite cannot push notifications, so anything following a SQLite node must poll.
    def test_subscribe_is_not_supported(self) -> None:
        recorder = self.create_recorder()
        with pytest.raises(NotImplementedError, match="does not support subscriptions"):
            recorder.subscribe(gt=None)


class TestSQLiteNonInterleavingNotificationIDs(
    _SQLiteNode, contract.NonInterleavingNotificationIDsBaseCase
):
    insert_num = 10000  # as in the library's TestNonInterleavingSQLiteFileDB


# --- PostgreSQL (one schema per node, table "<app>_events") --------------------------


class TestPostgresAggregateRecorderContract(
    _AggregateContract, _PostgresNode, contract.AggregateRecorderTestCase
):
    pass


class TestPostgresApplicationRecorderContract(
    _PostgresNode, contract.ApplicationRecorderTestCase[ApplicationRecorder]
):
    # The library keeps this one optional because not every backend has LISTEN/NOTIFY;
    # its own Postgres tests run it, and so do we.
    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestPostgresNonInterleavingNotificationIDs(
    _PostgresNode, contract.NonInterleavingNotificationIDsBaseCase
):
    insert_num = 1000  # the base default; the library's own Postgres test uses 100
