"""The errors of handsoff.events: one root, so callers can catch the whole package."""


class EventsError(Exception):
    """Root of every error raised by handsoff.events."""


class CaseRuleViolation(EventsError):
    """A change that is not allowed in the case's current state; the message says why."""


class InvalidChange(CaseRuleViolation):
    """A change whose fields break its own schema (e.g. built in code, never decoded)."""
