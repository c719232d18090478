"""Public key history of one owner, verifiable with public keys alone.

Each rotation is endorsed by the key it replaces, so trusting the genesis key (compare
`Keyring.fingerprint` out of band) is enough to trust every later key. Only the genesis
record is unsigned: a ring rebuilt from a foreign genesis verifies, but has another fingerprint.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec

from handsoff.keys._files import atomic_write, read_bytes
from handsoff.keys.errors import (
    BadSignature,
    BrokenKeyChain,
    KeyFileError,
    KeyNotValid,
    KeysError,
    UnknownKey,
)
from handsoff.keys.signing import (
    PUBLIC_KEY_LEN,
    SigningKey,
    key_id,
    kid_hex,
    verify_signature,
)

Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
_ROTATION_DOMAIN = b"hx-key-rotation-v1\x00"


class KeyRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kid: str  # hex of key_id(public_key)
    public_key: bytes
    activated_at: Timestamp
    retired_at: Timestamp | None = None
    predecessor: str | None = None  # kid of the key this one replaced
    endorsement: bytes | None = None  # predecessor's signature over the RotationStatement


class RotationStatement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    owner: str
    old_kid: str
    new_kid: str
    new_public_key: bytes
    rotated_at: Timestamp


def rotation_statement_bytes(st: RotationStatement) -> bytes:
    """What the old key signs. Field order is fixed by the Struct, so the bytes are stable."""
    return _ROTATION_DOMAIN + msgspec.json.encode(st)


def _utc(at: datetime) -> datetime:
    # One representation per instant, so a rebuilt statement has the signed bytes.
    if at.tzinfo is None or at.utcoffset() is None:
        raise KeysError(f"timestamp {at.isoformat()} must be timezone-aware")
    return at.astimezone(UTC)


def _kid_str(kid: bytes | str) -> str:
    return kid_hex(kid) if isinstance(kid, bytes) else kid.lower()


class Keyring(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Keys of one owner, oldest first; the last one is current."""

    owner: str
    keys: list[KeyRecord]

    @classmethod
    def genesis(cls, owner: str, key: SigningKey, at: datetime) -> Keyring:
        record = KeyRecord(kid_hex(key.kid), key.public_key, _utc(at))
        return cls(owner, [record])

    def rotated(
        self, old: SigningKey, new: SigningKey, at: datetime
    ) -> tuple[Keyring, RotationStatement, bytes]:
        """Replace the current key `old` by `new` from `at` on; `old` signs the statement."""
        at = _utc(at)
        current = self.current
        if old.public_key != current.public_key:
            raise KeysError(
                f"key {kid_hex(old.kid)} is not the current key {current.kid} of {self.owner!r}"
            )
        if any(r.kid == kid_hex(new.kid) for r in self.keys):
            raise KeysError(f"key {kid_hex(new.kid)} is already in the keyring of {self.owner!r}")
        if at <= current.activated_at:
            raise KeysError(
                f"rotation time {at.isoformat()} is not after the activation of key {current.kid}"
            )
        st = RotationStatement(self.owner, current.kid, kid_hex(new.kid), new.public_key, at)
        sig = old.sign(rotation_statement_bytes(st))
        retired = msgspec.structs.replace(current, retired_at=at)
        added = KeyRecord(st.new_kid, new.public_key, at, None, current.kid, sig)
        return Keyring(self.owner, [*self.keys[:-1], retired, added]), st, sig

    def _records(self) -> list[KeyRecord]:
        if not self.keys:
            raise BrokenKeyChain(f"the keyring of {self.owner!r} has no keys")
        return self.keys

    @property
    def current(self) -> KeyRecord:
        return self._records()[-1]

    def record(self, kid: bytes | str) -> KeyRecord:
        wanted = _kid_str(kid)
        for r in self.keys:
            if r.kid == wanted:
                return r
        raise UnknownKey(f"key {wanted} is not in the keyring of {self.owner!r}")

    def public_key(self, kid: bytes | str) -> bytes:
        return self.record(kid).public_key

    def active_at(self, kid: bytes | str, at: datetime) -> None:
        """Raise KeyNotValid unless key `kid` was valid at `at` (activated <= at < retired)."""
        r = self.record(kid)
        at = _utc(at)
        if at < r.activated_at:
            raise KeyNotValid(
                f"key {r.kid} of {self.owner!r} is not valid before {r.activated_at.isoformat()}"
                f" (used at {at.isoformat()})"
            )
        if r.retired_at is not None and at >= r.retired_at:
            raise KeyNotValid(
                f"key {r.kid} of {self.owner!r} was retired at {r.retired_at.isoformat()}"
                f" (used at {at.isoformat()})"
            )

    def verify_chain(self) -> None:
        """Raise BrokenKeyChain unless every key after the first is endorsed by its predecessor."""
        prev: KeyRecord | None = None
        seen: set[str] = set()
        for i, r in enumerate(self._records()):
            where = f"key record {i} (kid {r.kid}) of {self.owner!r}"
            if len(r.public_key) != PUBLIC_KEY_LEN or kid_hex(key_id(r.public_key)) != r.kid:
                raise BrokenKeyChain(f"{where}: kid does not match its public key")
            if r.kid in seen:  # a key may not come back: lookups by kid must be unambiguous
                raise BrokenKeyChain(f"{where}: key appears twice")
            seen.add(r.kid)
            if prev is None:
                if r.predecessor is not None or r.endorsement is not None:
                    raise BrokenKeyChain(f"{where}: the first key cannot have a predecessor")
            else:
                _check_link(prev, r, self.owner, where)
            prev = r
        if self.current.retired_at is not None:
            raise BrokenKeyChain(f"the current key {self.current.kid} of {self.owner!r} is retired")

    @property
    def fingerprint(self) -> str:
        """blake2b-256 hex of the genesis public key, to compare out of band."""
        genesis = self._records()[0]
        return hashlib.blake2b(genesis.public_key, digest_size=32).hexdigest()


def _check_link(prev: KeyRecord, r: KeyRecord, owner: str, where: str) -> None:
    if r.predecessor != prev.kid:
        raise BrokenKeyChain(
            f"{where}: predecessor {r.predecessor} is not the previous key {prev.kid}"
        )
    # retired_at is not signed itself; tying it to the signed rotation time protects it.
    if prev.retired_at != r.activated_at or r.activated_at <= prev.activated_at:
        raise BrokenKeyChain(f"{where}: activation does not match the retirement of key {prev.kid}")
    if r.endorsement is None:
        raise BrokenKeyChain(f"{where}: no endorsement by key {prev.kid}")
    st = RotationStatement(owner, prev.kid, r.kid, r.public_key, _utc(r.activated_at))
    try:
        verify_signature(prev.public_key, rotation_statement_bytes(st), r.endorsement)
    except BadSignature:
        raise BrokenKeyChain(f"{where}: endorsement by key {prev.kid} does not verify") from None


_KEYRING_DECODER = msgspec.json.Decoder(Keyring)


def save_keyring(path: Path, ring: Keyring) -> None:
    """Atomically write ring as JSON (public data, mode 0644)."""
    data = msgspec.json.format(msgspec.json.encode(ring), indent=2) + b"\n"
    atomic_write(Path(path), data, 0o644, "keyring file")


def load_keyring(path: Path) -> Keyring:
    """Read and verify a keyring; KeyFileError if unreadable, BrokenKeyChain if forged."""
    path = Path(path)
    try:
        ring = _KEYRING_DECODER.decode(read_bytes(path, "keyring file"))
    except msgspec.DecodeError as e:
        raise KeyFileError(f"{path} is not a valid keyring file: {e}") from None
    ring.verify_chain()
    return ring
