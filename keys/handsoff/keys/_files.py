"""File I/O shared by key files and keyrings; OSError becomes KeyFileError here."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from handsoff.keys.errors import KeyFileError


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {what} {path}: {e.strerror or e}") from None


def atomic_write(path: Path, data: bytes, mode: int, what: str) -> None:
    """Replace path with data so that readers (and a crash) see the old or new file, never half.

    The temp file is created 0600 in the target directory (os.replace must not cross file
    systems), so secrets are never readable by others, not even briefly.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise KeyFileError(f"cannot write {what} {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise KeyFileError(f"cannot write {what} {path}: {e.strerror or e}") from None
        raise
    # The rename is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
