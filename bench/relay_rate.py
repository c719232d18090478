"""Relay throughput (node log -> acknowledged in JetStream) vs. bare nats-py publish_async.

A node (real SQLite files) is filled once with N cases that all have statistics consent, so
every case shares several events. One real nats-server (`EmbeddedNats`, JetStream on disk in
a temporary directory) serves both sides. In interleaved rounds (order alternating):

- relay: a fresh region stream and a fresh relay position; the clock runs from starting
  `Relay.run` (constructed as `NodeLink` constructs it, publish interval 0) until its
  committed position reaches the log head: every shared message read, verified, decrypted,
  run through the share policy, encoded, signed, published, acknowledged and committed;
- bare: a fresh stream of the same configuration; the clock runs from the first
  `js.publish_async` of the exact messages the relay stored (subjects, payloads, headers
  including `Nats-Msg-Id`, read back from the stream) until every PubAck future is done.

The ratio relay/bare says how close the relay gets to what nats-py and the server allow on
this machine; the target (issue) is >= 0.5. The relay rounds also add up the time spent in
`Relay.next_batch` (everything before publishing), and the steps of next_batch are then
timed apart without NATS, so the output says where the relay's time goes. `--profile` adds
a cProfile of one relay round.

    .venv/bin/python -m bench.relay_rate [--cases N] [--rounds R] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from uuid import uuid4

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from bench._common import CONFIG, lifecycle, median, new_node_dir, open_node, spread
from handsoff.federation import subjects
from handsoff.federation.envelope import message_id, seal_headers
from handsoff.federation.natsconf import ensure_streams
from handsoff.federation.policy import SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.relay import Change, Outgoing, Position, Relay, RelaySettings
from handsoff.federation.shared import kind_of
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.chain import ChainFollower
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource, TrackedPosition
from handsoff.services.node.persistence import store_env
from handsoff.services.node.store import Recorded

TARGET_RATIO = 0.50
REGION = "bench"
# Every case gets statistics consent (the third change); lengths 5, 8, 11 share 3, 5 and 7
# events (incident, first response, referral made/accepted/completed, police report and
# response), so 15 shared messages per 24 case events.
LENGTHS = (5, 8, 11)
FILL_BATCH = 500
DEADLINE_S = 120.0

T = TypeVar("T")


class Message(NamedTuple):
    subject: str
    payload: bytes
    headers: dict[str, str]


# --- the node ---------------------------------------------------------------------------


def fill(directory: Path, cases: int) -> Node:
    """N consented cases written through the case log's event store in batches (encrypted,
    signed and chained like any recorded change; the per-command rule check is skipped)."""
    new_node_dir(directory)
    node = open_node(directory, signing=True)
    now = datetime.now(UTC)
    batch: list[Recorded] = []
    for case in range(cases):
        case_id = uuid4()
        length = LENGTHS[case % len(LENGTHS)]
        for version, change in enumerate(lifecycle(str(case))[:length], start=1):
            batch.append(Recorded(case_id, version, now, "bench", change))
        if len(batch) >= FILL_BATCH or case == cases - 1:
            node.cases.record(batch)
            batch = []
    return node


def read_all(node: Node) -> list[Change]:
    return list(LogSource(node.cases).changes_after(0, 10_000_000))


def policy_of(node: Node) -> SharePolicy:
    return SharePolicy(CONFIG.partner, Pseudonymiser(node.pseudonym_key))


def shared_count(node: Node) -> int:
    """Messages the relay will publish, computed independently of the relay."""
    policy = policy_of(node)
    return sum(len(policy.process(c.case_id, c.change)) for c in read_all(node))


# --- NATS -------------------------------------------------------------------------------


async def fresh_stream(js: JetStreamContext) -> None:
    """The region's events stream, deleted and created again (the production config)."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(subjects.events_stream(REGION))
    await ensure_streams(js, REGION)


async def stream_messages(js: JetStreamContext) -> int:
    info = await js.stream_info(subjects.events_stream(REGION))
    return info.state.messages


async def read_back(js: JetStreamContext, total: int) -> list[Message]:
    sub = await js.subscribe(
        subjects.all_events(REGION), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    out = []
    try:
        for _ in range(total):
            m = await sub.next_msg(timeout=5)
            out.append(Message(m.subject, m.data, dict(m.headers or {})))
    finally:
        await sub.unsubscribe()
    return out


# --- the two sides ----------------------------------------------------------------------


class TimedPosition(TrackedPosition):
    """The relay's real position store (SQLite tracking recorder), noting when the committed
    position reaches `head`. save() runs on the event loop (Relay._commit)."""

    def __init__(self, env: dict[str, str], head: int) -> None:
        super().__init__(env)
        self.head = head
        self.done = asyncio.Event()
        self.done_at = 0.0

    def save(self, position: Position) -> None:
        super().save(position)
        if position.notification_id >= self.head and not self.done.is_set():
            self.done_at = time.perf_counter()
            self.done.set()


class TimedRelay(Relay):
    """The relay unchanged, adding up the time spent in next_batch (reading, checking,
    decrypting, share policy, encoding, signing: everything before publishing)."""

    building = 0.0

    def next_batch(self, after: int | None = None) -> tuple[list[Outgoing], int]:
        start = time.perf_counter()
        try:
            return super().next_batch(after)
        finally:
            self.building += time.perf_counter() - start


class RelayRun(NamedTuple):
    rate: float
    seconds: float
    building: float  # of `seconds`, in next_batch (the worker thread)


async def relay_run(nc: Client, node: Node, workdir: Path, n: int, expected: int) -> RelayRun:
    js = nc.jetstream()
    await fresh_stream(js)
    head = node.cases.recorder.max_notification_id() or 0
    position = TimedPosition(store_env(CONFIG, workdir, f"relay-{n}"), head)
    relay = TimedRelay(  # as NodeLink builds it
        RelaySettings(region=REGION, partner=CONFIG.partner, interval=0.0),
        signer=lambda: node.signer,
        policy=policy_of(node),
        source=LogSource(node.cases),
        store=position,
    )
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(relay.run(js, stop))
    try:
        await asyncio.wait_for(position.done.wait(), timeout=DEADLINE_S)
    finally:
        stop.set()
        await task
        position.close()
    seconds = position.done_at - start
    stored = await stream_messages(js)
    if relay.status.published != expected or stored != expected:
        sys.exit(
            f"relay published {relay.status.published}, stream holds {stored}, expected {expected}"
        )
    return RelayRun(expected / seconds, seconds, relay.building)


async def bare_run(nc: Client, messages: list[Message]) -> float:
    """publish_async every message, then await every PubAck future."""
    js = nc.jetstream()
    await fresh_stream(js)
    start = time.perf_counter()
    futures = [
        await js.publish_async(m.subject, m.payload, headers=dict(m.headers)) for m in messages
    ]
    await asyncio.gather(*futures)
    seconds = time.perf_counter() - start
    stored = await stream_messages(js)
    if stored != len(messages):
        sys.exit(f"bare run: stream holds {stored}, expected {len(messages)}")
    return len(messages) / seconds


async def bare_median(nc: Client, messages: list[Message], repeats: int = 3) -> float:
    """A bare run takes a fraction of a relay run, so it is noisier: median of a few."""
    return median([await bare_run(nc, messages) for _ in range(repeats)])


async def bare_batched_run(nc: Client, messages: list[Message], batch: int) -> float:
    """Breakdown only: the relay's awaiting pattern (publish a batch, await its acks, next)."""
    js = nc.jetstream()
    await fresh_stream(js)
    start = time.perf_counter()
    for i in range(0, len(messages), batch):
        futures = [
            await js.publish_async(m.subject, m.payload, headers=dict(m.headers))
            for m in messages[i : i + batch]
        ]
        await asyncio.gather(*futures)
    seconds = time.perf_counter() - start
    return len(messages) / seconds


# --- breakdown of the relay's own work (no NATS) ----------------------------------------


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class Parts(NamedTuple):
    read: float  # select + check + decrypt, seconds for the whole log (pages of `batch`)
    read_unsigned: float  # the same with the follower's signature checks off (links checked)
    policy: float  # SharePolicy.process_encoded over every change (builds, checks, encodes)
    seal: float  # subject, msg id, envelope signature (seal_headers) for every shared message


def parts(node: Node, batch: int) -> Parts:
    """The steps of Relay.next_batch timed apart, over the whole log, without NATS."""

    def read_pages(signatures: bool = True) -> list[Change]:
        source, after = LogSource(node.cases), 0
        if not signatures:  # breakdown only: what checking the node's own signatures costs
            keyring = node.cases.sealing.keyring
            source._follower = ChainFollower(node.cases.name, keyring, verify_signatures=False)
        out: list[Change] = []
        while page := source.changes_after(after, batch):
            out.extend(page)
            after = page[-1].notification_id
        return out

    read_s, changes = timed(read_pages)
    unsigned_s, _ = timed(lambda: read_pages(signatures=False))
    policy = policy_of(node)
    policy_s, shared = timed(
        lambda: [e for c in changes for e in policy.process_encoded(c.case_id, c.change)]
    )
    signer = node.signer

    def seal() -> None:
        for i, (event, payload) in enumerate(shared, start=1):
            subject = subjects.events(REGION, CONFIG.partner, kind_of(type(event)))
            msg_id = message_id(CONFIG.partner, i)
            seal_headers(signer, subject, msg_id, payload, 1)

    seal_s, _ = timed(seal)
    return Parts(read_s, unsigned_s, policy_s, seal_s)


# --- profile ----------------------------------------------------------------------------


@contextlib.contextmanager
def inline_to_thread() -> Iterator[None]:
    """cProfile sees one thread only: run the relay's `asyncio.to_thread` calls (next_batch,
    replay_policy) on the event loop thread. The relay awaits them before doing anything
    else, so the work done is the same; only the GIL hand-offs to the worker are gone."""
    original = asyncio.to_thread

    async def inline(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    asyncio.to_thread = inline
    try:
        yield
    finally:
        asyncio.to_thread = original


async def profiled(make: Callable[[], Awaitable[RelayRun]]) -> None:
    print(
        "\nprofile of one relay round (to_thread inlined; cProfile adds overhead, read "
        "proportions):"
    )
    profiler = cProfile.Profile()
    with inline_to_thread():
        profiler.enable()
        run = await make()
        profiler.disable()
    print(f"  profiled round: {run.rate:,.0f} msgs/s ({run.seconds:.2f} s)")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs()
    print("-- top 20 by cumulative time --")
    stats.sort_stats("cumulative").print_stats(20)


# --- main -------------------------------------------------------------------------------


async def bench(tmp: Path, cases: int, rounds: int, profile: bool) -> None:
    start = time.perf_counter()
    node = fill(tmp / "node", cases)
    events = node.cases.recorder.max_notification_id() or 0
    expected = shared_count(node)
    server = EmbeddedNats(tmp / "nats").start()
    nc = await nats.connect(server.url, inbox_prefix=subjects.inbox_prefix(CONFIG.partner))
    try:
        print(
            f"relay_rate: {cases} consented cases, {events} case events, {expected} shared "
            f"messages; node filled in {time.perf_counter() - start:.1f} s"
        )
        workdir = tmp / "positions"
        workdir.mkdir()
        counter = iter(range(1_000_000))

        def relay() -> Awaitable[RelayRun]:
            return relay_run(nc, node, workdir, next(counter), expected)

        warm = await relay()  # warm-up; its stream gives the bare side its messages
        js = nc.jetstream()
        messages = await read_back(js, expected)
        size = sum(len(m.payload) for m in messages) / len(messages)
        hsize = sum(len(k) + len(v) + 4 for m in messages for k, v in m.headers.items())
        print(
            f"  messages: payload mean {size:.0f} B, headers mean {hsize / len(messages):.0f} B;"
            f" {rounds} rounds after a warm-up (relay {warm.rate:,.0f}/s), relay vs bare"
        )
        await bare_run(nc, messages)  # warm-up
        relay_rates: list[float] = []
        bare_rates: list[float] = []
        ratios: list[float] = []
        building: list[float] = []  # share of each relay round spent in next_batch
        for r in range(rounds):
            if r % 2 == 0:
                run = await relay()
                bare = await bare_median(nc, messages)
            else:
                bare = await bare_median(nc, messages)
                run = await relay()
            relay_rates.append(run.rate)
            bare_rates.append(bare)
            ratios.append(run.rate / bare)
            building.append(run.building / run.seconds)
            print(
                f"  round {r + 1}: relay {run.rate:,.0f} msgs/s ({run.seconds:.2f} s, "
                f"{building[-1]:.0%} building)  bare {bare:,.0f} msgs/s (median of 3)  "
                f"ratio {ratios[-1]:.3f}"
            )
        rel, bar, ratio = median(relay_rates), median(bare_rates), median(ratios)
        print(f"relay (median): {rel:,.0f} shared msgs/s ({spread(relay_rates)})")
        print(f"bare  (median): {bar:,.0f} msgs/s ({spread(bare_rates)})")
        print(
            f"ratio relay/bare: {ratio:.3f} (median of paired rounds; of medians "
            f"{rel / bar:.3f}); per message {1e6 / rel:.0f} us vs {1e6 / bar:.0f} us bare; "
            f"target >= {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}"
        )

        # Where the relay's time goes, per shared message.
        total = 1e6 / rel
        built = total * median(building)
        print(
            f"breakdown per shared message ({events / expected:.2f} case events each): relay "
            f"{total:.0f} us = building {built:.0f} us (Relay.next_batch, in the worker "
            f"thread) + publishing, awaiting PubAcks, committing {total - built:.0f} us"
        )
        batch = RelaySettings(region=REGION, partner=CONFIG.partner).batch
        samples = [parts(node, batch) for _ in range(3)]
        read, unsigned, pol, seal = (
            1e6 * median([getattr(p, f) for p in samples]) / expected for f in Parts._fields
        )
        print(
            f"  building, its steps timed apart in one thread (no NATS, median of 3): "
            f"read+check+decrypt {read:.0f} us (of which checking the node's own signatures "
            f"{read - unsigned:.0f}), share policy+encode {pol:.0f} us, envelope sign "
            f"{seal:.0f} us (sum {read + pol + seal:.0f})"
        )
        batched = median([await bare_batched_run(nc, messages, 160) for _ in range(3)])
        print(
            f"  publishing, bare: publish_async all then await all {1e6 / bar:.0f} us; in "
            f"awaited batches of 160 (the relay's pattern, ~256 notifications) "
            f"{1e6 / batched:.0f} us"
        )
        # The worker thread's cost: the same relay with next_batch run on the event loop.
        inline: list[float] = []
        with inline_to_thread():
            for _ in range(3):
                inline.append((await relay()).rate)
        print(
            f"  the worker thread: with next_batch on the event loop instead (not how NodeLink "
            f"runs it: it blocks the loop while a batch is built) the relay makes "
            f"{median(inline):,.0f} msgs/s (median of 3), {median(inline) / bar:.3f} of bare"
        )
        if profile:
            await profiled(relay)
    finally:
        await nc.close()
        server.stop()
        node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1200, help="consented cases (1200)")
    parser.add_argument("--rounds", type=int, default=5, help="relay+bare pairs (5)")
    parser.add_argument("--profile", action="store_true", help="cProfile one relay round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="handsoff-bench-") as tmp:
        asyncio.run(bench(Path(tmp), args.cases, args.rounds, args.profile))


if __name__ == "__main__":
    main()
