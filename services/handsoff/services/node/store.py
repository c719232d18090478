"""Sealed, event-sourced applications on the eventsourcing library.

Each application stores `Recorded` events: a change (a msgspec Struct from a pinned topic
registry), who recorded it and when. The body is encrypted with the node's data key, then
sealed (signed and chained, see sealing.py). Reading verifies; writing links to the
verified head of the aggregate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol
from uuid import UUID

import msgspec
import nacl.exceptions
import nacl.secret
from eventsourcing.application import Application
from eventsourcing.persistence import (
    EventStore,
    Mapper,
    Notification,
    Recording,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import Environment

from handsoff.keys import Keyring, NodeSecrets, SigningKey
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.errors import NodeError, TamperedEvent, event_ref
from handsoff.services.node.sealing import seal, unseal

PAGE = 500


class TopicRegistry(Protocol):
    """Pinned topics: the stored names of change types, never derived from module paths."""

    def topic_of(self, change_type: type) -> str: ...
    def change_type_of(self, topic: str) -> type: ...


@dataclass(frozen=True)
class Recorded:
    """One stored change of an aggregate (satisfies eventsourcing's DomainEventProtocol)."""

    originator_id: UUID
    originator_version: int
    recorded_at: datetime
    recorded_by: str
    change: msgspec.Struct


class _Body(msgspec.Struct, frozen=True):
    recorded_at: datetime
    recorded_by: str
    change: msgspec.Raw


_BODY = msgspec.json.Decoder(_Body)


class _Unused(Transcoder):
    """The sealing mapper encodes with msgspec itself; eventsourcing still wants a transcoder."""

    def encode(self, obj: Any) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError


class SealingMapper(Mapper[UUID]):
    """Encrypts and decodes bodies; sealing itself needs the chain head (see SealedEventStore)."""

    def __init__(
        self,
        app_name: str,
        topics: TopicRegistry,
        data_key: bytes,
        keyring: Keyring,
        signer: SigningKey,
        *,
        signing: bool = True,
    ) -> None:
        super().__init__(transcoder=_Unused())
        self.app_name = app_name
        self.topics = topics
        self.box = nacl.secret.SecretBox(data_key)
        self.keyring = keyring
        self.signer = signer
        self.signing = signing
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[type, msgspec.json.Decoder[Any]] = {}
        self._by_topic: dict[str, msgspec.json.Decoder[Any]] = {}  # topic -> its decoder

    def seal_event(self, event: Recorded, prev: bytes) -> tuple[StoredEvent, bytes]:
        topic = self.topics.topic_of(type(event.change))
        plain = self._encoder.encode(
            {
                "recorded_at": event.recorded_at,
                "recorded_by": event.recorded_by,
                "change": event.change,
            }
        )
        body = bytes(self.box.encrypt(plain))
        signer = self.signer if self.signing else _NullSigner(self.signer)
        state, link = seal(signer, prev, event.originator_id, event.originator_version, topic, body)  # type: ignore[arg-type]
        return StoredEvent(event.originator_id, event.originator_version, topic, state), link

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        raise NotImplementedError("sealed events need their chain head: use SealedEventStore.put")

    def to_domain_event(self, stored_event: StoredEvent) -> Recorded:
        where = event_ref(
            self.app_name, stored_event.originator_id, stored_event.originator_version
        )
        body = unseal(stored_event.state, where).body
        return self.open_body(stored_event, body, where)

    def open_body(self, stored: StoredEvent, body: bytes, where: str) -> Recorded:
        decoded, change = self._open(stored, body, where)
        oid = (
            stored.originator_id
            if isinstance(stored.originator_id, UUID)
            else UUID(stored.originator_id)
        )
        return Recorded(
            oid, stored.originator_version, decoded.recorded_at, decoded.recorded_by, change
        )

    def open_change(self, n: Notification, body: bytes) -> Any:
        """Only the change of notification `n` (decrypted and decoded exactly as open_body
        does); the event's name is made only if something fails."""
        return self._open(
            n, body, lambda: event_ref(self.app_name, n.originator_id, n.originator_version, n.id)
        )[1]

    def _open(
        self, stored: StoredEvent, body: bytes, where: str | Callable[[], str]
    ) -> tuple[_Body, Any]:
        try:
            plain = self.box.decrypt(body)
        except nacl.exceptions.CryptoError:
            name = where if isinstance(where, str) else where()
            raise NodeError(f"{name}: cannot decrypt (is this the node's data key?)") from None
        decoder = self._by_topic.get(stored.topic)
        if decoder is None:
            decoder = self._decoder(self.topics.change_type_of(stored.topic))
            self._by_topic[stored.topic] = decoder
        decoded = _BODY.decode(plain)
        return decoded, decoder.decode(decoded.change)

    def _decoder(self, change_type: type) -> msgspec.json.Decoder[Any]:
        try:
            return self._decoders[change_type]
        except KeyError:
            d: msgspec.json.Decoder[Any] = msgspec.json.Decoder(change_type)
            self._decoders[change_type] = d
            return d


class _NullSigner:
    """Benchmark baseline only: same envelope, zero signature."""

    def __init__(self, real: SigningKey) -> None:
        self.kid = real.kid

    def sign(self, message: bytes) -> bytes:
        return bytes(64)


class SealedEventStore(EventStore[UUID]):
    """Puts events linked to their aggregate's head; gets them verified and chained."""

    mapper: SealingMapper

    def __init__(self, mapper: SealingMapper, recorder: Any, follower: ChainFollower) -> None:
        super().__init__(mapper, recorder)
        self.follower = follower

    def put(self, domain_events: Sequence[Any], **kwargs: Any) -> list[Recording[UUID]]:
        stored: list[StoredEvent] = []
        links: list[bytes] = []
        heads: dict[str, tuple[int, bytes]] = {}
        for event in domain_events:
            oid = str(event.originator_id)
            version, prev = heads.get(oid) or self.follower.head(oid)
            if event.originator_version != version + 1:
                raise NodeError(
                    f"{event_ref(self.mapper.app_name, oid, event.originator_version)}: "
                    f"chain head is version {version}; catch up before writing"
                )
            s, new_link = self.mapper.seal_event(event, prev)
            stored.append(s)
            links.append(new_link)
            heads[oid] = (event.originator_version, new_link)
        ids = self.recorder.insert_events(stored, **kwargs) or []
        # Our own writes need no re-verification, but only if nobody wrote in between:
        # otherwise the next catch_up reads (and verifies) them in log order.
        contiguous = list(ids) == list(
            range(self.follower.position + 1, self.follower.position + 1 + len(ids))
        )
        recordings = []
        for d, s, link, n_id in zip(domain_events, stored, links, ids, strict=True):
            if contiguous:
                self.follower.advance(n_id, str(s.originator_id), s.originator_version, link)
            n = Notification(s.originator_id, s.originator_version, s.topic, s.state, n_id)
            recordings.append(Recording(d, n))
        return recordings

    def get(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[Recorded]:
        """All events of one aggregate, each signature and link checked."""
        if gt or lte or desc or limit:
            raise NotImplementedError("sealed aggregates are read whole, so the chain is checked")
        follower = ChainFollower(
            self.mapper.app_name, self.mapper.keyring, verify_signatures=self.mapper.signing
        )
        for s in self.recorder.select_events(originator_id):
            n = Notification(s.originator_id, s.originator_version, s.topic, s.state, 0)
            where = event_ref(self.mapper.app_name, s.originator_id, s.originator_version)
            sealed = follower.check(n)
            yield self.mapper.open_body(s, sealed.body, where)


class SealedApplication(Application[UUID]):
    """An eventsourcing Application whose events are encrypted, signed and chained."""

    topics: ClassVar[TopicRegistry]

    def __init__(
        self, env: dict[str, str], secrets: NodeSecrets, keyring: Keyring, *, signing: bool = True
    ) -> None:
        self._secrets = secrets
        self._keyring = keyring
        self._signing = signing
        self.lock = threading.RLock()  # one writer per process; SQLite serialises anyway
        self.follower = ChainFollower(self.name, keyring, verify_signatures=signing)
        super().__init__(env)

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Only the node's own configuration: a stray variable must not redirect the store.
        return Environment(name, dict(env or {}))

    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(
            self.name,
            self.topics,
            self._secrets.data_key,
            self._keyring,
            self._secrets.signing_key(),
            signing=self._signing,
        )

    def construct_event_store(self) -> SealedEventStore:
        assert isinstance(self.mapper, SealingMapper)
        return SealedEventStore(self.mapper, self.recorder, self.follower)

    @property
    def sealed_events(self) -> SealedEventStore:
        assert isinstance(self.events, SealedEventStore)
        return self.events

    @property
    def sealing(self) -> SealingMapper:
        assert isinstance(self.mapper, SealingMapper)
        return self.mapper

    def use_keys(self, keyring: Keyring, signer: SigningKey) -> None:
        """After a rotation: sign with the new key, verify with the whole ring."""
        with self.lock:
            self._keyring = keyring
            self.sealing.keyring = keyring
            self.sealing.signer = signer
            self.follower.keyring = keyring

    def catch_up(self, on_event: Callable[[Recorded], None] | None = None) -> int:
        """Verifies (and hands on) every event recorded since the last call, by anyone."""
        seen = 0
        with self.lock:
            while True:
                page = self.recorder.select_notifications(
                    start=self.follower.position, limit=PAGE, inclusive_of_start=False
                )
                if not page:
                    return seen
                for n in page:
                    sealed = self.follower.check(n)
                    if on_event is not None:
                        where = event_ref(self.name, n.originator_id, n.originator_version, n.id)
                        on_event(self.sealing.open_body(n, sealed.body, where))
                    seen += 1

    def record(self, events: Sequence[Recorded]) -> list[Recording[UUID]]:
        with self.lock:
            return self.save(*events)


__all__ = ["Recorded", "SealedApplication", "TamperedEvent", "TopicRegistry"]
