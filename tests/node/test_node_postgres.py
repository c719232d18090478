"""The node on the real PostgreSQL server: same behaviour as on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from handsoff.events import FirstResponseGiven, ResponderRole
from handsoff.federation.relay import NumberGap, Position
from handsoff.keys import KdfStrength, load_keyring
from handsoff.services.node.admin import RelaySharingResumed
from handsoff.services.node.config import NodeConfig, NodePaths, PostgresSettings, load_config
from handsoff.services.node.errors import TamperedEvent
from handsoff.services.node.link import relay_position
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


def test_a_resumption_after_a_restore_persists_on_postgres(
    tmp_path: Path, postgres_dsn: dict[str, Any], pg_schema: str
) -> None:
    """node resume-sharing's two writes (the signed admin event, the relay's position) on
    the PostgreSQL backend: kept across a restart, and the gap is what the relay numbers by."""
    directory = tmp_path / "node"
    node = Node.init(
        directory, _config(postgres_dsn, pg_schema), PASSPHRASE, KdfStrength.INTERACTIVE
    )
    try:
        resumed = RelaySharingResumed(
            after_notification=12, first_lost=9, last_lost=20, stream_seq=57,
            resumed_at=datetime.now(UTC),
        )
        node.admin.sharing_resumed(resumed, "handsoff node resume-sharing")
        position = relay_position(node)
        try:
            position.save(Position(12, 57))
        finally:
            position.close()
    finally:
        node.close()

    again = Node.open(directory, PASSPHRASE)
    try:
        assert again.admin.resumptions() == [resumed]
        assert again.admin.number_gaps() == [NumberGap(12, 9, 20)]
        position = relay_position(again)
        try:
            assert position.load() == Position(12, 57)
        finally:
            position.close()
        assert again.verify().intact  # the admin event is sealed and chained like any
    finally:
        again.close()
