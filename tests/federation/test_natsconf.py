"""The generated nats-server configuration, checked by the real server and enforced by it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType

from handsoff.federation import subjects
from handsoff.federation.natsconf import (
    Cluster,
    Credentials,
    NatsConfigError,
    ensure_streams,
    generate_credentials,
    load_credentials,
    nats_config,
    save_credentials,
    server_urls,
    stream_configs,
)
from handsoff.federation.region import Aggregator, Coordinator, RegionDocument
from handsoff.keys import SigningKey
from handsoff.services.cli import main
from handsoff.services.natsserver import free_port, wait_for_port

REGION = "sadc"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
NATS_SERVER = Path(sys.executable).with_name("nats-server")
EVENTS = subjects.events_stream(REGION)
REFERRALS = subjects.referrals_stream(REGION)
CHECKPOINTS = subjects.checkpoints_stream(REGION)
AGGREGATES = subjects.aggregates_stream(REGION)
QUARANTINE = subjects.quarantine_stream(REGION)
TIMEOUT = 1.0  # a refused request shows up as a timeout: keep it short


def region_doc(*partners: str) -> RegionDocument:
    doc = RegionDocument(
        region=REGION,
        version=1,
        issued_at=T0,
        expires_at=T0 + timedelta(days=365),
        threshold=1,
        coordinators=[Coordinator("c1", "Coordinator", SigningKey.generate().public_key)],
        aggregator=Aggregator("agg", SigningKey.generate().public_key),
    )
    for i, p in enumerate(partners or ("p1", "p2")):
        doc = doc.add_partner(
            p, f"Partner {i}", "BW", SigningKey.generate().public_key, valid_from=T0, issued_at=T0
        )
    return doc


def config_test(path: Path) -> None:
    """`nats-server -t`: the server's own parser accepts the file."""
    r = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(path)], check=False, capture_output=True, timeout=30
    )
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


# ---------------------------------------------------------------------------------------
# Without a running server


def test_every_generated_configuration_passes_the_config_test(tmp_path: Path) -> None:
    doc = region_doc("p1", "p2", "sisonke-bw", "a-very-long-partner-id-32-chars-")
    credentials = generate_credentials(doc)
    variants = {
        "plain": {"store_dir": tmp_path / "js"},
        "odd store dir": {"store_dir": tmp_path / "store with spaces, é # // $HOME {x}"},
        "other host and port": {"store_dir": tmp_path / "js", "host": "0.0.0.0", "port": 4333},
        "cluster": {
            "store_dir": tmp_path / "js",
            "cluster": Cluster(
                name="sadc",
                server_name="hub-1",
                host="0.0.0.0",
                port=6333,
                routes=["hub-2.example.org:6333", "10.0.0.3:6333", "[fd00::3]:6333"],
            ),
        },
        "cluster alone": {
            "store_dir": tmp_path / "js",
            "cluster": Cluster(name="sadc", server_name="hub-1"),
        },
    }
    for name, kwargs in variants.items():
        path = tmp_path / f"{name}.conf"
        path.write_text(nats_config(doc, credentials, **kwargs))  # type: ignore[arg-type]
        config_test(path)
    text = nats_config(
        region_doc(), credentials=generate_credentials(region_doc()), store_dir=tmp_path
    )
    assert "sync_interval: always" in text
    assert "jetstream: enabled" in text


def test_unsafe_values_are_refused(tmp_path: Path) -> None:
    doc = region_doc()
    credentials = generate_credentials(doc)
    for kwargs in (
        {"store_dir": tmp_path / 'quote"d'},
        {"store_dir": tmp_path / "back\\slash"},
        {"store_dir": tmp_path / "new\nline"},
        {"store_dir": tmp_path, "host": '127.0.0.1"\nport: 1'},
        {"store_dir": tmp_path, "port": 0},
        {"store_dir": tmp_path, "cluster": Cluster(name="c", server_name="s", routes=["a b:1"])},
    ):
        with pytest.raises(NatsConfigError):
            nats_config(doc, credentials, **kwargs)  # type: ignore[arg-type]
    other = generate_credentials(
        region_doc().add_partner("p3", "P3", "ZA", b"\x01" * 32, issued_at=T0)
    )
    with pytest.raises(NatsConfigError, match="region"):
        nats_config(
            doc,
            Credentials(region="east", users=credentials.users, route=credentials.route),
            store_dir=tmp_path,
        )
    missing = Credentials(region=REGION, users={"p1": credentials.users["p1"]}, route=other.route)
    with pytest.raises(NatsConfigError, match="no password for 'p2'"):
        nats_config(doc, missing, store_dir=tmp_path)


def test_credentials_file(tmp_path: Path) -> None:
    doc = region_doc()
    first = generate_credentials(doc)
    assert sorted(first.users) == ["aggregator", "operator", "p1", "p2"]
    assert len(set(first.users.values()) | {first.route}) == 5  # all different
    assert all(len(p) == 32 for p in first.users.values())  # token_urlsafe(24)
    assert first.users["p1"] not in repr(first)
    path = tmp_path / "credentials.json"
    save_credentials(path, first)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_credentials(path) == first

    # Regenerating keeps every password of a user still present, adds, and drops.
    grown = doc.add_partner("p3", "P3", "ZA", SigningKey.generate().public_key, issued_at=T0)
    second = generate_credentials(grown, first)
    assert {u: second.users[u] for u in first.users} == first.users
    assert second.route == first.route
    assert "p3" in second.users
    shrunk = region_doc("p2")
    third = generate_credentials(shrunk, second)
    assert "p1" not in third.users
    assert third.users["p2"] == first.users["p2"]
    with pytest.raises(NatsConfigError, match="region"):
        generate_credentials(region_doc(), Credentials(region="east", users={}, route="x" * 32))

    path.write_text(json.dumps({"region": REGION, "users": {"p1": "short"}, "route": "x" * 32}))
    with pytest.raises(NatsConfigError, match="not a valid credentials file"):
        load_credentials(path)
    with pytest.raises(NatsConfigError, match="does not exist"):
        load_credentials(tmp_path / "nothing.json")


def test_stream_configs() -> None:
    configs = {c.name: c for c in stream_configs(REGION)}
    assert list(configs) == [
        EVENTS,
        REFERRALS,
        CHECKPOINTS,
        AGGREGATES,
        QUARANTINE,
    ]
    assert configs[EVENTS].subjects == [subjects.all_events(REGION)]
    assert configs[REFERRALS].subjects == [subjects.all_referrals(REGION)]
    assert configs[CHECKPOINTS].subjects == ["hx.sadc.checkpoints.>", "hx.sadc.witness.*"]
    assert configs["HX_SADC_AGGREGATES"].subjects == ["hx.sadc.aggregates.>"]
    assert configs["HX_SADC_QUARANTINE"].subjects == ["hx.sadc.quarantine.>"]
    for c in configs.values():
        assert c.storage == StorageType.FILE
        assert c.deny_delete
        assert c.deny_purge
        assert not c.allow_rollup_hdrs
        assert c.duplicate_window == 120


def test_server_urls_one_or_a_comma_separated_cluster() -> None:
    assert server_urls("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    assert server_urls("nats://a:4222,nats://b:4223, nats://c:4224 ") == [
        "nats://a:4222",
        "nats://b:4223",
        "nats://c:4224",
    ]
    for bad in ("", " ", "nats://a:4222,", ",nats://a:4222", "nats://a:4222,,nats://b:4222"):
        with pytest.raises(NatsConfigError, match="comma-separated"):
            server_urls(bad)


# ---------------------------------------------------------------------------------------
# A real server with the generated configuration


@dataclass
class Server:
    url: str
    doc: RegionDocument
    credentials: Credentials
    credentials_file: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("nats")
    doc = region_doc("p1", "p2")
    credentials = generate_credentials(doc)
    save_credentials(d / "credentials.json", credentials)
    port = free_port()
    conf = d / "nats-server.conf"
    conf.write_text(nats_config(doc, credentials, port=port, store_dir=d / "jetstream"))
    config_test(conf)
    url = f"nats://127.0.0.1:{port}"
    with (d / "nats-server.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(NATS_SERVER), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, 15, proc)
        asyncio.run(_create_streams(url, credentials))
        yield Server(url, doc, credentials, d / "credentials.json")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _create_streams(url: str, credentials: Credentials) -> None:
    nc = await nats.connect(url, user="operator", password=credentials.password("operator"))
    try:
        infos = await ensure_streams(nc.jetstream(), REGION)
        assert [i.config.name for i in infos] == [
            EVENTS,
            REFERRALS,
            CHECKPOINTS,
            AGGREGATES,
            QUARANTINE,
        ]
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def connect(server: Server, user: str, errors: list[str]) -> AsyncIterator[Client]:
    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    nc = await nats.connect(
        server.url,
        user=user,
        password=server.credentials.password(user),
        inbox_prefix=subjects.inbox_prefix(user),
        error_cb=on_error,
        max_reconnect_attempts=1,
        connect_timeout=5,
    )
    try:
        yield nc
    finally:
        await nc.close()


def violations(errors: list[str]) -> list[str]:
    return [e for e in errors if "permissions violation" in e.lower()]


async def violation_count(errors: list[str], expected: int) -> int:
    """nats-py runs error_cb in a task of its own: give it a moment to catch up."""
    deadline = asyncio.get_running_loop().time() + 2
    while len(violations(errors)) < expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return len(violations(errors))


def headers(msg_id: str) -> dict[str, str]:
    return {"Nats-Msg-Id": msg_id}


async def test_a_partner_publishes_on_its_own_subjects(server: Server) -> None:
    errors: list[str] = []
    async with connect(server, "p1", errors) as nc:
        js = nc.jetstream(timeout=5)
        subject = subjects.events(REGION, "p1", "incident-reported")
        ack = await js.publish(subject, b"event", headers=headers("p1:1:0"))
        assert ack.stream == EVENTS
        assert not ack.duplicate
        again = await js.publish(subject, b"event", headers=headers("p1:1:0"))
        assert again.duplicate
        assert again.seq == ack.seq
        ack = await js.publish(
            subjects.referral(REGION, "p1", "p2"), b"sealed", headers=headers("r1")
        )
        assert ack.stream == REFERRALS
        ack = await js.publish(subjects.checkpoints(REGION, "p1"), b"checkpoint")
        assert ack.stream == CHECKPOINTS
    assert errors == []


async def test_a_partner_cannot_publish_as_another(server: Server) -> None:
    errors: list[str] = []
    forged = subjects.events(REGION, "p2", "incident-reported")
    async with connect(server, "p1", errors) as nc:
        js = nc.jetstream(timeout=TIMEOUT)
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(forged, b"forged", headers=headers("p2:1:0"))
        assert await violation_count(errors, 1) == 1
        assert violations(errors) == [f'nats: permissions violation for publish to "{forged}"']
        # Nor on the aggregator's subjects, although `hx.sadc.*.p1.>` would match this one,
        # nor cosign its own checkpoints.
        await nc.publish(f"hx.{REGION}.aggregates.p1.fake", b"x")
        await nc.publish(subjects.aggregates(REGION, "violence-by-police"), b"x")
        await nc.publish(subjects.witness(REGION, "p1"), b"x")
        await nc.flush()
        assert await violation_count(errors, 4) == 4
    async with connect(server, "operator", []) as op:
        with pytest.raises(nats.js.errors.NotFoundError):
            await op.jetstream().get_last_msg(EVENTS, forged)


async def test_streams_refuse_deletion_and_purging(server: Server) -> None:
    async with connect(server, "operator", []) as op:
        js = op.jetstream(timeout=5)
        ack = await js.publish(subjects.events(REGION, "p2", "case-closed"), b"kept")
        for stream in (EVENTS, REFERRALS, CHECKPOINTS):
            info = await js.stream_info(stream)
            assert info.config.deny_delete
            assert info.config.deny_purge
            assert not info.config.allow_rollup_hdrs
            assert info.config.duplicate_window == 120
            assert info.config.storage == StorageType.FILE
        # Even the all-powerful operator cannot remove a message or purge the stream.
        with pytest.raises(nats.js.errors.APIError) as deleted:
            await js.delete_msg(EVENTS, ack.seq)
        assert deleted.value.err_code == 10057
        with pytest.raises(nats.js.errors.APIError) as purged:
            await js.purge_stream(EVENTS)
        assert purged.value.err_code == 10110
        assert (await js.get_msg(EVENTS, ack.seq)).data == b"kept"


async def test_a_partner_pulls_its_own_referrals_only(server: Server) -> None:
    p1_errors: list[str] = []
    p2_errors: list[str] = []
    async with (
        connect(server, "p1", p1_errors) as p1,
        connect(server, "p2", p2_errors) as p2,
    ):
        j1, j2 = p1.jetstream(timeout=TIMEOUT), p2.jetstream(timeout=5)
        await j2.publish(subjects.referral(REGION, "p2", "p1"), b"for p1", headers=headers("a"))
        await j1.publish(subjects.referral(REGION, "p1", "p2"), b"for p2", headers=headers("b"))

        # Its own durable consumer: created (subject-filtered create), pulled, acked.
        mine = await j1.pull_subscribe(
            subjects.referrals_to(REGION, "p1"),
            durable=subjects.referrals_consumer("p1"),
            stream=REFERRALS,
        )
        msgs = await mine.fetch(10, timeout=2)
        assert [m.data for m in msgs] == [b"for p1"]  # nothing addressed to anyone else
        for m in msgs:
            await m.ack_sync()
        with pytest.raises(nats.errors.TimeoutError):
            await mine.fetch(1, timeout=0.5)
        assert p1_errors == []

        # Widening its own consumer to everyone's referrals: refused by the server...
        body = {
            "stream_name": REFERRALS,
            "config": {
                "name": "referrals-p1",
                "durable_name": "referrals-p1",
                "filter_subject": subjects.all_referrals(REGION),
                "ack_policy": "explicit",
            },
        }
        create = f"$JS.API.CONSUMER.CREATE.{REFERRALS}.referrals-p1"
        filtered = f"{create}.{subjects.referrals_to(REGION, 'p1')}"
        reply = await p1.request(filtered, json.dumps(body).encode(), timeout=2)
        assert json.loads(reply.data)["error"]["err_code"] == 10131
        # ...and the unfiltered create subjects are not granted at all.
        outcomes = await asyncio.gather(
            *(
                p1.request(unfiltered, json.dumps(body).encode(), timeout=TIMEOUT)
                for unfiltered in (
                    create,
                    f"$JS.API.CONSUMER.DURABLE.CREATE.{REFERRALS}.referrals-p1",
                    f"{create}.{subjects.all_referrals(REGION)}",
                )
            ),
            return_exceptions=True,
        )
        assert [type(o) for o in outcomes] == [nats.errors.TimeoutError] * 3
        assert await violation_count(p1_errors, 3) == 3

        # p2's consumer: p1 can neither create it nor pull from it once p2 has.
        with pytest.raises(nats.errors.TimeoutError):
            await j1.pull_subscribe(
                subjects.referrals_to(REGION, "p2"),
                durable=subjects.referrals_consumer("p2"),
                stream=REFERRALS,
            )
        theirs = await j2.pull_subscribe(
            subjects.referrals_to(REGION, "p2"),
            durable=subjects.referrals_consumer("p2"),
            stream=REFERRALS,
        )
        stolen = await j1.pull_subscribe_bind(subjects.referrals_consumer("p2"), stream=REFERRALS)
        with pytest.raises(nats.errors.TimeoutError):
            await stolen.fetch(1, timeout=TIMEOUT)
        received = await theirs.fetch(10, timeout=2)
        assert b"for p2" in [m.data for m in received]
        assert {m.subject.rsplit(".", 1)[1] for m in received} == {"p2"}
        assert p2_errors == []
        assert await violation_count(p1_errors, 5) >= 5


async def test_a_partner_reads_back_its_own_events_only(server: Server) -> None:
    errors: list[str] = []
    async with connect(server, "p1", errors) as nc:
        js = nc.jetstream(timeout=TIMEOUT)
        await js.publish(subjects.events(REGION, "p1", "readback"), b"mine", headers=headers("rb"))
        # Through the relay's consumer, and through the checkpointer's.
        for consumer in (subjects.relay_consumer, subjects.checkpoint_consumer):
            config = ConsumerConfig(
                name=consumer("p1"),
                filter_subject=subjects.events_of(REGION, "p1"),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
                mem_storage=True,
            )
            info = await js.add_consumer(EVENTS, config)
            sub = await js.pull_subscribe_bind(consumer("p1"), stream=EVENTS)
            msgs = await sub.fetch(info.num_pending or 1, timeout=2)
            assert msgs
            assert {subjects.partner_of(m.subject) for m in msgs} == {"p1"}
            await sub.unsubscribe()
            assert await js.delete_consumer(EVENTS, consumer("p1"))
        assert errors == []
        # The same consumer names with p2's filter, or p2's consumers: refused.
        refused = 0
        for consumer in (subjects.relay_consumer, subjects.checkpoint_consumer):
            for name, partner in (("p1", "p2"), ("p2", "p2")):
                with pytest.raises(nats.errors.TimeoutError):
                    await js.add_consumer(
                        EVENTS,
                        ConsumerConfig(
                            name=consumer(name),
                            filter_subject=subjects.events_of(REGION, partner),
                            ack_policy=AckPolicy.NONE,
                        ),
                    )
                refused += 1
        assert await violation_count(errors, refused) == refused


async def test_a_partner_reads_the_region_announcements_and_no_other_aggregates(
    server: Server,
) -> None:
    async with connect(server, "aggregator", []) as agg:
        js = agg.jetstream(timeout=TIMEOUT)
        await js.publish(subjects.region_taken(REGION), b"announcement", stream=AGGREGATES)
        await js.publish(subjects.aggregates(REGION, "incidents"), b"release", stream=AGGREGATES)
    errors: list[str] = []
    async with connect(server, "p1", errors) as nc:
        js = nc.jetstream(timeout=TIMEOUT)
        name = subjects.region_consumer("p1")
        config = ConsumerConfig(
            name=name,
            filter_subject=subjects.region_taken(REGION),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
        )
        info = await js.add_consumer(AGGREGATES, config)
        sub = await js.pull_subscribe_bind(name, stream=AGGREGATES)
        msgs = await sub.fetch(info.num_pending or 1, timeout=2)
        assert msgs
        assert {m.subject for m in msgs} == {subjects.region_taken(REGION)}
        await sub.unsubscribe()
        assert await js.delete_consumer(AGGREGATES, name)
        assert errors == []
        # Its consumer over the statements, p2's consumer, or the stream read directly: refused.
        attempts = [
            js.add_consumer(AGGREGATES, ConsumerConfig(
                name=name, filter_subject=subjects.all_aggregates(REGION),
                ack_policy=AckPolicy.NONE)),
            js.add_consumer(AGGREGATES, ConsumerConfig(
                name=subjects.region_consumer("p2"),
                filter_subject=subjects.region_taken(REGION), ack_policy=AckPolicy.NONE)),
            js.get_last_msg(AGGREGATES, subjects.aggregates(REGION, "incidents")),
        ]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        assert [type(o) for o in outcomes] == [nats.errors.TimeoutError] * 3
        assert await violation_count(errors, 3) == 3


async def test_the_aggregator_reads_but_cannot_destroy(server: Server) -> None:
    errors: list[str] = []
    async with connect(server, "aggregator", errors) as nc:
        js = nc.jetstream(timeout=TIMEOUT)
        sub = await js.pull_subscribe(subjects.all_events(REGION), durable="ingest", stream=EVENTS)
        msgs = await sub.fetch(100, timeout=2)
        assert msgs
        for m in msgs:
            await m.ack_sync()
        await nc.publish(subjects.aggregates(REGION, "violence-by-police"), b"release")
        await nc.flush()
        # It cosigns checkpoints: the checkpoints stream keeps the cosignatures.
        ack = await js.publish(subjects.witness(REGION, "p1"), b"cosignature")
        assert ack.stream == CHECKPOINTS
        assert errors == []
        stolen = await js.pull_subscribe_bind(subjects.referrals_consumer("p1"), stream=REFERRALS)
        outcomes = await asyncio.gather(  # each refusal is a timeout: wait for them together
            js.delete_stream(EVENTS),
            js.purge_stream(REFERRALS),
            js.update_stream(stream_configs(REGION)[0]),
            js.consumer_info(REFERRALS, subjects.referrals_consumer("p1")),
            js.consumer_info(EVENTS, subjects.checkpoint_consumer("p1")),
            stolen.fetch(1, timeout=TIMEOUT),
            js.publish(subjects.events(REGION, "p1", "forged"), b"x"),  # a partner's subject
            js.publish(subjects.checkpoints(REGION, "p1"), b"x"),  # nor its checkpoints
            return_exceptions=True,
        )
        assert [type(o) for o in outcomes] == [nats.errors.TimeoutError] * 8
        assert await violation_count(errors, 8) == 8
    async with connect(server, "operator", []) as op:
        assert (await op.jetstream().stream_info(EVENTS)).state.messages > 0


async def test_wrong_password_is_refused(server: Server) -> None:
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    # max_reconnect_attempts=0 would retry forever in nats-py 2.16, and allow_reconnect=False
    # leaks the socket when authorization fails: one retry, then NoServersError.
    with pytest.raises(nats.errors.NoServersError):
        await nats.connect(
            server.url,
            user="p1",
            password=server.credentials.password("p2"),
            error_cb=on_error,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            connect_timeout=2,
        )
    assert "nats: 'Authorization Violation'" in errors


def test_cli_streams_updates_in_place(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["region", "streams", "--credentials", str(server.credentials_file), "--url", server.url]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines()] == [
        EVENTS,
        REFERRALS,
        CHECKPOINTS,
        AGGREGATES,
        QUARANTINE,
    ]
    code = main(
        [
            "region",
            "streams",
            "--credentials",
            str(server.credentials_file),
            "--url",
            "nats://127.0.0.1:1",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("handsoff: error: cannot set up the streams")
    assert err.count("\n") == 1
