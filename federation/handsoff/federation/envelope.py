"""The signed envelope of every message a node shares (a wire format, pinned here).

    subject      hx.<region>.events.<partner>.<kind>
    Nats-Msg-Id  <partner>:<n>  n = 1, 2, 3 ... counts this partner's shared messages; it is
                 deterministic (a replay of the log numbers them again the same way), so
                 retries deduplicate, and it reveals nothing of the node's unshared activity
    Hx-Kid       hex key id of the signing key
    Hx-Sig       hex Ed25519 signature over
                 "hx-shared-v1\\0" | u16 len | subject | u16 len | msg id
                 | u64 region version | payload
    Hx-Region    the region document version the sender operated under

The payload is the msgspec JSON of one shared event, verified as sent: never re-encoded.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from handsoff.federation.errors import EnvelopeRejected, FederationError
from handsoff.federation.shared import kind_of
from handsoff.federation.subjects import partner_of
from handsoff.keys import BadSignature, SigningKey, verify_signature

DOMAIN = b"hx-shared-v1\x00"
MSG_ID = "Nats-Msg-Id"
KID = "Hx-Kid"
SIGNATURE = "Hx-Sig"
REGION_VERSION = "Hx-Region"


class KeyDirectory(Protocol):
    """What verification needs of the region document."""

    @property
    def version(self) -> int: ...

    @property
    def issued_at(self) -> datetime: ...

    @property
    def older_versions_until(self) -> datetime: ...

    def partner_key(self, partner_id: str, kid: str, at: datetime) -> bytes: ...


class Opened(NamedTuple):
    partner: str
    msg_id: str
    number: int  # the partner's message number: (partner, number) identifies it for ever
    event: Any


def message_id(partner: str, number: int) -> str:
    return f"{partner}:{number}"


_MSG_ID = re.compile(r"([a-z0-9][a-z0-9-]{0,31}):([1-9][0-9]{0,18})")


def parse_message_id(msg_id: str) -> tuple[str, int]:
    """Exactly the form the relay writes: one spelling per (partner, number)."""
    m = _MSG_ID.fullmatch(msg_id)
    if m is None:
        raise EnvelopeRejected("malformed", f"message id {msg_id!r} is not <partner>:<n>")
    return m.group(1), int(m.group(2))


def signing_input(subject: str, msg_id: str, region_version: int, payload: bytes) -> bytes:
    s, m = subject.encode(), msg_id.encode()
    return b"".join((DOMAIN, _U16(len(s)), s, _U16(len(m)), m, _U64(region_version), payload))


_U16 = struct.Struct(">H").pack
_U64 = struct.Struct(">Q").pack


def seal_headers(
    signer: SigningKey, subject: str, msg_id: str, payload: bytes, region_version: int
) -> dict[str, str]:
    return {
        MSG_ID: msg_id,
        KID: signer.kid.hex(),
        SIGNATURE: signer.sign(signing_input(subject, msg_id, region_version, payload)).hex(),
        REGION_VERSION: str(region_version),
    }


class Checked(NamedTuple):
    """A message whose envelope verified: its signer is `partner`, its number `number`."""

    partner: str
    msg_id: str
    number: int


def open_message(
    directory: KeyDirectory,
    subject: str,
    headers: Mapping[str, str] | None,
    payload: bytes,
    at: datetime,
    decode: Callable[[bytes], Any],
) -> Opened:
    """Verifies one message (membership, key validity at `at`, signature, schema) or raises
    EnvelopeRejected with a stable reason code."""
    return open_payload(
        check_envelope(directory, subject, headers, payload, at), subject, payload, decode
    )


def check_envelope(
    directory: KeyDirectory,
    subject: str,
    headers: Mapping[str, str] | None,
    payload: bytes,
    at: datetime,
) -> Checked:
    """The first half of `open_message`: headers, membership, key validity and signature
    (what a verifying worker process runs; the payload is decoded where it is used)."""
    headers = headers or {}
    msg_id, kid, signature_hex, version_text = (
        headers.get(MSG_ID),
        headers.get(KID),
        headers.get(SIGNATURE),
        headers.get(REGION_VERSION),
    )
    if not (msg_id and kid and signature_hex and version_text):
        missing = [h for h in (MSG_ID, KID, SIGNATURE, REGION_VERSION) if not headers.get(h)]
        raise EnvelopeRejected("malformed", f"missing header(s) {', '.join(missing)}")
    try:
        subject_partner = partner_of(subject)
    except ValueError as e:
        raise EnvelopeRejected("malformed", str(e)) from None
    partner, number = parse_message_id(msg_id)
    if partner != subject_partner:
        raise EnvelopeRejected(
            "wrong_sender", f"message id names {partner}, subject belongs to {subject_partner}"
        )
    try:
        region_version = int(version_text)
    except ValueError:
        raise EnvelopeRejected("malformed", "Hx-Region is not a number") from None
    if region_version < directory.version and at >= directory.older_versions_until:
        hours = (directory.older_versions_until - directory.issued_at) // timedelta(hours=1)
        raise EnvelopeRejected(
            "stale_region",
            f"sent under region version {region_version} after version "
            f"{directory.version} was issued"
            + (f" and its grace of {hours} h had passed" if hours else ""),
        )
    try:
        public_key = directory.partner_key(partner, kid, at)
    except FederationError as e:
        raise EnvelopeRejected(getattr(e, "reason", "unknown_key"), str(e)) from None
    try:
        signature = bytes.fromhex(signature_hex)
        verify_signature(
            public_key, signing_input(subject, msg_id, region_version, payload), signature
        )
    except (ValueError, BadSignature):
        raise EnvelopeRejected(
            "bad_signature",
            f"{msg_id}: signature does not verify with {partner}'s key {kid}",
        ) from None
    return Checked(partner, msg_id, number)


def open_payload(
    checked: Checked, subject: str, payload: bytes, decode: Callable[[bytes], Any]
) -> Opened:
    """The second half of `open_message`: the payload of a checked envelope, decoded and
    matched with its signer and subject."""
    partner, msg_id, number = checked
    try:
        event = decode(payload)
    except FederationError as e:
        raise EnvelopeRejected("schema", f"{msg_id}: {e}") from None
    claimed = getattr(event, "partner", partner)
    if claimed != partner:
        raise EnvelopeRejected("partner_mismatch", f"{msg_id}: payload names {claimed}")
    parts = subject.split(".")
    if parts[2] == "events" and parts[-1] != kind_of(type(event)):
        raise EnvelopeRejected(
            "wrong_kind", f"{msg_id}: a {type(event).__name__} on subject kind {parts[-1]}"
        )
    return Opened(partner, msg_id, number, event)


LEAF_DOMAIN = b"hx-envelope-leaf-v1\x00"


def leaf(subject: str, headers: Mapping[str, str], payload: bytes) -> bytes:
    """The Merkle leaf data of one envelope, as signed and sent (a wire format, pinned):

        "hx-envelope-leaf-v1\\0" | u16 len | subject | u16 len | msg id | u16 len | kid
        | u64 region version | 64-byte signature | payload

    Node checkpoints and the aggregator's release commitments both hash envelopes this way,
    so an auditor recomputes either from the stream alone."""
    s, m, k = subject.encode(), headers[MSG_ID].encode(), headers[KID].encode()
    return b"".join(
        (
            LEAF_DOMAIN,
            _U16(len(s)),
            s,
            _U16(len(m)),
            m,
            _U16(len(k)),
            k,
            _U64(int(headers[REGION_VERSION])),
            bytes.fromhex(headers[SIGNATURE]),
            payload,
        )
    )
