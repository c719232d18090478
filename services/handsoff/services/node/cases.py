"""The case log: every incident and what followed, one sealed aggregate per case.

An in-memory index of case states follows the log (verifying every event it reads), so
commands check their rules against current state and list queries need no plaintext copy
of the data at rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from uuid import UUID, uuid4

import msgspec
from eventsourcing.persistence import Notification

from handsoff.events import CaseChange, CaseState, IncidentReported, apply, check
from handsoff.events import change_type_of as _change_type_of
from handsoff.events import topic_of as _topic_of
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.errors import CaseNotFound, TamperedEvent, event_ref
from handsoff.services.node.indexed import IndexedLog
from handsoff.services.node.sealing import unseal
from handsoff.services.node.store import Recorded


class CaseTopics:
    """Case topics are pinned in handsoff.events (the tag of each change type)."""

    def topic_of(self, change_type: type) -> str:
        return _topic_of(change_type)

    def change_type_of(self, topic: str) -> type:
        return _change_type_of(topic)


class SealInfo(msgspec.Struct, frozen=True):
    """What an auditor may see of one stored event: no body, no personal data."""

    version: int
    topic: str
    kid: str
    prev: str
    signature: str
    verified: bool
    problem: str | None = None


class CaseLog(IndexedLog[CaseState]):
    name = "cases"
    topics = CaseTopics()

    def fold(self, state: CaseState | None, aggregate_id: UUID, change: Any) -> CaseState:
        return apply(state, aggregate_id, cast(CaseChange, change))

    def check(self, state: CaseState | None, change: Any) -> None:
        check(state, cast(CaseChange, change))

    def version_of(self, state: CaseState) -> int:
        return state.version

    def not_found(self, aggregate_id: UUID) -> CaseNotFound:
        return CaseNotFound(aggregate_id)

    def report_incident(self, change: IncidentReported, by: str) -> CaseState:
        return self.start(uuid4(), change, by)

    def history(self, case_id: UUID) -> tuple[CaseState, list[Recorded]]:
        """A case read afresh from the store, every signature and link checked."""
        return self.history_of(case_id)

    def list_cases(
        self, keep: Callable[[CaseState], bool], offset: int, limit: int
    ) -> tuple[int, list[CaseState]]:
        with self.lock:
            self.refresh()
            matching = [s for s in self.states.values() if keep(s)]
        matching.sort(key=lambda s: (s.reported_at, str(s.case_id)), reverse=True)
        return len(matching), matching[offset : offset + limit]

    def seals(self, case_id: UUID) -> list[SealInfo]:
        """Signatures and links of one case, checked, without decrypting anything."""
        follower = ChainFollower(self.name, self.sealing.keyring)
        infos = []
        for s in self.recorder.select_events(case_id):
            try:
                sealed = unseal(s.state, event_ref(self.name, case_id, s.originator_version))
            except TamperedEvent as e:
                infos.append(SealInfo(s.originator_version, s.topic, "", "", "", False, e.reason))
                continue
            problem = None
            try:
                follower.check(
                    Notification(s.originator_id, s.originator_version, s.topic, s.state, 0)
                )
            except TamperedEvent as e:
                problem = e.reason
            infos.append(
                SealInfo(
                    s.originator_version,
                    s.topic,
                    sealed.kid.hex(),
                    sealed.prev.hex(),
                    sealed.signature.hex(),
                    problem is None,
                    problem,
                )
            )
        if not infos:
            raise CaseNotFound(case_id)
        return infos
