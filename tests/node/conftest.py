"""Fixtures for node tests: real SQLite files in a temporary directory, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handsoff.services.node.node import Node
from support import make_node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path / "node")
    try:
        yield n
    finally:
        n.close()
