"""The `membership` check of a region audit: the versions of the region document, and how
the region's messages used them.

- `check_history`: every version given (`--region` files, a bundle's history, the documents
  the aggregator's announcements carry) checked as a chain (federation/history.py: each
  version signed by enough coordinators of the version before it, issued after it, one
  document per version number); findings name the version. The versions that pass are the
  history the messages are judged by: each against the version the aggregator announced
  for its sequence number (announcements.py), or the version in force at its stream time.
  Versions the auditor holds itself (`trusted`: a bundle's auditor's files, or the
  `--region` files once the stream carries announcements) anchor the chain: its first
  version must carry the threshold of signatures by coordinators listed in them
  (region.accept's bootstrap rule), and each must be in the chain byte for byte. Signatures
  only vouch forward (each version for the next), so matching a trusted version alone
  would not vouch for forged versions before it.
- `VersionUse`, fed every event while the stream is replayed and every release: a version a
  sender names (`Hx-Region`) or a release was cut under (its statements' `region_version`)
  that is not among the versions audited (`unknown_version`, a warning: the history given is
  incomplete; each such message was judged by the version in force at its stream time and
  each such release recomputed with the countries of the version in force when it was cut);
  uses of a key that a later version revokes from a moment before them, although the
  version in force when they were stored allowed them (`revoked_later`, a warning: accepted,
  as the rules then in force say, but worth a look — a key found compromised late).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from handsoff.federation.envelope import KID, MSG_ID, REGION_VERSION
from handsoff.federation.history import RegionHistory, verify_history
from handsoff.federation.region import RegionProblem, SignedRegion
from handsoff.services.auditor.report import Collector

MEMBERSHIP = "membership"


def _where(version: int) -> str:
    return f"region version {version}"


def check_history(
    versions: Sequence[SignedRegion],
    found: Collector,
    *,
    trusted: SignedRegion | Iterable[SignedRegion] | None = None,
) -> RegionHistory:
    """The history to audit with: the versions that pass, oldest first. `trusted`: versions
    the auditor holds (module docstring): their coordinators anchor the first version, and
    each must be among the versions taken, byte for byte (`different_region`).

    If none passes, the newest version given (the findings already fail the audit)."""
    if not versions:
        raise ValueError("no region document to audit with")
    held = [trusted] if isinstance(trusted, SignedRegion) else list(trusted or ())
    anchors = {c.public_key for t in held for c in t.document.coordinators} if held else None
    taken, problems = verify_history(versions, trusted_coordinators=anchors)
    found.count(MEMBERSHIP, len({v.document_bytes for v in versions}))
    for p in problems:
        found.find(MEMBERSHIP, p.reason, _where(p.version), p.detail, p.severity)
    audited = ", ".join(str(s.document.version) for s in taken) or "none"
    for t in held:
        version = t.document.version
        if any(s.document_bytes == t.document_bytes for s in taken):
            continue
        other = any(s.document.version == version for s in taken)
        found.find(
            MEMBERSHIP,
            "different_region",
            _where(version),
            "not the region document trusted here: the history holds another document "
            f"under version {version}"
            if other
            else f"the region document trusted here (version {version}) is not among the "
            f"versions audited ({audited})",
        )
    if not taken:
        newest = max(versions, key=lambda s: (s.document.version, s.document.issued_at))
        return RegionHistory([newest.document])
    return RegionHistory([s.document for s in taken])


class VersionUse:
    """Which versions the events name, and uses of keys revoked later (module docstring)."""

    __slots__ = ("_history", "_later", "_named", "_releases", "_revoked")

    def __init__(self, history: RegionHistory) -> None:
        self._history = history
        self._named: Counter[str] = Counter()
        self._releases: dict[int, list[int]] = {}  # version -> releases cut under it
        self._later: Counter[tuple[str, str, int]] = Counter()
        latest = history.latest
        self._revoked: dict[tuple[str, str], datetime] = (
            {
                (p.id, k.kid): k.revoked_at
                for p in latest.partners
                for k in p.keys
                if k.revoked_at is not None
            }
            if len(history) > 1
            else {}
        )

    def note(self, headers: Mapping[str, str] | None, at: datetime, seq: int = 0) -> None:
        """One event of the stream, with its stream time and sequence number."""
        if not headers:
            return
        self._named[headers.get(REGION_VERSION, "")] += 1
        if not self._revoked:
            return
        partner = headers.get(MSG_ID, "").partition(":")[0]
        revoked_at = self._revoked.get((partner, headers.get(KID, "")))
        if revoked_at is None or at < revoked_at:
            return
        doc = self._history.judged_by(seq, at)
        if doc is self._history.latest:
            return
        try:
            doc.partner_key(partner, headers[KID], at)
        except RegionProblem:
            return  # not allowed then either: a signatures finding already
        self._later[(partner, headers[KID], doc.version)] += 1

    def note_release(self, number: int, version: int) -> None:
        """A release and the region version its statements say it was cut under."""
        self._releases.setdefault(version, []).append(number)

    def report(self, found: Collector) -> None:
        audited = ", ".join(str(d.version) for d in self._history.documents)
        named: Counter[int] = Counter()
        for text, n in self._named.items():
            # anything else is a malformed envelope, a signatures finding already
            if text.isascii() and text.isdigit():
                named[int(text)] += n
        for version in sorted(set(named) | set(self._releases)):
            if self._history.version(version) is not None:
                continue
            uses = []
            if named[version]:
                judged = (
                    "the version the aggregator announced for it, or before the first "
                    "announcement the version in force at its stream time"
                    if self._history.taken
                    else "the version in force at its stream time"
                )
                uses.append(
                    f"{named[version]} message(s) were sent under it (each judged by {judged})"
                )
            if version in self._releases:
                numbers = ", ".join(map(str, sorted(self._releases[version])))
                uses.append(
                    f"release(s) {numbers} were cut under it (recomputed with the countries "
                    "of the version in force when cut)"
                )
            found.find(
                MEMBERSHIP,
                "unknown_version",
                _where(version),
                f"not among the versions audited ({audited}); " + "; ".join(uses),
                "warning",
            )
        latest = self._history.latest
        for (partner, kid, version), n in sorted(self._later.items()):
            revoked_at = self._revoked[(partner, kid)].isoformat().replace("+00:00", "Z")
            found.find(
                MEMBERSHIP,
                "revoked_later",
                _where(version),
                f"{n} message(s) of {partner} signed with key {kid} were stored while version "
                f"{version}, which allowed that key, was in force; version {latest.version} "
                f"revokes it from {revoked_at}, before them (accepted, as the version in "
                "force said; worth a look)",
                "warning",
            )
