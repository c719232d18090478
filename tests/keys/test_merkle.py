"""RFC 6962 Merkle trees: every transparency-dev proof vector, the reference tree, properties."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handsoff.keys import (
    EMPTY_ROOT,
    KeysError,
    MerkleProofError,
    MerkleTree,
    VerificationError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
MERKLE = VECTORS / "merkle"
REFERENCE = MERKLE / "reference_tree.json"

T = TypeVar("T")

# --- vectors: transparency-dev/merkle testdata, one case a file -----------------------------


class _Inclusion(msgspec.Struct, forbid_unknown_fields=True):
    leafIdx: int
    treeSize: int
    root: bytes
    leafHash: bytes
    proof: list[bytes] | None
    desc: str
    wantErr: bool


class _Consistency(msgspec.Struct, forbid_unknown_fields=True):
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: list[bytes] | None
    desc: str
    wantErr: bool


class _Reference(msgspec.Struct):
    leaf_inputs_hex: list[str]
    root_hashes_hex_by_size: list[str]


def _load(kind: str, type_: type[T]) -> tuple[list[tuple[str, T]], str]:
    """([(id, case)], "") or ([], why not); a problem becomes a failing test, never a skip."""
    folder = MERKLE / kind
    if not folder.is_dir():
        return [], f"Merkle {kind} vectors missing: expected {folder}"
    cases: list[tuple[str, T]] = []
    for path in sorted(folder.rglob("*.json")):
        try:
            case = msgspec.json.decode(path.read_bytes(), type=type_)
        except msgspec.DecodeError as e:
            return [], f"unexpected structure in {path}: {e}"
        cases.append((str(path.relative_to(MERKLE).with_suffix("")), case))
    if not cases:
        return [], f"no Merkle {kind} vectors in {folder}"
    return cases, ""


def _load_reference() -> tuple[_Reference | None, str]:
    if not REFERENCE.is_file():
        return None, f"Merkle reference tree missing: expected {REFERENCE}"
    try:
        return msgspec.json.decode(REFERENCE.read_bytes(), type=_Reference), ""
    except msgspec.DecodeError as e:
        return None, f"unexpected structure in {REFERENCE}: {e}"


_INCLUSION, _INCLUSION_ERROR = _load("inclusion", _Inclusion)
_CONSISTENCY, _CONSISTENCY_ERROR = _load("consistency", _Consistency)
_REFERENCE, _REFERENCE_ERROR = _load_reference()


def _params(cases: list[tuple[str, T]]) -> list[object]:
    if not cases:
        return [pytest.param(None, id="vectors-unavailable")]
    return [pytest.param(case, id=name) for name, case in cases]


def _reference() -> tuple[list[bytes], list[bytes]]:
    """(leaf hashes, root at each size 0..8) of the RFC 6962 reference tree."""
    if _REFERENCE is None:
        pytest.fail(_REFERENCE_ERROR)
    hashes = [leaf_hash(bytes.fromhex(d)) for d in _REFERENCE.leaf_inputs_hex]
    return hashes, [bytes.fromhex(r) for r in _REFERENCE.root_hashes_hex_by_size]


def test_vector_file_structure() -> None:
    for cases, error in ((_INCLUSION, _INCLUSION_ERROR), (_CONSISTENCY, _CONSISTENCY_ERROR)):
        if error:
            pytest.fail(error)
        # Pinned, so a lost file fails loudly instead of shrinking the suite.
        assert len(cases) == 98
        assert sum(not c.wantErr for _, c in cases) == 6


@pytest.mark.parametrize("case", _params(_INCLUSION))
def test_inclusion_vector(case: _Inclusion | None) -> None:
    if case is None:
        pytest.fail(_INCLUSION_ERROR)
    args = (case.leafHash, case.leafIdx, case.treeSize, case.proof or [], case.root)
    if case.wantErr:
        with pytest.raises(MerkleProofError, match=r"^inclusion proof: "):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("case", _params(_CONSISTENCY))
def test_consistency_vector(case: _Consistency | None) -> None:
    if case is None:
        pytest.fail(_CONSISTENCY_ERROR)
    args = (case.size1, case.size2, case.root1, case.root2, case.proof or [])
    if case.wantErr:
        with pytest.raises(MerkleProofError, match=r"^consistency proof: "):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_generated_proofs_equal_the_happy_path_vectors() -> None:
    hashes, roots = _reference()
    happy_inclusion = [c for _, c in _INCLUSION if not c.wantErr and c.root == roots[c.treeSize]]
    happy_consistency = [c for _, c in _CONSISTENCY if not c.wantErr and c.root2 in roots]
    assert len(happy_inclusion) == len(happy_consistency) == 5
    for i in happy_inclusion:
        assert i.leafHash == hashes[i.leafIdx]
        assert inclusion_proof(i.leafIdx, hashes[: i.treeSize]) == (i.proof or [])
    for c in happy_consistency:
        assert (c.root1, c.root2) == (roots[c.size1], roots[c.size2])
        assert consistency_proof(c.size1, c.size2, hashes) == (c.proof or [])


# --- roots ----------------------------------------------------------------------------------


def _mth(hashes: Sequence[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1: the independent reference for the builder."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def test_hash_primitives() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"L", b"R") == hashlib.sha256(b"\x01LR").digest()
    # Domain separation: a leaf holding two hashes is not their parent.
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(a + b) != node_hash(a, b)


def test_reference_tree_roots() -> None:
    if _REFERENCE is None:
        pytest.fail(_REFERENCE_ERROR)
    leaves = [bytes.fromhex(d) for d in _REFERENCE.leaf_inputs_hex]
    hashes, roots = _reference()
    assert len(leaves) == 8
    assert len(roots) == 9
    tree = MerkleTree()
    for n in range(9):
        assert root(leaves[:n]) == root_from_hashes(hashes[:n]) == roots[n], n
        assert tree.size == n
        assert tree.root() == roots[n]
        if n < 8:
            assert tree.append_data(leaves[n]) == hashes[n]


def _level_by_level(hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 tree built bottom-up: pair neighbours, carry an odd last node up unchanged."""
    level = list(hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = paired + level[len(level) - 1 :] if len(level) % 2 else paired
    return level[0] if level else EMPTY_ROOT


def test_builder_streams_many_leaves_in_log_memory() -> None:
    n = (1 << 17) + 5
    tree = MerkleTree()
    widest = 0
    for i in range(n):
        tree.append_data(i.to_bytes(4, "big"))
        widest = max(widest, len(tree.frontier))
    assert tree.size == n
    assert widest == 17 == n.bit_length() - 1
    assert len(tree.frontier) == n.bit_count() == 3
    want = _level_by_level([leaf_hash(i.to_bytes(4, "big")) for i in range(n)])
    assert tree.root() == want
    assert root(i.to_bytes(4, "big") for i in range(n)) == want  # an iterator, never a list


def test_builder_resumes_from_its_frontier() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(13)]
    tree = MerkleTree()
    tree.extend(hashes[:6])
    resumed = MerkleTree.from_frontier(tree.size, tree.frontier)
    resumed.extend(hashes[6:])
    assert resumed.root() == root_from_hashes(hashes)
    assert repr(resumed) == f"MerkleTree(size=13, root={resumed.root().hex()})"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MerkleTree().append(b"short"), "leaf hash must be 32 bytes, got 5"),
        (lambda: MerkleTree.from_frontier(3, [EMPTY_ROOT]), "cannot hold 1 hashes"),
        (lambda: MerkleTree.from_frontier(-1, []), "cannot hold 0 hashes"),
        (lambda: MerkleTree.from_frontier(1, [b"x"]), "frontier hash must be 32 bytes"),
        (lambda: inclusion_proof(3, [EMPTY_ROOT] * 3), "leaf 3 in a tree of size 3"),
        (lambda: inclusion_proof(-1, [EMPTY_ROOT] * 3), "leaf -1 in a tree of size 3"),
        (lambda: consistency_proof(0, 2, [EMPTY_ROOT] * 3), "from size 0 to size 2"),
        (lambda: consistency_proof(3, 2, [EMPTY_ROOT] * 3), "from size 3 to size 2"),
        (lambda: consistency_proof(1, 4, [EMPTY_ROOT] * 3), "over 3 leaves"),
    ],
)
def test_misuse_is_a_keys_error_not_a_verification_failure(
    make: Callable[[], object], match: str
) -> None:
    with pytest.raises(KeysError, match=match) as info:
        make()
    assert not isinstance(info.value, VerificationError)


# --- verification errors --------------------------------------------------------------------

_H = [leaf_hash(bytes([i])) for i in range(8)]
_R = [_mth(_H[:n]) for n in range(9)]


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (
            lambda: verify_inclusion(_H[2], 5, 5, [], _R[5]),
            "inclusion proof: leaf index 5 is not in a tree of size 5",
        ),
        (
            lambda: verify_inclusion(_H[2], -1, 5, [], _R[5]),
            "inclusion proof: leaf index -1 is not in a tree of size 5",
        ),
        (
            lambda: verify_inclusion(_H[2][:31], 2, 5, [], _R[5]),
            "inclusion proof: leaf hash is 31 bytes, not 32",
        ),
        (
            lambda: verify_inclusion(_H[2], 2, 5, inclusion_proof(2, _H[:5])[:2], _R[5]),
            "inclusion proof: expected 3 hashes for leaf 2 in a tree of size 5, got 2",
        ),
        (
            lambda: verify_inclusion(_H[2], 2, 5, [_H[0], _H[0][:31], _H[0]], _R[5]),
            "inclusion proof: hash 1 is 31 bytes, not 32",
        ),
        (
            lambda: verify_inclusion(_H[2], 2, 5, inclusion_proof(2, _H[:5]), _R[6]),
            "inclusion proof: root of size 5 does not match",
        ),
        (
            lambda: verify_consistency(8, 7, _R[8], _R[7], []),
            "consistency proof: size 8 cannot grow into size 7",
        ),
        (
            lambda: verify_consistency(0, 7, EMPTY_ROOT, _R[7], []),
            "consistency proof: nothing to prove from the empty tree (size1 is 0)",
        ),
        (
            lambda: verify_consistency(3, 3, _R[3], _R[3], [_H[0]]),
            "consistency proof: expected no hashes for equal sizes, got 1",
        ),
        (
            lambda: verify_consistency(3, 3, _R[3], _R[4], []),
            "consistency proof: roots of size 3 differ",
        ),
        (
            lambda: verify_consistency(6, 7, _R[6] + b"\0", _R[7], []),
            "consistency proof: root of size 6 is 33 bytes",
        ),
        (
            lambda: verify_consistency(6, 7, _R[6], _R[7], []),
            "consistency proof: expected 3 hashes from size 6 to size 7, got 0",
        ),
        (
            lambda: verify_consistency(6, 7, _R[5], _R[7], consistency_proof(6, 7, _H)),
            "consistency proof: root of size 6 does not match",
        ),
        (
            lambda: verify_consistency(6, 7, _R[6], _R[8], consistency_proof(6, 7, _H)),
            "consistency proof: root of size 7 does not match",
        ),
    ],
)
def test_failure_names_what_failed(check: Callable[[], None], message: str) -> None:
    with pytest.raises(MerkleProofError) as info:
        check()
    assert str(info.value) == message
    assert isinstance(info.value, VerificationError)


def test_a_proof_does_not_bind_the_tree_size() -> None:
    # RFC 6962 as specified (and as transparency-dev/merkle implements it): leaf 0's path has
    # the same shape in trees of size 3 and 4, so only a signed (size, root) pair binds a size.
    proof = inclusion_proof(0, _H[:3])
    verify_inclusion(_H[0], 0, 4, proof, _R[3])
    with pytest.raises(MerkleProofError, match="root of size 4 does not match"):
        verify_inclusion(_H[0], 0, 4, proof, _R[4])


# --- properties -----------------------------------------------------------------------------

EXTRA = 4  # leaves past the tree, so wrong sizes above it have a root too
leaf_lists = st.lists(st.binary(max_size=6), min_size=1, max_size=48)


def _flips(h: bytes) -> list[bytes]:
    """h with each one of its bits flipped in turn."""
    return [
        h[:i] + bytes([h[i] ^ (1 << bit)]) + h[i + 1 :] for i in range(len(h)) for bit in range(8)
    ]


def _accepts(check: Callable[..., None], *args: object) -> bool:
    try:
        check(*args)
    except MerkleProofError:
        return False
    return True


def _setup(leaves: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(leaf hashes incl. EXTRA more, root at every size), the roots from one builder pass."""
    hashes = [leaf_hash(d) for d in _with_extra(leaves)]
    tree, roots = MerkleTree(), [EMPTY_ROOT]
    for h in hashes:
        tree.append(h)
        roots.append(tree.root())
    return hashes, roots


def _with_extra(leaves: list[bytes]) -> list[bytes]:
    return [*leaves, *(b"extra %d" % i for i in range(EXTRA))]


@settings(max_examples=60, deadline=None)
@given(leaves=leaf_lists)
def test_builder_equals_root_at_every_size(leaves: list[bytes]) -> None:
    hashes, roots = _setup(leaves)  # roots[n]: the builder after n appends
    data = _with_extra(leaves)
    for n in range(len(hashes) + 1):
        assert roots[n] == _mth(hashes[:n]) == root(data[:n]) == root_from_hashes(hashes[:n])
        tree = MerkleTree()
        tree.extend(hashes[:n])
        assert len(tree.frontier) == n.bit_count()
        resumed = MerkleTree.from_frontier(n, tree.frontier)
        resumed.extend(hashes[n:])
        assert resumed.root() == roots[-1]


@settings(max_examples=60, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_inclusion_proofs_verify_and_every_change_is_rejected(
    leaves: list[bytes], data: st.DataObject
) -> None:
    hashes, roots = _setup(leaves)
    n = len(leaves)
    for i in range(n):
        verify_inclusion(hashes[i], i, n, inclusion_proof(i, hashes[:n]), roots[n])

    i = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof(i, hashes[:n])
    for k, p in enumerate(proof):
        for bad in _flips(p):
            changed = [*proof[:k], bad, *proof[k + 1 :]]
            assert not _accepts(verify_inclusion, hashes[i], i, n, changed, roots[n])
    for bad in _flips(roots[n]):
        assert not _accepts(verify_inclusion, hashes[i], i, n, proof, bad)
    for bad in _flips(hashes[i]):
        assert not _accepts(verify_inclusion, bad, i, n, proof, roots[n])
    for wrong in ([*proof, proof[-1]] if proof else [roots[n]], proof[:-1], proof[1:]):
        if wrong != proof:
            assert not _accepts(verify_inclusion, hashes[i], i, n, wrong, roots[n])

    # Another index or size passes only where the proof is the honest one for it (e.g. two
    # equal leaves); with the root it was made for, a doubled or halved size never passes.
    for j in range(n):
        honest = hashes[j] == hashes[i] and inclusion_proof(j, hashes[:n]) == proof
        assert _accepts(verify_inclusion, hashes[i], j, n, proof, roots[n]) == honest
    for size in range(i + 1, len(hashes) + 1):
        honest = inclusion_proof(i, hashes[:size]) == proof
        assert _accepts(verify_inclusion, hashes[i], i, size, proof, roots[size]) == honest
        assert honest == (size == n)
    for size in (2 * n, n // 2):
        assert not _accepts(verify_inclusion, hashes[i], i, size, proof, roots[n])


@settings(max_examples=60, deadline=None)
# Distinct leaves: with repeated ones (say six empty leaves) the proof from size 3 and the
# proof from size 5 can coincide, and the "other sizes" check below would not hold.
@given(leaves=st.lists(st.binary(max_size=6), min_size=1, max_size=48, unique=True), data=st.data())
def test_consistency_proofs_verify_and_every_change_is_rejected(
    leaves: list[bytes], data: st.DataObject
) -> None:
    hashes, roots = _setup(leaves)
    n = len(leaves)
    for m in range(1, n + 1):
        proof = consistency_proof(m, n, hashes)
        verify_consistency(m, n, roots[m], roots[n], proof)

    m = data.draw(st.integers(1, n), label="size1")
    proof = consistency_proof(m, n, hashes)
    assert (proof == []) == (m == n)
    for k, p in enumerate(proof):
        for bad in _flips(p):
            changed = [*proof[:k], bad, *proof[k + 1 :]]
            assert not _accepts(verify_consistency, m, n, roots[m], roots[n], changed)
    for bad in _flips(roots[m]):
        assert not _accepts(verify_consistency, m, n, bad, roots[n], proof)
    for bad in _flips(roots[n]):
        assert not _accepts(verify_consistency, m, n, roots[m], bad, proof)
    for wrong in ([*proof, roots[n]], proof[:-1], proof[1:]):
        if wrong != proof:
            assert not _accepts(verify_consistency, m, n, roots[m], roots[n], wrong)
    if m != n:
        assert not _accepts(verify_consistency, m, n, roots[n], roots[m], proof)
    assert not _accepts(verify_consistency, 0, n, EMPTY_ROOT, roots[n], proof)
    assert not _accepts(verify_consistency, n, m - 1, roots[n], roots[m - 1], proof)

    # Other sizes, each with its own root (as a signed checkpoint would give it), pass only
    # where the proof is the honest one for them.
    for size2 in range(m, len(hashes) + 1):
        honest = consistency_proof(m, size2, hashes) == proof
        got = _accepts(verify_consistency, m, size2, roots[m], roots[size2], proof)
        assert got == honest == (size2 == n)
    for size1 in range(1, n + 1):
        honest = consistency_proof(size1, n, hashes) == proof
        got = _accepts(verify_consistency, size1, n, roots[size1], roots[n], proof)
        assert got == honest == (size1 == m)
