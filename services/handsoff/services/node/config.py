"""The node's configuration: one typed object, read from DIR/node.json, passed down.

Nothing is read from the process environment here except the passphrase (by name) and
the PostgreSQL password (by the variable named in the file), so several nodes can run
in one process and a stray variable cannot redirect a node's store.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from handsoff.services.errors import ConfigError
from handsoff.services.natsclient import NatsTls

CONFIG_FORMAT = "handsoff-node/1"
PartnerId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$")]
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a larger site keeps its events. The password never lives in node.json."""

    schema: Annotated[str, msgspec.Meta(pattern=_SCHEMA_NAME.pattern)]
    dbname: str = "handsoff"
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password_env: str | None = None  # name of the variable holding the password

    def password(self) -> str:
        if self.password_env is None:
            return ""
        try:
            return os.environ[self.password_env]
        except KeyError:
            raise ConfigError(
                f"PostgreSQL password variable {self.password_env} is not set"
            ) from None


class FederationSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How this node reaches its region's NATS. The password lives in a file (0600)."""

    nats_url: str
    nats_user: str
    nats_password_file: str | None = None
    # Seconds between publishing rounds: messages leave in batches on a schedule, so their
    # arrival times do not date each step of a case (0 publishes at once: tests, demos).
    publish_interval: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    # Seconds between signed checkpoints of what the node has published (issue #6), each only
    # if something new was published (0: one after every publishing round: tests, demos).
    checkpoint_interval: Annotated[float, msgspec.Meta(ge=0)] = 600.0
    # Seconds between looks at the region versions the aggregator announces (a newer one is
    # taken at once: services/node/follow.py); a look is one short request.
    region_check_interval: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # TLS to the region's NATS (`node join --nats-ca ...`); None: plain, unless tls:// URLs
    nats_tls: NatsTls | None = None

    def password(self) -> str | None:
        if self.nats_password_file is None:
            return None
        try:
            return Path(self.nats_password_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read NATS password file: {e.strerror}") from None


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What `handsoff node init` writes and every other node command reads."""

    partner: PartnerId
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
    backend: Literal["sqlite", "postgres"] = "sqlite"
    postgres: PostgresSettings | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8600
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    federation: FederationSettings | None = None  # set by `handsoff node join`
    format: str = CONFIG_FORMAT


class NodePaths(msgspec.Struct, frozen=True):
    """Files inside a node directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "node.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def key_file(self) -> Path:
        return self.root / "keys" / "node.key"

    @property
    def pending_key_file(self) -> Path:
        """A rotation's new key file, until the rotation is complete."""
        return self.root / "keys" / "node.key.new"

    @property
    def keyring(self) -> Path:
        return self.root / "keys" / "keyring.json"

    @property
    def region(self) -> Path:
        """The region document this node holds (accepted, signed)."""
        return self.root / "region.json"

    @property
    def lock(self) -> Path:
        return self.root / "node.lock"


def load_config(paths: NodePaths) -> NodeConfig:
    try:
        raw = paths.config.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{paths.root} is not a node directory (no node.json); run `handsoff node init`"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read {paths.config}: {e.strerror}") from None
    try:
        config = msgspec.json.decode(raw, type=NodeConfig)
    except msgspec.DecodeError as e:
        raise ConfigError(f"{paths.config} is invalid: {e}") from None
    if config.format != CONFIG_FORMAT:
        raise ConfigError(f"{paths.config} has format {config.format!r}, expected {CONFIG_FORMAT}")
    if config.backend == "postgres" and config.postgres is None:
        raise ConfigError(f"{paths.config}: backend is postgres but no postgres settings")
    return config


def save_config(paths: NodePaths, config: NodeConfig) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.config.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n")
    os.replace(tmp, paths.config)
