"""Audit bundles: everything needed to audit a region offline, in one signed file.

`handsoff audit export` writes, `handsoff audit bundle FILE` verifies (no network):

    {"bundle": {...exact bytes...}, "kid": "<hex>", "signature": "<hex Ed25519>"}
    signature over "hx-audit-bundle-v1\\0" | bundle bytes, by the region's aggregator key

    bundle = {
      "format": "handsoff-audit-bundle/1",
      "region": "<the signed region file, exactly as held: the newest version>",
      "history": ["<signed region file>", ...]  every earlier version, oldest first
                                                 (absent from bundles made before it)
      "exported_at": "<ISO time>",
      "events":      [message, ...]   HX_<R>_EVENTS, in stream order
      "statements":  [message, ...]   HX_<R>_AGGREGATES (statements, and the aggregator's
                                      announcements of the region versions it took)
      "checkpoints": [message, ...]   HX_<R>_CHECKPOINTS
    }
    message = {"seq": n, "time": "<stream timestamp>", "subject": "...",
               "headers": {...}, "data": "<base64 payload>"}

The outer signature says who exported it and that it arrived intact; every check inside
stands on the partners' and the aggregator's own signatures, so a bundle re-signed by a
dishonest exporter is still caught by the region audit it contains. The region versions
(the bundle's and those its announcements carry) are checked as a chain
(auditor/membership.py) and every message is judged by the version the aggregator announced
for it, or the version in force at its stream time, as `audit region` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from handsoff.federation.region import RegionProblem, SignedRegion
from handsoff.keys import BadSignature, SigningKey, key_id, verify_signature
from handsoff.services.auditor.region import StreamMessage, audit_messages
from handsoff.services.auditor.report import AuditReport, Collector

DOMAIN: Final = b"hx-audit-bundle-v1\x00"
FORMAT: Final = "handsoff-audit-bundle/1"
BUNDLE = "bundle"


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    time: datetime
    subject: str
    headers: dict[str, str]
    data: bytes


class Bundle(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: Literal["handsoff-audit-bundle/1"] = FORMAT
    region: str
    history: list[str] = []  # the earlier versions of the region document, oldest first
    exported_at: datetime
    events: list[Message]
    statements: list[Message]
    checkpoints: list[Message] = []


class _Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bundle: msgspec.Raw
    kid: str
    signature: str


def message(m: StreamMessage) -> Message:
    return Message(seq=m.seq, time=m.time, subject=m.subject, headers=m.headers, data=m.data)


def _stream(ms: list[Message]) -> list[StreamMessage]:
    return [StreamMessage(m.seq, m.time, m.subject, dict(m.headers), m.data) for m in ms]


def sign_bundle(bundle: Bundle, key: SigningKey) -> bytes:
    body = msgspec.json.encode(bundle)
    signature = key.sign(DOMAIN + body)
    return msgspec.json.encode(
        _Signed(bundle=msgspec.Raw(body), kid=key.kid.hex(), signature=signature.hex())
    )


def audit_bundle(
    data: bytes,
    trusted_region: SignedRegion | Sequence[SignedRegion] | None = None,
    *,
    workers: int = 1,
) -> AuditReport:
    """Verifies a bundle offline: the exporter's signature (the aggregator of the newest
    version), the region versions inside as a chain (each signed by enough coordinators of
    the one before), then the whole region audit over the bundled messages.

    `trusted_region`: versions the auditor holds. Each must be in the bundle byte for byte,
    and the bundle's first version must be signed by coordinators they list (a chain only
    vouches forward: a forged version before a genuine one is caught only this way)."""
    found = Collector()
    found.count(BUNDLE)
    try:
        signed = msgspec.json.decode(data, type=_Signed)
        body = bytes(signed.bundle)
        bundle = msgspec.json.decode(body, type=Bundle)
        region = SignedRegion.decode(bundle.region.encode())
        earlier = [SignedRegion.decode(h.encode()) for h in bundle.history]
    except (msgspec.DecodeError, RegionProblem) as e:
        found.find(BUNDLE, "malformed", "bundle", f"not an audit bundle: {e}")
        return found.report("bundle", "?")
    doc = region.document
    aggregator_kid = key_id(doc.aggregator.public_key).hex()
    if signed.kid != aggregator_kid:
        found.find(BUNDLE, "unknown_key", "bundle", f"signed by {signed.kid}, not the aggregator")
    else:
        try:
            verify_signature(
                doc.aggregator.public_key, DOMAIN + body, bytes.fromhex(signed.signature)
            )
        except (ValueError, BadSignature):
            found.find(
                BUNDLE, "bad_signature", "bundle", "the exporter's signature does not verify"
            )
    return audit_messages(
        [*earlier, region],
        _stream(bundle.events),
        _stream(bundle.statements),
        found=found,
        kind="bundle",
        workers=workers,
        checkpoints=_stream(bundle.checkpoints),
        trusted=trusted_region,
    )


def new_bundle(
    region: SignedRegion,
    events: list[StreamMessage],
    statements: list[StreamMessage],
    checkpoints: list[StreamMessage],
    history: Sequence[SignedRegion] = (),
) -> Bundle:
    """`region`: the newest version; `history`: the earlier ones (any order; `region` itself
    and repeats are left out)."""
    earlier = {h.document_bytes: h for h in history if h.document_bytes != region.document_bytes}
    ordered = sorted(earlier.values(), key=lambda h: (h.document.version, h.document.issued_at))
    return Bundle(
        region=region.encode().decode(),
        history=[h.encode().decode() for h in ordered],
        exported_at=datetime.now(UTC),
        events=[message(m) for m in events],
        statements=[message(m) for m in statements],
        checkpoints=[message(m) for m in checkpoints],
    )
