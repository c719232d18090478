"""TLS for the region's NATS: the generated server configurations (checked by `nats-server
-t`, which loads the certificates) and real servers with real certificates from a throwaway
CA. A node relays to a TLS-only server; a client without the CA, without a certificate
where one is required, or facing a server that does not start TLS, is refused with an
error that names the problem, and sends nothing before the server has proved itself; the
servers of a cluster and a hub and its leaf authenticate each other with certificates."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import pytest

from handsoff.federation import subjects
from handsoff.federation.envelope import open_message
from handsoff.federation.natsconf import (
    Cluster,
    NatsConfigError,
    RemoteTls,
    ServerTls,
    generate_credentials,
    load_credentials,
    nats_config,
    remote_tls_block,
)
from handsoff.federation.region import (
    Aggregator,
    Coordinator,
    RegionDocument,
    load_region,
)
from handsoff.federation.shared import decode
from handsoff.keys import SigningKey
from handsoff.services.cli import main
from handsoff.services.natsclient import NatsTls, NatsTlsError, connect, connect_options
from handsoff.services.natsserver import EmbeddedNats, free_port
from handsoff.services.node.config import FederationSettings, NodePaths, load_config
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import expected_messages, record_stories
from support import PASSPHRASE, RegionKit, eventually, make_node, signed_region
from tls_support import Issued, TestCa, make_ca

REGION = "sadc"
NATS_SERVER = Path(sys.executable).with_name("nats-server")
EVENTS = subjects.events_stream(REGION)


def config_test(path: Path) -> None:
    """`nats-server -t`: the server's own parser accepts the file (and loads the TLS files)."""
    r = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(path)], check=False, capture_output=True, timeout=30
    )
    assert r.returncode == 0, f"{path}: {(r.stdout + r.stderr).decode()}"


@dataclass(frozen=True)
class Pki:
    ca: TestCa
    server: Issued  # localhost, 127.0.0.1: the servers' (clients and routes)
    client: Issued  # a client's, signed by the region's CA
    stranger: Issued  # signed by another CA
    other_ca: TestCa


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = make_ca(tmp_path_factory.mktemp("ca"))
    other = make_ca(tmp_path_factory.mktemp("other-ca"), "someone else's CA")
    return Pki(
        ca,
        ca.issue("server"),
        ca.issue("client", server=False),
        other.issue("stranger"),
        other,
    )


def server_tls(pki: Pki, **kwargs: Any) -> ServerTls:
    return ServerTls(
        cert_file=str(pki.server.cert),
        key_file=str(pki.server.key),
        ca_file=str(pki.ca.ca),
        **kwargs,
    )


def region_doc(*partners: str) -> RegionDocument:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    doc = RegionDocument(
        region=REGION,
        version=1,
        issued_at=t0,
        expires_at=t0 + timedelta(days=365),
        threshold=1,
        coordinators=[Coordinator("c1", "Coordinator", SigningKey.generate().public_key)],
        aggregator=Aggregator("agg", SigningKey.generate().public_key),
    )
    for p in partners:
        doc = doc.add_partner(
            p, f"Partner {p}", "BW", SigningKey.generate().public_key, valid_from=t0, issued_at=t0
        )
    return doc


def monitor(port: int, endpoint: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{endpoint}", timeout=2) as r:
            return dict(json.load(r))
    except OSError:
        return {}


def logged(server: EmbeddedNats, pattern: str) -> bool:
    return re.search(pattern, server.log_file.read_text(errors="replace")) is not None


# ---------------------------------------------------------------------------------------
# Generated configurations


def test_tls_configurations_pass_the_config_test(tmp_path: Path, pki: Pki) -> None:
    doc = region_doc("p1", "p2")
    credentials = generate_credentials(doc)
    plain = nats_config(doc, credentials, store_dir=tmp_path / "js")
    assert "tls {" not in plain  # no TLS asked: the configuration is what it always was
    cluster = Cluster(name="sadc", server_name="hub-1", routes=["hub-2.example.org:6222"])
    variants: dict[str, ServerTls] = {
        "server certificate only": ServerTls(
            cert_file=str(pki.server.cert), key_file=str(pki.server.key)
        ),
        "with the CA": server_tls(pki),
        "mutual": server_tls(pki, verify=True, timeout=5),
    }
    for name, tls in variants.items():
        path = tmp_path / f"{name}.conf"
        text = nats_config(doc, credentials, store_dir=tmp_path / "js", tls=tls)
        path.write_text(text)
        config_test(path)
        block = text.split("tls {\n", 1)[1].split("}\n", 1)[0]
        assert "handshake_first: true" in block  # clients start TLS before anything else
        assert f"verify: {'true' if tls.verify else 'false'}" in block
        assert f'cert_file: "{pki.server.cert}"' in block
        # TLS adds its block and nothing else changes
        assert text.replace("tls {\n" + block + "}\n", "") == plain
    clustered = nats_config(
        doc, credentials, store_dir=tmp_path / "js", cluster=cluster, tls=server_tls(pki)
    )
    (tmp_path / "cluster.conf").write_text(clustered)
    config_test(tmp_path / "cluster.conf")
    routes = clustered.split("cluster {\n", 1)[1]
    assert "  tls {\n" in routes
    assert "    verify: true\n" in routes  # servers check each other's certificates
    assert "  no_advertise: true\n" in routes


def test_tls_settings_that_cannot_work_are_refused(tmp_path: Path, pki: Pki) -> None:
    doc = region_doc("p1")
    credentials = generate_credentials(doc)
    cluster = Cluster(name="sadc", server_name="hub-1")
    no_ca = ServerTls(cert_file=str(pki.server.cert), key_file=str(pki.server.key))
    with pytest.raises(NatsConfigError, match="route"):
        nats_config(doc, credentials, store_dir=tmp_path, cluster=cluster, tls=no_ca)
    verify = msgspec.structs.replace(no_ca, verify=True)
    with pytest.raises(NatsConfigError, match="CA"):
        nats_config(doc, credentials, store_dir=tmp_path, tls=verify)
    with pytest.raises(NatsConfigError, match="absolute"):
        nats_config(
            doc, credentials, store_dir=tmp_path, tls=ServerTls(cert_file="cert.pem", key_file="k")
        )
    with pytest.raises(NatsConfigError, match="cannot be written"):
        nats_config(
            doc,
            credentials,
            store_dir=tmp_path,
            tls=ServerTls(cert_file='/x"\ny: 1', key_file="/k"),
        )
    with pytest.raises(NatsConfigError, match="key"):
        remote_tls_block(RemoteTls(cert_file="/leaf.pem"), "")
    with pytest.raises(NatsTlsError, match="--nats-key"):
        NatsTls(cert_file="/client.pem")


def deploy(region: Path, out: Path, *extra: str) -> int:
    return main(["region", "deploy", "--file", str(region), "--out", str(out), *extra])


def test_region_deploy_with_tls(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    region = tmp_path / "region.json"
    signed_region(region, ("p1", "leaf-bw"))
    out = tmp_path / "generated"
    leaf = pki.ca.issue("leaf-bw", server=False)
    tls = (
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-ca", str(pki.ca.ca)),
    )
    leaf_tls = (
        *("--leaf-tls-ca", str(pki.ca.ca)),
        *("--leaf-tls-cert", str(leaf.cert), "--leaf-tls-key", str(leaf.key)),
    )
    store = ("--store-dir", str(tmp_path / "js"), "--leaf-store-dir", str(tmp_path / "leaf-js"))
    assert deploy(region, out, *store, "--leaf", "leaf-bw", *tls, *leaf_tls) == 0
    assert "TLS (mutual)" in capsys.readouterr().out
    for conf in sorted(out.rglob("*.conf")):
        config_test(conf)
    for i in (1, 2, 3):
        hub = (out / f"nats-{i}.conf").read_text()
        blocks = re.findall(r"^( *)tls \{\n(.*?)^\1\}\n", hub, re.M | re.S)
        assert [indent for indent, _ in blocks] == ["", "  ", "  "]  # client, routes, leaves
        client, routes, leaves = (body for _, body in blocks)
        assert "handshake_first: true" in client
        assert "verify: false" in client  # clients log in with passwords
        assert "verify: true" in routes
        assert "verify: true" in leaves  # leaves show a certificate the CA signed
    remote = (out / "partners" / "leaf-bw" / "nats-leaf.conf").read_text()
    (block,) = re.findall(r"^      tls \{\n(.*?)^      \}\n", remote, re.M | re.S)
    assert f'cert_file: "{leaf.cert}"' in block
    assert f'ca_file: "{pki.ca.ca}"' in block
    assert "tls {" not in remote.split("leafnodes {")[0]  # its node reaches it on 127.0.0.1

    # Clients' mutual TLS too; a single server with a publicly trusted certificate (no CA):
    # no routes to secure, and leaves trust the system's CAs, showing no certificate.
    assert deploy(region, out, *store, "--leaf", "leaf-bw", *tls, *leaf_tls, "--tls-verify") == 0
    assert "verify: true" in (out / "nats-1.conf").read_text().split("jetstream {")[0]
    single = ("--servers", "1", "--tls-cert", str(pki.server.cert))
    single = (*single, "--tls-key", str(pki.server.key))
    assert deploy(region, out, *store, "--leaf", "leaf-bw", *single) == 0
    config_test(out / "nats-1.conf")
    remote = (out / "partners" / "leaf-bw" / "nats-leaf.conf").read_text()
    (block,) = re.findall(r"^      tls \{\n(.*?)^      \}\n", remote, re.M | re.S)
    assert block.strip() == "timeout: 2"
    assert "verify: false" in (out / "nats-1.conf").read_text().split("leafnodes {")[1]
    # By default a leaf of a hub with the CA finds its files where the systemd unit puts them.
    assert deploy(region, out, *store, "--servers", "1", "--leaf", "leaf-bw", *tls) == 0
    remote = (out / "partners" / "leaf-bw" / "nats-leaf.conf").read_text()
    assert 'cert_file: "/run/credentials/handsoff-nats.service/cert.pem"' in remote
    # Without TLS options the files are what they were.
    assert deploy(region, out, *store, "--leaf", "leaf-bw") == 0
    assert not any("tls {" in p.read_text() for p in out.rglob("*.conf"))
    capsys.readouterr()

    refusals = {
        "--tls-cert and --tls-key go together": ("--tls-cert", str(pki.server.cert)),
        "need --tls-cert": ("--tls-ca", str(pki.ca.ca)),
        "--tls-verify needs --tls-ca": (*single, "--tls-verify"),
        "TLS between the servers of a cluster needs the region's CA": single[2:],
        "--leaf-tls-* need TLS on the hub": ("--leaf", "leaf-bw", *leaf_tls),
        "not an absolute path": (*tls, "--leaf", "leaf-bw", "--leaf-tls-cert", "leaf.pem"),
    }
    for message, args in refusals.items():
        assert deploy(region, out, *store, *args) == 2, message
        assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Real servers, real certificates


@dataclass
class TlsRegion:
    server: EmbeddedNats
    out: Path  # `region nats-config`'s folder: credentials.json, nats-server.conf
    region_file: Path

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.server.port}"

    def password(self, user: str) -> str:
        return load_credentials(self.out / "credentials.json").password(user)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path / "p1", "p1")
    try:
        yield n
    finally:
        n.close()


def start_region(tmp_path: Path, nodes: list[Node], *tls_args: str) -> TlsRegion:
    """`region nats-config` with `tls_args`, its server started, the streams created over
    TLS by `region streams` with the operator's password."""
    region_file = RegionKit(nodes).save(tmp_path / "region.json")
    out, port = tmp_path / "nats-config", free_port()
    argv = ["region", "nats-config", "--file", str(region_file), "--out", str(out)]
    assert main([*argv, "--port", str(port), *tls_args]) == 0
    config_test(out / "nats-server.conf")
    server = EmbeddedNats(tmp_path / "nats", port, out / "nats-server.conf").start()
    return TlsRegion(server, out, region_file)


def streams(region: TlsRegion, url: str, *tls_args: str) -> int:
    credentials = str(region.out / "credentials.json")
    return main(["region", "streams", "--credentials", credentials, "--url", url, *tls_args])


def joined_link(
    node: Node, region: TlsRegion, tmp_path: Path, tls: NatsTls | None = None
) -> NodeLink:
    """The node joined to the region (as p1, with its password file), its link not started."""
    join_region(node, region.region_file)
    password_file = tmp_path / "p1.nats-password"
    password_file.write_text(region.password("p1"))
    return NodeLink(
        node,
        FederationSettings(
            nats_url=region.url,
            nats_user="p1",
            nats_password_file=str(password_file),
            publish_interval=0,
            nats_tls=tls,
        ),
    )


async def stored_events(region: TlsRegion, tls: NatsTls) -> list[tuple[str, bytes]]:
    """(msg id, payload) of the events stream, read over TLS as the operator."""
    nc = await connect(
        region.url, tls, user="operator", password=region.password("operator"), connect_timeout=5
    )
    try:
        js = nc.jetstream(timeout=5)
        info = await js.stream_info(EVENTS)
        document = load_region(region.region_file).document
        out = []
        for seq in range(1, info.state.last_seq + 1):
            m = await js.get_msg(EVENTS, seq)
            assert m.subject is not None
            assert m.data is not None
            assert m.time is not None
            headers = dict(m.headers or {})
            opened = open_message(document, m.subject, headers, m.data, m.time, decode)
            out.append((opened.msg_id, m.data))
        return out
    finally:
        await nc.close()


async def test_a_node_joined_with_the_ca_relays_to_a_tls_only_server(
    tmp_path: Path, node: Node, pki: Pki, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    region = start_region(
        tmp_path,
        [node],
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-ca", str(pki.ca.ca)),
    )
    try:
        assert "with TLS" in capsys.readouterr().out
        code = await asyncio.to_thread(streams, region, region.url, "--nats-ca", str(pki.ca.ca))
        assert code == 0, capsys.readouterr().err
        # The partner joins with the region's CA: node.json keeps it (absolute paths).
        password_file = tmp_path / "p1.nats-password"
        password_file.write_text(region.password("p1") + "\n")
        node.close()
        monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASSPHRASE.decode())
        monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
        monkeypatch.chdir(pki.ca.folder)
        nats_url = f"nats://127.0.0.1:{region.server.port}"  # TLS all the same: a CA is given
        join = [
            *("node", "join", "--dir", str(node.paths.root), "--region", str(region.region_file)),
            *("--nats", nats_url, "--password-file", str(password_file), "--nats-ca", "ca.pem"),
            *("--publish-interval", "0", "--region-check-interval", "5"),
        ]
        assert main(join) == 0, capsys.readouterr().err
        assert "over TLS" in capsys.readouterr().out
        settings = load_config(NodePaths(node.paths.root)).federation
        assert settings is not None
        assert settings.nats_tls == NatsTls(ca_file=str(pki.ca.ca))
        assert settings.region_check_interval == 5
        assert connect_options([nats_url], settings.nats_tls)["servers"] == [region.url]

        reopened = Node.open(node.paths.root, PASSPHRASE)
        link = NodeLink(reopened, settings)
        try:
            record_stories(reopened, 7, 12)
            expected = expected_messages(reopened)
            assert expected
            await link.start()
            await eventually(
                "the relay to publish over TLS",
                lambda: link.status().relay_lag == 0 and link.status().published == len(expected),
            )
            assert link.status().connected
            assert link.status().last_error is None
            # Every event arrived as the node signed it, read back over TLS.
            stored = await stored_events(region, NatsTls(ca_file=str(pki.ca.ca)))
            assert stored == expected
        finally:
            await link.stop()
            reopened.close()
    finally:
        region.server.stop()


async def test_clients_without_the_ca_are_refused_with_a_clear_error(
    tmp_path: Path, node: Node, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    region = start_region(
        tmp_path, [node], "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)
    )
    password = region.password("operator")
    try:
        # The system's CAs do not know the region's CA.
        assert await asyncio.to_thread(streams, region, region.url) == 2
        err = capsys.readouterr().err
        assert "cannot set up the streams" in err
        assert "TLS: the server certificate of" in err
        assert "is not trusted" in err
        assert "--nats-ca" in err
        # Someone else's CA: not trusted either.
        other = NatsTls(ca_file=str(pki.other_ca.ca))
        with pytest.raises(NatsTlsError, match="not trusted"):
            await connect(region.url, other, user="operator", password=password)
        # The right CA, but a name the certificate does not carry.
        with pytest.raises(NatsTlsError, match=r"not for that name.*--nats-tls-name"):
            await connect(
                region.url,
                NatsTls(ca_file=str(pki.ca.ca), server_name="nats.example.org"),
                user="operator",
                password=password,
            )
        # No TLS at all: the server (TLS first) says nothing; the error says why.
        plain = f"nats://127.0.0.1:{region.server.port}"
        assert await asyncio.to_thread(streams, region, plain) == 2
        assert "probably requires TLS" in capsys.readouterr().err
        # Unusable files.
        with pytest.raises(NatsTlsError, match="cannot read"):
            await connect(region.url, NatsTls(ca_file=str(tmp_path / "missing.pem")))
        with pytest.raises(NatsTlsError, match="PEM"):
            await connect(region.url, NatsTls(ca_file=str(pki.server.key)))

        # A node configured without the CA keeps recording; its status names the problem.
        link = joined_link(node, region, tmp_path)
        try:
            await link.start()
            await eventually(
                "the link to report the TLS problem",
                lambda: "not trusted" in (link.status().last_error or ""),
            )
            assert not link.status().connected
            assert link.running  # it keeps trying, as for any unreachable region
        finally:
            await link.stop()
    finally:
        region.server.stop()


async def test_a_tls_client_sends_nothing_to_a_server_that_does_not_start_tls(pki: Pki) -> None:
    """Someone in the middle (or a server without TLS) greets in clear and does not ask for
    TLS: nats-py alone would send the password in its CONNECT. Ours sends a TLS hello only."""
    received = bytearray()
    done = asyncio.Event()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "x", "version": "2.15.1", "auth_required": True, "max_payload": 1024}
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        await writer.drain()
        try:
            while data := await reader.read(4096):
                received.extend(data)
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NatsTlsError, match=r"does not start TLS.*nothing was sent"):
            await connect(
                f"tls://localhost:{port}",
                NatsTls(ca_file=str(pki.ca.ca)),
                user="p1",
                password="the-password-never-sent",
                connect_timeout=2,
            )
        await asyncio.wait_for(done.wait(), 10)
        assert received  # a TLS ClientHello ...
        assert received[0] == 0x16  # (a TLS handshake record)
        assert b"the-password-never-sent" not in received  # ... and nothing else
        assert b"CONNECT" not in received
    finally:
        server.close()
        await server.wait_closed()


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    tmp_path: Path, node: Node, pki: Pki
) -> None:
    region = start_region(
        tmp_path,
        [node],
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-ca", str(pki.ca.ca), "--tls-verify"),
    )
    password = region.password("operator")
    ca = str(pki.ca.ca)
    try:
        with pytest.raises(NatsTlsError, match=r"requires a client certificate.*--nats-cert"):
            await connect(region.url, NatsTls(ca_file=ca), user="operator", password=password)
        stranger = NatsTls(
            ca_file=ca, cert_file=str(pki.stranger.cert), key_file=str(pki.stranger.key)
        )
        with pytest.raises(NatsTlsError, match="refused this client's certificate"):
            await connect(region.url, stranger, user="operator", password=password)
        # With a certificate the region's CA signed: in, and still with its password.
        mine = NatsTls(ca_file=ca, cert_file=str(pki.client.cert), key_file=str(pki.client.key))
        nc = await connect(region.url, mine, user="operator", password=password)
        await nc.close()
        refused: list[str] = []

        async def on_error(e: Exception) -> None:
            refused.append(str(e))

        with pytest.raises(nats.errors.Error):
            await connect(
                region.url,
                mine,
                user="operator",
                password="wrong",
                error_cb=on_error,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
            )
        assert any("Authorization Violation" in e for e in refused)

        code = await asyncio.to_thread(
            streams,
            region,
            region.url,
            *("--nats-ca", ca, "--nats-cert", str(pki.client.cert)),
            *("--nats-key", str(pki.client.key)),
        )
        assert code == 0
        # A node with its certificate relays.
        link = joined_link(node, region, tmp_path, mine)
        try:
            record_stories(node, 3, 6)
            expected = expected_messages(node)
            await link.start()
            await eventually(
                "the relay to publish over mutual TLS",
                lambda: link.status().published == len(expected) and link.status().relay_lag == 0,
            )
        finally:
            await link.stop()
        assert await stored_events(region, mine) == expected
    finally:
        region.server.stop()


async def test_a_leaf_reaches_a_tls_hub_with_its_certificate_and_not_without(
    tmp_path: Path, pki: Pki
) -> None:
    region = tmp_path / "region.json"
    signed_region(region, ("leaf-bw", "p2"))
    hub_port, leaf_port, hub_monitor, leaf_monitor = (free_port() for _ in range(4))
    hub_leaf_port, rogue_port = free_port(), free_port()
    leaf = pki.ca.issue("leaf-bw", server=False)
    out = tmp_path / "generated"
    code = deploy(
        region,
        out,
        *("--servers", "1", "--hub-host", "localhost", "--listen-host", "127.0.0.1"),
        *("--port", str(hub_port), "--leaf-port", str(hub_leaf_port)),
        *("--monitor-port", str(hub_monitor), "--store-dir", str(tmp_path / "hub-js")),
        *("--leaf", "leaf-bw", "--leaf-store-dir", str(tmp_path / "leaf-js")),
        *("--leaf-client-port", str(leaf_port), "--leaf-monitor-port", str(leaf_monitor)),
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-ca", str(pki.ca.ca), "--leaf-tls-ca", str(pki.ca.ca)),
        *("--leaf-tls-cert", str(leaf.cert), "--leaf-tls-key", str(leaf.key)),
    )
    assert code == 0
    leaf_conf = out / "partners" / "leaf-bw" / "nats-leaf.conf"
    # The same leaf without its certificate (and its own store and ports).
    rogue_conf = tmp_path / "rogue.conf"
    rogue = re.sub(r"^ *(cert|key)_file: .*\n", "", leaf_conf.read_text(), flags=re.M)
    rogue = rogue.replace(str(tmp_path / "leaf-js"), str(tmp_path / "rogue-js"))
    rogue = rogue.replace(f"127.0.0.1:{leaf_monitor}", f"127.0.0.1:{free_port()}")
    rogue = rogue.replace('"leaf-leaf-bw"', '"rogue"')
    rogue_conf.write_text(rogue)
    for conf in (out / "nats-1.conf", leaf_conf, rogue_conf):
        config_test(conf)
    hub = EmbeddedNats(tmp_path / "hub", hub_port, out / "nats-1.conf")
    good = EmbeddedNats(tmp_path / "leaf", leaf_port, leaf_conf)
    bad = EmbeddedNats(tmp_path / "rogue", rogue_port, rogue_conf)
    try:
        hub.start()
        good.start()
        await eventually(
            "the leaf to connect",
            lambda: len(monitor(hub_monitor, "leafz").get("leafs") or []) == 1,
        )
        bad.start()
        await eventually(
            "the hub to refuse the leaf without a certificate",
            lambda: logged(hub, r"TLS leafnode handshake error: .*didn.t provide a certificate"),
        )
        (connection,) = monitor(hub_monitor, "leafz")["leafs"]
        assert connection["name"] == "leaf-leaf-bw"
    finally:
        bad.stop()
        good.stop()
        hub.stop()


async def test_cluster_servers_accept_routes_only_with_the_regions_certificates(
    tmp_path: Path, pki: Pki
) -> None:
    doc = region_doc("p1")
    credentials = generate_credentials(doc)
    ports = [free_port() for _ in range(3)]
    routes = [free_port() for _ in range(3)]
    monitors = [free_port() for _ in range(3)]
    servers = []
    for i in range(3):
        tls = server_tls(pki) if i < 2 else ServerTls(
            cert_file=str(pki.stranger.cert),
            key_file=str(pki.stranger.key),
            ca_file=str(pki.other_ca.ca),
        )
        cluster = Cluster(
            name="sadc",
            server_name=f"hub-{i + 1}",
            port=routes[i],
            routes=[f"localhost:{routes[j]}" for j in range(3) if j != i],
        )
        text = nats_config(
            doc, credentials, port=ports[i], store_dir=tmp_path / f"js{i}", cluster=cluster, tls=tls
        )
        text += f'http: "127.0.0.1:{monitors[i]}"\n'
        conf = tmp_path / f"hub-{i + 1}.conf"
        conf.write_text(text)
        config_test(conf)
        servers.append(EmbeddedNats(tmp_path / f"hub-{i + 1}", ports[i], conf))
    try:
        for server in servers:
            server.start()

        def peers(i: int) -> set[str]:
            routes = monitor(monitors[i], "routez").get("routes") or []
            return {r.get("remote_name") for r in routes}

        await eventually(
            "the two servers with the region's certificates to route to each other",
            lambda: peers(0) == {"hub-2"} and peers(1) == {"hub-1"},
        )
        await eventually(
            "the third (another CA's certificate) to be refused on both sides",
            lambda: all(
                logged(s, r"TLS route handshake error: .*certificate signed by unknown authority")
                for s in servers
            ),
        )
        assert peers(2) == set()
        assert peers(0) == {"hub-2"}
    finally:
        for server in servers:
            server.stop()


def test_node_config_without_tls_reads_as_before(tmp_path: Path, node: Node) -> None:
    """node.json files written before TLS existed load unchanged (nats_tls: None)."""
    raw = json.loads(node.paths.config.read_text())
    raw["federation"] = {"nats_url": "nats://127.0.0.1:4222", "nats_user": "p1"}
    node.paths.config.write_text(json.dumps(raw))
    settings = load_config(NodePaths(node.paths.root)).federation
    assert settings is not None
    assert settings.nats_tls is None
    assert connect_options(["nats://127.0.0.1:4222"], None) == {
        "servers": ["nats://127.0.0.1:4222"]
    }


async def test_the_aggregator_and_the_auditor_connect_over_mutual_tls(
    tmp_path: Path, node: Node, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    from handsoff.services import aggregator_cli
    from handsoff.services.aggregator.service import connect as aggregator_connect
    from handsoff.services.cli import build_parser

    region = start_region(
        tmp_path,
        [node],
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-ca", str(pki.ca.ca), "--tls-verify"),
    )
    ca = ("--nats-ca", str(pki.ca.ca))
    mine = (*ca, "--nats-cert", str(pki.client.cert), "--nats-key", str(pki.client.key))
    try:
        assert await asyncio.to_thread(streams, region, region.url, *mine) == 0
        passwords = tmp_path / "passwords"
        passwords.mkdir()
        for user in ("aggregator", "operator"):
            (passwords / user).write_text(region.password(user))
        serve = ["aggregator", "serve", "--dir", str(tmp_path / "aggregator")]
        serve += ["--nats", region.url, "--password-file", str(passwords / "aggregator")]
        config = aggregator_cli._config(build_parser().parse_args([*serve, *mine]))
        nc = await aggregator_connect(config)
        assert nc.is_connected
        await nc.close()
        config = aggregator_cli._config(build_parser().parse_args([*serve, *ca]))
        with pytest.raises(NatsTlsError, match="requires a client certificate"):
            await aggregator_connect(config)

        audit = ["audit", "region", "--nats", region.url, "--region", str(region.region_file)]
        audit += ["--password-file", str(passwords / "operator")]
        assert await asyncio.to_thread(main, [*audit, *ca]) == 2
        assert "requires a client certificate" in capsys.readouterr().err
        assert await asyncio.to_thread(main, [*audit, *mine]) != 2
        assert "TLS" not in capsys.readouterr().err
    finally:
        region.server.stop()
