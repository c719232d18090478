"""Latency from a node API call to the aggregator's feed update, p50 and p95, on loopback.

One partner node (real SQLite files) serves its HTTP API; its relay publishes at once
(publish interval 0) to a real nats-server (`EmbeddedNats`); the aggregator (`aggregator
serve`, release interval 0) ingests, cuts a release and notifies its SSE stream. Each
sample: a paralegal reports an incident through the API, then records the survivor's
consent to regional statistics (the call that makes the case shareable). The clock runs
from that consent call until the SSE stream announces a release whose inputs include the new
message (checked on GET /api/releases/latest).

Baselines measured in the same run, so the figures can be read against this machine:
- the consent API call alone (HTTP round trip + signed, encrypted write);
- a bare NATS JetStream publish until a push subscriber receives it.

    .venv/bin/python -m bench.feed_latency [--samples N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import msgspec
import nats

from bench._common import CONFIG, PASSPHRASE, incident
from handsoff.events import ConsentGiven, ConsentPurpose
from handsoff.federation import statements
from handsoff.federation.natsconf import ensure_streams
from handsoff.federation.region import (
    Aggregator,
    Coordinator,
    RegionDocument,
    SignedRegion,
    save_region,
    sign_region,
)
from handsoff.keys import KdfStrength, SigningKey
from handsoff.services.aggregator.service import AggregatorConfig, init_aggregator, serve
from handsoff.services.api.app import STEPS
from handsoff.services.client import NodeClient
from handsoff.services.demo import serving
from handsoff.services.natsserver import EmbeddedNats, free_port
from handsoff.services.node.admin import Role
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node

CONSENT_STEP = next(s.path for s in STEPS if s.change is ConsentGiven)


def region_file(tmp: Path, node: Node, aggregator: SigningKey) -> Path:
    now = datetime.now(UTC) - timedelta(minutes=1)
    coordinator = SigningKey.generate()
    doc = RegionDocument(
        region="bench",
        version=1,
        issued_at=now,
        expires_at=now + timedelta(days=30),
        threshold=1,
        coordinators=[Coordinator("c1", "Coordinator", coordinator.public_key)],
        aggregator=Aggregator("aggregator", aggregator.public_key),
    ).add_partner(
        CONFIG.partner,
        CONFIG.partner,
        CONFIG.country,
        node.signer.public_key,
        valid_from=now,
        issued_at=now,
    )
    path = tmp / "region.json"
    save_region(path, sign_region(SignedRegion.unsigned(doc), "c1", coordinator))
    return path


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-p * len(ordered) // 100) - 1)]


async def accepted(client: httpx.AsyncClient) -> int:
    r = await client.get("/api/releases/latest")
    if r.status_code != 200:
        return 0
    first = msgspec.json.decode(r.content)["statements"][0]
    body = msgspec.json.decode(statements.statement_bytes(msgspec.json.encode(first)))
    return int(body["inputs"]["accepted"])


async def bare_nats(url: str, samples: int) -> list[float]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BARE", subjects=["bare.>"])
        got: asyncio.Queue[float] = asyncio.Queue()

        async def on(msg: object) -> None:
            await got.put(time.perf_counter())

        await js.subscribe("bare.x", cb=on)
        out = []
        for _ in range(samples):
            t0 = time.perf_counter()
            await js.publish("bare.x", b"x" * 300)
            out.append(await asyncio.wait_for(got.get(), 10) - t0)
        return out
    finally:
        await nc.close()


async def run(samples: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hx-bench-latency-") as tmp_s:
        tmp = Path(tmp_s)
        server = EmbeddedNats(tmp / "nats").start()
        node = Node.init(tmp / "node", CONFIG, PASSPHRASE, KdfStrength.INTERACTIVE)
        try:
            key = init_aggregator(tmp / "aggregator", PASSPHRASE, KdfStrength.INTERACTIVE)
            join_region(node, region_file(tmp, node, key))
            nc = await nats.connect(server.url)
            await ensure_streams(nc.jetstream(), "bench")
            await nc.close()
            token = node.add_user("bench", Role.PARALEGAL, "bench")
            link = NodeLink(node, FederationSettings(server.url, "x", publish_interval=0))
            await link.start()
            stop = asyncio.Event()
            ports: list[int] = []
            config = AggregatorConfig(
                dir=tmp / "aggregator",
                nats_url=server.url,
                region_file=tmp / "region.json",
                nats_user=None,
                release_interval=0.0,
                fetch_timeout=0.05,
            )
            agg = asyncio.create_task(
                serve(
                    config,
                    PASSPHRASE,
                    host="127.0.0.1",
                    port=0,
                    stop=stop,
                    ready=lambda _, port: ports.append(port),
                )
            )
            while not ports:
                assert not agg.done(), "the aggregator stopped"
                await asyncio.sleep(0.02)
            with serving(node, free_port()) as url:
                api = NodeClient(url, token)
                feed_s, api_s = await measure(api, f"http://127.0.0.1:{ports[0]}", samples)
            stop.set()
            await agg
            await link.stop()
            bare_s = await bare_nats(server.url, samples)
        finally:
            node.close()
            server.stop()
    ms = 1000.0
    print(f"samples: {samples}")
    print(
        f"API call -> feed update: p50 {pct(feed_s, 50) * ms:7.1f} ms, "
        f"p95 {pct(feed_s, 95) * ms:7.1f} ms"
    )
    print(
        f"consent API call alone:  p50 {pct(api_s, 50) * ms:7.1f} ms, "
        f"p95 {pct(api_s, 95) * ms:7.1f} ms"
    )
    print(
        f"bare JetStream pub->sub: p50 {pct(bare_s, 50) * ms:7.1f} ms, "
        f"p95 {pct(bare_s, 95) * ms:7.1f} ms"
    )
    print(f"ratio feed/API call (p50): {statistics.median(feed_s) / statistics.median(api_s):.1f}")


async def measure(api: NodeClient, feed_url: str, samples: int) -> tuple[list[float], list[float]]:
    feed_s, api_s = [], []
    async with (
        httpx.AsyncClient(base_url=feed_url, timeout=30) as client,
        client.stream("GET", "/api/stream") as sse,
    ):
        lines = sse.aiter_lines()
        for i in range(samples):
            before = await accepted(client)
            case_id, version = await asyncio.to_thread(api.report, incident(f"lat{i}"))
            consent = ConsentGiven(
                purpose=ConsentPurpose.REGIONAL_STATISTICS, given_at=datetime.now(UTC)
            )
            t0 = time.perf_counter()
            await asyncio.to_thread(api.record, case_id, version, CONSENT_STEP, consent)
            api_s.append(time.perf_counter() - t0)
            async with asyncio.timeout(30):
                async for line in lines:
                    if line.startswith("data:") and await accepted(client) > before:
                        break
            feed_s.append(time.perf_counter() - t0)
    return feed_s, api_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=50)
    asyncio.run(run(p.parse_args().samples))


if __name__ == "__main__":
    main()
