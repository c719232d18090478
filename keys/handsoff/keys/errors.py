"""Errors of handsoff.keys: one root, so callers never need to catch nacl, msgspec or OSError."""

from __future__ import annotations


class KeysError(Exception):
    """Root of every error raised by handsoff.keys."""


class KeyFileError(KeysError):
    """A key or keyring file is missing, unreadable, corrupt, or the passphrase is wrong."""


class PassphraseMissing(KeyFileError):
    """No passphrase was configured for the node's key file."""


class VerificationError(KeysError):
    """Root of every verification failure: catch this to reject untrusted input."""


class BadSignature(VerificationError):
    """An Ed25519 signature does not verify (or key/signature bytes are malformed)."""


class UnknownKey(VerificationError):
    """A key id is not in the keyring."""


class KeyNotValid(VerificationError):
    """A known key was used outside its validity window (not yet active, or retired)."""


class BrokenKeyChain(VerificationError):
    """A keyring's rotation chain does not verify."""


class MerkleProofError(VerificationError):
    """A Merkle inclusion or consistency proof does not verify, or is malformed."""
