"""Follows one application's notification log and verifies every event as it goes.

The same checks serve `node verify` (the whole log, from the start) and the node itself
(catching up incrementally before each command and query), so there is one definition
of "intact".
"""

from __future__ import annotations

from collections.abc import Iterable

from eventsourcing.persistence import Notification

from handsoff.keys import BadSignature, Keyring, UnknownKey, kid_hex, verify_signature
from handsoff.services.node.errors import TamperedEvent, event_ref
from handsoff.services.node.sealing import GENESIS, Seal, link_digest, unseal


class ChainFollower:
    """Verifies signatures, per-aggregate links and key order, notification by notification."""

    def __init__(self, app_name: str, keyring: Keyring, *, verify_signatures: bool = True) -> None:
        self.app_name = app_name
        self.keyring = keyring
        self.verify_signatures = verify_signatures
        self.heads: dict[str, tuple[int, bytes]] = {}  # aggregate id -> (version, link)
        self.position = 0  # last notification id checked
        self.count = 0
        self._newest_generation = 0

    def generation(self, kid: bytes) -> int:
        """Position of a key in the keyring: 0 for the genesis key, then one per rotation."""
        hexkid = kid_hex(kid)
        for i, record in enumerate(self.keyring.keys):
            if record.kid == hexkid:
                return i
        raise UnknownKey(f"key {hexkid} is not in the keyring of {self.keyring.owner}")

    def check(self, n: Notification) -> Seal:
        where = event_ref(self.app_name, n.originator_id, n.originator_version, n.id)
        s = unseal(n.state, where)
        link = link_digest(s.prev, n.originator_id, n.originator_version, n.topic, s.body)
        if self.verify_signatures:
            self._check_signature(where, s, link)
        self._check_link(where, n, s)
        self.heads[str(n.originator_id)] = (n.originator_version, link)
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

    def _check_signature(self, where: str, s: Seal, link: bytes) -> None:
        try:
            public_key = self.keyring.public_key(s.kid)
            generation = self.generation(s.kid)
        except UnknownKey:
            raise TamperedEvent(
                where, f"signed by key {kid_hex(s.kid)}, which is not in the node's keyring"
            ) from None
        try:
            verify_signature(public_key, link, s.signature)
        except BadSignature:
            raise TamperedEvent(
                where, f"signature does not verify with key {kid_hex(s.kid)}"
            ) from None
        if generation < self._newest_generation:
            raise TamperedEvent(
                where,
                f"signed by retired key {kid_hex(s.kid)} after a newer key had signed",
            )
        self._newest_generation = generation

    def _check_link(self, where: str, n: Notification, s: Seal) -> None:
        last_version, last_link = self.head(str(n.originator_id))
        if n.originator_version != last_version + 1:
            if n.originator_version > last_version + 1:
                why = f"versions {last_version + 1}..{n.originator_version - 1} are missing"
            else:
                why = f"version {n.originator_version} is out of order after {last_version}"
            raise TamperedEvent(where, f"chain broken: {why}")
        if s.prev != last_link:
            raise TamperedEvent(
                where, "chain broken: does not link to the previous event of this aggregate"
            )
