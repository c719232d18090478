"""Reading a stream back through a short-lived consumer of one's own.

A partner may read only what its NATS permissions allow: a consumer with a pinned name and
exactly one filter (natsconf.partner_permissions). The relay (its own messages, to send
exactly once), the checkpointer (its own messages, to checkpoint them) and the region
follower (the aggregator's announcements) all read the same way: create the consumer from
a stream sequence on, pull every message pending, delete the consumer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext


async def pages_after(
    js: JetStreamContext,
    stream: str,
    consumer: str,
    filter_subject: str,
    after_seq: int,
    *,
    timeout: float = 5.0,
    page: int = 256,
) -> AsyncGenerator[list[Msg], None]:
    """Every message of `stream` on `filter_subject` stored after `after_seq`, page by
    page, through the consumer `consumer` (a leftover of a crash is replaced; deleted when
    done). Use it under `contextlib.aclosing`, so the consumer goes even on an error."""
    config = ConsumerConfig(
        name=consumer,
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=after_seq + 1,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,
        mem_storage=True,
    )
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(stream, consumer)
    info = await js.add_consumer(stream, config, timeout=timeout)
    try:
        remaining = info.num_pending or 0
        sub = await js.pull_subscribe_bind(consumer, stream=stream)
        try:
            while remaining > 0:
                msgs = await sub.fetch(min(remaining, page), timeout=timeout)
                yield msgs
                remaining -= len(msgs)
        finally:
            await sub.unsubscribe()
    finally:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await js.delete_consumer(stream, consumer)
