"""A sealed log with an in-memory index of aggregate states that follows it.

The index is rebuilt from the verified log at start and kept current by catching up before
every command and query, so rules are checked against current state and no plaintext read
model is kept at rest. Subclasses say how a change folds into a state and which rules apply.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from handsoff.services.node.errors import NodeError, StaleCase
from handsoff.services.node.store import Recorded, SealedApplication

S = TypeVar("S")


class IndexedLog(SealedApplication, Generic[S]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.states: dict[UUID, S] = {}
        super().__init__(*args, **kwargs)

    @abstractmethod
    def fold(self, state: S | None, aggregate_id: UUID, change: Any) -> S: ...

    @abstractmethod
    def check(self, state: S | None, change: Any) -> None: ...

    @abstractmethod
    def version_of(self, state: S) -> int: ...

    @abstractmethod
    def not_found(self, aggregate_id: UUID) -> NodeError: ...

    def refresh(self) -> None:
        self.catch_up(self._apply)

    def _apply(self, rec: Recorded) -> None:
        self.states[rec.originator_id] = self.fold(
            self.states.get(rec.originator_id), rec.originator_id, rec.change
        )

    def state(self, aggregate_id: UUID) -> S:
        try:
            return self.states[aggregate_id]
        except KeyError:
            raise self.not_found(aggregate_id) from None

    def history_of(self, aggregate_id: UUID) -> tuple[S, list[Recorded]]:
        """One aggregate read afresh from the store, every signature and link checked."""
        events = list(self.sealed_events.get(aggregate_id))
        if not events:
            raise self.not_found(aggregate_id)
        state: S | None = None
        for e in events:
            state = self.fold(state, aggregate_id, e.change)
        assert state is not None
        return state, events

    def start(self, aggregate_id: UUID, change: Any, by: str) -> S:
        """Version 1 of a new aggregate; IntegrityError if it exists already."""
        with self.lock:
            self.refresh()
            self.check(None, change)
            return self._write(aggregate_id, 1, change, by)

    def record_change(self, aggregate_id: UUID, expected_version: int, change: Any, by: str) -> S:
        """Appends one change; StaleCase if the caller's view is not the current version."""
        with self.lock:
            self.refresh()
            state = self.state(aggregate_id)
            if self.version_of(state) != expected_version:
                raise StaleCase(aggregate_id, expected_version, self.version_of(state))
            self.check(state, change)
            return self._write(aggregate_id, expected_version + 1, change, by)

    def _write(self, aggregate_id: UUID, version: int, change: Any, by: str) -> S:
        rec = Recorded(aggregate_id, version, datetime.now(UTC), by, change)
        try:
            recordings = self.record([rec])
        except IntegrityError:  # another process wrote this version first
            self.refresh()
            if version == 1:
                raise
            raise StaleCase(
                aggregate_id, version - 1, self.version_of(self.state(aggregate_id))
            ) from None
        if recordings[-1].notification.id == self.follower.position:
            self._apply(rec)
        else:
            self.refresh()
        return self.states[aggregate_id]
