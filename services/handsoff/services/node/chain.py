"""Follows one application's notification log and verifies every event as it goes.

The same checks serve `node verify` (the whole log, from the start) and the node itself
(catching up incrementally before each command and query), so there is one definition
of "intact".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from eventsourcing.persistence import Notification

from handsoff.keys import BadSignature, Keyring, SigningKey, kid_hex, verify_signature
from handsoff.services.node.errors import TamperedEvent, event_ref
from handsoff.services.node.sealing import GENESIS, Seal, length_prefixed, link_of, unseal


class ChainFollower:
    """Verifies signatures, per-aggregate links and key order, notification by notification."""

    def __init__(
        self,
        app_name: str,
        keyring: Keyring,
        *,
        verify_signatures: bool = True,
        own_key: SigningKey | None = None,
    ) -> None:
        self.app_name = app_name
        self.verify_signatures = verify_signatures
        self.heads: dict[str, tuple[int, bytes]] = {}  # aggregate id -> (version, link)
        self.position = 0  # last notification id checked
        self.count = 0
        self._newest_generation = 0
        self._own_key = own_key
        self._own: tuple[bytes, SigningKey] | None = None
        self._names: dict[object, tuple[str, bytes]] = {}  # originator id -> (str, link field)
        self._topics: dict[str, bytes] = {}
        self.keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: Keyring) -> None:
        self._keyring = keyring
        # kid -> (public key, generation: 0 for the genesis key, then one per rotation)
        self._keys = {bytes.fromhex(r.kid): (r.public_key, i) for i, r in enumerate(keyring.keys)}
        self._match_own_key()

    @property
    def own_key(self) -> SigningKey | None:
        """The node's own signing key, if this process holds it: events it signed are
        checked by signing again instead of verifying (see `_check_signature`)."""
        return self._own_key

    @own_key.setter
    def own_key(self, key: SigningKey | None) -> None:
        self._own_key = key
        self._match_own_key()

    def _match_own_key(self) -> None:
        # Only a key the keyring lists under its own kid, with the same public key: then a
        # signature it makes verifies exactly where verify_signature would be asked to.
        key = self._own_key
        known = self._keys.get(key.kid) if key is not None else None
        self._own = (
            (key.kid, key) if key is not None and known and known[0] == key.public_key else None
        )

    def check(self, n: Notification) -> Seal:
        # The event's name is only built when something fails (it is on the hot path).
        def where() -> str:
            return event_ref(self.app_name, n.originator_id, n.originator_version, n.id)

        s = unseal(n.state, where)
        # The aggregate id's string and the topic's link field, made once each.
        named = self._names.get(n.originator_id)
        if named is None:
            oid = str(n.originator_id)
            named = self._names[n.originator_id] = (oid, length_prefixed(oid))
        oid, oid_field = named
        topic_field = self._topics.get(n.topic)
        if topic_field is None:
            topic_field = self._topics[n.topic] = length_prefixed(n.topic)
        link = link_of(s.prev, oid_field, n.originator_version, topic_field, s.body)
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
        # Same verdict as verify_signature, cheaper for the node's own events: Ed25519
        # signing is deterministic, so an event our key signed carries exactly the signature
        # our key makes over its link now, and that signature verifies (SigningKey.made).
        # Any other signature (a forgery, a flipped bit, a valid one made elsewhere) differs
        # and is verified in full, so what is accepted or refused, and the error, do not
        # change. One signing costs ~40% of one verification.
        own = self._own
        if own is None or own[0] != s.kid or not own[1].made(link, s.signature):
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
