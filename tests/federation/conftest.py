"""Fixtures for federation tests: real nats-server processes, real node directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handsoff.services.natsserver import EmbeddedNats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()
