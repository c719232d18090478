"""The aggregator's operations endpoints against a real nats-server: /metrics is open, its
figures (position, stream end, lag, accepted, rejected by reason, duplicates, releases)
follow ingest, and its labels name nothing but the region and reason codes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator_support import (
    Region,
    make_region,
    publish_stored,
    read_all,
    relay_all,
    stream_end,
    verify_stream,
)
from handsoff.federation import subjects
from handsoff.services.aggregator.http import create_app
from handsoff.services.aggregator.ingest import IngestStore
from handsoff.services.aggregator.metrics import AggregatorCollector
from handsoff.services.aggregator.service import (
    Aggregator,
    AggregatorConfig,
    AggregatorPaths,
    connect,
    open_key,
    serve,
    take_region,
)
from handsoff.services.natsserver import EmbeddedNats
from relay_support import record_stories
from support import PASSPHRASE

TIMEOUT = 30.0
EVENTS_WINDOW = 0.5  # seconds: the events stream's duplicate window, so a copy can be stored
# What /readyz shows of ingest and releases (it may show more: the checkpoints witnessed).
READY_KEYS = (
    "ready",
    "position",
    "stream_last_seq",
    "lag",
    "accepted",
    "rejected",
    "release",
    "published",
    "connected",
)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]



@pytest.fixture
async def region(tmp_path: Path, nats_server: EmbeddedNats) -> AsyncIterator[Region]:
    r = await make_region(tmp_path, nats_server.url, stories=8, events_window=EVENTS_WINDOW)
    try:
        yield r
    finally:
        r.close()


def config_of(region: Region, **overrides: Any) -> AggregatorConfig:
    settings: dict[str, Any] = {
        "dir": region.aggregator_dir,
        "nats_url": region.url,
        "region_file": region.region_file,
        "nats_user": None,
        "release_interval": 0.0,
        "fetch_timeout": 0.2,
        "stream_check_interval": 0.0,
    }
    return AggregatorConfig(**(settings | overrides))


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")  # no token: the aggregator's feeds are all open
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def one(m: Samples, name: str) -> float:
    return m[(f"handsoff_aggregator_{name}", ())]


async def until(what: str, condition: Callable[[], Awaitable[bool]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not await condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def in_process(region: Region) -> AsyncIterator[tuple[Aggregator, httpx.AsyncClient]]:
    """The aggregator, stepped by the test (no loop of its own), and its HTTP app in-process."""
    config = config_of(region)
    paths = AggregatorPaths(config.dir)
    document = take_region(paths, config.region_file)
    store = IngestStore(paths.store)
    nc = await connect(config)
    try:
        aggregator = Aggregator(document, open_key(config.dir, PASSPHRASE), store, nc, config)
        await aggregator.start()
        try:
            app = create_app(
                aggregator.feed, status=aggregator.status, metrics=AggregatorCollector(aggregator)
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://agg") as client:
                yield aggregator, client
        finally:
            await aggregator.stop()
    finally:
        await nc.drain()
        store.close()


async def catch_up(aggregator: Aggregator, position: int) -> None:
    async def there() -> bool:
        await aggregator.step()
        return aggregator.store.position() >= position

    await until(f"ingest up to {position}", there)


async def republish_beyond_the_window(url: str, region: str, seq: int) -> int:
    """Stores message `seq` of the events stream again, as a relay retrying after the
    duplicate window would (the fixture's events stream has a short window); returns the
    new copy's sequence."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        original = await js.get_msg(subjects.events_stream(region), seq)
        assert original.subject is not None
        return await publish_stored(js, original.subject, original.data or b"", original.headers)
    finally:
        await nc.close()


async def publish_malformed(url: str, region: str) -> int:
    nc = await nats.connect(url)
    try:
        ack = await nc.jetstream().publish(subjects.events(region, "p1", "incident"), b"{}")
        return int(ack.seq)
    finally:
        await nc.close()


async def test_metrics_follow_ingest_rejects_duplicates_and_releases(region: Region) -> None:
    end = await stream_end(region.url, region.document.region)
    assert end > 10
    async with in_process(region) as (aggregator, client):
        # Started, nothing ingested yet: the whole stream is the lag.
        m = await scrape(client)
        assert m[("handsoff_aggregator_info", (("region", region.document.region),))] == 1
        assert one(m, "position") == 0
        assert one(m, "stream_last_seq") == end
        assert one(m, "lag_messages") == end
        assert one(m, "accepted_total") == 0
        assert one(m, "duplicates_total") == 0
        assert one(m, "releases_kept_total") == 0
        assert one(m, "releases_published_total") == 0
        assert one(m, "nats_connected") == 1
        assert one(m, "region_version") == region.document.version
        assert one(m, "region_expires_timestamp_seconds") == (
            region.document.expires_at.timestamp()
        )
        assert ("handsoff_aggregator_seconds_since_release", ()) not in m
        assert not [k for k in m if k[0] == "handsoff_aggregator_rejected_total"]
        assert (await client.get("/readyz")).status_code == 503  # no release yet

        await catch_up(aggregator, end)
        events = await read_all(
            region.url,
            subjects.all_events(region.document.region),
            subjects.events_stream(region.document.region),
        )
        verified = verify_stream(events, region.document, end)
        m = await scrape(client)
        assert one(m, "position") == end
        assert one(m, "lag_messages") == 0
        assert one(m, "accepted_total") == verified.accepted > 0
        assert one(m, "releases_kept_total") == 1
        assert one(m, "releases_published_total") == 1
        assert 0 <= one(m, "seconds_since_release") < TIMEOUT
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        ready_body = ready.json()
        assert {k: ready_body[k] for k in READY_KEYS} == {
            "ready": True,
            "position": end,
            "stream_last_seq": end,
            "lag": 0,
            "accepted": verified.accepted,
            "rejected": {},
            "release": 1,
            "published": 1,
            "connected": True,
        }

        # A copy of an accepted message stored again, and a message with no envelope.
        copy = await republish_beyond_the_window(region.url, region.document.region, 1)
        bad = await publish_malformed(region.url, region.document.region)
        assert (copy, bad) == (end + 1, end + 2)
        await catch_up(aggregator, bad)
        m = await scrape(client)
        assert one(m, "position") == bad
        assert one(m, "stream_last_seq") == bad
        assert one(m, "lag_messages") == 0
        assert one(m, "accepted_total") == verified.accepted
        assert one(m, "duplicates_total") == 1
        assert m[("handsoff_aggregator_rejected_total", (("reason", "malformed"),))] == 1
        assert one(m, "releases_kept_total") == 2

        # Only the region and reason codes as labels: no partner, no pseudonym.
        labels = {pair for _, pairs in m for pair in pairs}
        assert labels == {("region", region.document.region), ("reason", "malformed")}

    # A restart starts from the stored totals (duplicates count per process).
    async with in_process(region) as (aggregator, client):
        m = await scrape(client)
        assert one(m, "position") == bad
        assert one(m, "accepted_total") == verified.accepted
        assert m[("handsoff_aggregator_rejected_total", (("reason", "malformed"),))] == 1
        assert one(m, "duplicates_total") == 0
        assert one(m, "releases_kept_total") == 2


@contextlib.asynccontextmanager
async def served(config: AggregatorConfig) -> AsyncIterator[httpx.AsyncClient]:
    """`aggregator serve` on this loop (its own signal handlers), and a client of its port."""
    stop = asyncio.Event()
    started: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(
        serve(
            config,
            PASSPHRASE,
            host="127.0.0.1",
            port=0,
            ready=lambda _, port: started.put_nowait(port),
            stop=stop,
        )
    )
    try:
        port = await asyncio.wait_for(started.get(), TIMEOUT)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as c:
            yield c
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def test_served_metrics_move_with_new_events(region: Region) -> None:
    """Through `serve` (its own loop reads the stream's end every stream_check_interval)."""
    async with served(config_of(region, stream_check_interval=0.05)) as c:
        end = await stream_end(region.url, region.document.region)

        async def at(position: int) -> bool:
            m = await scrape(c)
            return (
                one(m, "position") == one(m, "stream_last_seq") == position
                and one(m, "releases_published_total") >= 1
            )

        await until("the first release", lambda: at(end))
        before = await scrape(c)
        record_stories(region.nodes[0], 42, 4)
        await relay_all(region)
        new_end = await stream_end(region.url, region.document.region)
        assert new_end > end
        await until("the new events", lambda: at(new_end))
        after = await scrape(c)
        assert one(after, "accepted_total") > one(before, "accepted_total")
        assert one(after, "lag_messages") == 0
        assert (await c.get("/healthz")).json() == {"status": "ok"}
