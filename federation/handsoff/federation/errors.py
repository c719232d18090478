"""The federation's one error root."""


class FederationError(Exception):
    """Root of every error raised by handsoff.federation."""


class RegionError(FederationError):
    """A region document is invalid, unsigned, expired, stale or inconsistent."""


class ShareRefused(FederationError):
    """Something was about to leave a node that must not (a bug, never a normal outcome)."""


class EnvelopeRejected(FederationError):
    """A shared message failed verification. `reason` is a stable code, `detail` says more."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
