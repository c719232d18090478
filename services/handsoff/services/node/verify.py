"""`node verify`: walks every log with public keys alone and reports the first break."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from handsoff.keys import Keyring, KeysError, VerificationError
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.config import NodeConfig
from handsoff.services.node.errors import TamperedEvent
from handsoff.services.node.persistence import application_recorder, store_env
from handsoff.services.node.store import PAGE

NODE_LOGS = ("admin", "cases", "inbound")


class LogReport(msgspec.Struct, frozen=True):
    log: str
    events: int
    aggregates: int
    intact: bool
    failure: str | None = None  # the first broken event and why


class VerificationReport(msgspec.Struct, frozen=True):
    partner: str
    keyring_intact: bool
    keys: list[str]
    logs: list[LogReport]
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.keyring_intact and all(log.intact for log in self.logs)


def verify_log(
    config: NodeConfig,
    data_dir: Path,
    app_name: str,
    keyring: Keyring,
    progress: Callable[[int], None] | None = None,
) -> LogReport:
    recorder = application_recorder(store_env(config, data_dir, app_name), app_name)
    follower = ChainFollower(app_name, keyring)
    try:
        while True:
            page = recorder.select_notifications(
                start=follower.position, limit=PAGE, inclusive_of_start=False
            )
            if not page:
                break
            follower.check_all(page)
            if progress is not None:
                progress(follower.count)
    except TamperedEvent as e:
        return LogReport(app_name, follower.count, len(follower.heads), False, str(e))
    finally:
        _close(recorder)
    return LogReport(app_name, follower.count, len(follower.heads), True)


def verify_node(
    config: NodeConfig,
    data_dir: Path,
    keyring: Keyring,
    expected_fingerprint: str | None = None,
) -> VerificationReport:
    keys = [r.kid for r in keyring.keys]
    try:
        keyring.verify_chain()
        if expected_fingerprint is not None and keyring.fingerprint != expected_fingerprint:
            raise VerificationError(
                f"keyring's genesis key has fingerprint {keyring.fingerprint}, "
                f"not the trusted {expected_fingerprint}"
            )
        if keyring.owner != config.partner:
            raise VerificationError(f"keyring belongs to {keyring.owner}, not {config.partner}")
    except KeysError as e:
        return VerificationReport(config.partner, False, keys, [], f"keyring: {e}")
    logs = [verify_log(config, data_dir, name, keyring) for name in NODE_LOGS]
    return VerificationReport(config.partner, True, keys, logs)


def _close(recorder: object) -> None:
    datastore = getattr(recorder, "datastore", None)
    close = getattr(datastore, "close", None)
    if callable(close):
        close()
