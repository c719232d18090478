"""`handsoff demo`: a node on this machine, fed realistic synthetic cases over its HTTP API.

Issue #5 grows this into a whole region (five partners, NATS, the aggregator); today it
runs one partner node end to end: init, users, serve, record through HTTP, verify, report.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn

from handsoff.events import Country
from handsoff.keys import KdfStrength
from handsoff.services.api import create_app
from handsoff.services.client import NodeClient, record_story
from handsoff.services.figures import headline, render
from handsoff.services.natsserver import free_port
from handsoff.services.node.admin import Role
from handsoff.services.node.config import NodeConfig
from handsoff.services.node.node import Node
from handsoff.services.node.verify import VerificationReport
from handsoff.services.simulate import StoryTeller


@dataclass(frozen=True)
class DemoOptions:
    seed: int = 1
    incidents: int = 200
    serve: bool = True
    directory: Path | None = None  # kept afterwards when given; a temporary one otherwise
    port: int = 0


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


@contextlib.contextmanager
def serving(node: Node, port: int) -> Iterator[str]:
    app = create_app(node)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="handsoff-node-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the node API did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def feed(url: str, tokens: dict[Role, str], teller: StoryTeller, n: int) -> int:
    """Records n stories through the API; returns the number of changes recorded."""
    paralegal = NodeClient(url, tokens[Role.PARALEGAL])
    supervisor = NodeClient(url, tokens[Role.SUPERVISOR])
    progress = Progress(n, "recording cases")
    changes = 0
    for i, story in enumerate(teller.stories(n), 1):
        changes += record_story(paralegal, story, supervisor)
        progress.update(i)
    return changes


def _print_verification(report: VerificationReport) -> None:
    for log in report.logs:
        status = "intact" if log.intact else f"BROKEN: {log.failure}"
        print(f"  {log.log:6} {log.events:6} events, signatures and chains {status}")


def run_demo(options: DemoOptions) -> int:
    with contextlib.ExitStack() as stack:
        root = options.directory or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="handsoff-demo-"))
        )
        passphrase = secrets.token_urlsafe(24).encode()
        if options.directory is not None:  # a kept demo must be reopenable: demo only!
            root.mkdir(parents=True, exist_ok=True)
            secret_file = root / "demo-passphrase"
            secret_file.write_bytes(passphrase)
            secret_file.chmod(0o600)
        node = Node.init(
            root / "demo-bw",
            NodeConfig(partner="demo-bw", country="BW"),
            passphrase,
            KdfStrength.INTERACTIVE,
        )
        stack.callback(node.close)
        tokens = {role: node.add_user(f"demo-{role.value}", role, "handsoff demo") for role in Role}
        url = stack.enter_context(serving(node, options.port or free_port()))
        print(
            f"node demo-bw (Botswana) serving on {url}; recording {options.incidents} "
            "synthetic incidents through its API"
        )
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        teller = StoryTeller(options.seed, Country.BW, start - timedelta(days=365))
        began = time.monotonic()
        changes = feed(url, tokens, teller, options.incidents)
        elapsed = time.monotonic() - began
        print(f"recorded {changes} changes in {elapsed:.1f} s\n")
        node.cases.refresh()
        print("headline figures (this node)")
        for line in render(headline(node.cases.states.values())):
            print("  " + line)
        report = node.verify()
        print(f"\nverification with public keys only: {'intact' if report.intact else 'FAILED'}")
        _print_verification(report)
        if not options.serve:
            return 0 if report.intact else 1
        print(f"\nAPI and its documentation: {url}/docs")
        for role, token in tokens.items():
            print(f"  {role.value:10} token {token}")
        print("serving until Ctrl-C")
        _wait_for_interrupt()
        return 0 if report.intact else 1
    return 1  # pragma: no cover (ExitStack never swallows here)


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
