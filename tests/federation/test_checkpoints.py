"""Signed checkpoints and cosignatures (federation/checkpoints.py): the wire format round
trips, every tampered field is refused with its reason, the witness rule, and the published
log's leaf rule shared by node and aggregator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from handsoff.federation import checkpoints, envelope, subjects
from handsoff.federation.checkpoints import (
    Checkpoint,
    CheckpointRejected,
    Cosignature,
    Witnessed,
    check_checkpoint,
    cosign,
    cosigns,
    make_checkpoint,
    open_checkpoint,
    open_cosignature,
    published_leaf,
    sign_checkpoint,
)
from handsoff.federation.region import Aggregator, Coordinator, RegionDocument
from handsoff.keys import SigningKey
from handsoff.keys.merkle import consistency_proof, leaf_hash, root_from_hashes

REGION = "sadc"
ISSUED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
AT = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)  # the stream's timestamp of the checkpoint
REVOKED = AT + timedelta(days=1)
P1 = SigningKey.from_seed(bytes([1]) * 32)
P2 = SigningKey.from_seed(bytes([2]) * 32)
STRANGER = SigningKey.from_seed(bytes([3]) * 32)
AGGREGATOR = SigningKey.from_seed(bytes([20]) * 32)
SUBJECT = subjects.checkpoints(REGION, "p1")
LEAVES = [leaf_hash(f"envelope {i}".encode()) for i in range(1, 12)]


def region() -> RegionDocument:
    doc = RegionDocument(
        region=REGION,
        version=1,
        issued_at=ISSUED,
        expires_at=ISSUED + timedelta(days=365),
        threshold=1,
        coordinators=[Coordinator("c1", "C", SigningKey.from_seed(bytes([9]) * 32).public_key)],
        aggregator=Aggregator("aggregator", AGGREGATOR.public_key),
    )
    for partner, key in (("p1", P1), ("p2", P2)):
        doc = doc.add_partner(
            partner, f"Partner {partner}", "BW", key.public_key, valid_from=ISSUED, issued_at=ISSUED
        )
    return doc


DOC = region()


def checkpoint(size: int = 7, previous: int = 4, leaves: list[bytes] = LEAVES) -> Checkpoint:
    proof = consistency_proof(previous, size, leaves) if 0 < previous < size else []
    return make_checkpoint(REGION, "p1", size, root_from_hashes(leaves[:size]), previous, proof)


def rejected(signed: bytes, at: datetime = AT, subject: str | None = SUBJECT) -> str:
    with pytest.raises(CheckpointRejected) as caught:
        open_checkpoint(signed, DOC, at, subject)
    return caught.value.reason


def resigned_body(signed: bytes, body: dict[str, Any]) -> bytes:
    """The signed form with its embedded checkpoint replaced, signature kept."""
    wrapper = msgspec.json.decode(signed)
    wrapper["checkpoint"] = body
    return msgspec.json.encode(wrapper)


# --- round trips ----------------------------------------------------------------------------


def test_a_checkpoint_round_trips_and_is_deterministic() -> None:
    cp = checkpoint()
    signed = sign_checkpoint(cp, P1)
    assert sign_checkpoint(cp, P1) == signed  # Ed25519 and msgspec JSON are deterministic
    assert open_checkpoint(signed, DOC, AT, SUBJECT) == cp
    assert open_checkpoint(signed, DOC, AT) == cp  # without a subject to check
    assert checkpoints.read_checkpoint(signed) == cp
    wrapper = msgspec.json.decode(signed)
    assert sorted(wrapper) == ["checkpoint", "kid", "signature"]
    assert wrapper["kid"] == P1.kid.hex()
    assert wrapper["checkpoint"] == {
        "type": "hx-checkpoint-v1",
        "region": REGION,
        "partner": "p1",
        "size": 7,
        "root": root_from_hashes(LEAVES[:7]).hex(),
        "previous_size": 4,
        "proof": [h.hex() for h in consistency_proof(4, 7, LEAVES)],
    }
    # The exact embedded bytes are what was signed.
    body = checkpoints.checkpoint_bytes(signed)
    assert body == msgspec.json.encode(cp)
    assert signed.count(body) == 1


def test_first_and_equal_size_checkpoints_carry_no_proof() -> None:
    for cp in (checkpoint(5, 0), checkpoint(5, 5)):
        assert cp.proof == ()
        assert open_checkpoint(sign_checkpoint(cp, P1), DOC, AT, SUBJECT) == cp


def test_a_cosignature_round_trips() -> None:
    cp = checkpoint()
    signed = cosign(cp, "aggregator", AGGREGATOR)
    assert cosign(cp, "aggregator", AGGREGATOR) == signed
    got = open_cosignature(signed, DOC)
    assert got == Cosignature(
        region=REGION, partner="p1", size=7, root=cp.root, witness="aggregator"
    )
    assert cosigns(got, cp)
    assert not cosigns(got, checkpoint(8, 7))


def test_message_ids() -> None:
    assert checkpoints.checkpoint_msg_id("p1", 7) == "checkpoint:p1:7"
    assert checkpoints.cosignature_msg_id("p1", 7) == "witness:p1:7"
    assert subjects.witness(REGION, "p1") == "hx.sadc.witness.p1"


# --- every tampered field of a checkpoint -----------------------------------------------------


def test_every_tampered_checkpoint_field_is_refused() -> None:
    cp = checkpoint()
    signed = sign_checkpoint(cp, P1)
    body = msgspec.to_builtins(cp)
    other_root = root_from_hashes(LEAVES[:6]).hex()
    changes: dict[str, Any] = {
        "region": "east",
        "partner": "p2",
        "size": 8,
        "root": other_root,
        "previous_size": 3,
        "proof": [other_root, *body["proof"][1:]],
    }
    for name, value in changes.items():
        reason = rejected(resigned_body(signed, {**body, name: value}))
        # Naming p2 looks up p2's keys, where p1's kid is unknown; any other change breaks
        # the signature.
        assert reason == ("unknown_key" if name == "partner" else "bad_signature"), name
    # Fields the schema refuses, or that it does not know.
    for broken in (
        {**body, "type": "hx-checkpoint-v2"},
        {**body, "size": 0},
        {**body, "size": -1},
        {**body, "root": "AB" * 32},
        {**body, "root": "ab" * 31},
        {**body, "proof": ["zz" * 32]},
        {**body, "extra": 1},
        {k: v for k, v in body.items() if k != "root"},
    ):
        assert rejected(resigned_body(signed, broken)) == "malformed", broken

    wrapper = msgspec.json.decode(signed)
    flipped = ("0" if wrapper["signature"][0] != "0" else "1") + wrapper["signature"][1:]
    assert rejected(msgspec.json.encode({**wrapper, "signature": flipped})) == "bad_signature"
    assert rejected(msgspec.json.encode({**wrapper, "kid": P2.kid.hex()})) == "unknown_key"
    assert rejected(msgspec.json.encode({**wrapper, "kid": "zz" * 8})) == "malformed"
    assert rejected(msgspec.json.encode({**wrapper, "more": 1})) == "malformed"
    assert rejected(b"not json") == "malformed"
    assert rejected(b"") == "malformed"
    # Reformatting the embedded JSON (same content) breaks the signature: never re-encoded.
    spaced = signed.replace(b'"size":7', b'"size": 7')
    assert spaced != signed
    assert rejected(spaced) == "bad_signature"


def test_signer_key_region_and_subject_are_checked() -> None:
    cp = checkpoint()
    # Signed by another partner's key, or a stranger's, in p1's name.
    assert rejected(sign_checkpoint(cp, P2)) == "unknown_key"
    assert rejected(sign_checkpoint(cp, STRANGER)) == "unknown_key"
    # p2's honest checkpoint arriving on p1's subject (or the reverse).
    p2 = msgspec.structs.replace(cp, partner="p2")
    assert rejected(sign_checkpoint(p2, P2)) == "wrong_sender"
    assert open_checkpoint(sign_checkpoint(p2, P2), DOC, AT, subjects.checkpoints(REGION, "p2"))
    # Another region's checkpoint, signed by the right key.
    assert rejected(sign_checkpoint(msgspec.structs.replace(cp, region="east"), P1)) == (
        "wrong_region"
    )
    # A partner the region does not know.
    assert rejected(sign_checkpoint(msgspec.structs.replace(cp, partner="p9"), P1)) == (
        "unknown_partner"
    )
    # Key validity at the stream's timestamp.
    revoked = DOC.revoke_key("p1", P1.kid.hex(), REVOKED, issued_at=ISSUED)
    signed = sign_checkpoint(cp, P1)
    assert open_checkpoint(signed, revoked, AT, SUBJECT) == cp
    with pytest.raises(CheckpointRejected) as caught:
        open_checkpoint(signed, revoked, REVOKED, SUBJECT)
    assert caught.value.reason == "key_revoked"
    assert rejected(signed, at=ISSUED - timedelta(seconds=1)) == "key_not_valid"


def test_proof_shape_is_checked() -> None:
    cp = checkpoint()
    assert rejected(sign_checkpoint(msgspec.structs.replace(cp, previous_size=8), P1)) == (
        "malformed"
    )
    for previous in (0, 7):
        odd = msgspec.structs.replace(cp, previous_size=previous)
        assert rejected(sign_checkpoint(odd, P1)) == "malformed"


# --- every tampered field of a cosignature ----------------------------------------------------


def cosignature_rejected(signed: bytes) -> str:
    with pytest.raises(CheckpointRejected) as caught:
        open_cosignature(signed, DOC)
    return caught.value.reason


def test_every_tampered_cosignature_field_is_refused() -> None:
    cp = checkpoint()
    signed = cosign(cp, "aggregator", AGGREGATOR)
    wrapper = msgspec.json.decode(signed)
    body = wrapper["cosignature"]
    for name, value in {
        "region": "east",
        "partner": "p2",
        "size": 6,
        "root": "00" * 32,
        "witness": "someone",
    }.items():
        changed = msgspec.json.encode({**wrapper, "cosignature": {**body, name: value}})
        assert cosignature_rejected(changed) == "bad_signature", name
    flipped = ("0" if wrapper["signature"][0] != "0" else "1") + wrapper["signature"][1:]
    assert cosignature_rejected(msgspec.json.encode({**wrapper, "signature": flipped})) == (
        "bad_signature"
    )
    assert cosignature_rejected(cosign(cp, "aggregator", P1)) == "unknown_key"
    assert cosignature_rejected(b"{}") == "malformed"
    # Signed by the aggregator's key, but naming another witness or region.
    assert cosignature_rejected(cosign(cp, "someone", AGGREGATOR)) == "wrong_sender"
    east = msgspec.structs.replace(cp, region="east")
    assert cosignature_rejected(cosign(east, "aggregator", AGGREGATOR)) == "wrong_region"
    schema = msgspec.json.encode({**wrapper, "cosignature": {**body, "size": 0}})
    # A schema failure behind a valid signature needs the aggregator's key: sign it raw.
    raw = msgspec.json.encode({**body, "size": 0})
    resigned = msgspec.json.encode(
        {
            "cosignature": msgspec.json.decode(raw),
            "kid": AGGREGATOR.kid.hex(),
            "signature": AGGREGATOR.sign(checkpoints.COSIGNATURE_DOMAIN + raw).hex(),
        }
    )
    assert cosignature_rejected(schema) == "bad_signature"
    assert cosignature_rejected(resigned) == "malformed"


# --- the witness rule -----------------------------------------------------------------------


def root_at(leaves: list[bytes]) -> Any:
    return lambda k: root_from_hashes(leaves[:k])


def refused(cp: Checkpoint, witnessed: Witnessed | None, leaves: list[bytes] = LEAVES) -> str:
    with pytest.raises(CheckpointRejected) as caught:
        check_checkpoint(cp, witnessed, root_at(leaves))
    return caught.value.reason


def test_honest_checkpoints_pass_the_witness() -> None:
    w4 = Witnessed(4, root_from_hashes(LEAVES[:4]))
    for cp, witnessed in (
        (checkpoint(4, 0), None),  # the first: nothing to be consistent with
        (checkpoint(7, 4), w4),  # proved from the witnessed size
        (checkpoint(7, 2), w4),  # from an older size: the witness computes that root
        (checkpoint(7, 0), w4),  # a node that lost its records: the root still matches
        (checkpoint(4, 4), w4),  # the same again
        (checkpoint(11, 7), w4),
    ):
        check_checkpoint(cp, witnessed, root_at(LEAVES))


def test_rewritten_or_dropped_history_is_refused() -> None:
    w7 = Witnessed(7, root_from_hashes(LEAVES[:7]))
    # Dropped: a smaller size than witnessed, however honest its root.
    assert refused(checkpoint(5, 4), w7) == "rollback"
    assert refused(checkpoint(6, 0), w7) == "rollback"
    # Rewritten: message 3 replaced in the partner's own tree, proved from its own tree.
    forged = [*LEAVES[:2], leaf_hash(b"rewritten 3"), *LEAVES[3:]]
    assert refused(checkpoint(9, 7, forged), w7) == "inconsistent"
    # ... or claimed as a first checkpoint, without a proof.
    assert refused(checkpoint(9, 0, forged), w7) == "mismatch"
    assert refused(checkpoint(9, 0, forged), None) == "mismatch"
    # The same size with another root.
    assert refused(checkpoint(7, 7, forged), w7) == "inconsistent"
    # Extended with an envelope the stream does not hold in that place (message 9).
    later = [*LEAVES[:8], leaf_hash(b"not published"), *LEAVES[9:]]
    assert refused(checkpoint(9, 7, later), w7) == "mismatch"
    # A proof for another size pair.
    cp = checkpoint(9, 7)
    wrong = msgspec.structs.replace(
        cp, proof=tuple(h.hex() for h in consistency_proof(6, 9, LEAVES))
    )
    assert refused(wrong, w7) == "inconsistent"


# --- the published log's leaves -----------------------------------------------------------


def sealed(partner: str = "p1", number: int = 1, kind: str = "incident-reported") -> Any:
    subject = subjects.events(REGION, partner, kind)
    payload = b'{"type":"x"}'
    headers = envelope.seal_headers(P1, subject, envelope.message_id(partner, number), payload, 1)
    return subject, headers, payload


def test_published_leaf_is_the_envelope_leaf_hash() -> None:
    subject, headers, payload = sealed(number=3)
    got = published_leaf(subject, headers, payload)
    assert got == ("p1", 3, leaf_hash(envelope.leaf(subject, headers, payload)))
    # A deeper subject under the partner's events still counts (the stream captures it).
    assert published_leaf(subject + ".x", headers, payload) is not None


def test_what_cannot_stand_for_a_published_message() -> None:
    subject, headers, payload = sealed()
    for s, h in (
        (subjects.referral(REGION, "p1", "p2"), headers),  # not an events subject
        (subjects.checkpoints(REGION, "p1"), headers),
        (subjects.events(REGION, "p2", "incident-reported"), headers),  # another's number
        (subject, {**headers, envelope.MSG_ID: "p1:0"}),
        (subject, {**headers, envelope.MSG_ID: "p1:01"}),
        (subject, {**headers, envelope.MSG_ID: "nonsense"}),
        (subject, {k: v for k, v in headers.items() if k != envelope.KID}),
        (subject, {k: v for k, v in headers.items() if k != envelope.MSG_ID}),
        (subject, {**headers, envelope.SIGNATURE: "not hex"}),
        (subject, {**headers, envelope.REGION_VERSION: "x"}),
        (subject, {**headers, envelope.REGION_VERSION: str(2**64)}),
    ):
        assert published_leaf(s, h, payload) is None, (s, h)
    assert published_leaf(subject, None, payload) is None
