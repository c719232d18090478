"""The sealed form of a stored event: signed over its exact stored bytes, hash-chained.

    state = FORMAT(1) | kid(8) | prev(32) | signature(64) | body

`body` is the encrypted change (SecretBox with the node's data key). The signature is
Ed25519 over `link`, a BLAKE2b-256 digest (personalised, so it cannot be confused with any
other hash in the system) of prev, aggregate id, version, topic and body. The next event
of the same aggregate carries this `link` as its `prev`, so an edit, deletion, reorder or
move breaks either a signature or a link. Verification needs public keys only: the body
is signed after encryption, never decrypted to check it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import NamedTuple
from uuid import UUID

from handsoff.keys import KEY_ID_LEN, SigningKey
from handsoff.services.node.errors import TamperedEvent

FORMAT_V1 = b"\x01"
LINK_LEN = 32
SIGNATURE_LEN = 64
GENESIS = bytes(LINK_LEN)  # `prev` of an aggregate's first event
_HEADER_LEN = 1 + KEY_ID_LEN + LINK_LEN + SIGNATURE_LEN
_PERSON = b"hx-event-chain1"


class Seal(NamedTuple):
    kid: bytes
    prev: bytes
    signature: bytes
    body: bytes


def link_digest(
    prev: bytes, originator_id: UUID | str, version: int, topic: str, body: bytes
) -> bytes:
    return link_of(prev, length_prefixed(str(originator_id)), version, length_prefixed(topic), body)


def length_prefixed(text: str) -> bytes:
    """u16 length | UTF-8 bytes: how the aggregate id and the topic enter a link."""
    b = text.encode()
    return struct.pack(">H", len(b)) + b


_LINK_HASH = hashlib.blake2b(digest_size=LINK_LEN, person=_PERSON)  # copied, never updated
_VERSION = struct.Struct(">Q")


def link_of(prev: bytes, oid_field: bytes, version: int, topic_field: bytes, body: bytes) -> bytes:
    """link_digest with the aggregate id and topic already length-prefixed (readers cache
    them per aggregate and per topic; the event is on the hot path)."""
    h = _LINK_HASH.copy()
    h.update(b"".join((prev, oid_field, _VERSION.pack(version), topic_field, body)))
    return h.digest()


def seal(
    signer: SigningKey,
    prev: bytes,
    originator_id: UUID | str,
    version: int,
    topic: str,
    body: bytes,
) -> tuple[bytes, bytes]:
    """Returns (stored state, link) for a new event."""
    link = link_digest(prev, originator_id, version, topic, body)
    state = FORMAT_V1 + signer.kid + prev + signer.sign(link) + body
    return state, link


def unseal(state: bytes, where: str | Callable[[], str]) -> Seal:
    """Splits a stored state; `where` names the event in the error (or makes that name)."""
    if len(state) < _HEADER_LEN or state[:1] != FORMAT_V1:
        name = where if isinstance(where, str) else where()
        raise TamperedEvent(name, "stored state is not a sealed event (bad format or too short)")
    kid = state[1 : 1 + KEY_ID_LEN]
    prev = state[1 + KEY_ID_LEN : 1 + KEY_ID_LEN + LINK_LEN]
    signature = state[1 + KEY_ID_LEN + LINK_LEN : _HEADER_LEN]
    return Seal(kid, prev, signature, state[_HEADER_LEN:])
