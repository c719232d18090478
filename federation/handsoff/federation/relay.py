"""The relay (outbox): follows the node's log, shares what may leave, exactly once.

For each batch of notifications it computes the shared messages (share policy), signs
them, publishes them asynchronously to JetStream with deterministic `Nats-Msg-Id`s, waits
for every PubAck, and only then commits its position: the notification id and the stream
sequence of the last acknowledged message.

Exactly once, even beyond the stream's duplicate window: after any failure (and at start)
the relay reads back its own messages stored after the last committed stream sequence and
publishes only those that are missing. A publish that timed out but was stored (nats-py
flushes its buffer after a reconnect) is found there and not sent again.

What it reads back must be exactly what it is about to send: the same message ids with the
same payloads. Anything else (a node restored from a backup, whose numbers the region
already holds for events this log no longer has; a second node relaying as the same
partner) would make it drop new events as "already stored" or contradict published ones,
so the relay stops sharing (RelayBlocked) and says why; the node goes on recording.

After a restore the operator resumes sharing (`handsoff node resume-sharing`,
services/node/resume.py): the numbers the stream holds for events the log lost are a
`NumberGap`, recorded in the node's signed admin log, and every message made from a
notification after it is numbered past it, so no number is ever used for two payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from uuid import UUID

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from handsoff.federation import subjects
from handsoff.federation.envelope import MSG_ID, REGION_VERSION, message_id, seal_headers
from handsoff.federation.errors import FederationError
from handsoff.federation.policy import SharePolicy
from handsoff.federation.readback import pages_after
from handsoff.federation.shared import kind_of
from handsoff.keys import SigningKey

log = logging.getLogger("handsoff.relay")


_WHY = (
    "restored from a backup (then stop the node and run `handsoff node resume-sharing`), "
    "or another node relaying as this partner?"
)


class RelayBlocked(FederationError):
    """The region's stream holds messages of this partner that this node's log does not
    make: sharing stops until someone looks (docs/operations.md, restoring a node)."""


class Change(NamedTuple):
    """One verified, decrypted change of the node's case log."""

    notification_id: int
    case_id: UUID
    change: Any


class Position(NamedTuple):
    notification_id: int  # every message made from notifications up to here is acknowledged
    stream_seq: int  # stream sequence of the last acknowledged message (0: none yet)


class NumberGap(NamedTuple):
    """Message numbers `first_lost..last_lost` are in the region's stream for events this
    node's log no longer has (lost with a restore); messages made from notifications after
    `after_notification` are numbered past them."""

    after_notification: int
    first_lost: int
    last_lost: int

    @property
    def size(self) -> int:
        return self.last_lost - self.first_lost + 1


class Numbering:
    """Message numbers as the relay gives them: a count of the shared messages made, in log
    order, pushed past every gap before the notification they are made from. The relay,
    `audit node` and `node resume-sharing` number with it, so they always agree."""

    __slots__ = ("count", "gaps")

    def __init__(self, gaps: Sequence[NumberGap] = ()) -> None:
        self.count = 0  # shared messages made so far
        self.gaps = tuple(gaps)

    def numbers(self, notification_id: int, made: int) -> range:
        """The numbers of the `made` messages made from this notification (counted)."""
        first = self.count + 1
        if self.gaps:
            first += sum(g.size for g in self.gaps if notification_id > g.after_notification)
        self.count += made
        return range(first, first + made)


class ChangeSource(Protocol):
    def changes_after(self, notification_id: int, limit: int) -> Sequence[Change]: ...


class PositionStore(Protocol):
    def load(self) -> Position: ...
    def save(self, position: Position) -> None: ...


class Outgoing(NamedTuple):
    notification_id: int
    subject: str
    msg_id: str
    payload: bytes
    headers: dict[str, str]


@dataclass
class RelayStatus:
    connected: bool = False
    position: int = 0
    head: int = 0  # newest notification id seen in the log
    published: int = 0
    pending: int = 0
    last_error: str | None = None
    last_success: float | None = None
    blocked: str | None = None  # why sharing stopped (RelayBlocked), until a restart

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


@dataclass
class RelaySettings:
    region: str
    partner: str
    batch: int = 256
    ack_timeout: float = 5.0
    idle_wait: float = 0.2
    # Publish on a schedule, not the moment a change is made: JetStream stamps each message
    # with its arrival time, which would otherwise date every step of a case to the second.
    interval: float = 0.0
    retry_wait: tuple[float, float] = (0.25, 5.0)
    region_version: Callable[[], int] = field(default=lambda: 1)


class Relay:
    def __init__(
        self,
        settings: RelaySettings,
        signer: Callable[[], SigningKey],
        policy: SharePolicy,
        source: ChangeSource,
        store: PositionStore,
        gaps: Sequence[NumberGap] = (),
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.policy = policy
        self.source = source
        self.store = store
        self.status = RelayStatus()
        self._position = store.load()
        self._replayed = False
        self._numbering = Numbering(gaps)  # of the messages made so far
        # Fault-injection point for crash tests: runs after the PubAcks, before the commit.
        self.after_publish: Callable[[], None] | None = None
        # Run once the connection is back after a failure (and at start), before anything is
        # sent again: the node takes the region version announced meanwhile, and what was
        # built but not sent is sealed again under it (services/node/link.py).
        self.before_resending: Callable[[JetStreamContext], Awaitable[object]] | None = None
        self._connected: Callable[[], bool] | None = None

    def replay_policy(self) -> None:
        """Brings the share policy (and the message count) to the committed position: the
        messages made from notifications up to there were sent and acknowledged."""
        cursor, end = 0, self._position.notification_id
        while cursor < end:
            page = [c for c in self.source.changes_after(cursor, 1000) if c.notification_id <= end]
            if not page:
                break
            for c in page:
                self._numbering.numbers(
                    c.notification_id, len(self.policy.process(c.case_id, c.change))
                )
            cursor = page[-1].notification_id
        self.status.position = self._position.notification_id
        self._replayed = True

    def next_batch(self, after: int | None = None) -> tuple[list[Outgoing], int]:
        """Messages made from the notifications after `after` (default: the committed
        position), and the last notification they cover."""
        after = self._position.notification_id if after is None else after
        page = self.source.changes_after(after, self.settings.batch)
        if not page:
            return [], after
        s = self.settings
        signer = self.signer()
        version = s.region_version()  # read once per batch, like the signer
        subject_of: dict[type, str] = {}
        process = self.policy.process_encoded
        out: list[Outgoing] = []
        for c in page:
            made = process(c.case_id, c.change)
            numbers = self._numbering.numbers(c.notification_id, len(made))
            for number, (shared, payload) in zip(numbers, made, strict=True):
                subject = subject_of.get(type(shared))
                if subject is None:
                    kind = kind_of(type(shared))
                    subject = subject_of[type(shared)] = subjects.events(s.region, s.partner, kind)
                msg_id = message_id(s.partner, number)
                headers = seal_headers(signer, subject, msg_id, payload, version)
                out.append(Outgoing(c.notification_id, subject, msg_id, payload, headers))
        self.status.head = max(self.status.head, page[-1].notification_id)
        return out, page[-1].notification_id

    async def run(
        self,
        js: JetStreamContext,
        stop: asyncio.Event,
        connected: Callable[[], bool] | None = None,
    ) -> None:
        """Relays until `stop` is set; survives NATS outages (retries, reconciles).

        Batches are built in order (the share policy is a fold) and published one at a
        time; the next batch is built in a worker thread while the current one's PubAcks
        come back. Only the batch being published can be partly stored, so only it is
        reconciled after a failure. With `connected` (the client's state), nothing is
        published while the client is reconnecting: nats-py would buffer it and send it
        after the reconnection, sealed as it was before the outage.
        """
        if not self._replayed:
            await asyncio.to_thread(self.replay_policy)
        self._connected = connected
        built: deque[tuple[list[Outgoing], int]] = deque()
        reconcile = True
        found_seq = 0  # the last stream seq of the batch's messages found already stored
        wait = self.settings.retry_wait[0]
        while not stop.is_set():
            if not built:
                batch = await asyncio.to_thread(self.next_batch)
                if batch[1] == self._position.notification_id:  # caught up
                    await _sleep_or_stop(stop, max(self.settings.idle_wait, self.settings.interval))
                    continue
                built.append(batch)
            pending, upto = built[0]
            self.status.pending = sum(len(b[0]) for b in built)
            prefetch = None
            try:
                if reconcile:
                    found_seq = await self._reconcile(js, built)
                    pending = built[0][0]
                    reconcile = False
                if len(built) == 1:
                    prefetch = asyncio.create_task(asyncio.to_thread(self.next_batch, upto))
                last_seq = await self._publish(js, pending)
            except RelayBlocked as e:
                self.status.blocked = self.status.last_error = f"blocked: {e}"
                log.error("relay: sharing stopped: %s", e)
                await stop.wait()  # recording goes on; nothing is shared until a restart
                return
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError) as e:
                wait = await self._failed(e, stop, wait)
                reconcile = True
                continue
            finally:
                if prefetch is not None:
                    following = await prefetch
                    if following[1] > upto:
                        built.append(following)
            wait = self.settings.retry_wait[0]
            if self.after_publish is not None:
                self.after_publish()
            self._commit(Position(upto, max(last_seq, found_seq, self._position.stream_seq)))
            found_seq = 0
            self.status.published += len(pending)
            built.popleft()

    async def _reconcile(
        self, js: JetStreamContext, built: deque[tuple[list[Outgoing], int]]
    ) -> int:
        """Drops from the first batch what the stream holds already (returning the last
        stream seq of those), then, with `before_resending`, seals again what is left under
        the region version taken meanwhile."""
        self._online()
        pending, upto = built[0]
        pending, found_seq = await self._without_stored(js, pending)
        built[0] = (pending, upto)
        if self.before_resending is not None:
            await self.before_resending(js)
            self._reseal(built)
        return found_seq

    def _reseal(self, built: deque[tuple[list[Outgoing], int]]) -> None:
        """Seals again, under the region version now held, what was built under another one
        and not sent (the same message ids and payloads: only the headers change)."""
        version, signer = self.settings.region_version(), self.signer()
        mark = str(version)
        for i, (batch, upto) in enumerate(built):
            if all(m.headers[REGION_VERSION] == mark for m in batch):
                continue
            built[i] = (
                [
                    m._replace(
                        headers=seal_headers(signer, m.subject, m.msg_id, m.payload, version)
                    )
                    for m in batch
                ],
                upto,
            )
            log.info(
                "relay: %d message(s) sealed again under region version %d", len(batch), version
            )

    async def _failed(self, e: Exception, stop: asyncio.Event, wait: float) -> float:
        """Notes a failed publish, waits, and returns the next wait (doubling)."""
        self.status.connected = False
        self.status.last_error = f"{type(e).__name__}: {e}"
        log.warning("relay: publish failed (%s); retrying in %.2f s", type(e).__name__, wait)
        await _sleep_or_stop(stop, wait)
        return min(wait * 2, self.settings.retry_wait[1])

    def _commit(self, position: Position) -> None:
        self.store.save(position)
        self._position = position
        self.status.position = position.notification_id
        self.status.pending = 0
        self.status.connected = True
        self.status.last_error = None
        self.status.last_success = time.time()

    def _online(self) -> None:
        if self._connected is not None and not self._connected():
            raise ConnectionError("not connected to NATS")

    async def _publish(self, js: JetStreamContext, batch: list[Outgoing]) -> int:
        self._online()
        futures = [
            await js.publish_async(m.subject, m.payload, headers=dict(m.headers)) for m in batch
        ]
        try:
            acks = await asyncio.wait_for(
                asyncio.gather(*futures), timeout=self.settings.ack_timeout + len(batch) / 1000
            )
        except BaseException:
            for f in futures:
                f.cancel()  # frees nats-py's in-flight slots
            raise
        return max((a.seq for a in acks), default=0)

    async def _without_stored(
        self, js: JetStreamContext, batch: list[Outgoing]
    ) -> tuple[list[Outgoing], int]:
        """The messages of `batch` the stream does not hold yet, and the last stream seq of
        those it does; RelayBlocked if the stream holds any other message of this partner
        after the committed position."""
        if not batch:
            return batch, 0
        stored = await stored_payloads(
            js, self.settings.region, self.settings.partner, self._position.stream_seq
        )
        made = {m.msg_id: payload_digest(m.payload) for m in batch}
        for msg_id in sorted(stored):
            if msg_id not in made:
                raise RelayBlocked(
                    f"the region's stream holds {msg_id}, which this node's log does not make "
                    f"next (it makes {batch[0].msg_id} to {batch[-1].msg_id}): {_WHY}"
                )
            if stored[msg_id][0] != made[msg_id]:
                raise RelayBlocked(
                    f"the region's stream holds {msg_id} with another payload than this node's "
                    f"log makes under that number: {_WHY}"
                )
        if stored:
            log.info(
                "relay: %d message(s) were already stored; not sending them again", len(stored)
            )
        return [m for m in batch if m.msg_id not in stored], max(
            (seq for _, seq in stored.values()), default=0
        )


def payload_digest(payload: bytes) -> bytes:
    """What reconciling compares of a payload (stored_payloads gives the stream's)."""
    return hashlib.blake2b(payload, digest_size=16).digest()


async def stored_payloads(
    js: JetStreamContext, region: str, partner: str, after_seq: int, timeout: float = 5.0
) -> dict[str, tuple[bytes, int]]:
    """Msg id -> (payload digest, stream seq) of this partner's messages stored after
    stream sequence `after_seq` (the first copy of each)."""
    ids: dict[str, tuple[bytes, int]] = {}
    pages = pages_after(
        js,
        subjects.events_stream(region),
        subjects.relay_consumer(partner),
        subjects.events_of(region, partner),
        after_seq,
        timeout=timeout,
    )
    async with contextlib.aclosing(pages):
        async for msgs in pages:
            for m in msgs:
                if m.headers and MSG_ID in m.headers:
                    ids.setdefault(
                        m.headers[MSG_ID], (payload_digest(m.data), m.metadata.sequence.stream)
                    )
    return ids


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
