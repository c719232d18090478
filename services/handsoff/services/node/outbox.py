"""The node's side of the relay: its case log as a verified change source, and the
relay's position kept with eventsourcing's tracking recorder (SQLite file or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.utils import Environment

from handsoff.federation.relay import Change, Position
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.errors import event_ref
from handsoff.services.node.store import SealedApplication

# Tracking names "<prefix>-notification" and "<prefix>-stream-seq" are a stored format:
# prefixes "relay", "referrals-out" and "replies-out" are pinned by their users.


class LogSource:
    """Verified, decrypted changes of one sealed log in order, with a chain follower of its own."""

    def __init__(self, cases: SealedApplication) -> None:
        self.cases = cases
        self._follower = ChainFollower(cases.name, cases.sealing.keyring)

    def changes_after(self, notification_id: int, limit: int) -> Sequence[Change]:
        if notification_id < self._follower.position:  # re-reading: verify from the start
            self._follower = ChainFollower(self.cases.name, self.cases.sealing.keyring)
        self._follower.keyring = self.cases.sealing.keyring  # rotations
        while self._follower.position < notification_id:
            self._read(
                self._follower.position, min(notification_id - self._follower.position, 1000)
            )
        return self._read(notification_id, limit)

    def _read(self, after: int, limit: int) -> list[Change]:
        out = []
        for n in self.cases.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        ):
            sealed = self._follower.check(n)
            where = event_ref(self.cases.name, n.originator_id, n.originator_version, n.id)
            rec = self.cases.sealing.open_body(n, sealed.body, where)
            out.append(Change(n.id, rec.originator_id, rec.change))
        return out


class TrackedPosition:
    """Notification id first, then stream sequence: a crash between the two writes leaves
    an older stream sequence, which only widens the next read-back, never loses a message."""

    def __init__(self, env: dict[str, str], prefix: str = "relay") -> None:
        factory = InfrastructureFactory.construct(Environment("relay", env))
        self.recorder: TrackingRecorder = factory.tracking_recorder()
        self._names = (f"{prefix}-notification", f"{prefix}-stream-seq")

    def load(self) -> Position:
        notifications, stream_seq = self._names
        return Position(
            self.recorder.max_tracking_id(notifications) or 0,
            self.recorder.max_tracking_id(stream_seq) or 0,
        )

    def save(self, position: Position) -> None:
        current = self.load()
        notifications, stream_seq = self._names
        if position.notification_id > current.notification_id:
            self.recorder.insert_tracking(Tracking(notifications, position.notification_id))
        if position.stream_seq > current.stream_seq:
            self.recorder.insert_tracking(Tracking(stream_seq, position.stream_seq))

    def close(self) -> None:
        datastore = getattr(self.recorder, "datastore", None)
        if datastore is not None:
            datastore.close()
