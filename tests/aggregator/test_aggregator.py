"""The aggregator end to end through a real nats-server: three partner nodes relay, the
aggregator ingests, releases and serves its feeds; every figure equals an independent
recomputation from the raw shared events (suppression applied), and a rebuild reproduces
every release byte for byte. A region whose document allows partner breakdowns gets
partner-level figures too (equal to the recomputation, protected jointly with the
countries'); one that does not gets none anywhere."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgspec
import nats
import pytest

from aggregator.test_partner_breakdowns import assert_partner_release
from aggregator_support import (
    Region,
    decode_release,
    make_region,
    read_all,
    relay_all,
    release_findings,
    stream_end,
    verify_stream,
)
from handsoff.federation import statements, subjects
from handsoff.federation.statements import COUNTRY, PARTNER, AggregateStatement
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.feed import CSV_HEADER, PARTNER_CSV_HEADER
from handsoff.services.aggregator.indicators import compute
from handsoff.services.aggregator.release import BY_PARTNER, PUBLISHED, Release
from handsoff.services.aggregator.service import Aggregator, AggregatorConfig, serve
from handsoff.services.cli import main
from handsoff.services.natsserver import EmbeddedNats
from relay_support import record_stories
from support import PASSPHRASE

TIMEOUT = 30.0



@pytest.fixture
async def region(tmp_path: Path, nats_server: EmbeddedNats) -> AsyncIterator[Region]:
    r = await make_region(tmp_path, nats_server.url)
    try:
        yield r
    finally:
        r.close()


class Running:
    def __init__(self, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.task, self.stop = task, stop
        self.aggregator: Aggregator | None = None
        self.port = 0
        self.ready = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, TIMEOUT)


async def start_aggregator(region: Region, *, interval: float = 0.0) -> Running:
    config = AggregatorConfig(
        dir=region.aggregator_dir,
        nats_url=region.url,
        region_file=region.region_file,
        nats_user=None,
        release_interval=interval,
        fetch_timeout=0.2,
    )
    stop = asyncio.Event()
    running: Running

    def ready(aggregator: Aggregator, port: int) -> None:
        running.aggregator, running.port = aggregator, port
        running.ready.set()

    task = asyncio.create_task(
        serve(config, PASSPHRASE, host="127.0.0.1", port=0, ready=ready, stop=stop)
    )
    running = Running(task, stop)
    waiter = asyncio.create_task(running.ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=TIMEOUT, return_when="FIRST_COMPLETED")
    if task in done:
        waiter.cancel()
        await task  # raises why it stopped
    assert waiter in done, "the aggregator did not start"
    return running


async def wait_for_release_at(client: httpx.AsyncClient, position: int) -> tuple[int, bytes]:
    """Polls GET /api/releases/latest until a release covers `position`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        r = await client.get("/api/releases/latest")
        if r.status_code == 200:
            body = msgspec.json.decode(r.content)
            first = msgspec.json.decode(
                statements.statement_bytes(msgspec.json.encode(body["statements"][0]))
            )
            if first["inputs"]["last_seq"] >= position:
                return int(body["release"]), r.content
        assert loop.time() < deadline, f"no release at position {position}: {r.text[:200]}"
        await asyncio.sleep(0.05)


async def history(region: Region) -> list[tuple[AggregateStatement, ...]]:
    """Every release in the aggregates stream, verified, grouped and in order."""
    msgs = await read_all(
        region.url,
        subjects.all_aggregates(region.document.region),
        subjects.aggregates_stream(region.document.region),
    )
    by_release: dict[int, dict[str, AggregateStatement]] = defaultdict(dict)
    for m in msgs:
        if subjects.is_region_taken(m.subject):  # the aggregator's announcement of its region
            continue
        s = statements.verify(m.data, region.document)
        by_release[s.release][s.indicator] = s
    return [tuple(by_release[n][i] for i in PUBLISHED) for n in sorted(by_release)]


async def releases_follow_the_stream(
    region: Region, latest: Sequence[AggregateStatement]
) -> tuple[list[tuple[AggregateStatement, ...]], list[Any]]:
    """Asserts that `latest` is the last release published and that every release equals
    the auditor's recomputation from the raw events stream; (releases, events)."""
    published = await history(region)
    assert published[-1] == tuple(latest)
    events = await read_all(
        region.url,
        subjects.all_events(region.document.region),
        subjects.events_stream(region.document.region),
    )
    assert release_findings(events, region.document, published) == []
    return published, events


async def test_every_figure_equals_a_recomputation_from_the_raw_events(
    region: Region,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    end = await stream_end(region.url, region.document.region)
    assert end > 100
    running = await start_aggregator(region)
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=TIMEOUT) as client:
            number, body = await wait_for_release_at(client, end)
            got_number, got = decode_release(body, region.document)
            assert got_number == number
            assert [s.indicator for s in got] == sorted(PUBLISHED)

            # The feeds agree with each other.
            csv_text = (await client.get("/api/releases/latest.csv")).text
            rows = list(csv.DictReader(io.StringIO(csv_text)))
            assert rows
            assert tuple(rows[0]) == CSV_HEADER  # the region allows no partner breakdowns
            assert {r["release"] for r in rows} == {str(number)}
            incidents = next(s for s in got if s.indicator == "incidents")
            table = incidents.tables[-1]
            region_total = next(
                r
                for r in rows
                if (r["indicator"], r["period"], r["area"]) == ("incidents", table.period, "region")
            )
            assert region_total["value"] == str(table.total)
            one = await client.get("/api/releases/latest/incidents")
            assert statements.verify(one.content, region.document) == incidents
            assert (await client.get("/api/releases/latest/nope")).status_code == 404
            ready = (await client.get("/readyz")).json()
            assert ready["ready"] is True
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            while ready["published"] < number:  # NATS publication follows the HTTP feed
                assert loop.time() < deadline, ready
                await asyncio.sleep(0.05)
                ready = (await client.get("/readyz")).json()

        # NATS: the KV bucket holds the latest statement of every indicator.
        nc = await nats.connect(region.url)
        try:
            kv = await nc.jetstream().key_value(subjects.latest_bucket(region.document.region))
            for s in got:
                entry = await kv.get(s.indicator)
                assert entry.value is not None
                assert statements.verify(entry.value, region.document) == s
        finally:
            await nc.close()
    finally:
        await running.close()

    # Every release ever published equals the recomputation from the raw stream.
    published, _ = await releases_follow_the_stream(region, got)
    # Suppression happened (small cells exist in 20 stories a partner) and is marked.
    assert any(statements.SUPPRESSED in row for s in got for t in s.tables for row in t.cells)
    # The region document says "country": nothing partner-level anywhere.
    for release in published:
        for s in release:
            assert s.breakdowns == "country"
            assert all(t.dimension == COUNTRY for t in s.tables)
            assert all(x.partner is None for x in (*s.stats, *s.shares))
    assert b'"partner"' not in body
    assert b'"dimension"' not in body

    # A rebuild from the stream alone reproduces every release byte for byte.
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
    monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
    code = await asyncio.to_thread(
        main,
        [
            "aggregator",
            "rebuild",
            "--dir",
            str(region.aggregator_dir),
            "--into",
            str(tmp_path / "rebuilt"),
            "--nats",
            region.url,
        ],
    )
    assert code == 0

    # `aggregator status`: where it stands, and the region version it announced taking.
    capsys.readouterr()
    assert main(["aggregator", "status", "--dir", str(region.aggregator_dir)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["position"] == end
    assert status["announced"] == [{"version": region.document.version, "after_seq": 0}]


async def test_live_feed_follows_new_events(region: Region) -> None:
    running = await start_aggregator(region)
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=TIMEOUT) as client:
            first, _ = await wait_for_release_at(
                client, await stream_end(region.url, region.document.region)
            )
            async with client.stream("GET", "/api/stream") as sse:
                lines = sse.aiter_lines()
                assert await anext(lines) == "event: release"
                assert await anext(lines) == f'data: {{"release":{first}}}'
                record_stories(region.nodes[0], 99, 5)
                await relay_all(region)
                async with asyncio.timeout(TIMEOUT):
                    async for line in lines:
                        if line.startswith("data:"):
                            break
                assert msgspec.json.decode(line.removeprefix("data: "))["release"] > first
    finally:
        await running.close()


async def test_a_partner_region_publishes_partner_figures_equal_to_a_recomputation(
    tmp_path: Path, nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two partners in South Africa, one in Botswana.
    partners = (("p1", "BW"), ("p2", "ZA"), ("p4", "ZA"))
    region = await make_region(tmp_path, nats_server.url, partners=partners, breakdowns="partner")
    try:
        assert region.document.breakdowns == "partner"
        end = await stream_end(region.url, region.document.region)
        running = await start_aggregator(region)
        try:
            async with httpx.AsyncClient(base_url=running.url, timeout=TIMEOUT) as client:
                _, body = await wait_for_release_at(client, end)
                _, got = decode_release(body, region.document)
                csv_text = (await client.get("/api/releases/latest.csv")).text
        finally:
            await running.close()
        assert all(s.breakdowns == "partner" for s in got)
        by_partner = {
            s.indicator for s in got if any(t.dimension == PARTNER for t in s.tables)
        }
        assert by_partner == {*BY_PARTNER, "incidents"}
        incidents = next(s for s in got if s.indicator == "incidents")
        nested = {
            (c, p) for t in incidents.tables if t.dimension == PARTNER
            for c, p in zip(t.countries, t.rows, strict=True)
        }  # fmt: skip
        assert nested == {(c, p) for p, c in partners}

        # Every release equals the auditor's recomputation from the raw stream ...
        _, events = await releases_follow_the_stream(region, got)
        # ... and the latest one's partner figures are the exact figures where published,
        # nothing small, nothing recoverable from the country tables and margins.
        last_seq = got[0].inputs.last_seq
        figures = compute(verify_stream(events, region.document, last_seq).ledger)
        assert_partner_release(Release(tuple(got), SuppressionMemory()), figures, got[0].k)

        rows = list(csv.DictReader(io.StringIO(csv_text)))
        assert tuple(rows[0]) == PARTNER_CSV_HEADER
        assert {r["partner"] for r in rows} == {"", "p1", "p2", "p4"}

        # A rebuild from the stream alone reproduces every release byte for byte.
        monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
        monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
        args = ["aggregator", "rebuild", "--dir", str(region.aggregator_dir)]
        args += ["--into", str(tmp_path / "rebuilt"), "--nats", region.url]
        assert await asyncio.to_thread(main, args) == 0
    finally:
        region.close()
