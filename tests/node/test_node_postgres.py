"""The node on the real PostgreSQL server: same behaviour as on SQLite."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from handsoff.events import FirstResponseGiven, ResponderRole
from handsoff.keys import KdfStrength, load_keyring
from handsoff.services.node.config import NodeConfig, NodePaths, PostgresSettings, load_config
from handsoff.services.node.errors import TamperedEvent
from handsoff.services.node.node import Node
from handsoff.services.node.verify import verify_node
from support import PASSPHRASE, T0, incident

pytestmark = pytest.mark.postgres


def _config(postgres_dsn: dict[str, Any], schema: str) -> NodeConfig:
    return NodeConfig(
        partner="sisonke-bw",
        country="BW",
        backend="postgres",
        postgres=PostgresSettings(
            schema=schema,
            dbname=postgres_dsn["dbname"],
            host=postgres_dsn["host"],
            port=postgres_dsn["port"],
            user=postgres_dsn["user"],
        ),
    )


def test_node_on_postgres_restarts_verifies_and_detects_tampering(
    tmp_path: Path, postgres_dsn: dict[str, Any], pg_schema: str
) -> None:
    directory = tmp_path / "node"
    node = Node.init(
        directory, _config(postgres_dsn, pg_schema), PASSPHRASE, KdfStrength.INTERACTIVE
    )
    try:
        created = [node.cases.report_incident(incident(str(i)), "pat") for i in range(3)]
        node.cases.record_change(
            created[0].case_id,
            1,
            FirstResponseGiven(
                responded_at=T0 + timedelta(hours=3),
                responder_role=ResponderRole.PARALEGAL,
                responder="pat",
            ),
            "pat",
        )
        before = dict(node.cases.states)
    finally:
        node.close()
    assert not (directory / "data" / "cases.sqlite").exists()

    again = Node.open(directory, PASSPHRASE)
    try:
        again.cases.refresh()
        assert again.cases.states == before
        assert again.verify().intact
    finally:
        again.close()

    case_id = created[0].case_id
    with psycopg.connect(**postgres_dsn, autocommit=True) as conn:
        table = sql.Identifier(pg_schema, "cases_events")
        (state,) = conn.execute(
            sql.SQL("SELECT state FROM {} WHERE originator_id=%s AND originator_version=2").format(
                table
            ),
            (case_id,),
        ).fetchone()  # type: ignore[misc]
        flipped = bytearray(state)
        flipped[-1] ^= 0x80
        conn.execute(
            sql.SQL(
                "UPDATE {} SET state=%s WHERE originator_id=%s AND originator_version=2"
            ).format(table),
            (bytes(flipped), case_id),
        )

    paths = NodePaths(directory)

    report = verify_node(load_config(paths), paths.data, load_keyring(paths.keyring))
    cases = next(log for log in report.logs if log.log == "cases")
    assert not cases.intact
    assert cases.failure is not None
    assert f"cases event {case_id} v2" in cases.failure
    assert "signature does not verify" in cases.failure
    broken = Node.open(directory, PASSPHRASE)
    try:
        with pytest.raises(TamperedEvent, match=f"{case_id} v2"):
            broken.cases.history(case_id)
    finally:
        broken.close()
