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

from handsoff.federation import envelope, shared, subjects
from handsoff.federation.errors import EnvelopeRejected
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import RegionDocument
from handsoff.federation.statements import AggregateStatement, Inputs
from handsoff.keys.merkle import MerkleTree, leaf_hash
from handsoff.services.aggregator import release
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.indicators import Ledger, compute
from handsoff.services.auditor.examine import Examined, examine
from handsoff.services.auditor.report import Collector, Severity

SIGNATURES = "signatures"
EXACTLY_ONCE = "exactly_once"
RELEASES = "releases"
SEQUENCE = "sequence"


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
    # every version of the region document: each message judged by the one the aggregator
    # announced for its sequence number, else the one in force at its stream time; each
    # release recomputed with the one it names (None: `region` alone)
    history: RegionHistory | None = None

    def __post_init__(self) -> None:
        self._seen: dict[tuple[str, int], bytes] = {}  # a digest of the payload taken
        self._numbers: dict[str, set[int]] = defaultdict(set)
        self._published: dict[str, dict[int, bytes]] = defaultdict(dict)
        self._pending = sorted(self.releases, key=lambda r: r.number)
        self._memory = SuppressionMemory()
        self._keys = self.history if self.history is not None else RegionHistory.of(self.region)
        self._sequence = self._signatures = self._exactly_once = 0

    def add(
        self,
        seq: int,
        subject: str,
        headers: Mapping[str, str] | None,
        data: bytes,
        at: datetime,
        examined: Examined | None = None,
    ) -> None:
        """One message of the stream, in sequence order. `examined`: its envelope checked
        elsewhere (parallel.py: the same `examine` in a worker process)."""
        self._check_sequence(seq, at)
        self.position, self.as_of = seq, at
        if examined is None:
            examined = examine(self._keys, subject, headers, data, at, seq)
        leaf = examined.leaf
        if leaf is not None:
            self._published[examined.partner].setdefault(examined.number, leaf)
        self._signatures += 1
        reason, detail = examined.reason, examined.detail
        opened = None
        if not reason:
            checked = examined.checked((headers or {})[envelope.MSG_ID])
            try:
                opened = envelope.open_payload(checked, subject, data, shared.decode)
            except EnvelopeRejected as e:
                reason, detail = e.reason, str(e)
        if opened is None:
            self._find(SIGNATURES, reason, self._where(seq, headers), detail)
            self._releases_due()
            return
        self._exactly_once += 1
        partner, number, event = opened.partner, opened.number, opened.event
        key = (partner, number)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        held = self._seen.get(key)
        if held is not None:
            if held != digest:
                self._find(
                    EXACTLY_ONCE,
                    "conflict",
                    self._where(seq, headers),
                    "a different payload under a message number already taken",
                )
            else:
                self._find(
                    EXACTLY_ONCE,
                    "duplicate",
                    self._where(seq, headers),
                    "stored twice (not counted twice)",
                    severity="warning",
                )
            self._releases_due()
            return
        self._seen[key] = digest
        self._numbers[partner].add(number)
        self.ledger.add(partner, number, event)
        if leaf is None:  # verified, yet not on an events subject: hashed all the same
            leaf = leaf_hash(envelope.leaf(subject, headers or {}, data))
        self.tree.append(leaf)
        if self._pending and self._pending[0].last_seq <= seq:
            self._releases_due()

    @staticmethod
    def _where(seq: int, headers: Mapping[str, str] | None) -> str:
        return f"stream seq {seq} ({(headers or {}).get(envelope.MSG_ID, '?')})"

    def _find(
        self, check: str, reason: str, where: str, detail: str, severity: Severity = "error"
    ) -> None:
        self._count()
        self.found.find(check, reason, where, detail, severity)

    def _count(self) -> None:
        """Counts are kept in plain ints while messages stream by (one Collector call per
        message and check would be a sizeable share of the replay) and handed over here,
        before anything else reaches the collector, so checks keep their order."""
        for check, n in (
            (SEQUENCE, self._sequence),
            (SIGNATURES, self._signatures),
            (EXACTLY_ONCE, self._exactly_once),
        ):
            if n:
                self.found.count(check, n)
        self._sequence = self._signatures = self._exactly_once = 0

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
        self._sequence += 1
        where = f"stream seq {seq}"
        if seq <= self.position:
            self._find(SEQUENCE, "order", where, f"after stream seq {self.position}")
        elif seq != self.position + 1:
            self._find(
                SEQUENCE, "gap", where, f"stream seqs {self.position + 1}..{seq - 1} are missing"
            )
        if self.as_of is not None and at < self.as_of:
            self._find(SEQUENCE, "order", where, "stored earlier than the message before")

    def _releases_due(self) -> None:
        while self._pending and self._pending[0].last_seq <= self.position:
            self._check_release(self._pending.pop(0))

    def _check_release(self, published: PublishedRelease) -> None:
        self._count()
        first = next(iter(published.statements.values()))
        if first.inputs.last_seq != self.position:
            self.found.find(
                RELEASES,
                "inputs",
                f"release {published.number}",
                f"names stream position {first.inputs.last_seq}, which the stream lacks",
            )
            return
        # the version it was cut under: its partners' countries are the tables' rows
        doc = self._keys.version(first.region_version) or (
            self._keys.in_force(self.as_of) if self.as_of is not None else self.region
        )
        header = release.ReleaseHeader(
            region=self.region.region,
            region_version=first.region_version,
            aggregator=doc.aggregator.id,
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
        countries = sorted({p.country for p in doc.partners})
        made = release.build(compute(self.ledger), header, countries, self._memory)
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
        self._count()
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
