"""Keyed pseudonyms: stable within a node and a purpose, unlinkable and irreversible without
the node's pseudonym key.

    purpose key = BLAKE2b-256(key=node pseudonym key, person="hx-pseud-key-v1"; purpose)
    pseudonym   = hex(BLAKE2b-128(key=purpose key,   person="hx-pseudonym-v1"; value))

A different key per purpose, so pseudonyms made for one purpose cannot be matched with those
made for another, nor between nodes. A case id is a random UUID, and even a guessable value
cannot be tested without the key. The purposes and personalisations are a wire format (the
aggregator keeps the pseudonyms it received): pinned here, never to be changed.
"""

from __future__ import annotations

import hashlib
from typing import Final
from uuid import UUID

from handsoff.federation.errors import FederationError
from handsoff.keys import NodeSecrets

KEY_LEN: Final = 32
PSEUDONYM_HEX_LEN: Final = 32  # 16 bytes
# Python's `$` also matches before a final newline; `(?!\n)` rules that out (and means the
# same in the ECMA regexes of JSON Schema, where `\Z` does not exist).
PSEUDONYM_PATTERN: Final = r"^[0-9a-f]{32}(?!\n)$"

CASE_PURPOSE: Final = "regional-statistics/case"
REFERRAL_PURPOSE: Final = "regional-statistics/referral"

_KEY_PERSON: Final = b"hx-pseud-key-v1"
_PSEUDONYM_PERSON: Final = b"hx-pseudonym-v1"


class Pseudonymiser:
    """Makes keyed pseudonyms from the node's pseudonym key. Holds the key: never log it."""

    __slots__ = ("_keys", "_master")

    def __init__(self, pseudonym_key: bytes) -> None:
        if not isinstance(pseudonym_key, bytes) or len(pseudonym_key) != KEY_LEN:
            raise FederationError(f"a pseudonym key is {KEY_LEN} bytes")
        self._master = pseudonym_key
        self._keys: dict[str, bytes] = {}

    @classmethod
    def from_secrets(cls, secrets: NodeSecrets) -> Pseudonymiser:
        return cls(secrets.pseudonym_key)

    def __repr__(self) -> str:
        return "Pseudonymiser(<key withheld>)"

    def _purpose_key(self, purpose: str) -> bytes:
        key = self._keys.get(purpose)
        if key is None:
            if not purpose:
                raise FederationError("a pseudonym purpose cannot be empty")
            key = hashlib.blake2b(
                purpose.encode(), key=self._master, person=_KEY_PERSON, digest_size=32
            ).digest()
            self._keys[purpose] = key
        return key

    def for_purpose(self, purpose: str, value: bytes) -> str:
        """The pseudonym of `value` for `purpose`: 32 lowercase hex digits."""
        return hashlib.blake2b(
            value, key=self._purpose_key(purpose), person=_PSEUDONYM_PERSON, digest_size=16
        ).hexdigest()

    def case(self, case_id: UUID) -> str:
        """The case's pseudonym in regional statistics (links its shared events, and lets a
        retraction name them)."""
        return self.for_purpose(CASE_PURPOSE, case_id.bytes)

    def referral(self, case_id: UUID, referral_id: str) -> str:
        """A referral's pseudonym: referral ids are unique within a case only, so the value
        is the case id (16 bytes, fixed length: no ambiguity) followed by the referral id."""
        return self.for_purpose(REFERRAL_PURPOSE, case_id.bytes + referral_id.encode())
