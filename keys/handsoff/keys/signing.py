"""Ed25519 signing keys, key ids, and the project's one signature check."""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils
from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]  # PyNaCl's cffi
from nacl._sodium import lib as _lib

from handsoff.keys.errors import BadSignature, KeysError

KEY_ID_LEN = 8
PUBLIC_KEY_LEN = 32
SEED_LEN = 32
SIGNATURE_LEN = 64
_KID_PERSON = b"hx-key-id-v1"


def key_id(public_key: bytes) -> bytes:
    """Short, domain-separated id of a public key (8 bytes)."""
    return hashlib.blake2b(public_key, digest_size=KEY_ID_LEN, person=_KID_PERSON).digest()


def kid_hex(kid: bytes) -> str:
    return kid.hex()


def _describe(public_key: object) -> str:
    if isinstance(public_key, bytes | bytearray) and len(public_key) == PUBLIC_KEY_LEN:
        return f"key {kid_hex(key_id(bytes(public_key)))}"
    return "a malformed public key"


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check a detached Ed25519 signature; any failure raises BadSignature, nothing else."""
    try:
        if len(public_key) != PUBLIC_KEY_LEN:
            raise BadSignature(f"public key must be {PUBLIC_KEY_LEN} bytes, got {len(public_key)}")
        if len(signature) != SIGNATURE_LEN:
            raise BadSignature(
                f"signature by {_describe(public_key)} must be {SIGNATURE_LEN} bytes, "
                f"got {len(signature)}"
            )
        # The libsodium call nacl.signing.VerifyKey.verify makes, without its wrappers and
        # the copy of the message it returns (verification runs once per event, millions
        # of times in an audit). bytes(): a bytearray must not alias a mutable buffer.
        signed = bytes(signature) + bytes(message)
        opened = _ffi.new("unsigned char[]", len(signed))
        size = _ffi.new("unsigned long long *")
        if _lib.crypto_sign_open(opened, size, signed, len(signed), bytes(public_key)) != 0:
            # libsodium also rejects non-canonical S, small-order R/A and invalid points.
            raise BadSignature(f"signature by {_describe(public_key)} does not verify")
    except BadSignature:
        raise
    except (TypeError, ValueError) as e:  # cffi raises a bare TypeError for a wrong type
        raise BadSignature(f"signature by {_describe(public_key)} does not verify") from e


class SigningKey:
    """An Ed25519 private key. Its repr shows only the key id, never the seed."""

    __slots__ = ("_kid", "_secret", "_sk")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_LEN:
            raise KeysError(f"an Ed25519 seed must be {SEED_LEN} bytes")
        self._sk = nacl.signing.SigningKey(seed)
        # seed | public key: the secret key libsodium signs with (what nacl.signing holds)
        self._secret: bytes = nacl.bindings.crypto_sign_seed_keypair(seed)[1]
        self._kid = key_id(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(nacl.utils.random(SEED_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls(seed)

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    @property
    def public_key(self) -> bytes:
        return bytes(self._sk.verify_key)

    @property
    def kid(self) -> bytes:
        return self._kid

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte signature over message."""
        try:
            # The binding nacl.signing.SigningKey.sign calls, without its SignedMessage
            # wrapping (signing is on the relay's hot path: twice and more per message).
            return nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_LEN]
        except (nacl.exceptions.CryptoError, TypeError) as e:  # cffi raises a bare TypeError
            raise KeysError(f"cannot sign with key {kid_hex(self._kid)}: {e}") from e

    def made(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is exactly the signature this key makes over `message`.

        A cheaper check of one's own signatures (one signing, ~2.5x faster than a
        verification): Ed25519 signing is deterministic (RFC 8032 5.1.6), and a signature
        this key made verifies under its public key, so True implies that
        `verify_signature(self.public_key, message, signature)` passes. False says nothing
        (a valid signature made by another implementation, with another nonce, differs):
        the caller then verifies. The signature made here is only compared, in constant
        time, never returned, so reading attacker-written data does not turn this into a
        signing oracle.
        """
        return hmac.compare_digest(self.sign(message), signature)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SigningKey):
            return NotImplemented
        return self.public_key == other.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"SigningKey(kid={kid_hex(self._kid)})"
