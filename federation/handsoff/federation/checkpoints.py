"""Signed log checkpoints of what a partner has published, and the witness's cosignatures
(a wire format, pinned here).

A partner's *published log* is what the region's events stream holds of it. Read the stream
in sequence order and keep the messages on `hx.<region>.events.<partner>.>` whose
`Nats-Msg-Id` is `<partner>:<n>` and whose headers make an envelope leaf
(`envelope.leaf`: Hx-Kid, a hex Hx-Sig, a numeric Hx-Region); the first such message for
each number n is message n, any later one is ignored (`published_leaf`). Its leaf hash is the
RFC 6962 `leaf_hash(envelope.leaf(subject, headers, payload))`. Whether the aggregator
accepted the message plays no part: a message it rejected (sent under a stale region
version, say) was still published. The node and the aggregator both apply this rule to the
stream, so they agree on every leaf without trusting each other.

A checkpoint, signed by the partner, states the size of its published log and the Merkle
root over it, and links it to the partner's previous checkpoint:

    {"type": "hx-checkpoint-v1",
     "region": "<region>", "partner": "<partner>",
     "size": n,            n >= 1: messages 1..n are all published
     "root": "<hex>",      RFC 6962 MTH of the leaf hashes of messages 1..n, in number order
     "previous_size": m,   0 <= m <= n: the size of the partner's previous checkpoint (0: none)
     "proof": ["<hex>"]}   RFC 6962 PROOF(m, D[n]); empty when m is 0 or n

    published on hx.<region>.checkpoints.<partner>.log, Nats-Msg-Id checkpoint:<partner>:<n>

A cosignature, signed by the region's aggregator as witness, states that it checked a
checkpoint: signed by the partner, no smaller than the last it witnessed, consistent with the
previous one, and equal to the root of the envelopes the stream holds (`check_checkpoint`):

    {"type": "hx-cosignature-v1",
     "region": "<region>", "partner": "<partner>", "size": n, "root": "<hex>",
     "witness": "<aggregator id>"}

    published on hx.<region>.witness.<partner>, Nats-Msg-Id witness:<partner>:<n>

Both travel as signed JSON that embeds the exact bytes signed (like statements.py); never
re-encode to verify:

    {"checkpoint": {...}, "kid": "<hex key id>", "signature": "<hex Ed25519>"}
        signature over "hx-checkpoint-v1\\0" | checkpoint bytes   (the partner's key)
    {"cosignature": {...}, "kid": "<hex key id>", "signature": "<hex Ed25519>"}
        signature over "hx-cosignature-v1\\0" | cosignature bytes (the aggregator's key)

Every refusal is a `CheckpointRejected` with a stable `reason`: malformed, unknown_partner,
unknown_key, key_revoked, key_not_valid, bad_signature, wrong_region, wrong_sender,
rollback, inconsistent, mismatch, unpublished (set by the witness: the checkpoint covers
messages the stream does not hold).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Final, Literal, NamedTuple

import msgspec

from handsoff.federation import envelope, subjects
from handsoff.federation.errors import EnvelopeRejected, FederationError
from handsoff.federation.region import RegionDocument
from handsoff.keys import BadSignature, MerkleProofError, SigningKey, key_id, verify_signature
from handsoff.keys.merkle import leaf_hash, verify_consistency

CHECKPOINT_DOMAIN: Final = b"hx-checkpoint-v1\x00"
COSIGNATURE_DOMAIN: Final = b"hx-cosignature-v1\x00"

Hash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Token = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
Kid = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]
Signature = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{128}$")]
Size = Annotated[int, msgspec.Meta(ge=1, le=2**62)]


class CheckpointRejected(FederationError):
    """A checkpoint or cosignature that does not verify, or that a witness refuses.
    `reason` is a stable code (see the module docstring), `detail` says more."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Literal["hx-checkpoint-v1"] = "hx-checkpoint-v1"
    region: Token
    partner: Token
    size: Size
    root: Hash
    previous_size: Annotated[int, msgspec.Meta(ge=0, le=2**62)]
    proof: tuple[Hash, ...] = ()

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)


class Cosignature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Literal["hx-cosignature-v1"] = "hx-cosignature-v1"
    region: Token
    partner: Token
    size: Size
    root: Hash
    witness: Token


class _SignedCheckpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    checkpoint: msgspec.Raw
    kid: Kid
    signature: Signature


class _SignedCosignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cosignature: msgspec.Raw
    kid: Kid
    signature: Signature


_ENCODER = msgspec.json.Encoder()
_SIGNED_CHECKPOINT = msgspec.json.Decoder(_SignedCheckpoint)
_SIGNED_COSIGNATURE = msgspec.json.Decoder(_SignedCosignature)
_CHECKPOINT = msgspec.json.Decoder(Checkpoint)
_COSIGNATURE = msgspec.json.Decoder(Cosignature)


# --- the published log ----------------------------------------------------------------------


class PublishedLeaf(NamedTuple):
    partner: str
    number: int
    leaf: bytes  # leaf_hash(envelope.leaf(...))


def published_leaf(
    subject: str, headers: Mapping[str, str] | None, payload: bytes
) -> PublishedLeaf | None:
    """The (partner, number, leaf hash) a stored events message stands for in its partner's
    published log, or None if it cannot stand for one (see the module docstring). Whether it
    is message `number` depends on it being the first for that number in stream order."""
    parts = subject.split(".")
    if len(parts) < 5 or parts[0] != subjects.PREFIX or parts[2] != "events":
        return None
    headers = headers or {}
    try:
        partner, number = envelope.parse_message_id(headers.get(envelope.MSG_ID, ""))
        if partner != parts[3]:
            return None
        data = envelope.leaf(subject, headers, payload)
    except (EnvelopeRejected, KeyError, ValueError, struct.error):
        return None
    return PublishedLeaf(partner, number, leaf_hash(data))


def published_leaf_of(
    checked: envelope.Checked, subject: str, headers: Mapping[str, str], payload: bytes
) -> PublishedLeaf | None:
    """`published_leaf` of a message whose envelope verified (its id and headers known good):
    the same answer without parsing them again."""
    parts = subject.split(".")
    if len(parts) < 5 or parts[2] != "events":
        return None
    return PublishedLeaf(
        checked.partner, checked.number, leaf_hash(envelope.leaf(subject, headers, payload))
    )


def checkpoint_msg_id(partner: str, size: int) -> str:
    return f"checkpoint:{partner}:{size}"


def cosignature_msg_id(partner: str, size: int) -> str:
    return f"witness:{partner}:{size}"


# --- checkpoints ----------------------------------------------------------------------------


def make_checkpoint(
    region: str, partner: str, size: int, root: bytes, previous_size: int, proof: list[bytes]
) -> Checkpoint:
    return Checkpoint(
        region=region,
        partner=partner,
        size=size,
        root=root.hex(),
        previous_size=previous_size,
        proof=tuple(h.hex() for h in proof),
    )


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey) -> bytes:
    """The signed form (deterministic: Ed25519 signatures are, and so is msgspec's JSON)."""
    body = _ENCODER.encode(checkpoint)
    signature = key.sign(CHECKPOINT_DOMAIN + body)
    return _ENCODER.encode(_SignedCheckpoint(msgspec.Raw(body), key.kid.hex(), signature.hex()))


def open_checkpoint(
    signed: bytes, region: RegionDocument, at: datetime, subject: str | None = None
) -> Checkpoint:
    """The checkpoint, if the partner it names signed exactly these bytes with a key of the
    region valid at `at` (the stream's timestamp of the message), for this region, and, given
    the subject it arrived on, that subject is the partner's. Else CheckpointRejected."""
    try:
        wrapper = _SIGNED_CHECKPOINT.decode(signed)
        body = bytes(wrapper.checkpoint)
        checkpoint = _CHECKPOINT.decode(body)
    except msgspec.DecodeError as e:
        raise CheckpointRejected("malformed", f"not a signed checkpoint: {e}") from None
    try:
        public_key = region.partner_key(checkpoint.partner, wrapper.kid, at)
    except FederationError as e:
        raise CheckpointRejected(getattr(e, "reason", "unknown_key"), str(e)) from None
    try:
        verify_signature(public_key, CHECKPOINT_DOMAIN + body, bytes.fromhex(wrapper.signature))
    except (ValueError, BadSignature):
        raise CheckpointRejected(
            "bad_signature",
            f"checkpoint does not verify with {checkpoint.partner}'s key {wrapper.kid}",
        ) from None
    if checkpoint.region != region.region:
        raise CheckpointRejected(
            "wrong_region", f"checkpoint of region {checkpoint.region}, not {region.region}"
        )
    if subject is not None:
        expected = subjects.checkpoints(region.region, checkpoint.partner)
        if subject != expected:
            raise CheckpointRejected(
                "wrong_sender", f"{checkpoint.partner}'s checkpoint arrived on {subject}"
            )
    if checkpoint.previous_size > checkpoint.size:
        raise CheckpointRejected(
            "malformed",
            f"previous size {checkpoint.previous_size} exceeds size {checkpoint.size}",
        )
    if checkpoint.previous_size in (0, checkpoint.size) and checkpoint.proof:
        raise CheckpointRejected(
            "malformed", f"a proof from size {checkpoint.previous_size} must be empty"
        )
    return checkpoint


def checkpoint_bytes(signed: bytes) -> bytes:
    """The exact checkpoint bytes inside a signed form (no verification)."""
    return bytes(_SIGNED_CHECKPOINT.decode(signed).checkpoint)


def read_checkpoint(signed: bytes) -> Checkpoint:
    """The checkpoint inside a signed form, NOT verified (for the node that signed it)."""
    return _CHECKPOINT.decode(checkpoint_bytes(signed))


# --- the witness ----------------------------------------------------------------------------


class Witnessed(NamedTuple):
    """The last checkpoint a witness countersigned for a partner."""

    size: int
    root: bytes


def check_checkpoint(
    checkpoint: Checkpoint, witnessed: Witnessed | None, root_at: Callable[[int], bytes]
) -> None:
    """The witness's rule, for a checkpoint already opened (signature verified).

    `witnessed` is the last checkpoint it countersigned for this partner (None: none yet);
    `root_at(k)` is the MTH of the partner's published log's first k leaves (k <= size), as
    the witness read them from the stream. Refuses, in this order:

    rollback      size below the witnessed size: published history dropped
    inconsistent  the proof does not take the root at previous_size (the witnessed root if
                  previous_size is the witnessed size, else root_at) to the new root:
                  history the partner checkpointed before was rewritten
    mismatch      the root is not the root of the envelopes the stream holds

    A checkpoint equal to the witnessed one passes (the caller need not cosign it again).
    """
    partner, size = checkpoint.partner, checkpoint.size
    if witnessed is not None and size < witnessed.size:
        raise CheckpointRejected(
            "rollback",
            f"{partner} checkpoints size {size} after size {witnessed.size} was witnessed",
        )
    previous = checkpoint.previous_size
    if previous > 0:
        if witnessed is not None and previous == witnessed.size:
            previous_root = witnessed.root
        else:
            previous_root = root_at(previous)
        try:
            verify_consistency(
                previous,
                size,
                previous_root,
                checkpoint.root_bytes,
                [bytes.fromhex(h) for h in checkpoint.proof],
            )
        except MerkleProofError as e:
            raise CheckpointRejected(
                "inconsistent", f"{partner}'s checkpoint of size {size}: {e}"
            ) from None
    if checkpoint.root_bytes != root_at(size):
        raise CheckpointRejected(
            "mismatch",
            f"{partner}'s root of size {size} is not the root of the envelopes it published",
        )


# --- cosignatures ---------------------------------------------------------------------------


def cosign(checkpoint: Checkpoint, witness: str, key: SigningKey) -> bytes:
    """The witness's signed cosignature of a checkpoint it checked (deterministic)."""
    body = _ENCODER.encode(
        Cosignature(
            region=checkpoint.region,
            partner=checkpoint.partner,
            size=checkpoint.size,
            root=checkpoint.root,
            witness=witness,
        )
    )
    signature = key.sign(COSIGNATURE_DOMAIN + body)
    return _ENCODER.encode(_SignedCosignature(msgspec.Raw(body), key.kid.hex(), signature.hex()))


def open_cosignature(signed: bytes, region: RegionDocument) -> Cosignature:
    """The cosignature, if the region's aggregator signed exactly these bytes as witness for
    this region. Else CheckpointRejected (malformed, unknown_key, bad_signature,
    wrong_region, wrong_sender)."""
    try:
        wrapper = _SIGNED_COSIGNATURE.decode(signed)
    except msgspec.DecodeError as e:
        raise CheckpointRejected("malformed", f"not a signed cosignature: {e}") from None
    public_key = region.aggregator.public_key
    if wrapper.kid != key_id(public_key).hex():
        raise CheckpointRejected(
            "unknown_key",
            f"cosigned with key {wrapper.kid}, not the region aggregator's "
            f"{key_id(public_key).hex()}",
        )
    body = bytes(wrapper.cosignature)
    try:
        verify_signature(public_key, COSIGNATURE_DOMAIN + body, bytes.fromhex(wrapper.signature))
    except (ValueError, BadSignature):
        raise CheckpointRejected(
            "bad_signature", "cosignature does not verify with the aggregator's key"
        ) from None
    try:
        cosignature = _COSIGNATURE.decode(body)
    except msgspec.DecodeError as e:
        raise CheckpointRejected("malformed", f"signed cosignature: {e}") from None
    if cosignature.region != region.region:
        raise CheckpointRejected(
            "wrong_region", f"cosignature of region {cosignature.region}, not {region.region}"
        )
    if cosignature.witness != region.aggregator.id:
        raise CheckpointRejected(
            "wrong_sender",
            f"cosignature names witness {cosignature.witness}, not {region.aggregator.id}",
        )
    return cosignature


def read_cosignature(signed: bytes) -> Cosignature:
    """The cosignature inside a signed form, NOT verified (to pick the key to verify it
    with); msgspec.DecodeError if it is none."""
    return _COSIGNATURE.decode(bytes(_SIGNED_COSIGNATURE.decode(signed).cosignature))


def cosigns(cosignature: Cosignature, checkpoint: Checkpoint) -> bool:
    """Whether a (verified) cosignature countersigns this checkpoint's (size, root)."""
    return (
        cosignature.region,
        cosignature.partner,
        cosignature.size,
        cosignature.root,
    ) == (checkpoint.region, checkpoint.partner, checkpoint.size, checkpoint.root)
