"""Ed25519 signing, key ids and verify_signature, including every Wycheproof Ed25519 case."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest

from handsoff.keys import (
    KEY_ID_LEN,
    BadSignature,
    KeysError,
    SigningKey,
    VerificationError,
    key_id,
    kid_hex,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
WYCHEPROOF = VECTORS / "ed25519" / "wycheproof_ed25519_test.json"

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# --- Wycheproof ---------------------------------------------------------------------------

Hex = Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{2})*$")]


class _Case(msgspec.Struct):
    tcId: int
    comment: str
    msg: Hex
    sig: Hex
    result: Literal["valid", "invalid"]  # no "acceptable" cases: each must be decided


class _PublicKey(msgspec.Struct):
    pk: Annotated[Hex, msgspec.Meta(min_length=64, max_length=64)]


class _Group(msgspec.Struct):
    publicKey: _PublicKey
    tests: list[_Case]


class _Vectors(msgspec.Struct):
    algorithm: Literal["EDDSA"]
    numberOfTests: int
    testGroups: Annotated[list[_Group], msgspec.Meta(min_length=1)]


def _load() -> tuple[_Vectors | None, str]:
    """(vectors, "") or (None, why not); a problem becomes a failing test, never a skip."""
    if not WYCHEPROOF.is_file():
        return None, f"Wycheproof Ed25519 vectors missing: expected {WYCHEPROOF}"
    try:
        return msgspec.json.decode(WYCHEPROOF.read_bytes(), type=_Vectors), ""
    except msgspec.DecodeError as e:
        return None, f"unexpected structure in {WYCHEPROOF}: {e}"


_VECTORS, _LOAD_ERROR = _load()


def _params() -> list[object]:
    if _VECTORS is None:
        return [pytest.param(None, None, id="vectors-unavailable")]
    return [
        pytest.param(group.publicKey.pk, case, id=f"{case.tcId}-{case.comment}".rstrip("-"))
        for group in _VECTORS.testGroups
        for case in group.tests
    ]


def test_wycheproof_file_structure() -> None:
    if _VECTORS is None:
        pytest.fail(_LOAD_ERROR)
    cases = [c for g in _VECTORS.testGroups for c in g.tests]
    assert len(cases) == _VECTORS.numberOfTests == 151
    assert len({c.tcId for c in cases}) == len(cases)
    assert {c.result for c in cases} == {"valid", "invalid"}


@pytest.mark.parametrize(("pk", "case"), _params())
def test_wycheproof(pk: str | None, case: _Case | None) -> None:
    if pk is None or case is None:
        pytest.fail(_LOAD_ERROR)
    public_key, msg, sig = bytes.fromhex(pk), bytes.fromhex(case.msg), bytes.fromhex(case.sig)
    if case.result == "valid":
        verify_signature(public_key, msg, sig)
    else:
        with pytest.raises(BadSignature):
            verify_signature(public_key, msg, sig)


# --- key ids ------------------------------------------------------------------------------


def test_key_id_known_answer() -> None:
    # Pinned: kids are stored in every event, so the derivation must never change.
    assert key_id(RFC_PK) == bytes.fromhex("7f18685c3b93ddba")
    assert len(key_id(RFC_PK)) == KEY_ID_LEN
    assert kid_hex(key_id(RFC_PK)) == "7f18685c3b93ddba"


def test_key_id_is_domain_separated() -> None:
    assert key_id(RFC_PK) != hashlib.blake2b(RFC_PK, digest_size=KEY_ID_LEN).digest()


# --- SigningKey ---------------------------------------------------------------------------


def test_rfc8032_known_answer() -> None:
    key = SigningKey.from_seed(RFC_SEED)
    assert key.public_key == RFC_PK
    assert key.seed == RFC_SEED
    assert key.kid == key_id(RFC_PK)
    assert key.sign(b"") == RFC_SIG
    verify_signature(RFC_PK, b"", RFC_SIG)


def test_generate_sign_verify() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"event body")
    assert len(sig) == 64
    verify_signature(key.public_key, b"event body", sig)
    assert SigningKey.generate().public_key != key.public_key
    assert SigningKey.from_seed(key.seed) == key


def test_made_recognises_exactly_its_own_signature() -> None:
    # Deterministic signing (RFC 8032): the known answer is the one this key makes.
    key, other = SigningKey.from_seed(RFC_SEED), SigningKey.generate()
    assert key.made(b"", RFC_SIG)
    sig = key.sign(b"link")
    assert key.made(b"link", sig)
    assert key.sign(b"link") == sig
    flipped = sig[:40] + bytes([sig[40] ^ 1]) + sig[41:]
    for message, signature in [
        (b"link", flipped),
        (b"lin", sig),
        (b"link", other.sign(b"link")),
        (b"link", sig[:63]),
        (b"link", b""),
    ]:
        assert not key.made(message, signature)


def test_repr_hides_seed() -> None:
    key = SigningKey.from_seed(RFC_SEED)
    for text in (repr(key), str(key), f"{key}"):
        assert RFC_SEED.hex() not in text
        assert kid_hex(key.kid) in text


@pytest.mark.parametrize("seed", [b"", b"\x01" * 31, b"\x01" * 33, bytearray(32), "x" * 32])
def test_bad_seed_is_keys_error(seed: object) -> None:
    with pytest.raises(KeysError, match="32 bytes"):
        SigningKey.from_seed(seed)  # type: ignore[arg-type]


def test_sign_non_bytes_is_keys_error() -> None:
    with pytest.raises(KeysError):
        SigningKey.generate().sign("text")  # type: ignore[arg-type]


# --- verify_signature ---------------------------------------------------------------------


def test_tampering_is_detected() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    sig = key.sign(b"message")
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    for pk, msg, s in [
        (key.public_key, b"messagf", sig),
        (key.public_key, b"message", flipped),
        (other.public_key, b"message", sig),
    ]:
        with pytest.raises(BadSignature) as info:
            verify_signature(pk, msg, s)
        assert kid_hex(key_id(pk)) in str(info.value)
    assert issubclass(BadSignature, VerificationError)
    assert issubclass(VerificationError, KeysError)


@pytest.mark.parametrize(
    ("public_key", "message", "signature"),
    [
        pytest.param(RFC_PK[:31], b"", RFC_SIG, id="short-key"),
        pytest.param(RFC_PK + b"\0", b"", RFC_SIG, id="long-key"),
        pytest.param(b"", b"", RFC_SIG, id="empty-key"),
        pytest.param(RFC_PK, b"", RFC_SIG[:63], id="short-signature"),
        pytest.param(RFC_PK, b"", RFC_SIG + b"\0", id="long-signature"),
        pytest.param(RFC_PK, b"", b"", id="empty-signature"),
        pytest.param(b"\0" * 32, b"", RFC_SIG, id="small-order-key"),
        pytest.param(b"\xff" * 32, b"", RFC_SIG, id="non-canonical-key"),
        pytest.param(RFC_PK.hex(), b"", RFC_SIG, id="str-key"),
        pytest.param(RFC_PK, "", RFC_SIG, id="str-message"),
        pytest.param(RFC_PK, b"", None, id="no-signature"),
        pytest.param(None, b"", RFC_SIG, id="no-key"),
    ],
)
def test_malformed_input_is_bad_signature(
    public_key: object, message: object, signature: object
) -> None:
    # Never a nacl or built-in exception: callers catch VerificationError only.
    with pytest.raises(BadSignature):
        verify_signature(public_key, message, signature)  # type: ignore[arg-type]


def test_bytearray_inputs_verify() -> None:
    verify_signature(bytearray(RFC_PK), b"", bytearray(RFC_SIG))  # type: ignore[arg-type]


def test_cached_key_still_rejects_after_accepting() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"a")
    verify_signature(key.public_key, b"a", sig)
    with pytest.raises(BadSignature):
        verify_signature(key.public_key, b"b", sig)
    verify_signature(key.public_key, b"a", sig)
