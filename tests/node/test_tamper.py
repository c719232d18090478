"""Tampering with a stored log is detected by `node verify` and on read, naming the event."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from handsoff.events import ConsentGiven, ConsentPurpose, FirstResponseGiven, ResponderRole
from handsoff.keys import SigningKey
from handsoff.services.cli import main
from handsoff.services.node.errors import TamperedEvent
from handsoff.services.node.node import Node
from handsoff.services.node.sealing import link_digest, unseal
from support import PASSPHRASE, T0, incident, make_node


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, UUID, UUID]:
    """A closed node directory with two cases of three events each."""
    directory = tmp_path / "node"
    node = make_node(directory)
    ids = []
    for marker in ("a", "b"):
        state = node.cases.report_incident(incident(marker), "pat")
        node.cases.record_change(
            state.case_id,
            1,
            FirstResponseGiven(
                responded_at=T0 + timedelta(hours=3),
                responder_role=ResponderRole.PARALEGAL,
                responder="pat",
            ),
            "pat",
        )
        node.cases.record_change(
            state.case_id,
            2,
            ConsentGiven(
                purpose=ConsentPurpose.REGIONAL_STATISTICS, given_at=T0 + timedelta(hours=3)
            ),
            "pat",
        )
        ids.append(state.case_id)
    node.close()
    return directory, ids[0], ids[1]


def _db(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / "data" / "cases.sqlite")


def _row(db: sqlite3.Connection, case: UUID, version: int) -> tuple[int, str, bytes]:
    rowid, topic, state = db.execute(
        "SELECT rowid, topic, state FROM stored_events"
        " WHERE originator_id=? AND originator_version=?",
        (case.hex, version),
    ).fetchone()
    return rowid, topic, state


def _verify(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["node", "verify", "--dir", str(directory)])
    return code, capsys.readouterr().out


def _read_fails(directory: Path, case: UUID) -> str:
    """Both read paths refuse: the case read afresh, and the index catching up."""
    n = Node.open(directory, PASSPHRASE)
    try:
        with pytest.raises(TamperedEvent):
            n.cases.refresh()
        with pytest.raises(TamperedEvent) as e:
            n.cases.history(case)
    finally:
        n.close()
    return str(e.value)


def test_untouched_log_verifies(
    recorded: tuple[Path, UUID, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, a, _ = recorded
    code, out = _verify(directory, capsys)
    assert code == 0, out
    assert "cases: 6 events in 2 aggregates, intact" in out
    n = Node.open(directory, PASSPHRASE)
    try:
        state, history = n.cases.history(a)
        assert [e.originator_version for e in history] == [1, 2, 3]
        assert state.version == 3
    finally:
        n.close()


def test_one_flipped_byte_is_named(
    recorded: tuple[Path, UUID, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, a, _ = recorded
    with _db(directory) as db:
        rowid, _, state = _row(db, a, 2)
        flipped = bytearray(state)
        flipped[-5] ^= 0x01
        db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (bytes(flipped), rowid))
    code, out = _verify(directory, capsys)
    assert code == 1
    assert f"cases event {a} v2 (notification {rowid}): signature does not verify" in out
    assert f"{a} v2" in _read_fails(directory, a)


def test_deleted_middle_event_is_named(
    recorded: tuple[Path, UUID, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, a, _ = recorded
    with _db(directory) as db:
        db.execute(
            "DELETE FROM stored_events WHERE originator_id=? AND originator_version=2", (a.hex,)
        )
    code, out = _verify(directory, capsys)
    assert code == 1
    assert f"cases event {a} v3" in out
    assert "chain broken: versions 2..2 are missing" in out
    assert "versions 2..2 are missing" in _read_fails(directory, a)


def test_swapped_events_are_named(
    recorded: tuple[Path, UUID, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, a, _ = recorded
    with _db(directory) as db:
        r2, t2, s2 = _row(db, a, 2)
        r3, t3, s3 = _row(db, a, 3)
        db.execute("UPDATE stored_events SET topic=?, state=? WHERE rowid=?", (t3, s3, r2))
        db.execute("UPDATE stored_events SET topic=?, state=? WHERE rowid=?", (t2, s2, r3))
    code, out = _verify(directory, capsys)
    assert code == 1
    assert f"cases event {a} v2 (notification {r2}): signature does not verify" in out
    assert f"{a} v2" in _read_fails(directory, a)


def test_event_moved_to_another_case_is_named(
    recorded: tuple[Path, UUID, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, a, b = recorded
    with _db(directory) as db:
        rowid, topic, state = _row(db, a, 3)
        db.execute("DELETE FROM stored_events WHERE rowid=?", (rowid,))
        db.execute("INSERT INTO stored_events VALUES (?, 4, ?, ?)", (b.hex, topic, state))
        moved = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
    code, out = _verify(directory, capsys)
    assert code == 1
    assert f"cases event {b} v4 (notification {moved}): signature does not verify" in out
    assert f"{b} v4" in _read_fails(directory, b)


def test_event_resigned_with_a_foreign_key_is_named(
    recorded: tuple[Path, UUID, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, a, _ = recorded
    intruder = SigningKey.generate()
    with _db(directory) as db:
        rowid, topic, state = _row(db, a, 2)
        s = unseal(state, "test")
        link = link_digest(s.prev, a, 2, topic, s.body)
        forged = b"\x01" + intruder.kid + s.prev + intruder.sign(link) + s.body
        db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (forged, rowid))
    code, out = _verify(directory, capsys)
    assert code == 1
    assert (
        f"cases event {a} v2 (notification {rowid}): signed by key {intruder.kid.hex()}, "
        "which is not in the node's keyring"
    ) in out
    assert "not in the node's keyring" in _read_fails(directory, a)


def test_foreign_signature_under_the_nodes_key_id_is_named(
    recorded: tuple[Path, UUID, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, a, _ = recorded
    intruder = SigningKey.generate()
    with _db(directory) as db:
        rowid, topic, state = _row(db, a, 3)
        s = unseal(state, "test")
        link = link_digest(s.prev, a, 3, topic, s.body)
        forged = b"\x01" + s.kid + s.prev + intruder.sign(link) + s.body
        db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (forged, rowid))
    code, out = _verify(directory, capsys)
    assert code == 1
    assert (
        f"cases event {a} v3 (notification {rowid}): "
        f"signature does not verify with key {s.kid.hex()}"
    ) in out
