"""The node's record of what it published (services/node/checkpointer.py), without NATS:
leaves in number order whatever the stream order, the first per number wins, and the
checkpoints it makes prove their consistency from the last one published."""

from __future__ import annotations

from pathlib import Path

from handsoff.federation import checkpoints
from handsoff.keys import SigningKey
from handsoff.keys.merkle import (
    consistency_proof,
    consistency_proof_by,
    leaf_hash,
    root_from_hashes,
    verify_consistency,
)
from handsoff.services.node.checkpointer import Checkpointer, CheckpointLog

LEAVES = [leaf_hash(f"message {n}".encode()) for n in range(1, 41)]


def test_the_contiguous_prefix_in_number_order(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path / "c.sqlite")
    try:
        # Stream order is not number order (a message resent after a failure comes later).
        assert log.add([(2, LEAVES[1], 10), (1, LEAVES[0], 11), (4, LEAVES[3], 12)], 12) == 2
        assert log.read_seq() == 12
        # A later message under a number already read changes nothing: the first wins.
        assert log.add([(2, leaf_hash(b"a later copy"), 13)], 13) == 2
        assert log.add([(3, LEAVES[2], 14)], 14) == 4
        tree = log.tree()
        assert (tree.size, tree.root()) == (4, root_from_hashes(LEAVES[:4]))
        assert log.add([], 9) == 4
        assert log.read_seq() == 14  # never moves back
    finally:
        log.close()
    reopened = CheckpointLog(tmp_path / "c.sqlite")
    try:
        assert reopened.tree().root() == root_from_hashes(LEAVES[:4])
    finally:
        reopened.close()


def test_proofs_from_the_table_equal_proofs_from_memory(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path / "c.sqlite")
    try:
        log.add([(n, h, n) for n, h in enumerate(LEAVES, 1)], len(LEAVES))
        for m in range(1, len(LEAVES) + 1):
            for n in (m, min(m + 1, len(LEAVES)), len(LEAVES)):
                assert consistency_proof_by(m, n, log.subtree_root) == consistency_proof(
                    m, n, LEAVES
                ), (m, n)
    finally:
        log.close()


def test_each_checkpoint_proves_it_extends_the_last(tmp_path: Path) -> None:
    key = SigningKey.generate()
    c = Checkpointer("sadc", "p1", lambda: key, tmp_path / "c.sqlite")
    try:
        c.log.add([(n, LEAVES[n - 1], n) for n in range(1, 14)], 13)
        first, signed = c.make(13)
        assert (first.size, first.previous_size, first.proof) == (13, 0, ())
        assert checkpoints.read_checkpoint(signed) == first
        c.log.record(first, signed, 1)
        c.log.add([(n, LEAVES[n - 1], n) for n in range(14, 31)], 30)
        second, _ = c.make(30)
        assert (second.size, second.previous_size) == (30, 13)
        assert second.root_bytes == root_from_hashes(LEAVES[:30])
        verify_consistency(
            13,
            30,
            first.root_bytes,
            second.root_bytes,
            [bytes.fromhex(h) for h in second.proof],
        )
    finally:
        c.close()
