"""A region's membership history: every signed version of its document, checked as a chain,
and the version in force at any moment.

A region changes by new versions (a partner added, a key added or revoked, coordinators
replaced), each signed by the coordinators of the version before it (region.accept). A
message is judged against the version *in force* at its stream time: the newest version
whose `issued_at` is no later than that time (before the first version known, the first).
So a key valid under version 2 when it was used stays valid for that use after version 3
revokes it from a later moment, and a partner added in version 3 is unknown before it.

`verify_history` checks the versions one may be handed (files, a bundle) the way a node
takes them on, one after the other with `region.accept` (held = the last version taken):

    first version          its own coordinators' threshold (or trusted coordinators' keys)
    every later version    the same region, a higher version, the threshold of the
                           PREVIOUS version signed by ITS coordinators
    and, for a history     issued strictly after the version before it (`backwards`
                           otherwise: "in force at" would be ambiguous); one document per
                           version number (`conflict`: two different documents claim it)

A version that fails is left out (a node would have refused it) and the next is checked
against the last one taken, so a forged version cannot vouch for the versions after it.
Versions missing between two taken ones (`gap`) are a warning: `accept` lets a node skip
versions its coordinators never signed, but a message sent under a missing version is then
judged by the versions around it.

The aggregator, though, judges a message by the version it *held* when it ingested it,
and takes a new version only when it starts. Where it announced the versions it took
(announcements.py: version, and `after_seq`, its events stream position then), a history
may carry that schedule (`taken`): an events message with a sequence number after the first
announcement's `after_seq` is judged by the version of the newest announcement with
`after_seq` below its sequence, which is exactly what the aggregator did; a message at or
before it (an aggregator from before announcements) by the version in force at its stream
time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Literal, NamedTuple

import msgspec

from handsoff.federation.region import (
    KeyTable,
    RegionDocument,
    RegionProblem,
    SignedRegion,
    accept,
)

Severity = Literal["error", "warning"]


class VersionProblem(NamedTuple):
    """A finding about one version of the document (reason: a stable code)."""

    version: int
    reason: str  # insufficient_signatures, wrong_region, conflict, backwards, gap, ...
    detail: str
    severity: Severity = "error"


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def verify_history(
    candidates: Iterable[SignedRegion],
    *,
    trusted_coordinators: Collection[bytes] | None = None,
) -> tuple[list[SignedRegion], list[VersionProblem]]:
    """The versions taken, oldest first, and what was wrong with the others (module doc).

    The same document given more than once (identical bytes: say a file with one
    coordinator's signature and another with the rest) counts once, with every signature."""
    unique: dict[bytes, SignedRegion] = {}
    for c in candidates:
        seen = unique.get(c.document_bytes)
        if seen is None:
            unique[c.document_bytes] = c
            continue
        extra = [s for s in c.signatures if s not in seen.signatures]
        if extra:
            unique[c.document_bytes] = seen.with_signatures([*seen.signatures, *extra])
    ordered = sorted(unique.values(), key=lambda s: (s.document.version, s.document.issued_at))
    problems: list[VersionProblem] = []
    taken: list[SignedRegion] = []
    for candidate in ordered:
        doc = candidate.document
        held = taken[-1].document if taken else None
        if held is not None and doc.version == held.version and doc.region == held.region:
            problems.append(
                VersionProblem(
                    doc.version,
                    "conflict",
                    f"a second, different document claims version {doc.version} of region "
                    f"{doc.region} (issued {_iso(doc.issued_at)}; the one taken was issued "
                    f"{_iso(held.issued_at)})",
                )
            )
            continue
        try:
            accept(
                candidate,
                held=held,
                trusted_coordinators=trusted_coordinators if held is None else None,
                now=doc.issued_at,  # as a node took it on when it was issued
            )
        except RegionProblem as e:
            problems.append(VersionProblem(doc.version, e.reason, str(e)))
            continue
        if held is not None and doc.issued_at <= held.issued_at:
            problems.append(
                VersionProblem(
                    doc.version,
                    "backwards",
                    f"issued at {_iso(doc.issued_at)}, not after version {held.version} "
                    f"(issued at {_iso(held.issued_at)})",
                )
            )
            continue
        if held is not None and doc.version != held.version + 1:
            missing = (
                f"version {held.version + 1}"
                if doc.version == held.version + 2
                else f"versions {held.version + 1}..{doc.version - 1}"
            )
            problems.append(
                VersionProblem(
                    doc.version,
                    "gap",
                    f"{missing} missing between {held.version} and {doc.version} (never "
                    f"signed, or left out); version {doc.version} is signed by the "
                    f"coordinators of version {held.version}",
                    "warning",
                )
            )
        taken.append(candidate)
    return taken, problems


class _Encoded(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    documents: list[RegionDocument]
    taken: list[tuple[int, int]]  # (after_seq, version)
    announced_at: dict[int, datetime] = {}  # version -> the announcement's stream time


_DOCUMENTS = msgspec.json.Decoder(list[RegionDocument] | _Encoded)
_DOCUMENT = msgspec.json.Decoder(RegionDocument)


class RegionHistory:
    """Versions of one region's document (already checked), oldest first; the version in
    force at a moment and its partner keys. A history of one document judges every message
    by that document, whatever its time (what auditing with one region file does).

    `taken`: the aggregator's announcements, (after_seq, version) in the order made
    (module docstring): an events message is then judged by the version the aggregator
    held when it ingested it (`judged_by`, `keys_for`). `announced_at`: version -> the
    stream time of its announcement, from which its grace also runs (region.grace_until)."""

    __slots__ = (
        "_after",
        "_announced_at",
        "_by_version",
        "_documents",
        "_issued",
        "_tables",
        "_taken",
        "_taken_index",
    )

    def __init__(
        self,
        documents: Sequence[RegionDocument],
        taken: Sequence[tuple[int, int]] = (),
        announced_at: Mapping[int, datetime] | None = None,
    ) -> None:
        if not documents:
            raise ValueError("a region history needs at least one version")
        docs = tuple(documents)
        for before, after in pairwise(docs):
            if after.region != before.region or after.version <= before.version:
                raise ValueError("a region history's versions must be of one region, in order")
            if after.issued_at <= before.issued_at:
                raise ValueError("a region history's versions must be issued in order")
        self._documents = docs
        self._issued = [d.issued_at for d in docs]
        self._announced_at = dict(announced_at or {})
        self._tables = tuple(KeyTable(d, self._announced_at.get(d.version)) for d in docs)
        self._by_version = {d.version: d for d in docs}
        index = {d.version: i for i, d in enumerate(docs)}
        schedule = tuple((int(a), int(v)) for a, v in taken)
        for (a1, v1), (a2, v2) in pairwise(schedule):
            if a2 < a1 or v2 <= v1:
                raise ValueError("announcements must go forward: after_seq and version")
        if any(v not in index for _, v in schedule):
            raise ValueError("an announced version is not among the history's versions")
        self._taken = schedule
        self._after = [a for a, _ in schedule]
        self._taken_index = [index[v] for _, v in schedule]

    @classmethod
    def of(cls, region: RegionDocument | RegionHistory) -> RegionHistory:
        return region if isinstance(region, RegionHistory) else cls([region])

    def with_taken(
        self, taken: Sequence[tuple[int, int]], announced_at: Mapping[int, datetime] | None = None
    ) -> RegionHistory:
        """The same versions, with the aggregator's announcements (after_seq, version) and
        their stream times by version."""
        return RegionHistory(self._documents, taken, announced_at)

    @property
    def documents(self) -> tuple[RegionDocument, ...]:
        return self._documents

    @property
    def taken(self) -> tuple[tuple[int, int], ...]:
        """The announcements judged by: (after_seq, version), in order; () if none."""
        return self._taken

    @property
    def region(self) -> str:
        return self._documents[0].region

    @property
    def latest(self) -> RegionDocument:
        return self._documents[-1]

    def __len__(self) -> int:
        return len(self._documents)

    def version(self, number: int) -> RegionDocument | None:
        return self._by_version.get(number)

    def _index(self, at: datetime) -> int:
        if len(self._documents) == 1:
            return 0
        return max(bisect_right(self._issued, at) - 1, 0)

    def _judging(self, seq: int, at: datetime) -> int:
        if self._taken and seq > self._after[0]:
            # the newest announcement whose after_seq is below seq
            return self._taken_index[bisect_left(self._after, seq) - 1]
        return self._index(at)

    def in_force(self, at: datetime) -> RegionDocument:
        """The newest version issued no later than `at` (the first one before it)."""
        return self._documents[self._index(at)]

    def keys_at(self, at: datetime) -> KeyTable:
        """The partner keys of the version in force at `at`: the envelope.KeyDirectory to
        verify a message stored at `at` with (its stale_region rule included)."""
        return self._tables[self._index(at)]

    def judged_by(self, seq: int, at: datetime) -> RegionDocument:
        """The version events message `seq` (stored at `at`) is judged by: the one the
        aggregator announced for it, else the one in force at `at`."""
        return self._documents[self._judging(seq, at)]

    def keys_for(self, seq: int, at: datetime) -> KeyTable:
        """The partner keys of `judged_by(seq, at)`: the KeyDirectory to verify it with."""
        return self._tables[self._judging(seq, at)]

    def encode(self) -> bytes:
        """The documents (and announcements) as JSON (to hand to a worker process);
        `decode` reads it back."""
        if self._taken:
            return msgspec.json.encode(
                _Encoded(list(self._documents), list(self._taken), self._announced_at)
            )
        return msgspec.json.encode(list(self._documents))

    @classmethod
    def decode(cls, data: bytes) -> RegionHistory:
        """From `encode`, or from one document's JSON."""
        try:
            decoded = _DOCUMENTS.decode(data)
        except msgspec.ValidationError:
            return cls([_DOCUMENT.decode(data)])
        if isinstance(decoded, _Encoded):
            return cls(decoded.documents, decoded.taken, decoded.announced_at)
        return cls(decoded)

    def __repr__(self) -> str:
        versions = ", ".join(str(d.version) for d in self._documents)
        return f"RegionHistory({self.region}: {versions})"
