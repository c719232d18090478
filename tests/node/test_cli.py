"""The `handsoff` command line: in-process for the commands, a real process for `serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest

from handsoff.services.cli import main
from handsoff.services.natsserver import free_port

PASS = "a long enough passphrase"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASS)
    monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def init(capsys: pytest.CaptureFixture[str], directory: Path) -> str:
    code, out, err = run(
        capsys,
        "node",
        "init",
        "--dir",
        str(directory),
        "--partner",
        "sisonke-bw",
        "--country",
        "BW",
        "--kdf",
        "interactive",
    )
    assert code == 0, err
    return out


@pytest.mark.usefixtures("env")
def test_init_users_keys_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "node"
    out = init(capsys, d)
    assert "initialised node sisonke-bw (BW)" in out
    assert "genesis fingerprint" in out
    assert oct((d / "keys" / "node.key").stat().st_mode & 0o777) == "0o600"

    code, out, err = run(
        capsys, "node", "users", "add", "--dir", str(d), "--name", "thandi", "--role", "paralegal"
    )
    assert code == 0
    token = out.strip()
    assert token.startswith("hx_")
    assert len(token) > 40
    assert "shown only once" in err
    assert token not in (d / "data" / "admin.sqlite").read_bytes().decode(errors="replace")

    code, out, _ = run(capsys, "node", "users", "list", "--dir", str(d))
    assert out.strip() == "thandi\tparalegal\tactive"

    code, out, _ = run(capsys, "node", "keys", "show", "--dir", str(d))
    assert code == 0
    assert "current" in out
    old = out.split("\n")[1].split()[0]
    code, out, _ = run(capsys, "node", "keys", "rotate", "--dir", str(d), "--kdf", "interactive")
    assert code == 0
    assert f"rotated: {old} -> " in out
    code, out, _ = run(capsys, "node", "keys", "show", "--dir", str(d))
    assert out.count("retired") == 1
    assert out.count("current") == 1

    code, out, _ = run(capsys, "node", "verify", "--dir", str(d))
    assert code == 0, out
    assert out.strip().endswith("verified: intact")
    code, out, _ = run(capsys, "node", "verify", "--dir", str(d), "--json")
    report = msgspec.json.decode(out)
    assert report["keyring_intact"]
    assert len(report["keys"]) == 2

    code, out, _ = run(capsys, "node", "users", "revoke", "--dir", str(d), "--name", "thandi")
    assert code == 0
    code, out, _ = run(capsys, "node", "users", "list", "--dir", str(d))
    assert out.strip() == "thandi\tparalegal\trevoked"


@pytest.mark.usefixtures("env")
def test_verify_trusts_only_the_given_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "node"
    out = init(capsys, d)
    fingerprint = out.split("genesis fingerprint ")[1].split()[0]
    assert run(capsys, "node", "verify", "--dir", str(d), "--trust", fingerprint)[0] == 0
    code, out, _ = run(capsys, "node", "verify", "--dir", str(d), "--trust", "00" * 32)
    assert code == 1
    assert "not the trusted" in out


@pytest.mark.usefixtures("env")
def test_user_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "node"
    init(capsys, d)
    cases = [
        (
            ["node", "init", "--dir", str(d), "--partner", "x-1", "--country", "BW"],
            "already holds a node",
        ),
        (
            [
                "node",
                "init",
                "--dir",
                str(tmp_path / "n2"),
                "--partner",
                "UPPER",
                "--country",
                "BW",
            ],
            "invalid setting",
        ),
        (
            ["node", "init", "--dir", str(tmp_path / "n3"), "--partner", "p3", "--country", "bw"],
            "invalid setting",
        ),
        (["node", "verify", "--dir", str(tmp_path / "nothing")], "is not a node directory"),
        (
            ["node", "users", "add", "--dir", str(d), "--name", "Bad Name!", "--role", "admin"],
            "error:",
        ),
    ]
    for argv, message in cases:
        code, _out, err = run(capsys, *argv)
        assert code == 2, argv
        assert message in err, (argv, err)
        assert "Traceback" not in err
        assert err.count("\n") == 1, err


def test_wrong_or_missing_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "node"
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASS)
    init(capsys, d)
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", "not the passphrase")
    code, _, err = run(capsys, "node", "users", "list", "--dir", str(d))
    assert code == 2
    assert "wrong passphrase or corrupted key file" in err
    assert "not the passphrase" not in err
    monkeypatch.delenv("HANDSOFF_PASSPHRASE")
    code, _, err = run(capsys, "node", "users", "list", "--dir", str(d))
    assert code == 2
    assert "HANDSOFF_PASSPHRASE" in err


def test_serve_answers_and_stops_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "node"
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASS)
    init(capsys, d)
    port = free_port()
    handsoff = Path(sys.executable).with_name("handsoff")
    proc = subprocess.Popen(
        [str(handsoff), "node", "serve", "--dir", str(d), "--port", str(port)],
        env={**os.environ, "HANDSOFF_PASSPHRASE": PASS},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert msgspec.json.decode(r.read()) == {"status": "ok"}
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "node serve did not answer in 20 s"
                time.sleep(0.1)
        # While serving, the node is locked against a concurrent key rotation.
        code, _, err = run(
            capsys, "node", "keys", "rotate", "--dir", str(d), "--kdf", "interactive"
        )
        assert code == 2
        assert "in use by another process" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, out
    assert "Traceback" not in out


@pytest.mark.usefixtures("env")
def test_join_refuses_a_region_check_interval_of_zero_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "node"
    init(capsys, d)
    before = (d / "node.json").read_bytes()
    code, _, err = run(
        capsys,
        *("node", "join", "--dir", str(d), "--region", str(tmp_path / "region.json")),
        *("--nats", "nats://127.0.0.1:4222", "--region-check-interval", "0"),
    )
    assert code == 2
    assert "--region-check-interval must be more than 0 seconds" in err
    assert (d / "node.json").read_bytes() == before
