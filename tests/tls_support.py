"""A throwaway certificate authority for TLS tests, made with the `openssl` command (EC
P-256 keys, valid for two days). No mocks: the certificates are real, so are the handshakes."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    r = subprocess.run(
        [OPENSSL, *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestCa:
    """A CA in `folder`: `ca` is its certificate; `issue` makes leaf certificates."""

    __test__ = False  # not a test class, whatever its name

    folder: Path
    ca: Path
    ca_key: Path

    def issue(
        self,
        name: str,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        *,
        server: bool = True,
    ) -> Issued:
        """A certificate for `hosts` (DNS names and IP addresses), usable by a client and,
        if `server`, by a server (servers of a cluster are both: routes go both ways)."""
        key, csr, cert, ext = (self.folder / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
        _openssl(
            *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
            *("-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"),
            cwd=self.folder,
        )
        names = ",".join(
            f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
        )
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        ext.write_text(
            f"subjectAltName={names}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
        )
        _openssl(
            *("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key)),
            *("-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)),
            cwd=self.folder,
        )
        key.chmod(0o600)
        return Issued(cert, key)


def make_ca(folder: Path, name: str = "handsoff test CA") -> TestCa:
    if OPENSSL is None:
        pytest.skip("needs the openssl command")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=folder,
    )
    return TestCa(folder, ca, ca_key)
