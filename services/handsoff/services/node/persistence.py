"""Builds the eventsourcing environment for each of a node's applications.

SQLite: one file per application (apps sharing a file would share one event table).
PostgreSQL: one schema per node, tables named after the application.
"""

from __future__ import annotations

from pathlib import Path

from eventsourcing.persistence import ApplicationRecorder, InfrastructureFactory
from eventsourcing.utils import Environment

from handsoff.services.errors import ConfigError, StoreUnavailable
from handsoff.services.node.config import NodeConfig, PostgresSettings


def store_env(config: NodeConfig, data_dir: Path, app_name: str) -> dict[str, str]:
    """The complete environment for one application; os.environ is never consulted."""
    if config.backend == "sqlite":
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(data_dir / f"{app_name.lower()}.sqlite"),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    if config.postgres is None:
        raise ConfigError("backend is postgres but no postgres settings are configured")
    return postgres_env(config.postgres)


def postgres_env(pg: PostgresSettings) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": pg.dbname,
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password(),
        "POSTGRES_SCHEMA": pg.schema,
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }


def ensure_postgres_schema(pg: PostgresSettings) -> None:
    """eventsourcing creates tables but not the schema they live in."""
    import psycopg  # only sites configured for PostgreSQL need the extra
    from psycopg import sql

    try:
        with psycopg.connect(
            dbname=pg.dbname,
            host=pg.host,
            port=pg.port,
            user=pg.user,
            password=pg.password() or None,
            connect_timeout=5,
            autocommit=True,
        ) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg.schema))
            )
    except psycopg.Error as e:
        raise StoreUnavailable(f"PostgreSQL at {pg.host}:{pg.port}/{pg.dbname}: {e}") from None


def application_recorder(env: dict[str, str], app_name: str) -> ApplicationRecorder:
    """The recorder the node's applications use, built exactly as they build it."""
    factory = InfrastructureFactory.construct(Environment(app_name, env))
    return factory.application_recorder()
