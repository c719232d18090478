"""Errors of the node; all derive from the services' root."""

from __future__ import annotations

from uuid import UUID

from handsoff.services.errors import ServiceError


class NodeError(ServiceError):
    """Root of the node's errors."""


class TamperedEvent(NodeError):
    """A stored event fails verification. `where` names the event, `reason` what failed."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class CaseNotFound(NodeError):
    def __init__(self, case_id: UUID) -> None:
        super().__init__(f"case {case_id} not found")
        self.case_id = case_id


class StaleCase(NodeError):
    """The caller's expected version is not the case's current version (HTTP 409)."""

    def __init__(self, case_id: UUID, expected: int, actual: int) -> None:
        super().__init__(
            f"case {case_id} is at version {actual}, not {expected}: reload it and retry"
        )
        self.case_id = case_id
        self.expected = expected
        self.actual = actual


def event_ref(
    app: str, originator_id: UUID | str, version: int, notification_id: int | None = None
) -> str:
    """How every message names one stored event."""
    where = f"{app} event {originator_id} v{version}"
    return f"{where} (notification {notification_id})" if notification_id is not None else where
