"""The node's HTTP API (FastAPI), with msgspec schemas for every body."""

from handsoff.services.api.app import create_app

__all__ = ["create_app"]
