"""Helpers for relay tests: record synthetic stories, compute what should be shared, read
the region stream back and verify every message."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from handsoff.events import Country
from handsoff.federation import subjects
from handsoff.federation.envelope import open_message
from handsoff.federation.policy import SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.region import RegionDocument
from handsoff.federation.shared import decode, encode
from handsoff.services.natsserver import free_port
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource
from handsoff.services.simulate import StoryTeller


def record_stories(node: Node, seed: int, n: int) -> None:
    teller = StoryTeller(
        seed, Country(node.config.country), datetime.now(UTC) - timedelta(days=200)
    )
    for story in teller.stories(n):
        state = node.cases.report_incident(story.incident, "pat")
        for change in story.changes:
            state = node.cases.record_change(state.case_id, state.version, change, "pat")


def expected_messages(node: Node) -> list[tuple[str, bytes]]:
    """(msg id, payload) the share policy makes from the whole log, computed independently."""
    policy = SharePolicy(node.config.partner, Pseudonymiser(node.pseudonym_key))
    out = []
    for c in LogSource(node.cases).changes_after(0, 1_000_000):
        for shared in policy.process(c.case_id, c.change):
            out.append((f"{node.config.partner}:{len(out) + 1}", encode(shared)))
    return out


async def read_stream(url: str, region: RegionDocument) -> list[Any]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.events_stream(region.region))
        total = info.state.messages
        sub = await js.subscribe(
            subjects.all_events(region.region),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        opened = []
        for _ in range(total):
            m = await sub.next_msg(timeout=5)
            opened.append(
                (
                    open_message(
                        region, m.subject, m.headers, m.data, m.metadata.timestamp, decode
                    ),
                    m.data,
                )
            )
        await sub.unsubscribe()
        return opened
    finally:
        await nc.close()


class Cable:
    """A partner's internet line: a TCP relay to a server's port (a hub's leaf port, or its
    client port) that a test can cut (every connection dropped, new ones refused) and
    mend."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for a, b in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(a, b))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
