"""Auditing partners' signed checkpoints and the aggregator's cosignatures.

The published log of each partner is rebuilt from the events stream exactly as the node and
the witness build it (`checkpoints.published_leaf`: the first message per number in stream
order, accepted or not). Then, per partner, in stream order, every checkpoint is opened
(signature, key valid at the stream time) and held to the witness's rule against the last
good one (`check_checkpoint`: no rollback, consistent, the root of what the stream holds);
one claiming more messages than the stream holds is `unpublished` (a checkpointed tail that
has gone). Every cosignature must be the aggregator's and countersign a good checkpoint.
Keys (partners' and the aggregator's) are those of the region version the aggregator's
witness decided the checkpoint under, as its announcements say (`judge`:
announcements.Decided), else of the version in force at each message's stream time; a
cosignature is verified with the aggregator key of the version its checkpoint was judged by.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import msgspec

from handsoff.federation.checkpoints import (
    Checkpoint,
    CheckpointRejected,
    Witnessed,
    check_checkpoint,
    open_checkpoint,
    open_cosignature,
    read_cosignature,
)
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import RegionDocument
from handsoff.keys.merkle import root_from_hashes
from handsoff.services.auditor.report import Collector

if TYPE_CHECKING:  # region.py imports this module
    from handsoff.services.auditor.region import StreamMessage

CHECKPOINTS = "checkpoints"
COSIGNATURES = "cosignatures"


def _is_cosignature(m: StreamMessage) -> bool:
    return m.subject.split(".")[2:3] == ["witness"]


def audit_checkpoints(
    region: RegionDocument | RegionHistory,
    published: Mapping[str, list[bytes]],
    messages: Iterable[StreamMessage],
    found: Collector,
    judge: Callable[[int, datetime], RegionDocument] | None = None,
) -> None:
    """`published`: each partner's leaf hashes, message 1 first (no holes). `judge`: the
    version a checkpoint (stream seq, time) was decided under (default: in force then)."""
    history = RegionHistory.of(region)
    decided = judge or (lambda _, at: history.in_force(at))
    good: dict[str, Witnessed] = {}
    valid: dict[tuple[str, int, str], RegionDocument] = {}  # -> the version judged by
    cosignatures: list[StreamMessage] = []
    roots: dict[tuple[str, int], bytes] = {}

    def root_at(partner: str, k: int) -> bytes:
        if (partner, k) not in roots:
            roots[(partner, k)] = root_from_hashes(published.get(partner, [])[:k])
        return roots[(partner, k)]

    by_partner: dict[str, int] = defaultdict(int)
    for m in messages:
        if _is_cosignature(m):
            cosignatures.append(m)
            continue
        found.count(CHECKPOINTS)
        where = f"checkpoints seq {m.seq}"
        doc = decided(m.seq, m.time)
        try:
            c: Checkpoint = open_checkpoint(m.data, doc, m.time, m.subject)
            where = f"checkpoint {c.partner} size {c.size} (seq {m.seq})"
            held = len(published.get(c.partner, []))
            if c.size > held:
                raise CheckpointRejected(
                    "unpublished",
                    f"covers {c.size} messages of {c.partner}; the stream holds {held}",
                )
            check_checkpoint(c, good.get(c.partner), partial(root_at, c.partner))
        except CheckpointRejected as e:
            found.find(CHECKPOINTS, e.reason, where, e.detail)
            continue
        good[c.partner] = Witnessed(c.size, c.root_bytes)
        valid.setdefault((c.partner, c.size, c.root), doc)
        by_partner[c.partner] += 1
    for m in cosignatures:
        found.count(COSIGNATURES)
        where = f"cosignature seq {m.seq}"
        try:  # the key of the version its checkpoint was decided under
            claimed = read_cosignature(m.data)
            judged_by = valid.get((claimed.partner, claimed.size, claimed.root))
        except msgspec.DecodeError:
            judged_by = None
        try:
            s = open_cosignature(m.data, judged_by or history.in_force(m.time))
        except CheckpointRejected as e:
            found.find(COSIGNATURES, e.reason, where, e.detail)
            continue
        if (s.partner, s.size, s.root) not in valid:
            found.find(
                COSIGNATURES,
                "cosigned_invalid",
                f"cosignature {s.partner} size {s.size}",
                "countersigns no checkpoint that verifies",
            )
    for partner, leaves in sorted(published.items()):
        checked = good.get(partner)
        if checked is not None and checked.size < len(leaves):
            found.find(
                CHECKPOINTS,
                "behind",
                f"partner {partner}",
                f"last checkpoint covers {checked.size} of {len(leaves)} published messages",
                severity="warning",
            )
