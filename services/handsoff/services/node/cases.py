"""The case log: every incident and what followed, one sealed aggregate per case.

An in-memory index of case states follows the log (verifying every event it reads), so
commands check their rules against current state and list queries need no plaintext copy
of the data at rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast
from uuid import UUID, uuid4

import msgspec
from eventsourcing.persistence import IntegrityError, Notification

from handsoff.events import CaseChange, CaseState, IncidentReported, apply, check, fold
from handsoff.events import change_type_of as _change_type_of
from handsoff.events import topic_of as _topic_of
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.errors import CaseNotFound, StaleCase, TamperedEvent, event_ref
from handsoff.services.node.sealing import unseal
from handsoff.services.node.store import Recorded, SealedApplication


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


class CaseLog(SealedApplication):
    name = "cases"
    topics = CaseTopics()

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.states: dict[UUID, CaseState] = {}
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def refresh(self) -> None:
        self.catch_up(self._apply)

    def _apply(self, rec: Recorded) -> None:
        change = cast(CaseChange, rec.change)  # the topic registry only yields case changes
        self.states[rec.originator_id] = apply(
            self.states.get(rec.originator_id), rec.originator_id, change
        )

    def report_incident(self, change: IncidentReported, by: str) -> CaseState:
        with self.lock:
            self.refresh()
            check(None, change)
            return self._write(uuid4(), 1, change, by)

    def record_change(
        self, case_id: UUID, expected_version: int, change: CaseChange, by: str
    ) -> CaseState:
        """Appends one change; StaleCase if the caller's view is not the current version."""
        with self.lock:
            self.refresh()
            state = self.state(case_id)
            if state.version != expected_version:
                raise StaleCase(case_id, expected_version, state.version)
            check(state, change)
            return self._write(case_id, state.version + 1, change, by)

    def _write(self, case_id: UUID, version: int, change: CaseChange, by: str) -> CaseState:
        rec = Recorded(case_id, version, datetime.now(UTC), by, change)
        try:
            recordings = self.record([rec])
        except IntegrityError:  # another process wrote this version first
            self.refresh()
            raise StaleCase(case_id, version - 1, self.state(case_id).version) from None
        if recordings[-1].notification.id == self.follower.position:
            self._apply(rec)
        else:
            self.refresh()
        return self.states[case_id]

    def state(self, case_id: UUID) -> CaseState:
        try:
            return self.states[case_id]
        except KeyError:
            raise CaseNotFound(case_id) from None

    def history(self, case_id: UUID) -> tuple[CaseState, list[Recorded]]:
        """A case read afresh from the store, every signature and link checked."""
        events = list(self.sealed_events.get(case_id))
        if not events:
            raise CaseNotFound(case_id)
        return fold(case_id, [e.change for e in events]), events  # type: ignore[misc]

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
