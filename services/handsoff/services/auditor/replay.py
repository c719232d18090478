"""Replaying the region's events stream with public keys only, and recomputing releases.

`EventReplay` folds the stream in sequence order exactly as the aggregator's ingest decides
(verify; first message per (partner, number) wins; a different payload under a number
already taken is a conflict), but with the *reference* model (indicators.Ledger, in memory)
instead of the aggregator's SQL tally, and its own Merkle tree for the commitment. At each
release's `last_seq` it recomputes the release (release.build, suppression memory carried
from the releases before) and compares it with what the aggregator signed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from handsoff.federation import envelope, shared, subjects
from handsoff.federation.checkpoints import published_leaf
from handsoff.federation.errors import EnvelopeRejected
from handsoff.federation.region import RegionDocument
from handsoff.federation.statements import AggregateStatement, Inputs
from handsoff.keys.merkle import MerkleTree, leaf_hash
from handsoff.services.aggregator import release
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.indicators import Ledger, compute
from handsoff.services.auditor.report import Collector

SIGNATURES = "signatures"
EXACTLY_ONCE = "exactly_once"
RELEASES = "releases"
SEQUENCE = "sequence"


VERIFIED: Final = ("", "")
Verdict = tuple[str, str]  # VERIFIED, or (reason, detail) of the rejection


def verify(
    region: RegionDocument,
    subject: str,
    headers: Mapping[str, str] | None,
    data: bytes,
    at: datetime,
) -> Verdict:
    try:
        envelope.open_message(region, subject, headers, data, at, shared.decode)
    except EnvelopeRejected as e:
        return (e.reason, str(e))
    return VERIFIED


@dataclass(frozen=True)
class PublishedRelease:
    number: int
    statements: Mapping[str, AggregateStatement]  # indicator -> statement (verified)

    @property
    def last_seq(self) -> int:
        return next(iter(self.statements.values())).inputs.last_seq


def _differences(mine: AggregateStatement, theirs: AggregateStatement) -> str:
    fields = [
        f for f in AggregateStatement.__struct_fields__ if getattr(mine, f) != getattr(theirs, f)
    ]
    if "inputs" in fields:
        inner = [
            f
            for f in Inputs.__struct_fields__
            if getattr(mine.inputs, f) != getattr(theirs.inputs, f)
        ]
        fields = [f for f in fields if f != "inputs"] + [f"inputs.{f}" for f in inner]
    periods = sorted(
        {t.period for t in theirs.tables if t not in mine.tables}
        | {s.period for s in theirs.stats if s not in mine.stats}
        | {s.period for s in theirs.shares if s not in mine.shares}
    )
    where = f" (periods {', '.join(periods)})" if periods else ""
    return f"differs in {', '.join(fields)}{where}"


@dataclass
class EventReplay:
    region: RegionDocument
    found: Collector
    releases: Sequence[PublishedRelease] = ()
    ledger: Ledger = field(default_factory=Ledger)
    tree: MerkleTree = field(default_factory=MerkleTree)
    position: int = 0
    as_of: datetime | None = None

    def __post_init__(self) -> None:
        self._seen: dict[tuple[str, int], bytes] = {}  # a digest of the payload taken
        self._numbers: dict[str, set[int]] = defaultdict(set)
        self._published: dict[str, dict[int, bytes]] = defaultdict(dict)
        self._pending = sorted(self.releases, key=lambda r: r.number)
        self._memory = SuppressionMemory()
        self._countries = sorted({p.country for p in self.region.partners})

    def add(
        self,
        seq: int,
        subject: str,
        headers: Mapping[str, str] | None,
        data: bytes,
        at: datetime,
        verdict: Verdict | None = None,
    ) -> None:
        """One message of the stream, in sequence order. `verdict`: its verification done
        elsewhere (parallel.py: the same `open_message` in a worker process)."""
        self._check_sequence(seq, at)
        self.position, self.as_of = seq, at
        self._note_published(subject, headers, data)
        self.found.count(SIGNATURES)
        msg_id = (headers or {}).get(envelope.MSG_ID, "?")
        where = f"stream seq {seq} ({msg_id})"
        if verdict is None:
            verdict = verify(self.region, subject, headers, data, at)
        if verdict != VERIFIED:
            reason, detail = verdict
            self.found.find(SIGNATURES, reason, where, detail)
            self._releases_due()
            return
        partner, number = envelope.parse_message_id(msg_id)
        opened = envelope.Opened(partner, msg_id, number, shared.decode(data))
        self.found.count(EXACTLY_ONCE)
        key = (opened.partner, opened.number)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        held = self._seen.get(key)
        if held is not None:
            if held != digest:
                self.found.find(
                    EXACTLY_ONCE,
                    "conflict",
                    where,
                    "a different payload under a message number already taken",
                )
            else:
                self.found.find(
                    EXACTLY_ONCE,
                    "duplicate",
                    where,
                    "stored twice (not counted twice)",
                    severity="warning",
                )
            self._releases_due()
            return
        self._seen[key] = digest
        self._numbers[opened.partner].add(opened.number)
        self.ledger.add(opened.partner, opened.number, opened.event)
        self.tree.append(leaf_hash(envelope.leaf(subject, headers or {}, data)))
        self._releases_due()

    def _note_published(self, subject: str, headers: Mapping[str, str] | None, data: bytes) -> None:
        """The partner's published log, as its checkpoints count it (accepted or not)."""
        leaf = published_leaf(subject, headers, data)
        if leaf is not None:
            self._published[leaf.partner].setdefault(leaf.number, leaf.leaf)

    def published(self) -> dict[str, list[bytes]]:
        """Each partner's published leaf hashes, message 1 first, up to the first hole."""
        out: dict[str, list[bytes]] = {}
        for partner, leaves in self._published.items():
            run: list[bytes] = []
            while (n := len(run) + 1) in leaves:
                run.append(leaves[n])
            out[partner] = run
        return out

    def _check_sequence(self, seq: int, at: datetime) -> None:
        """The region's streams deny delete and purge: sequences run 1, 2, 3 ... without a
        hole, and stream time never goes back."""
        self.found.count(SEQUENCE)
        where = f"stream seq {seq}"
        if seq <= self.position:
            self.found.find(SEQUENCE, "order", where, f"after stream seq {self.position}")
        elif seq != self.position + 1:
            self.found.find(
                SEQUENCE, "gap", where, f"stream seqs {self.position + 1}..{seq - 1} are missing"
            )
        if self.as_of is not None and at < self.as_of:
            self.found.find(SEQUENCE, "order", where, "stored earlier than the message before")

    def _releases_due(self) -> None:
        while self._pending and self._pending[0].last_seq <= self.position:
            self._check_release(self._pending.pop(0))

    def _check_release(self, published: PublishedRelease) -> None:
        first = next(iter(published.statements.values()))
        if first.inputs.last_seq != self.position:
            self.found.find(
                RELEASES,
                "inputs",
                f"release {published.number}",
                f"names stream position {first.inputs.last_seq}, which the stream lacks",
            )
            return
        header = release.ReleaseHeader(
            region=self.region.region,
            region_version=first.region_version,
            aggregator=self.region.aggregator.id,
            release=published.number,
            k=first.k,
            breakdowns=first.breakdowns,
            as_of=self.as_of,
            inputs=Inputs(
                stream=subjects.events_stream(self.region.region),
                first_seq=1,
                last_seq=self.position,
                accepted=self.tree.size,
                commitment=self.tree.root().hex(),
            ),
        )
        made = release.build(compute(self.ledger), header, self._countries, self._memory)
        self._memory = made.memory
        mine = {s.indicator: s for s in made.statements}
        for indicator in sorted(set(mine) | set(published.statements)):
            self.found.count(RELEASES)
            where = f"release {published.number} {indicator}"
            theirs = published.statements.get(indicator)
            if theirs is None:
                self.found.find(RELEASES, "missing", where, "not published in this release")
            elif indicator not in mine:
                self.found.find(RELEASES, "unexpected", where, "not an indicator of a release")
            elif mine[indicator] != theirs:
                self.found.find(
                    RELEASES,
                    "release_mismatch",
                    where,
                    "the signed statement does not follow from the events: "
                    + _differences(mine[indicator], theirs),
                )

    def finish(self) -> None:
        """After the last message: gaps in partners' numbering, releases past the end."""
        for partner, numbers in sorted(self._numbers.items()):
            missing = sorted(set(range(1, max(numbers) + 1)) - numbers)
            if missing:
                shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
                self.found.find(
                    EXACTLY_ONCE,
                    "missing",
                    f"partner {partner}",
                    f"{len(missing)} message number(s) never reached the stream: {shown}",
                )
        for published in self._pending:
            self.found.find(
                RELEASES,
                "inputs",
                f"release {published.number}",
                f"names stream position {published.last_seq}, beyond the stream's end "
                f"({self.position})",
            )
        self._pending = []
