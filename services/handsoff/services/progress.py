"""A progress bar for long runs (demo, audits): one line on a terminal, a few plain lines
elsewhere (CI logs)."""

from __future__ import annotations

import sys


class Progress:
    """A one-line progress bar on a terminal; a few plain lines elsewhere (CI logs)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.tty = total, label, sys.stderr.isatty()
        self._last_decile = -1

    def update(self, done: int) -> None:
        if self.tty:
            filled = 30 * done // max(self.total, 1)
            sys.stderr.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}"
            )
            if done == self.total:
                sys.stderr.write("\n")
        elif (decile := 10 * done // max(self.total, 1)) != self._last_decile:
            self._last_decile = decile
            sys.stderr.write(f"{self.label}: {done}/{self.total}\n")
        sys.stderr.flush()
