"""The relay's reader (LogSource) is exactly as strict as the plain verified read.

LogSource checks the node's own signatures by signing again (deterministic Ed25519) instead
of verifying, and selects rows with the recorder's query on its own connection. Whatever is
stored, tampered or not, it must return the same changes, or raise the same error for the
same event, as reading with `select_notifications`, a `ChainFollower` that verifies every
signature, and `open_body`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import nacl.bindings
import pytest

from handsoff.events import ConsentGiven, ConsentPurpose, FirstResponseGiven, ResponderRole
from handsoff.federation.relay import Change
from handsoff.keys import SigningKey, verify_signature
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.errors import event_ref
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource
from handsoff.services.node.sealing import link_digest, unseal
from support import PASSPHRASE, T0, incident, make_node

Outcome = tuple[str, Any]
Tamper = Callable[[sqlite3.Connection, UUID, UUID, SigningKey], None]


def _record_case(node: Node, marker: str) -> UUID:
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
        ConsentGiven(purpose=ConsentPurpose.REGIONAL_STATISTICS, given_at=T0 + timedelta(hours=3)),
        "pat",
    )
    return state.case_id


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, UUID, UUID]:
    """A closed node directory with two cases of three events each, interleaved."""
    directory = tmp_path / "node"
    node = make_node(directory)
    a, b = _record_case(node, "a"), _record_case(node, "b")
    node.close()
    return directory, a, b


def _strict(node: Node) -> Outcome:
    """The plain verified read: every signature verified, nothing cached."""
    cases = node.cases
    follower = ChainFollower(cases.name, cases.sealing.keyring)
    out = []
    try:
        for n in cases.recorder.select_notifications(start=0, limit=10_000):
            sealed = follower.check(n)
            where = event_ref(cases.name, n.originator_id, n.originator_version, n.id)
            rec = cases.sealing.open_body(n, sealed.body, where)
            out.append(Change(n.id, rec.originator_id, rec.change))
    except Exception as e:
        return ("error", (type(e), str(e)))
    return ("ok", out)


def _log_source(node: Node, page: int) -> Outcome:
    source, after, out = LogSource(node.cases), 0, []
    try:
        while batch := source.changes_after(after, page):
            out.extend(batch)
            after = batch[-1].notification_id
    except Exception as e:
        return ("error", (type(e), str(e)))
    return ("ok", out)


def _rows(db: sqlite3.Connection, case: UUID, version: int) -> tuple[int, str, bytes]:
    rowid, topic, state = db.execute(
        "SELECT rowid, topic, state FROM stored_events"
        " WHERE originator_id=? AND originator_version=?",
        (case.hex, version),
    ).fetchone()
    return rowid, topic, state


def _rewrite(
    db: sqlite3.Connection, case: UUID, version: int, edit: Callable[[bytes], bytes]
) -> None:
    rowid, _, state = _rows(db, case, version)
    db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (edit(state), rowid))


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def edit(state: bytes) -> bytes:
        b = bytearray(state)
        b[offset] ^= 0x01
        return bytes(b)

    return edit


SIG = 1 + 8 + 32  # offset of the signature in a sealed state (FORMAT | kid | prev | sig | body)


def _resign(
    db: sqlite3.Connection, case: UUID, version: int, sign: Callable[[bytes], tuple[bytes, bytes]]
) -> None:
    """Replaces an event's kid and signature by `sign(link)`; the link is the event's own."""
    _, topic, state = _rows(db, case, version)
    s = unseal(state, "test")
    kid, signature = sign(link_digest(s.prev, case, version, topic, s.body))
    _rewrite(db, case, version, lambda st: st[:1] + kid + s.prev + signature + s.body)


def _randomised_signature(key: SigningKey, message: bytes) -> bytes:
    """A valid Ed25519 signature with a random nonce: not the one `key.sign` makes."""
    h = bytearray(hashlib.sha512(key.seed).digest())
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    a = nacl.bindings.crypto_core_ed25519_scalar_reduce(bytes(h[:32]) + bytes(32))
    r = nacl.bindings.crypto_core_ed25519_scalar_reduce(os.urandom(64))
    big_r = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(r)
    k = nacl.bindings.crypto_core_ed25519_scalar_reduce(
        hashlib.sha512(big_r + key.public_key + message).digest()
    )
    s = nacl.bindings.crypto_core_ed25519_scalar_add(
        r, nacl.bindings.crypto_core_ed25519_scalar_mul(k, a)
    )
    signature = big_r + s
    verify_signature(key.public_key, message, signature)
    assert signature != key.sign(message)
    return signature


def _untouched(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    pass


def _body_byte(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    _rewrite(db, a, 2, _flip(-5))


def _signature_byte(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    # An event inside the chain: its successor's signature covers its content, not this.
    _rewrite(db, a, 2, _flip(SIG + 10))


def _last_signature_byte(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    _rewrite(db, b, 3, _flip(SIG + 63))


def _kid_byte(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    _rewrite(db, a, 1, _flip(3))


def _prev_byte(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    _rewrite(db, a, 3, _flip(SIG - 1))


def _too_short(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    _rewrite(db, a, 2, lambda st: st[:50])


def _format_byte(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    _rewrite(db, b, 1, lambda st: b"\x02" + st[1:])


def _foreign_key(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    intruder = SigningKey.generate()
    _resign(db, a, 2, lambda link: (intruder.kid, intruder.sign(link)))


def _foreign_signature_own_kid(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    intruder = SigningKey.generate()
    _resign(db, a, 2, lambda link: (key.kid, intruder.sign(link)))


def _randomised_own_signature(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    # Valid, by the node's key, but not byte-equal to what signing again gives: accepted.
    _resign(db, a, 2, lambda link: (key.kid, _randomised_signature(key, link)))


def _own_key_over_bad_body(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    # Signed and chained by the node's key, but the body does not decrypt.
    _, topic, state = _rows(db, a, 2)
    s = unseal(state, "test")
    body = bytes(len(s.body))
    link = link_digest(s.prev, a, 2, topic, body)
    _rewrite(db, a, 2, lambda st: st[:1] + key.kid + s.prev + key.sign(link) + body)


def _deleted(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    db.execute("DELETE FROM stored_events WHERE originator_id=? AND originator_version=2", (a.hex,))


def _swapped(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    r2, t2, s2 = _rows(db, a, 2)
    r3, t3, s3 = _rows(db, a, 3)
    db.execute("UPDATE stored_events SET topic=?, state=? WHERE rowid=?", (t3, s3, r2))
    db.execute("UPDATE stored_events SET topic=?, state=? WHERE rowid=?", (t2, s2, r3))


def _moved(db: sqlite3.Connection, a: UUID, b: UUID, key: SigningKey) -> None:
    rowid, topic, state = _rows(db, a, 3)
    db.execute("DELETE FROM stored_events WHERE rowid=?", (rowid,))
    db.execute("INSERT INTO stored_events VALUES (?, 4, ?, ?)", (b.hex, topic, state))


TAMPERS: list[Tamper] = [
    _untouched,
    _body_byte,
    _signature_byte,
    _last_signature_byte,
    _kid_byte,
    _prev_byte,
    _too_short,
    _format_byte,
    _foreign_key,
    _foreign_signature_own_kid,
    _randomised_own_signature,
    _own_key_over_bad_body,
    _deleted,
    _swapped,
    _moved,
]


@pytest.fixture
def opened(
    recorded: tuple[Path, UUID, UUID], request: pytest.FixtureRequest
) -> Iterator[tuple[Node, Tamper]]:
    directory, a, b = recorded
    tamper: Tamper = request.param
    node = Node.open(directory, PASSPHRASE)
    key = node.signer
    node.close()
    with sqlite3.connect(directory / "data" / "cases.sqlite") as db:
        tamper(db, a, b, key)
    node = Node.open(directory, PASSPHRASE)
    try:
        yield node, tamper
    finally:
        node.close()


@pytest.mark.parametrize("opened", TAMPERS, indirect=True, ids=lambda t: t.__name__.strip("_"))
@pytest.mark.parametrize("page", [1, 2, 4, 100])
def test_log_source_is_exactly_as_strict_as_verifying(
    opened: tuple[Node, Tamper], page: int
) -> None:
    node, tamper = opened
    expected = _strict(node)
    assert _log_source(node, page) == expected
    if tamper in (_untouched, _randomised_own_signature):
        assert expected[0] == "ok"
        assert len(expected[1]) == 6
    else:
        assert expected[0] == "error", "every tampering is detected"


def test_fast_select_returns_what_the_recorder_returns(node: Node) -> None:
    for marker in "abc":
        _record_case(node, marker)
    source = LogSource(node.cases)
    for after, limit in [(0, 100), (0, 1), (2, 3), (8, 100), (9, 5), (100, 10)]:
        assert list(source._select(after, limit)) == list(
            node.cases.recorder.select_notifications(
                start=after, limit=limit, inclusive_of_start=False
            )
        )


def test_events_signed_before_a_rotation_are_verified(node: Node) -> None:
    first = _record_case(node, "a")
    old_kid = node.signer.kid
    node.rotate_key(PASSPHRASE, "admin")
    assert node.signer.kid != old_kid
    second = _record_case(node, "b")
    outcome = _log_source(node, 4)
    assert outcome == _strict(node)
    assert outcome[0] == "ok"
    assert [c.case_id for c in outcome[1]] == [first] * 3 + [second] * 3
