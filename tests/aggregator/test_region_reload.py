"""A running aggregator takes a newer region version when told to (SIGHUP: `systemctl reload`),
as a restart with `--region` would: what it kept goes out, the new version is announced
after what it has ingested, and everything after is judged by it (here: a revoked key is
refused at once). A file it cannot take changes nothing and says why. Real nats-server,
real SQLite, the region's real nodes; the audit follows the announcements."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from aggregator.test_ops import catch_up, config_of, in_process, one, scrape, served, until
from aggregator_support import Region, make_region, relay_all, stream_end
from handsoff.events import Country, PerpetratorCategory, ViolenceType, core_type
from handsoff.federation import announcements, subjects
from handsoff.federation.envelope import message_id, seal_headers
from handsoff.federation.region import (
    RegionDocument,
    load_region,
    save_region,
)
from handsoff.federation.shared import SharedIncident, encode, kind_of, validated
from handsoff.keys import kid_hex
from handsoff.services.aggregator.service import AggregatorPaths
from handsoff.services.cli import main
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.link import join_region
from relay_support import record_stories


@pytest.fixture
async def region(tmp_path: Path, nats_server: EmbeddedNats) -> Region:
    r = await make_region(tmp_path, nats_server.url, stories=4)
    yield r  # type: ignore[misc]
    r.close()


def next_version(region: Region, doc: RegionDocument, signers: int = 2) -> Path:
    """`doc` signed by `signers` coordinators, saved over the region file the aggregator
    was started with; returns that file."""
    save_region(region.region_file, region.kit.sign(doc, signers))
    return region.region_file


def revoking_p1(region: Region) -> RegionDocument:
    p1 = region.nodes[0]
    return region.document.revoke_key("p1", kid_hex(p1.signer.kid), datetime.now(UTC))


async def announced_versions(url: str) -> list[announcements.RegionTaken]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = subjects.aggregates_stream("sadc")
        info = await js.stream_info(stream)
        out = []
        for seq in range(1, int(info.state.last_seq) + 1):
            msg = await js.get_msg(stream, seq)
            if msg.subject == subjects.region_taken("sadc"):
                out.append(announcements.open_taken(msg.data or b"", "sadc").taken)
        return out
    finally:
        await nc.close()


async def publish_as_p1(region: Region, version: int, number: int) -> None:
    """A message of p1 signed with its (now revoked) key under `version`."""
    types = [ViolenceType.PHYSICAL_ASSAULT]
    event = validated(
        SharedIncident(
            partner="p1",
            case="0" * 32,
            country=Country.BW,
            month="2026-03",
            violence_types=types,
            gbvims_type=core_type(types),
            perpetrators=[PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT],
        )
    )
    payload = encode(event)
    subject = subjects.events("sadc", "p1", kind_of(type(event)))
    headers = seal_headers(
        region.nodes[0].signer, subject, message_id("p1", number), payload, version
    )
    nc = await nats.connect(region.url)
    try:
        await nc.jetstream().publish(subject, payload, headers=headers)
    finally:
        await nc.close()


async def test_a_running_aggregator_takes_a_newer_version(
    region: Region, capsys: pytest.CaptureFixture[str]
) -> None:
    first_file = region.region_file.with_name("region-v1.json")
    save_region(first_file, region.kit.signed)
    v1 = region.document.version
    end = await stream_end(region.url, "sadc")
    async with in_process(region) as (aggregator, client):
        await catch_up(aggregator, end)  # and a release (release_interval 0)

        # A file the held version's coordinators did not sign enough: nothing changes.
        next_version(region, revoking_p1(region), signers=1)
        assert not await aggregator.reload_region()
        assert "signature" in (aggregator.region_error or "")
        m = await scrape(client)
        assert one(m, "region_error") == 1
        assert one(m, "region_version") == v1
        held = load_region(AggregatorPaths(region.aggregator_dir).region)
        assert held.document.version == v1
        status = (await client.get("/readyz")).json()
        assert status["region_version"] == v1
        assert status["region_error"]

        # The coordinators' threshold: taken, announced after what was ingested.
        next_version(region, revoking_p1(region))
        assert await aggregator.reload_region()
        assert aggregator.region_error is None
        m = await scrape(client)
        assert one(m, "region_error") == 0
        assert one(m, "region_version") == v1 + 1
        taken = await announced_versions(region.url)
        assert [(t.version, t.after_seq) for t in taken] == [(v1, 0), (v1 + 1, end)]

        # Judged by the new version at once: p1's revoked key is refused; p2, which takes
        # the new version, is counted under it.
        await publish_as_p1(region, v1 + 1, 9001)
        join_region(region.nodes[1], region.region_file)
        record_stories(region.nodes[1], 7, 2)
        await relay_all(region)
        new_end = await stream_end(region.url, "sadc")
        await catch_up(aggregator, new_end)
        m = await scrape(client)
        assert m[("handsoff_aggregator_rejected_total", (("reason", "key_revoked"),))] == 1
        assert one(m, "releases_kept_total") >= 2  # one under each version

    report_file = region.region_file.with_name("report.json")
    code = await asyncio.to_thread(
        main,
        [
            "audit", "region", "--nats", region.url, "--region", str(first_file),
            "--json", str(report_file),
        ],
    )  # fmt: skip
    capsys.readouterr()
    report = json.loads(report_file.read_text())
    # Judged by the announcements from the first version on: the one message under the
    # revoked key is found, and nothing else (both releases follow).
    assert code == 1
    errors = [(f["check"], f["reason"]) for f in report["findings"] if f["severity"] == "error"]
    assert errors == [("signatures", "key_revoked")]


async def test_sighup_makes_a_served_aggregator_read_its_region_file(region: Region) -> None:
    async with served(config_of(region)) as c:
        v1 = region.document.version
        assert (await c.get("/readyz")).json()["region_version"] == v1
        next_version(region, revoking_p1(region))
        os.kill(os.getpid(), signal.SIGHUP)

        async def taken() -> bool:
            return bool((await c.get("/readyz")).json()["region_version"] == v1 + 1)

        await until("the new version", taken)
