"""Composition root of one partner node: configuration, keys and the sealed logs."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from handsoff.keys import (
    KdfStrength,
    KeyRecord,
    Keyring,
    NodeSecrets,
    SigningKey,
    load_keyring,
    read_key_file,
    save_keyring,
    write_key_file,
)
from handsoff.services.errors import ConfigError
from handsoff.services.node.admin import AdminLog, NodeInitialised, NodeKeyRotated, Role
from handsoff.services.node.cases import CaseLog
from handsoff.services.node.config import (
    NodeConfig,
    NodePaths,
    load_config,
    save_config,
)
from handsoff.services.node.errors import NodeError
from handsoff.services.node.inbound import InboundLog
from handsoff.services.node.persistence import ensure_postgres_schema, store_env
from handsoff.services.node.verify import VerificationReport, verify_node


class NodeBusy(NodeError):
    """Another process holds the node's lock (it is serving)."""


class Node:
    """Everything one partner's node needs, built once at the entry point and passed down."""

    def __init__(
        self,
        paths: NodePaths,
        config: NodeConfig,
        secrets: NodeSecrets,
        keyring: Keyring,
        *,
        signing: bool = True,
    ) -> None:
        self.paths = paths
        self.config = config
        self._secrets = secrets
        self.keyring = keyring
        self.signer = secrets.signing_key()
        if keyring.current.kid != _kid(self.signer):
            raise ConfigError(
                f"the key file's signing key {_kid(self.signer)} is not the keyring's current "
                f"key {keyring.current.kid}: was a key rotation interrupted?"
            )
        paths.data.mkdir(parents=True, exist_ok=True)
        if config.backend == "postgres" and config.postgres is not None:
            ensure_postgres_schema(config.postgres)
        self.admin = AdminLog(self._env("admin"), secrets, keyring, signing=signing)
        self.cases = CaseLog(self._env("cases"), secrets, keyring, signing=signing)
        self.inbound = InboundLog(self._env("inbound"), secrets, keyring, signing=signing)

    @property
    def data_key(self) -> bytes:
        """Encrypts personal data at rest, and the reply tokens only this node can open."""
        return self._secrets.data_key

    @property
    def pseudonym_key(self) -> bytes:
        """The node secret behind every pseudonym that leaves the node."""
        return self._secrets.pseudonym_key

    def _env(self, app_name: str) -> dict[str, str]:
        return store_env(self.config, self.paths.data, app_name)

    @classmethod
    def open(cls, directory: Path, passphrase: bytes) -> Node:
        paths = NodePaths(directory)
        config = load_config(paths)
        keyring = load_keyring(paths.keyring)
        _finish_interrupted_rotation(paths, keyring, passphrase)
        secrets = read_key_file(paths.key_file, passphrase)
        return cls(paths, config, secrets, keyring)

    @classmethod
    def init(
        cls,
        directory: Path,
        config: NodeConfig,
        passphrase: bytes,
        strength: KdfStrength = KdfStrength.MODERATE,
    ) -> Node:
        paths = NodePaths(directory)
        if paths.config.exists():
            raise ConfigError(f"{directory} already holds a node (node.json exists)")
        secrets = NodeSecrets.generate()
        signer = secrets.signing_key()
        now = datetime.now(UTC)
        keyring = Keyring.genesis(config.partner, signer, now)
        paths.key_file.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(paths.key_file.parent, 0o700)
        write_key_file(paths.key_file, secrets, passphrase, strength)
        save_keyring(paths.keyring, keyring)
        save_config(paths, config)
        node = cls(paths, config, secrets, keyring)
        node.admin.initialise(
            NodeInitialised(
                config.partner, config.country, keyring.current.kid, signer.public_key, now
            )
        )
        return node

    def rotate_key(
        self, passphrase: bytes, by: str, strength: KdfStrength = KdfStrength.MODERATE
    ) -> KeyRecord:
        """New key signs from now on; the rotation is recorded, signed by the old key."""
        new = SigningKey.generate()
        now = datetime.now(UTC)
        ring, statement, endorsement = self.keyring.rotated(self.signer, new, now)
        pending = self.paths.pending_key_file
        write_key_file(pending, self._secrets.with_signing_key(new), passphrase, strength)
        self.admin.key_rotated(
            NodeKeyRotated(statement.old_kid, statement.new_kid, new.public_key, now, endorsement),
            by,
        )
        save_keyring(self.paths.keyring, ring)
        os.replace(pending, self.paths.key_file)
        self._secrets = self._secrets.with_signing_key(new)
        self.keyring, self.signer = ring, new
        for app in (self.admin, self.cases, self.inbound):
            app.use_keys(ring, new)
        return ring.current

    def verify(self, expected_fingerprint: str | None = None) -> VerificationReport:
        return verify_node(self.config, self.paths.data, self.keyring, expected_fingerprint)

    def add_user(self, name: str, role: Role, by: str) -> str:
        return self.admin.add_user(name, role, by)

    def close(self) -> None:
        for app in (self.admin, self.cases, self.inbound):
            app.close()


def _finish_interrupted_rotation(paths: NodePaths, keyring: Keyring, passphrase: bytes) -> None:
    # rotate_key writes node.key.new, records the rotation, saves the keyring, then renames.
    pending = paths.pending_key_file
    if not pending.exists():
        return
    candidate = read_key_file(pending, passphrase)
    if keyring.current.kid == _kid(candidate.signing_key()):
        os.replace(pending, paths.key_file)  # the keyring already names the new key
    else:
        pending.unlink()  # the rotation never reached the keyring: the old key stays


def _kid(key: SigningKey) -> str:
    return key.kid.hex()


@contextlib.contextmanager
def exclusive(paths: NodePaths) -> Iterator[IO[str]]:
    """Held while serving and while rotating keys, so the two never overlap."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeBusy(
                f"node {paths.root} is in use by another process (is `handsoff node serve` "
                "running?); stop it first, or rotate keys through the admin API"
            ) from None
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
