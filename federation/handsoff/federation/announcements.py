"""The aggregator's announcements of the region versions it takes (a wire format, pinned).

An aggregator judges every events message by the region version it *holds* when it ingests
it, and takes a new version only when it starts. So that an auditor judges each message the
same way, the aggregator announces every version it takes, before it ingests anything
under it, on its own stream:

    subject      hx.<region>.aggregates._region   (subjects.region_taken; stream
                                                   HX_<R>_AGGREGATES, beside the statements)
    Nats-Msg-Id  region-taken:<version>:<after_seq>

    {"taken": {...exact bytes...}, "kid": "<hex key id>", "signature": "<hex Ed25519>"}
    signature over "hx-region-taken-v1\\0" | taken bytes, with the aggregator key of the
    version announced (the version the aggregator now holds)

    taken = {
      "type":        "hx-region-taken-v1",
      "region":      the region id,
      "version":     the version taken,
      "aggregator":  the aggregator's id in that version,
      "after_seq":   the events stream sequence the aggregator had ingested up to when it
                     took the version: every events message with seq > after_seq was judged
                     under this version, until the next announcement
      "checkpoints_after_seq":  the same for the checkpoints stream: the sequence its
                     witness had taken checkpoints up to; every checkpoint above it was
                     decided under this version (until the next announcement), and so were
      "checkpoints_pending":    the checkpoints taken before but not decided yet (waiting
                     for their envelopes), in stream order
      "region_file": the signed region file as held, exactly (SignedRegion.encode()), so
                     the stream alone carries every version the aggregator took
    }

Deterministic (msgspec JSON, Ed25519, the file's bytes as held): an aggregator that dies
after publishing and before recording that it did publishes the same bytes under the same
message id again (nothing was ingested meanwhile, so after_seq is the same); the stream
deduplicates within its window and auditors count identical copies once.

`open_taken` checks the announcement against the document it carries (region, version,
aggregator id, the aggregator's signature). Whether the document itself may be believed
(its coordinators' signatures, as a chain from the versions an auditor trusts) is the
history's question (history.verify_history), not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from handsoff.federation.errors import FederationError
from handsoff.federation.region import RegionProblem, SignedRegion
from handsoff.keys import BadSignature, SigningKey, key_id, verify_signature

TYPE: Final = "hx-region-taken-v1"
DOMAIN: Final = b"hx-region-taken-v1\x00"


class TakenRejected(FederationError):
    """An announcement that does not verify; `reason` is a stable code (malformed, schema,
    wrong_region, inconsistent, unknown_key, bad_signature)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RegionTaken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Literal["hx-region-taken-v1"] = TYPE
    region: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    aggregator: str
    after_seq: Annotated[int, msgspec.Meta(ge=0)]
    checkpoints_after_seq: Annotated[int, msgspec.Meta(ge=0)]
    checkpoints_pending: tuple[int, ...]
    region_file: str


class _Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    taken: msgspec.Raw
    kid: str
    signature: str


@dataclass(frozen=True)
class Opened:
    """A verified announcement: what it says, the document it carries, the exact bytes."""

    taken: RegionTaken
    region: SignedRegion
    signed: bytes

    @property
    def version(self) -> int:
        return self.taken.version

    @property
    def after_seq(self) -> int:
        return self.taken.after_seq


_ENCODER = msgspec.json.Encoder()
_SIGNED = msgspec.json.Decoder(_Signed)
_TAKEN = msgspec.json.Decoder(RegionTaken)


def msg_id(version: int, after_seq: int) -> str:
    """The announcement's Nats-Msg-Id: a republish after a crash deduplicates."""
    return f"region-taken:{version}:{after_seq}"


def announcement(
    region: SignedRegion,
    after_seq: int,
    checkpoints_after_seq: int = 0,
    checkpoints_pending: Sequence[int] = (),
) -> RegionTaken:
    doc = region.document
    return RegionTaken(
        region=doc.region,
        version=doc.version,
        aggregator=doc.aggregator.id,
        after_seq=after_seq,
        checkpoints_after_seq=checkpoints_after_seq,
        checkpoints_pending=tuple(sorted(checkpoints_pending)),
        region_file=region.encode().decode(),
    )


def sign(taken: RegionTaken, key: SigningKey) -> bytes:
    """The signed form (deterministic)."""
    body = _ENCODER.encode(taken)
    signature = key.sign(DOMAIN + body)
    return _ENCODER.encode(
        _Signed(taken=msgspec.Raw(body), kid=key.kid.hex(), signature=signature.hex())
    )


def open_taken(signed: bytes, region: str) -> Opened:
    """The announcement, if it is for `region`, agrees with the document it carries, and
    that document's aggregator signed exactly these bytes; otherwise TakenRejected."""
    try:
        wrapper = _SIGNED.decode(signed)
    except msgspec.DecodeError as e:
        raise TakenRejected("malformed", f"not a signed announcement: {e}") from None
    body = bytes(wrapper.taken)
    try:
        taken = _TAKEN.decode(body)
    except msgspec.DecodeError as e:
        raise TakenRejected("schema", f"signed announcement: {e}") from None
    if taken.region != region:
        raise TakenRejected("wrong_region", f"announces region {taken.region}, not {region}")
    try:
        carried = SignedRegion.decode(taken.region_file.encode())
    except RegionProblem as e:
        raise TakenRejected("malformed", f"the region file it carries: {e}") from None
    doc = carried.document
    if (doc.region, doc.version, doc.aggregator.id) != (
        taken.region,
        taken.version,
        taken.aggregator,
    ):
        raise TakenRejected(
            "inconsistent",
            f"announces version {taken.version} of {taken.region} by {taken.aggregator}, "
            f"but carries version {doc.version} of {doc.region} with aggregator "
            f"{doc.aggregator.id}",
        )
    expected = key_id(doc.aggregator.public_key).hex()
    if wrapper.kid != expected:
        raise TakenRejected(
            "unknown_key",
            f"signed with key {wrapper.kid}, not the key of the aggregator of version "
            f"{doc.version} ({expected})",
        )
    try:
        verify_signature(doc.aggregator.public_key, DOMAIN + body, bytes.fromhex(wrapper.signature))
    except (ValueError, BadSignature):
        raise TakenRejected(
            "bad_signature",
            f"the announcement of version {doc.version} does not verify with the key of its "
            "aggregator",
        ) from None
    return Opened(taken, carried, bytes(signed))
