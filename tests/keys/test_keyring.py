"""Keyrings: genesis, endorsed rotations, validity windows, tampering, files."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from handsoff.keys import (
    BrokenKeyChain,
    KeyFileError,
    KeyNotValid,
    KeyRecord,
    Keyring,
    KeysError,
    RotationStatement,
    SigningKey,
    UnknownKey,
    VerificationError,
    kid_hex,
    load_keyring,
    rotation_statement_bytes,
    save_keyring,
    verify_signature,
)

OWNER = "partner-north"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=30)
T2 = T1 + timedelta(days=30)
SECOND = timedelta(seconds=1)


@pytest.fixture
def k1() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def k2() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def k3() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def ring(k1: SigningKey, k2: SigningKey, k3: SigningKey) -> Keyring:
    """k1 from T0, k2 from T1, k3 (current) from T2."""
    r, _, _ = Keyring.genesis(OWNER, k1, T0).rotated(k1, k2, T1)
    r, _, _ = r.rotated(k2, k3, T2)
    return r


def _replace(ring: Keyring, i: int, **changes: object) -> Keyring:
    keys = list(ring.keys)
    keys[i] = msgspec.structs.replace(keys[i], **changes)
    return Keyring(ring.owner, keys)


def _endorse(old: SigningKey, new: SigningKey, at: datetime, owner: str = OWNER) -> KeyRecord:
    """A record for `new` endorsed by `old`, built by hand as an attacker would."""
    st = RotationStatement(owner, kid_hex(old.kid), kid_hex(new.kid), new.public_key, at)
    sig = old.sign(rotation_statement_bytes(st))
    return KeyRecord(kid_hex(new.kid), new.public_key, at, None, kid_hex(old.kid), sig)


# --- genesis and rotation ---------------------------------------------------------------------


def test_genesis(k1: SigningKey) -> None:
    r = Keyring.genesis(OWNER, k1, T0)
    assert r.owner == OWNER
    assert r.current == KeyRecord(kid_hex(k1.kid), k1.public_key, T0)
    assert r.public_key(k1.kid) == k1.public_key
    assert r.fingerprint == hashlib.blake2b(k1.public_key, digest_size=32).hexdigest()
    r.verify_chain()


def test_rotation(k1: SigningKey, k2: SigningKey) -> None:
    genesis = Keyring.genesis(OWNER, k1, T0)
    signed_before = k1.sign(b"event 1")
    r, st, sig = genesis.rotated(k1, k2, T1)

    assert r.current.kid == kid_hex(k2.kid)
    assert r.current.public_key == k2.public_key
    assert r.current.activated_at == T1
    assert r.current.predecessor == kid_hex(k1.kid)
    assert r.current.endorsement == sig
    assert r.record(k1.kid).retired_at == T1
    assert genesis.current.retired_at is None  # the old ring is not modified

    assert st == RotationStatement(OWNER, kid_hex(k1.kid), kid_hex(k2.kid), k2.public_key, T1)
    verify_signature(k1.public_key, rotation_statement_bytes(st), sig)
    # What the old key signed still verifies through the ring, within its window.
    verify_signature(r.public_key(k1.kid), b"event 1", signed_before)
    r.active_at(k1.kid, T1 - SECOND)
    r.verify_chain()
    assert r.fingerprint == genesis.fingerprint


def test_statement_bytes_are_domain_separated_and_stable(k1: SigningKey, k2: SigningKey) -> None:
    _, st, sig = Keyring.genesis(OWNER, k1, T0).rotated(k1, k2, T1)
    data = rotation_statement_bytes(st)
    assert data.startswith(b"hx-key-rotation-v1\x00{")
    assert data == rotation_statement_bytes(msgspec.json.decode(data[19:], type=RotationStatement))
    assert b'"rotated_at":"2025-03-31T09:00:00Z"' in data
    # The endorsement is bound to the domain: it does not verify the bare JSON.
    with pytest.raises(VerificationError):
        verify_signature(k1.public_key, msgspec.json.encode(st), sig)


def test_rotation_time_is_normalised_to_utc(k1: SigningKey, k2: SigningKey) -> None:
    local = T1.astimezone(timezone(timedelta(hours=2)))
    r, st, _ = Keyring.genesis(OWNER, k1, T0).rotated(k1, k2, local)
    assert st.rotated_at.utcoffset() == timedelta(0)
    assert r.current.activated_at == T1
    r.verify_chain()


def test_rotation_by_a_key_that_is_not_current(
    ring: Keyring, k1: SigningKey, k2: SigningKey
) -> None:
    for old in (k1, k2, SigningKey.generate()):
        with pytest.raises(KeysError, match="not the current key"):
            ring.rotated(old, SigningKey.generate(), T2 + SECOND)


def test_rotation_must_move_forward_in_time(k1: SigningKey, k2: SigningKey) -> None:
    r = Keyring.genesis(OWNER, k1, T0)
    for at in (T0, T0 - SECOND):
        with pytest.raises(KeysError, match="not after"):
            r.rotated(k1, k2, at)


def test_rotation_to_a_key_already_used(ring: Keyring, k1: SigningKey, k3: SigningKey) -> None:
    with pytest.raises(KeysError, match="already in the keyring"):
        ring.rotated(k3, k1, T2 + SECOND)


def test_naive_datetimes_refused(k1: SigningKey, k2: SigningKey) -> None:
    naive = datetime(2025, 1, 1)  # deliberately naive
    with pytest.raises(KeysError, match="timezone-aware"):
        Keyring.genesis(OWNER, k1, naive)
    r = Keyring.genesis(OWNER, k1, T0)
    with pytest.raises(KeysError, match="timezone-aware"):
        r.rotated(k1, k2, naive + timedelta(days=400))
    with pytest.raises(KeysError, match="timezone-aware"):
        r.active_at(k1.kid, naive)


# --- lookups and validity windows ---------------------------------------------------------------


def test_lookup_by_bytes_or_hex(ring: Keyring, k2: SigningKey) -> None:
    assert ring.record(k2.kid) is ring.record(kid_hex(k2.kid))
    assert ring.record(kid_hex(k2.kid).upper()).public_key == k2.public_key
    assert ring.public_key(k2.kid) == k2.public_key


def test_unknown_key(ring: Keyring) -> None:
    stranger = SigningKey.generate()
    for call in (ring.record, ring.public_key, lambda kid: ring.active_at(kid, T2)):
        with pytest.raises(UnknownKey, match=kid_hex(stranger.kid)):
            call(stranger.kid)
    assert issubclass(UnknownKey, VerificationError)


@pytest.mark.parametrize(
    ("key", "at", "valid"),
    [
        ("k1", T0 - SECOND, False),
        ("k1", T0, True),
        ("k1", T1 - SECOND, True),
        ("k1", T1, False),
        ("k1", T2 + SECOND, False),
        ("k2", T1 - SECOND, False),
        ("k2", T1, True),
        ("k2", T2 - SECOND, True),
        ("k2", T2, False),
        ("k3", T2 - SECOND, False),
        ("k3", T2, True),
        ("k3", T2 + timedelta(days=3650), True),
    ],
)
def test_validity_windows(
    request: pytest.FixtureRequest, ring: Keyring, key: str, at: datetime, valid: bool
) -> None:
    kid = request.getfixturevalue(key).kid
    if valid:
        ring.active_at(kid, at)
    else:
        with pytest.raises(KeyNotValid, match=kid_hex(kid)):
            ring.active_at(kid, at)


def test_validity_compares_instants_not_wall_clocks(ring: Keyring, k2: SigningKey) -> None:
    plus2 = timezone(timedelta(hours=2))
    ring.active_at(k2.kid, T1.astimezone(plus2))
    with pytest.raises(KeyNotValid):
        ring.active_at(k2.kid, (T1 - SECOND).astimezone(plus2))


# --- verify_chain: tampering and forgery --------------------------------------------------------


def test_intact_chain_verifies(ring: Keyring) -> None:
    ring.verify_chain()


def test_endorsement_tampered(ring: Keyring, k2: SigningKey) -> None:
    sig = bytearray(ring.keys[1].endorsement or b"")
    sig[10] ^= 0x01
    with pytest.raises(BrokenKeyChain, match=f"kid {kid_hex(k2.kid)}.*does not verify"):
        _replace(ring, 1, endorsement=bytes(sig)).verify_chain()


@pytest.mark.parametrize("endorsement", [None, b"", b"\0" * 64])
def test_endorsement_missing_or_garbage(ring: Keyring, endorsement: bytes | None) -> None:
    with pytest.raises(BrokenKeyChain, match="record 2"):
        _replace(ring, 2, endorsement=endorsement).verify_chain()


def test_forged_rotation_by_a_foreign_key(ring: Keyring, k3: SigningKey) -> None:
    mallory, fake = SigningKey.generate(), SigningKey.generate()
    # Claims k3 as predecessor, but the endorsement is Mallory's.
    st = RotationStatement(OWNER, kid_hex(k3.kid), kid_hex(fake.kid), fake.public_key, T2 + SECOND)
    forged = KeyRecord(
        kid_hex(fake.kid),
        fake.public_key,
        T2 + SECOND,
        None,
        kid_hex(k3.kid),
        mallory.sign(rotation_statement_bytes(st)),
    )
    keys = [*ring.keys[:-1], msgspec.structs.replace(ring.keys[-1], retired_at=T2 + SECOND)]
    with pytest.raises(BrokenKeyChain, match=f"kid {kid_hex(fake.kid)}"):
        Keyring(OWNER, [*keys, forged]).verify_chain()


def test_public_key_swapped_under_a_valid_endorsement(ring: Keyring) -> None:
    mallory = SigningKey.generate()
    swapped = _replace(ring, 2, public_key=mallory.public_key, kid=kid_hex(mallory.kid))
    with pytest.raises(BrokenKeyChain, match="does not verify"):
        swapped.verify_chain()


def test_kid_not_matching_public_key(ring: Keyring) -> None:
    with pytest.raises(BrokenKeyChain, match="kid does not match"):
        _replace(ring, 1, public_key=SigningKey.generate().public_key).verify_chain()


def test_retirement_extended(ring: Keyring) -> None:
    # retired_at is not signed; it must equal the signed rotation time of the successor.
    with pytest.raises(BrokenKeyChain, match="record 1"):
        _replace(ring, 0, retired_at=T1 + timedelta(days=1)).verify_chain()


def test_activation_moved(ring: Keyring) -> None:
    moved = _replace(_replace(ring, 1, activated_at=T1 - SECOND), 0, retired_at=T1 - SECOND)
    with pytest.raises(BrokenKeyChain, match="does not verify"):
        moved.verify_chain()


def test_endorsement_replayed_for_another_owner(ring: Keyring) -> None:
    with pytest.raises(BrokenKeyChain, match="does not verify"):
        Keyring("partner-south", ring.keys).verify_chain()


def test_record_removed_from_the_middle(ring: Keyring) -> None:
    with pytest.raises(BrokenKeyChain, match="predecessor"):
        Keyring(OWNER, [ring.keys[0], ring.keys[2]]).verify_chain()


def test_records_reordered(ring: Keyring) -> None:
    with pytest.raises(BrokenKeyChain):
        Keyring(OWNER, [ring.keys[0], ring.keys[2], ring.keys[1]]).verify_chain()


def test_genesis_with_a_predecessor(ring: Keyring) -> None:
    with pytest.raises(BrokenKeyChain, match="first key"):
        Keyring(OWNER, ring.keys[1:]).verify_chain()


def test_current_key_retired(ring: Keyring) -> None:
    with pytest.raises(BrokenKeyChain, match="current key"):
        _replace(ring, 2, retired_at=T2 + SECOND).verify_chain()


def test_key_coming_back(k1: SigningKey, k2: SigningKey) -> None:
    # k1 -> k2 -> k1 with valid endorsements: lookups by kid would be ambiguous.
    r, _, _ = Keyring.genesis(OWNER, k1, T0).rotated(k1, k2, T1)
    keys = [*r.keys[:-1], msgspec.structs.replace(r.keys[-1], retired_at=T2)]
    with pytest.raises(BrokenKeyChain, match="appears twice"):
        Keyring(OWNER, [*keys, _endorse(k2, k1, T2)]).verify_chain()


def test_empty_keyring() -> None:
    empty = Keyring(OWNER, [])
    for check in (empty.verify_chain, lambda: empty.current, lambda: empty.fingerprint):
        with pytest.raises(BrokenKeyChain, match="no keys"):
            check()


def test_foreign_genesis_changes_the_fingerprint(ring: Keyring, k1: SigningKey) -> None:
    # A whole ring built by Mallory verifies, so the genesis must be checked out of band.
    mallory, m2 = SigningKey.generate(), SigningKey.generate()
    fake, _, _ = Keyring.genesis(OWNER, mallory, T0).rotated(mallory, m2, T1)
    fake.verify_chain()
    assert fake.fingerprint != ring.fingerprint
    assert ring.fingerprint == Keyring.genesis(OWNER, k1, T0).fingerprint


# --- files --------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path, ring: Keyring) -> None:
    path = tmp_path / "north.keyring.json"
    save_keyring(path, ring)
    loaded = load_keyring(path)
    assert loaded == ring
    assert loaded.fingerprint == ring.fingerprint
    assert json.loads(path.read_text())["owner"] == OWNER
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_overwrites(tmp_path: Path, ring: Keyring, k1: SigningKey) -> None:
    path = tmp_path / "ring.json"
    save_keyring(path, Keyring.genesis(OWNER, k1, T0))
    save_keyring(path, ring)
    assert load_keyring(path) == ring


def test_load_rejects_a_tampered_file(tmp_path: Path, ring: Keyring) -> None:
    path = tmp_path / "ring.json"
    save_keyring(path, ring)
    doc = json.loads(path.read_text())
    doc["keys"][0]["retired_at"] = "2099-01-01T00:00:00Z"  # keep the old key alive
    path.write_text(json.dumps(doc))
    with pytest.raises(BrokenKeyChain):
        load_keyring(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b'{"owner": "x"}',
        b'{"owner": "x", "keys": {}}',
        b'{"owner": "x", "keys": [{"kid": "00", "public_key": "AA==",'
        b' "activated_at": "2025-01-01T00:00:00"}]}',  # naive timestamp
        b'{"owner": "x", "keys": [], "extra": 1}',
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ring.json"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match="not a valid keyring file"):
        load_keyring(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_keyring(tmp_path / "absent.json")


def test_save_into_missing_directory(tmp_path: Path, ring: Keyring) -> None:
    with pytest.raises(KeyFileError, match="cannot write keyring file"):
        save_keyring(tmp_path / "missing" / "ring.json", ring)
