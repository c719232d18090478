"""Keyed pseudonyms: pinned construction, stable per key and purpose, unrelated otherwise."""

import hashlib
import re
from uuid import UUID

import pytest

from handsoff.federation.errors import FederationError
from handsoff.federation.pseudonyms import (
    CASE_PURPOSE,
    PSEUDONYM_PATTERN,
    REFERRAL_PURPOSE,
    Pseudonymiser,
)
from handsoff.keys import NodeSecrets

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CASE = UUID("00000000-0000-4000-8000-000000000001")
CASES = [UUID(int=(4 << 76) | (2 << 62) | n) for n in range(200)]


def test_purposes_are_pinned() -> None:
    assert CASE_PURPOSE == "regional-statistics/case"
    assert REFERRAL_PURPOSE == "regional-statistics/referral"


def test_known_answer_pins_the_construction() -> None:
    # The aggregator keeps the pseudonyms it received: the construction can never change.
    assert Pseudonymiser(KEY).case(CASE) == "d40dacff0417833eee91637ba7eeece7"


def test_construction_is_the_documented_keyed_blake2b() -> None:
    purpose_key = hashlib.blake2b(
        REFERRAL_PURPOSE.encode(), key=KEY, person=b"hx-pseud-key-v1", digest_size=32
    ).digest()
    expected = hashlib.blake2b(
        CASE.bytes + b"ref-1", key=purpose_key, person=b"hx-pseudonym-v1", digest_size=16
    ).hexdigest()
    assert Pseudonymiser(KEY).referral(CASE, "ref-1") == expected


def test_pseudonyms_are_stable_and_match_the_shared_pattern() -> None:
    a, b = Pseudonymiser(KEY), Pseudonymiser(KEY)
    for case in CASES[:20]:
        assert a.case(case) == b.case(case)
        assert re.search(PSEUDONYM_PATTERN, a.case(case))
        assert re.search(PSEUDONYM_PATTERN, a.referral(case, "x"))
    assert not re.search(PSEUDONYM_PATTERN, a.case(CASE) + "\n")


def test_distinct_values_give_distinct_pseudonyms() -> None:
    p = Pseudonymiser(KEY)
    assert len({p.case(c) for c in CASES}) == len(CASES)
    referrals = {p.referral(c, r) for c in CASES[:20] for r in ("a", "b", "a-1")}
    assert len(referrals) == 60


def _differing_bits(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _assert_unrelated(xs: list[str], ys: list[str]) -> None:
    assert not set(xs) & set(ys)
    mean = sum(_differing_bits(x, y) for x, y in zip(xs, ys, strict=True)) / len(xs)
    assert 58 < mean < 70  # about half of 128 bits, as for independent random values


def test_different_purposes_give_unrelated_pseudonyms() -> None:
    p = Pseudonymiser(KEY)
    as_case = [p.case(c) for c in CASES]
    as_referral = [p.for_purpose(REFERRAL_PURPOSE, c.bytes) for c in CASES]
    as_other = [p.for_purpose("some-other-purpose", c.bytes) for c in CASES]
    _assert_unrelated(as_case, as_referral)
    _assert_unrelated(as_case, as_other)
    _assert_unrelated(as_referral, as_other)


def test_different_node_keys_give_unrelated_pseudonyms() -> None:
    mine, theirs = Pseudonymiser(KEY), Pseudonymiser(OTHER_KEY)
    _assert_unrelated([mine.case(c) for c in CASES], [theirs.case(c) for c in CASES])
    _assert_unrelated(
        [mine.referral(c, "r") for c in CASES], [theirs.referral(c, "r") for c in CASES]
    )


def test_from_secrets_uses_the_pseudonym_key() -> None:
    secrets = NodeSecrets.generate()
    assert Pseudonymiser.from_secrets(secrets).case(CASE) == Pseudonymiser(
        secrets.pseudonym_key
    ).case(CASE)
    assert Pseudonymiser.from_secrets(secrets).case(CASE) != Pseudonymiser(secrets.data_key).case(
        CASE
    )


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "0" * 32])
def test_a_key_must_be_32_bytes(key: object) -> None:
    with pytest.raises(FederationError, match="32 bytes"):
        Pseudonymiser(key)  # type: ignore[arg-type]


def test_an_empty_purpose_is_refused() -> None:
    with pytest.raises(FederationError, match="purpose"):
        Pseudonymiser(KEY).for_purpose("", b"x")


def test_repr_withholds_the_key() -> None:
    text = repr(Pseudonymiser(KEY))
    assert KEY.hex() not in text
    assert "withheld" in text
