"""The node's administrative log: who may use the API, and the node's key history.

Users and key rotations are events too, sealed like case events, so adding a user or
rotating a key leaves a signed trace an auditor can check.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID, uuid5

import msgspec
from eventsourcing.persistence import IntegrityError

from handsoff.federation.relay import NumberGap
from handsoff.services.node.errors import NodeError
from handsoff.services.node.store import Recorded, SealedApplication

UTCDateTime = Annotated[datetime, msgspec.Meta(tz=True)]
UserName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
_NAMESPACE = UUID("6c1f3a52-27a4-4d0e-9a57-0f4f2b7d8e11")  # pinned: ids below derive from it
TOKEN_PREFIX = "hx_"  # noqa: S105 (a prefix, not a secret)


class Role(StrEnum):
    PARALEGAL = "paralegal"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    ADMIN = "admin"


class NodeInitialised(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag="node_initialised/1",
):
    partner: str
    country: str
    genesis_kid: str
    genesis_public_key: bytes
    initialised_at: UTCDateTime


class NodeKeyRotated(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag="node_key_rotated/1",
):
    old_kid: str
    new_kid: str
    new_public_key: bytes
    rotated_at: UTCDateTime
    endorsement: bytes  # the old key's signature over the rotation statement


class UserAdded(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="user_added/1"
):
    name: UserName
    role: Role
    token_hash: str
    added_at: UTCDateTime


class UserRevoked(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="user_revoked/1"
):
    name: UserName
    revoked_at: UTCDateTime


class RelaySharingResumed(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag="relay_sharing_resumed/1",
):
    """After a restore from a backup: the region's stream holds this partner's messages
    `first_lost..last_lost` for events the log lost; messages made from case-log
    notifications after `after_notification` are numbered past them (relay.NumberGap).
    `stream_seq`: the stream's last message of this partner when sharing resumed."""

    after_notification: Annotated[int, msgspec.Meta(ge=0)]
    first_lost: Annotated[int, msgspec.Meta(ge=1)]
    last_lost: Annotated[int, msgspec.Meta(ge=1)]
    stream_seq: Annotated[int, msgspec.Meta(ge=1)]
    resumed_at: UTCDateTime


ADMIN_TOPICS: dict[str, type[msgspec.Struct]] = {
    "handsoff.admin:node_initialised/1": NodeInitialised,
    "handsoff.admin:node_key_rotated/1": NodeKeyRotated,
    "handsoff.admin:user_added/1": UserAdded,
    "handsoff.admin:user_revoked/1": UserRevoked,
    "handsoff.admin:relay_sharing_resumed/1": RelaySharingResumed,
}


class AdminTopics:
    _by_type = {t: topic for topic, t in ADMIN_TOPICS.items()}

    def topic_of(self, change_type: type) -> str:
        try:
            return self._by_type[change_type]
        except KeyError:
            raise NodeError(f"{change_type.__name__} is not an admin event type") from None

    def change_type_of(self, topic: str) -> type:
        try:
            return ADMIN_TOPICS[topic]
        except KeyError:
            raise NodeError(f"unknown admin event topic {topic!r}") from None


class User(msgspec.Struct, frozen=True):
    name: str
    role: Role
    added_at: datetime
    active: bool = True


class UserExists(NodeError):
    pass


class UnknownUser(NodeError):
    pass


class InvalidUser(NodeError):
    pass


def _validated(change: UserAdded) -> UserAdded:
    """msgspec constructors do not validate; a round trip through the schema does."""
    try:
        return msgspec.json.decode(msgspec.json.encode(change), type=UserAdded)
    except msgspec.ValidationError as e:
        raise InvalidUser(f"invalid user: {e}") from None


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast keyed-purpose hash is enough (no KDF per request).
    return hashlib.blake2b(token.encode(), digest_size=32, person=b"hx-api-token-v1").hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def user_aggregate_id(name: str) -> UUID:
    return uuid5(_NAMESPACE, f"user:{name}")


KEYS_AGGREGATE_ID = uuid5(_NAMESPACE, "node-keys")
RELAY_AGGREGATE_ID = uuid5(_NAMESPACE, "relay")


class AdminLog(SealedApplication):
    """Users and key history, rebuilt in memory from the log and kept current by catch_up."""

    name = "admin"
    topics = AdminTopics()

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.users: dict[str, User] = {}
        self._resumptions: list[RelaySharingResumed] = []
        self._by_token: dict[str, str] = {}
        self._versions: dict[UUID, int] = {}
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def refresh(self) -> None:
        self.catch_up(self._apply)

    def _apply(self, rec: Recorded) -> None:
        self._versions[rec.originator_id] = rec.originator_version
        change = rec.change
        if isinstance(change, UserAdded):
            self.users[change.name] = User(change.name, change.role, change.added_at)
            self._by_token[change.token_hash] = change.name
        elif isinstance(change, UserRevoked):
            self.users[change.name] = msgspec.structs.replace(self.users[change.name], active=False)
        elif isinstance(change, RelaySharingResumed):
            self._resumptions.append(change)

    def resumptions(self) -> list[RelaySharingResumed]:
        """Every resumption of sharing after a restore, in order (node/resume.py)."""
        with self.lock:
            self.refresh()
            return list(self._resumptions)

    def number_gaps(self) -> list[NumberGap]:
        """The relay's message-number gaps, one per resumption, in order."""
        return [
            NumberGap(r.after_notification, r.first_lost, r.last_lost) for r in self.resumptions()
        ]

    def _write(self, aggregate_id: UUID, change: msgspec.Struct, by: str) -> None:
        with self.lock:
            self.refresh()
            version = self._versions.get(aggregate_id, 0) + 1
            rec = Recorded(aggregate_id, version, datetime.now(UTC), by, change)
            recordings = self.record([rec])
            if recordings and recordings[-1].notification.id == self.follower.position:
                self._apply(rec)
            else:
                self.refresh()

    def initialise(self, change: NodeInitialised) -> None:
        self._write(KEYS_AGGREGATE_ID, change, "handsoff node init")

    def key_rotated(self, change: NodeKeyRotated, by: str) -> None:
        self._write(KEYS_AGGREGATE_ID, change, by)

    def sharing_resumed(self, change: RelaySharingResumed, by: str) -> None:
        self._write(RELAY_AGGREGATE_ID, change, by)

    def add_user(self, name: str, role: Role, by: str) -> str:
        """Adds a user and returns their token; only its hash is stored."""
        with self.lock:
            self.refresh()
            if name in self.users:
                raise UserExists(f"user {name!r} already exists")
            token = new_token()
            change = _validated(UserAdded(name, role, hash_token(token), datetime.now(UTC)))
            try:
                self._write(user_aggregate_id(name), change, by)
            except IntegrityError:
                raise UserExists(f"user {name!r} already exists") from None
            return token

    def revoke_user(self, name: str, by: str) -> None:
        with self.lock:
            self.refresh()
            user = self.users.get(name)
            if user is None:
                raise UnknownUser(f"no user named {name!r}")
            if not user.active:
                raise UnknownUser(f"user {name!r} is already revoked")
            self._write(user_aggregate_id(name), UserRevoked(name, datetime.now(UTC)), by)

    def authenticate(self, token: str) -> User | None:
        with self.lock:
            self.refresh()  # users may be added or revoked by the CLI while serving
            name = self._by_token.get(hash_token(token))
            user = self.users.get(name) if name else None
            if user is not None and user.active:
                return user
            return None
