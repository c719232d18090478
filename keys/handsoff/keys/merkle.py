"""RFC 6962 / RFC 9162 Merkle trees: roots, a compact builder, and inclusion/consistency proofs.

Used for hash commitments over the envelopes behind an aggregate release and for signed
checkpoints of what a node has published, which witnesses extend with consistency proofs.
A proof binds leaves to a root, not to a tree size: only a signed (size, root) pair does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from handsoff.keys.errors import KeysError, MerkleProofError

HASH_LEN = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the prefix keeps a leaf from passing for an inner node."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _check_hash(h: bytes, what: str) -> bytes:
    if len(h) != HASH_LEN:
        raise KeysError(f"{what} must be {HASH_LEN} bytes, got {len(h)}")
    return bytes(h)


class MerkleTree:
    """Append-only builder keeping only the roots of its complete subtrees (O(log n) memory).

    The frontier (one hash per set bit of size, largest subtree first) is all a node must
    persist to keep extending its published log without re-reading it.
    """

    __slots__ = ("_frontier", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._frontier: list[bytes] = []

    @classmethod
    def from_frontier(cls, size: int, frontier: Sequence[bytes]) -> MerkleTree:
        """Resume from a saved (size, frontier)."""
        if size < 0 or len(frontier) != size.bit_count():
            raise KeysError(f"a frontier of size {size} cannot hold {len(frontier)} hashes")
        tree = cls()
        tree._size = size
        tree._frontier = [_check_hash(h, "a frontier hash") for h in frontier]
        return tree

    @property
    def size(self) -> int:
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        return tuple(self._frontier)

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf by its leaf hash (see leaf_hash)."""
        self._frontier.append(_check_hash(leaf_hash, "a leaf hash"))
        # Each trailing 1 bit of the old size is a complete subtree the new leaf now pairs with.
        n = self._size
        while n & 1:
            right = self._frontier.pop()
            self._frontier[-1] = node_hash(self._frontier[-1], right)
            n >>= 1
        self._size += 1

    def append_data(self, data: bytes) -> bytes:
        """Add the next leaf by its data; returns its leaf hash."""
        h = leaf_hash(data)
        self.append(h)
        return h

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """MTH of the leaves so far: the subtree roots folded from the right."""
        if not self._frontier:
            return EMPTY_ROOT
        r = self._frontier[-1]
        for h in reversed(self._frontier[:-1]):
            r = node_hash(h, r)
        return r

    def __repr__(self) -> str:
        return f"MerkleTree(size={self._size}, root={self.root().hex()})"


def root_from_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes; streams, so an iterator of millions is fine."""
    tree = MerkleTree()
    tree.extend(leaf_hashes)
    return tree.root()


def root(leaves: Iterable[bytes]) -> bytes:
    """RFC 6962 MTH over leaf data."""
    return root_from_hashes(leaf_hash(d) for d in leaves)


def _split(n: int) -> int:
    """The largest power of two below n (n > 1): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_root(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    tree = MerkleTree()
    for i in range(lo, hi):
        tree.append(leaf_hashes[i])
    return tree.root()


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 section 2.1.1 for the tree of all leaf_hashes."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise KeysError(f"no inclusion proof for leaf {index} in a tree of size {n}")
    path: list[bytes] = []  # collected from the root down, returned leaf first
    lo, hi = 0, n
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            path.append(_range_root(leaf_hashes, mid, hi))
            hi = mid
        else:
            path.append(_range_root(leaf_hashes, lo, mid))
            lo = mid
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(size1, D[size2]) of RFC 6962 section 2.1.2, over the first size2 leaf_hashes."""
    if not 0 < size1 <= size2 <= len(leaf_hashes):
        raise KeysError(
            f"no consistency proof from size {size1} to size {size2} "
            f"over {len(leaf_hashes)} leaves (needs 0 < size1 <= size2 <= leaves)"
        )
    return consistency_proof_by(size1, size2, lambda lo, hi: _range_root(leaf_hashes, lo, hi))


def consistency_proof_by(
    size1: int, size2: int, subtree_root: Callable[[int, int], bytes]
) -> list[bytes]:
    """PROOF(size1, D[size2]) from `subtree_root(lo, hi)`, the MTH of leaves lo..hi-1.

    For leaves kept outside memory (a table of leaf hashes): the proof needs O(log n) such
    roots over disjoint ranges, so each leaf is read at most once."""
    if not 0 < size1 <= size2:
        raise KeysError(
            f"no consistency proof from size {size1} to size {size2} (needs 0 < size1 <= size2)"
        )
    path: list[bytes] = []  # SUBPROOF unrolled: collected outermost first, returned reversed
    lo, hi, m, whole = 0, size2, size1, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(subtree_root(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree_root(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        path.append(subtree_root(lo, hi))
    path.reverse()
    return path


def _check_proof(kind: str, proof: Sequence[bytes], want: int, where: str) -> None:
    if len(proof) != want:
        raise MerkleProofError(f"{kind}: expected {want} hashes {where}, got {len(proof)}")
    for i, h in enumerate(proof):
        if len(h) != HASH_LEN:
            raise MerkleProofError(f"{kind}: hash {i} is {len(h)} bytes, not {HASH_LEN}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf_hash is leaf `index` of the tree of `size` with `root` (RFC 9162 2.1.3.2).

    Raises MerkleProofError naming what failed; returns None if the proof holds.
    """
    kind = "inclusion proof"
    if not 0 <= index < size:
        raise MerkleProofError(f"{kind}: leaf index {index} is not in a tree of size {size}")
    if len(leaf_hash) != HASH_LEN:
        raise MerkleProofError(f"{kind}: leaf hash is {len(leaf_hash)} bytes, not {HASH_LEN}")
    # The RFC fails when sn reaches 0 early or is not 0 at the end; both mean a wrong length.
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    _check_proof(kind, proof, want, f"for leaf {index} in a tree of size {size}")
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for p in proof:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if r != root:
        raise MerkleProofError(f"{kind}: root of size {size} does not match")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (size2, root2) extends (size1, root1) (RFC 9162 2.1.4.2).

    Needs 0 < size1 <= size2: everything extends the empty tree, so a witness takes its
    first checkpoint without a proof. Raises MerkleProofError naming what failed.
    """
    kind = "consistency proof"
    if size1 < 0 or size2 < size1:
        raise MerkleProofError(f"{kind}: size {size1} cannot grow into size {size2}")
    if size1 == 0:
        raise MerkleProofError(f"{kind}: nothing to prove from the empty tree (size1 is 0)")
    if size1 == size2:
        if proof:
            raise MerkleProofError(f"{kind}: expected no hashes for equal sizes, got {len(proof)}")
        if root1 != root2:
            raise MerkleProofError(f"{kind}: roots of size {size1} differ")
        return
    if len(root1) != HASH_LEN:
        raise MerkleProofError(f"{kind}: root of size {size1} is {len(root1)} bytes")
    fork = ((size1 - 1) ^ (size2 - 1)).bit_length()
    shift = (size1 & -size1).bit_length() - 1
    power_of_two = size1 == 1 << shift
    want = (0 if power_of_two else 1) + fork - shift + ((size1 - 1) >> fork).bit_count()
    _check_proof(kind, proof, want, f"from size {size1} to size {size2}")
    path = [bytes(root1), *proof] if power_of_two else list(proof)
    fr, sr = _consistency_roots(size1, size2, path)
    if fr != root1:
        raise MerkleProofError(f"{kind}: root of size {size1} does not match")
    if sr != root2:
        raise MerkleProofError(f"{kind}: root of size {size2} does not match")


def _consistency_roots(size1: int, size2: int, path: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Steps 3-6 of RFC 9162 2.1.4.2: both roots from a path of the right length."""
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr, sr
