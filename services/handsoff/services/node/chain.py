"""Follows one application's notification log and verifies every event as it goes.

The same checks serve `node verify` (the whole log, from the start) and the node itself
(catching up incrementally before each command and query), so there is one definition
of "intact".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from eventsourcing.persistence import Notification

from handsoff.keys import BadSignature, Keyring, kid_hex, verify_signature
from handsoff.services.node.errors import TamperedEvent, event_ref
from handsoff.services.node.sealing import GENESIS, Seal, link_digest, unseal


class ChainFollower:
    """Verifies signatures, per-aggregate links and key order, notification by notification."""

    def __init__(self, app_name: str, keyring: Keyring, *, verify_signatures: bool = True) -> None:
        self.app_name = app_name
        self.verify_signatures = verify_signatures
        self.heads: dict[str, tuple[int, bytes]] = {}  # aggregate id -> (version, link)
        self.position = 0  # last notification id checked
        self.count = 0
        self._newest_generation = 0
        self.keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: Keyring) -> None:
        self._keyring = keyring
        # kid -> (public key, generation: 0 for the genesis key, then one per rotation)
        self._keys = {bytes.fromhex(r.kid): (r.public_key, i) for i, r in enumerate(keyring.keys)}

    def check(self, n: Notification) -> Seal:
        # The event's name is only built when something fails (it is on the hot path).
        def where() -> str:
            return event_ref(self.app_name, n.originator_id, n.originator_version, n.id)

        oid = str(n.originator_id)
        s = unseal(n.state, where)
        link = link_digest(s.prev, oid, n.originator_version, n.topic, s.body)
        if self.verify_signatures:
            self._check_signature(where, s, link)
        last_version, last_link = self.heads.get(oid, (0, GENESIS))
        if n.originator_version != last_version + 1 or s.prev != last_link:
            raise TamperedEvent(where(), _chain_break(n.originator_version, last_version))
        self.heads[oid] = (n.originator_version, link)
        self.position = n.id
        self.count += 1
        return s

    def check_all(self, notifications: Iterable[Notification]) -> None:
        for n in notifications:
            self.check(n)

    def advance(self, n_id: int, originator_id: str, version: int, link: bytes) -> None:
        """Records an event this process has just sealed itself, without re-verifying it."""
        self.heads[originator_id] = (version, link)
        self.position = n_id
        self.count += 1

    def head(self, originator_id: str) -> tuple[int, bytes]:
        return self.heads.get(originator_id, (0, GENESIS))

    def _check_signature(self, where: Callable[[], str], s: Seal, link: bytes) -> None:
        known = self._keys.get(s.kid)
        if known is None:
            raise TamperedEvent(
                where(), f"signed by key {kid_hex(s.kid)}, which is not in the node's keyring"
            )
        public_key, generation = known
        try:
            verify_signature(public_key, link, s.signature)
        except BadSignature:
            raise TamperedEvent(
                where(), f"signature does not verify with key {kid_hex(s.kid)}"
            ) from None
        if generation < self._newest_generation:
            raise TamperedEvent(
                where(), f"signed by retired key {kid_hex(s.kid)} after a newer key had signed"
            )
        self._newest_generation = generation


def _chain_break(version: int, last_version: int) -> str:
    if version > last_version + 1:
        why = f"versions {last_version + 1}..{version - 1} are missing"
    elif version <= last_version:
        why = f"version {version} is out of order after {last_version}"
    else:
        why = "does not link to the previous event of this aggregate"
    return f"chain broken: {why}"
