"""Resuming sharing after a node was restored from a backup (`handsoff node resume-sharing`).

A restored log has lost the events recorded after the backup, but the region's stream keeps
what the relay shared of them, numbered `<partner>:K+1..M`. The restored log numbers its next
shared messages K+1, ... again; the relay finds those numbers taken with other payloads and
stops (RelayBlocked) rather than lose or contradict anything. With the node stopped:

1. read back every message of this partner in the stream (number -> payload digest, seq);
2. replay the case log through the share policy, numbering as the relay does (gaps of earlier
   resumptions included), up to the first notification whose messages the stream holds with
   other payloads (the first event recorded after the restore) or the log's end: R. Every
   number made up to R must be in the stream with the same payload, or this is not this
   node's history (another node relaying as this partner?) and nothing is changed; and the
   stream must hold numbers past them (K < M), or there is nothing to resume;
3. record RelaySharingResumed(R, K+1, M, the stream's last seq of this partner) in the
   signed admin log, then move the relay's position to (R, that seq).

From then on the relay numbers what it makes from notifications after R past M; `audit
node` numbers the same way and reports K+1..M as lost with the restore. A crash between the
two writes of step 3: running it again finds the resumption recorded and only moves the
position (never a second gap for the same loss).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from handsoff.federation.envelope import message_id, parse_message_id
from handsoff.federation.errors import FederationError
from handsoff.federation.policy import SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.relay import Numbering, Position, payload_digest, stored_payloads
from handsoff.services.node.admin import RelaySharingResumed
from handsoff.services.node.errors import NodeError
from handsoff.services.node.link import (
    RegionUnreachable,
    connect_once,
    held_region,
    relay_position,
)
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource

PAGE = 1000


class ResumeRefused(NodeError):
    """Sharing cannot be resumed this way; nothing was changed."""


def plan(node: Node, stored: Mapping[int, tuple[bytes, int]]) -> RelaySharingResumed:
    """The resumption for this log and the stream's messages of this partner (number ->
    (payload digest, stream seq)); ResumeRefused if there is none to make."""
    partner = node.config.partner
    if not stored:
        raise ResumeRefused(f"the region's stream holds no message of {partner}: nothing to resume")
    policy = SharePolicy(partner, Pseudonymiser(node.pseudonym_key))
    numbering = Numbering(node.admin.number_gaps())
    source = LogSource(node.cases)
    highest = max(stored)
    upto = made_upto = cursor = 0
    while page := source.changes_after(cursor, PAGE):
        for c in page:
            cursor = c.notification_id
            try:
                made = policy.process_encoded(c.case_id, c.change)
            except FederationError as e:
                raise ResumeRefused(f"case event {c.notification_id}: {e}") from None
            numbers = numbering.numbers(cursor, len(made))
            held = [stored.get(n) for n in numbers]
            pairs = zip(held, made, strict=True)
            if any(h is not None and h[0] != payload_digest(p) for h, (_, p) in pairs):
                return _resumption(partner, stored, upto, made_upto)
            missing = [n for n, h in zip(numbers, held, strict=True) if h is None]
            if missing and missing[0] < highest:
                raise ResumeRefused(
                    f"the region's stream lacks {message_id(partner, missing[0])}, which this "
                    "log makes, but holds later numbers: not a restore this command can resume"
                )
            upto = cursor
            made_upto = numbers[-1] if numbers else made_upto
    return _resumption(partner, stored, upto, made_upto)


def _resumption(
    partner: str, stored: Mapping[int, tuple[bytes, int]], upto: int, made_upto: int
) -> RelaySharingResumed:
    highest = max(stored)
    if made_upto == 0:
        raise ResumeRefused(
            f"none of the {len(stored)} message(s) of {partner} in the region's stream is one "
            "this log makes: not this node's history (another node relaying as this partner?)"
        )
    if highest <= made_upto:
        raise ResumeRefused(
            f"the region's stream holds nothing past what this log makes "
            f"({message_id(partner, made_upto)}): nothing to resume"
        )
    return RelaySharingResumed(
        after_notification=upto,
        first_lost=made_upto + 1,
        last_lost=highest,
        stream_seq=max(seq for _, seq in stored.values()),
        resumed_at=datetime.now(UTC),
    )


async def stream_messages(js: JetStreamContext, node: Node) -> dict[int, tuple[bytes, int]]:
    """Number -> (payload digest, stream seq) of this partner's messages in the stream."""
    region = held_region(node).region
    out: dict[int, tuple[bytes, int]] = {}
    for msg_id, held in (await stored_payloads(js, region, node.config.partner, 0)).items():
        try:
            partner, number = parse_message_id(msg_id)
        except FederationError:
            continue  # not the relay's (its own messages only pass the filter)
        if partner == node.config.partner:
            out[number] = held
    return out


async def resume_sharing_now(node: Node, by: str) -> RelaySharingResumed:
    """`resume_sharing` over a connection of its own (`handsoff node resume-sharing`)."""
    nc = await connect_once(node)
    try:
        return await resume_sharing(node, nc.jetstream(), by)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as e:
        raise RegionUnreachable(
            f"the region's stream could not be read back: {type(e).__name__}: {e}"
        ) from None
    finally:
        with contextlib.suppress(nats.errors.Error):
            await nc.close()


async def resume_sharing(node: Node, js: JetStreamContext, by: str) -> RelaySharingResumed:
    """Steps 1-3 of the module docstring (the node not serving); the resumption made, or
    the one recorded before whose position move had not happened."""
    position = relay_position(node)
    try:
        done = node.admin.resumptions()
        last = done[-1] if done else None
        at = position.load()
        if last is not None and (
            at.notification_id < last.after_notification or at.stream_seq < last.stream_seq
        ):
            position.save(Position(last.after_notification, last.stream_seq))
            return last
        resumed = plan(node, await stream_messages(js, node))
        node.admin.sharing_resumed(resumed, by)
        position.save(Position(resumed.after_notification, resumed.stream_seq))
        return resumed
    finally:
        position.close()
