"""The services' one error root; foreign errors are converted at the edges."""


class ServiceError(Exception):
    """Root of every error raised by handsoff.services."""


class ConfigError(ServiceError):
    """A node directory or its configuration is missing or invalid."""


class StoreUnavailable(ServiceError):
    """The event store (SQLite file or PostgreSQL server) cannot be reached."""
