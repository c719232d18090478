"""The node end to end on real SQLite files: restart, rotation, concurrency, config."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from handsoff.events import (
    CaseClosed,
    CaseRuleViolation,
    ClosureReason,
    FirstResponseGiven,
    ResponderRole,
)
from handsoff.keys import kid_hex, load_keyring
from handsoff.services.errors import ConfigError
from handsoff.services.node.config import NodePaths, load_config
from handsoff.services.node.errors import StaleCase
from handsoff.services.node.node import Node, NodeBusy, exclusive
from handsoff.services.node.sealing import link_digest, unseal
from handsoff.services.node.verify import verify_node
from support import PASSPHRASE, T0, incident, make_node


def _first_response(hours: int = 3) -> FirstResponseGiven:
    return FirstResponseGiven(
        responded_at=T0 + timedelta(hours=hours),
        responder_role=ResponderRole.PEER_EDUCATOR,
        responder="lindi",
    )


def test_restarted_node_serves_the_same_cases_and_verifies(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    node = make_node(directory)
    created = [node.cases.report_incident(incident(str(i)), "pat") for i in range(5)]
    node.cases.record_change(created[0].case_id, 1, _first_response(), "pat")
    before = {s.case_id: s for s in node.cases.states.values()}
    node.close()

    again = Node.open(directory, PASSPHRASE)
    try:
        again.cases.refresh()
        assert again.cases.states == before
        state, history = again.cases.history(created[0].case_id)
        assert state == before[created[0].case_id]
        assert [type(e.change).__name__ for e in history] == [
            "IncidentReported",
            "FirstResponseGiven",
        ]
        assert history[0].change == incident("0")
        assert history[0].recorded_by == "pat"
        assert again.verify().intact
    finally:
        again.close()


def test_stale_expected_version_is_refused_and_nothing_is_written(node: Node) -> None:
    state = node.cases.report_incident(incident(), "pat")
    node.cases.record_change(state.case_id, 1, _first_response(), "pat")
    with pytest.raises(StaleCase) as e:
        node.cases.record_change(state.case_id, 1, _first_response(4), "kim")
    assert "is at version 2, not 1" in str(e.value)
    assert node.cases.history(state.case_id)[0].version == 2


def test_two_processes_writing_the_same_version_lose_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    first = make_node(directory)
    second = Node.open(directory, PASSPHRASE)  # as the CLI would, beside a serving node
    try:
        state = first.cases.report_incident(incident(), "pat")
        second.cases.refresh()
        second.cases.record_change(state.case_id, 1, _first_response(), "kim")
        with pytest.raises(StaleCase):
            first.cases.record_change(state.case_id, 1, _first_response(5), "pat")
        # the first process caught up on the way: it now sees the second's write
        assert first.cases.state(state.case_id).version == 2
        closed = first.cases.record_change(
            state.case_id,
            2,
            CaseClosed(closed_at=T0 + timedelta(days=1), reason=ClosureReason.RESOLVED),
            "sup",
        )
        assert closed.version == 3
        assert first.verify().intact
    finally:
        first.close()
        second.close()


def test_rule_violation_changes_nothing(node: Node) -> None:
    state = node.cases.report_incident(incident(), "pat")
    node.cases.record_change(
        state.case_id,
        1,
        CaseClosed(closed_at=T0 + timedelta(days=1), reason=ClosureReason.RESOLVED),
        "sup",
    )
    with pytest.raises(CaseRuleViolation):
        node.cases.record_change(state.case_id, 2, _first_response(), "pat")
    assert node.cases.history(state.case_id)[0].version == 2


def test_rotation_new_key_signs_old_key_still_verifies(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    node = make_node(directory)
    try:
        old_kid = node.keyring.current.kid
        before = node.cases.report_incident(incident("before"), "pat")
        new = node.rotate_key(PASSPHRASE, "admin")
        after = node.cases.report_incident(incident("after"), "pat")
        assert new.kid != old_kid
        assert node.keyring.record(old_kid).retired_at is not None
        assert node.verify().intact
        assert [s.kid for s in node.cases.seals(before.case_id)] == [old_kid]
        assert [s.kid for s in node.cases.seals(after.case_id)] == [new.kid]
    finally:
        node.close()
    reopened = Node.open(directory, PASSPHRASE)
    try:
        assert kid_hex(reopened.signer.kid) == new.kid
        assert reopened.verify().intact
        with sqlite3.connect(directory / "data" / "admin.sqlite") as db:
            topics = [t for (t,) in db.execute("SELECT topic FROM stored_events ORDER BY rowid")]
            rotation_state = db.execute(
                "SELECT state FROM stored_events WHERE topic=?",
                ("handsoff.admin:node_key_rotated/1",),
            ).fetchone()[0]
        assert topics == ["handsoff.admin:node_initialised/1", "handsoff.admin:node_key_rotated/1"]
        assert kid_hex(unseal(rotation_state, "rotation").kid) == old_kid  # signed by the old key
    finally:
        reopened.close()


def test_retired_key_signing_after_rotation_is_detected(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    node = make_node(directory)
    old_signer = node.signer
    node.rotate_key(PASSPHRASE, "admin")
    node.cases.report_incident(incident("signed by the new key"), "pat")
    state = node.cases.report_incident(incident(), "pat")
    node.close()
    # Someone holding the retired key re-signs an event written after the new key had signed.
    with sqlite3.connect(directory / "data" / "cases.sqlite") as db:
        rowid, topic, stored = db.execute(
            "SELECT rowid, topic, state FROM stored_events WHERE originator_id=?",
            (state.case_id.hex,),
        ).fetchone()
        s = unseal(stored, "test")
        link = link_digest(s.prev, state.case_id, 1, topic, s.body)
        forged = b"\x01" + old_signer.kid + s.prev + old_signer.sign(link) + s.body
        db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (forged, rowid))
    paths = NodePaths(directory)
    report = verify_node(load_config(paths), paths.data, load_keyring(paths.keyring))
    cases = next(log for log in report.logs if log.log == "cases")
    assert not cases.intact
    assert cases.failure is not None
    assert f"signed by retired key {kid_hex(old_signer.kid)}" in cases.failure


def test_interrupted_rotation_is_finished_on_open(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    node = make_node(directory)
    key_file = directory / "keys" / "node.key"
    old_key_file = key_file.read_bytes()
    new = node.rotate_key(PASSPHRASE, "admin")
    node.close()
    # Simulate a crash between saving the keyring and renaming the new key file.
    (directory / "keys" / "node.key.new").write_bytes(key_file.read_bytes())
    key_file.write_bytes(old_key_file)
    reopened = Node.open(directory, PASSPHRASE)
    try:
        assert kid_hex(reopened.signer.kid) == new.kid
        assert not (directory / "keys" / "node.key.new").exists()
    finally:
        reopened.close()


def test_serving_node_holds_the_lock(tmp_path: Path) -> None:
    node = make_node(tmp_path / "node")
    node.close()
    with exclusive(node.paths):
        second = exclusive(node.paths)
        with pytest.raises(NodeBusy, match="in use by another process"):
            second.__enter__()
    with exclusive(node.paths):  # released again
        pass


def test_init_refuses_an_existing_node(tmp_path: Path) -> None:
    make_node(tmp_path / "node").close()
    with pytest.raises(ConfigError, match="already holds a node"):
        make_node(tmp_path / "node")
