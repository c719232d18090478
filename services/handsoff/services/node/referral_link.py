"""Referrals between partners, beside the relay: out (packages), back (replies) and in.

- Packages: a ReferralMade to a partner of the region becomes a sealed package for that
  partner's node, carrying only the details the survivor agreed to share with it.
- Replies: accepting, declining or completing an inbound referral sends the answer back,
  sealed for the sender, which records it on its case.
- Inbox: this partner's durable consumer; every message is verified, opened and recorded
  before it is acknowledged. Both kinds are idempotent, so delivery at least once is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from handsoff.events import (
    CaseRuleViolation,
    CaseState,
    IncidentReported,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralDeclineReason,
    ReferralMade,
    ReferralOutcome,
    apply,
)
from handsoff.events.inbound import (
    InboundReferralAccepted,
    InboundReferralCompleted,
    InboundReferralDeclined,
    ReferralReceived,
)
from handsoff.federation import subjects
from handsoff.federation.envelope import message_id
from handsoff.federation.errors import EnvelopeRejected, RegionError
from handsoff.federation.referrals import (
    ReferralMessage,
    ReferralPackage,
    ReferralReply,
    ReferralUnreadable,
    ReplyTokens,
    open_referral,
    package_for,
    sealed_message,
)
from handsoff.federation.region import RegionDocument
from handsoff.federation.relay import Change, Position
from handsoff.services.node.errors import NodeError
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource, TrackedPosition
from handsoff.services.node.persistence import store_env

log = logging.getLogger("handsoff.referrals")
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


class ReferralLink:
    def __init__(self, node: Node, region: RegionDocument) -> None:
        self.node = node
        self.region = region
        env = store_env(node.config, node.paths.data, "relay")
        self.out_position = TrackedPosition(env, "referrals-out")
        self.reply_position = TrackedPosition(env, "replies-out")
        self.tokens = ReplyTokens(node.data_key)
        self._cases: dict[UUID, CaseState] = {}
        self._incidents: dict[UUID, IncidentReported] = {}
        self.sent = 0
        self.received = 0
        self.rejected: dict[str, int] = {}

    # -- out --------------------------------------------------------------------------

    def _number(self, lane: bytes, notification_id: int) -> int:
        """A message number that is deterministic but says nothing about the log."""
        h = hashlib.blake2b(
            lane + notification_id.to_bytes(8, "big"),
            key=self.node.pseudonym_key,
            digest_size=6,
            person=b"hx-referral-id1",
        )
        return int.from_bytes(h.digest(), "big") + 1

    def pending_packages(self, source: LogSource, after: int) -> list[tuple[int, str, Any]]:
        """(notification id, receiver, package) for referrals to partners after `after`."""
        out: list[tuple[int, str, Any]] = []
        for c in source.changes_after(after, 200):
            state = self._follow(c)
            if isinstance(c.change, ReferralMade) and c.change.to_partner and state is not None:
                token = self.tokens.make(c.case_id.bytes, c.change.referral_id)
                package = package_for(self._incidents[c.case_id], c.change, state, token)
                out.append((c.notification_id, c.change.to_partner, package))
            else:
                out.append((c.notification_id, "", None))
        return out

    def _follow(self, c: Change) -> CaseState | None:
        """Folds one case change in; returns the case's state before it."""
        state = self._cases.get(c.case_id)
        if isinstance(c.change, IncidentReported):
            self._incidents[c.case_id] = c.change
        self._cases[c.case_id] = apply(state, c.case_id, c.change)
        return state

    def pending_replies(self, source: LogSource, after: int) -> list[tuple[int, str, Any]]:
        """(notification id, sender to answer, reply) for answers given after `after`."""
        out: list[tuple[int, str, Any]] = []
        self.node.inbound.refresh()
        for c in source.changes_after(after, 200):
            state = self.node.inbound.states.get(c.case_id)
            reply = _reply_for(c.change, state.reply_token) if state is not None else None
            out.append((c.notification_id, state.from_partner if reply and state else "", reply))
        return out

    async def send_loop(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        await self._replay_cases()
        packages = LogSource(self.node.cases)
        replies = LogSource(self.node.inbound)
        while not stop.is_set():
            moved = await self._send(
                js, packages, self.out_position, self.pending_packages, b"package"
            )
            moved += await self._send(
                js, replies, self.reply_position, self.pending_replies, b"reply"
            )
            if not moved:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.2)

    async def _replay_cases(self) -> None:
        """Case states up to the committed position, so packages carry the right consent."""
        end = self.out_position.load().notification_id
        source = LogSource(self.node.cases)
        cursor = 0
        while cursor < end:
            page = [
                c
                for c in await asyncio.to_thread(source.changes_after, cursor, 1000)
                if c.notification_id <= end
            ]
            if not page:
                break
            for c in page:
                self._follow(c)
            cursor = page[-1].notification_id

    async def _send(
        self,
        js: JetStreamContext,
        source: LogSource,
        store: TrackedPosition,
        pending: Any,
        lane: bytes,
    ) -> int:
        position = store.load()
        batch = await asyncio.to_thread(pending, source, position.notification_id)
        for notification_id, receiver, message in batch:
            if message is not None:
                await self._publish(js, lane, notification_id, receiver, message)
            store.save(Position(notification_id, 0))
        return len(batch)

    async def _publish(
        self,
        js: JetStreamContext,
        lane: bytes,
        notification_id: int,
        receiver: str,
        message: ReferralMessage,
    ) -> None:
        me = self.node.config.partner
        try:
            receiver_key = self.region.current_key(receiver, datetime.now(UTC))
        except RegionError as e:
            log.error("referral to %s not sent: %s", receiver, e)
            return
        subject = subjects.referral(self.region.region, me, receiver)
        msg_id = message_id(me, self._number(lane, notification_id))
        payload, headers = sealed_message(
            self.node.signer, subject, msg_id, message, receiver_key, self.region.version
        )
        wait = 0.25
        while True:  # at least once: the receiver and the sender both deduplicate
            try:
                await js.publish(subject, payload, headers=headers, timeout=5)
                self.sent += 1
                return
            except NATS_ERRORS as e:
                log.warning("referral send failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)

    # -- in ---------------------------------------------------------------------------

    async def receive_loop(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        me = self.node.config.partner
        sub = None
        while not stop.is_set():
            try:
                if sub is None:
                    sub = await js.pull_subscribe(
                        subjects.referrals_to(self.region.region, me),
                        durable=subjects.referrals_consumer(me),
                        stream=subjects.referrals_stream(self.region.region),
                    )
                msgs = await sub.fetch(16, timeout=1)
            except (nats.errors.TimeoutError, TimeoutError):  # nothing to fetch: normal
                continue
            except NATS_ERRORS as e:
                log.warning("referral inbox: %s", type(e).__name__)
                sub = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1)
                continue
            for m in msgs:
                await self._handle(m)

    async def _handle(self, m: Any) -> None:
        try:
            opened = open_referral(
                self.region, self.node.signer, m.subject, m.headers, m.data, m.metadata.timestamp
            )
        except EnvelopeRejected as e:
            self.rejected[e.reason] = self.rejected.get(e.reason, 0) + 1
            log.warning("referral rejected: %s", e.reason)
            await m.term()
            return
        await asyncio.to_thread(self._record, opened.partner, opened.msg_id, opened.event)
        await m.ack_sync()
        self.received += 1

    def _record(self, sender: str, msg_id: str, message: ReferralMessage) -> None:
        if isinstance(message, ReferralPackage):
            self.node.inbound.receive(
                ReferralReceived(
                    from_partner=sender,
                    message_id=msg_id,
                    reply_token=message.reply_token,
                    service=message.service,
                    made_at=message.made_at,
                    received_at=datetime.now(UTC),
                    survivor_name=message.survivor_name,
                    survivor_contact=message.survivor_contact,
                    violence_types=message.violence_types,
                    occurred_at=message.occurred_at,
                    district=message.district,
                    narrative=message.narrative,
                    note=message.note,
                )
            )
            return
        self._record_reply(sender, message)

    def _record_reply(self, sender: str, reply: ReferralReply) -> None:
        try:
            case_bytes, referral_id = self.tokens.open(reply.reply_token)
        except ReferralUnreadable:
            log.warning("referral reply from %s with a foreign token; ignored", sender)
            return
        case_id = UUID(bytes=case_bytes)
        change: Any
        if reply.status == "accepted":
            change = ReferralAccepted(referral_id=referral_id, accepted_at=reply.at)
        elif reply.status == "declined":
            change = ReferralDeclined(
                referral_id=referral_id,
                declined_at=reply.at,
                reason=reply.decline_reason or ReferralDeclineReason.OTHER,
            )
        else:
            change = ReferralCompleted(
                referral_id=referral_id,
                completed_at=reply.at,
                outcome=reply.outcome or ReferralOutcome.NOT_RECEIVED,
            )
        cases = self.node.cases
        try:
            with cases.lock:
                cases.refresh()
                version = cases.state(case_id).version
                cases.record_change(case_id, version, change, f"partner {sender}")
        except (CaseRuleViolation, NodeError) as e:  # e.g. a redelivered reply
            log.info("referral reply from %s not recorded: %s", sender, type(e).__name__)

    def close(self) -> None:
        self.out_position.close()
        self.reply_position.close()


def _reply_for(change: Any, token: bytes) -> ReferralReply | None:
    if isinstance(change, InboundReferralAccepted):
        return ReferralReply(reply_token=token, status="accepted", at=change.accepted_at)
    if isinstance(change, InboundReferralDeclined):
        return ReferralReply(
            reply_token=token,
            status="declined",
            at=change.declined_at,
            decline_reason=change.reason,
        )
    if isinstance(change, InboundReferralCompleted):
        return ReferralReply(
            reply_token=token, status="completed", at=change.completed_at, outcome=change.outcome
        )
    return None
