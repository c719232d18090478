"""Deployment files generated from the signed region document (`handsoff region deploy`).

What it makes, all from the region document and its NATS credentials:

- `nats-<i>.conf`: one configuration per server of the region's hub (`natsconf.nats_config`,
  a JetStream cluster when there are several servers, `sync_interval: always`), plus what a
  hub needs for partners behind a leaf node: the JetStream domain `hub`, a listener for leaf
  connections and a NATS user `leaf_<partner>` per leaf partner, and a monitoring port
  (`/healthz`) on the loopback interface;
- `partners/<partner>/nats-password`: each partner's own password, to hand over;
- `partners/<partner>/nats-leaf.conf`: for a partner with unreliable internet, the
  configuration of its own nats-server (a leaf node of the hub, JetStream domain
  `<partner>`), which keeps the partner's outgoing messages while the line is down;
- `secrets/aggregator.nats-password`, `secrets/node-a.nats-password`, ...: the files the
  compose file (deploy/compose.yaml) mounts as secrets;
- `region.json`: the signed region document the files were made from.

With TLS (`HubLayout.tls`, docs/operations.md section 8) every hub server's client port,
routes and leaf port need TLS, the routes and (with the region's CA) the leaves mutual, and
each leaf's remote reaches the hub over TLS (`DeployRequest.leaf_tls`, `leaf_remote_tls`).

The leaf arrangement (checked end to end in tests/federation/test_deploy.py):

    node --publish--> leaf nats-server: HX_<R>_EVENTS / _REFERRALS / _CHECKPOINTS, each
                      capturing only this partner's subjects (its outbox; kept while offline)
    hub streams HX_<R>_EVENTS / _REFERRALS / _CHECKPOINTS --source (external API
                      $JS.<partner>.API, filtered to the partner's subjects)--> copy them once
                      the leaf is connected, in order, each message once

The node is configured exactly as for a direct connection (`node join --nats` pointing at
its own server, same user and password): the relay publishes to, and reads back from, the
leaf's stream of the same name. Two reads must see the hub rather than the leaf, and the
leaf's account maps them there (subject mappings to `$JS.hub.API`): the partner's referral
inbox (durable consumer `referrals-<partner>` on the hub's referrals stream; only while
connected), the checkpoint read-back (consumer `checkpoint-<partner>` on the hub's events
stream, so a checkpoint covers only what the hub holds, which is what the witness checks)
and the aggregator's announcements of region versions (consumer `region-<partner>` on the
hub's aggregates stream, filtered to `hx.<r>.aggregates._region`).

What a leaf may do on the hub is what the hub's `leaf_<partner>` user allows, whatever the
partner's own server says: deliver sourced messages (`$JS.S.>`) and answer the hub's API
requests (`$JSC.R.>`); its referral, checkpoint and region consumers with the same
subject-filtered create as a direct partner; nothing on `hx.>`. It receives the hub's
requests for its own domain, flow control and replies on its own inbox; never other
partners' messages.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import nats.js.errors
from nats.js.api import ExternalStream, StorageType, StreamConfig, StreamInfo, StreamSource
from nats.js.client import JetStreamContext

from handsoff.federation import natsconf, subjects
from handsoff.federation.natsconf import (
    ACCOUNT,
    AGGREGATOR_USER,
    DUPLICATE_WINDOW_S,
    Cluster,
    Credentials,
    NatsConfigError,
    RemoteTls,
    ServerTls,
    _list,
    _port,
    _q,
    generate_credentials,
    nats_config,
    partner_permissions,
    remote_tls_block,
    server_tls_block,
    stream_configs,
)
from handsoff.federation.region import RegionDocument, SignedRegion, _atomic_write, save_region

HUB_DOMAIN: Final = "hub"
CLIENT_PORT: Final = 4222
CLUSTER_PORT: Final = 6222
LEAF_PORT: Final = 7422
MONITOR_PORT: Final = 8222
COMPOSE_NODES: Final = ("node-a", "node-b")  # the partner nodes of deploy/compose.yaml
# Where a leaf's server finds its TLS files by default: the credentials directory (%d) of
# deploy/systemd/handsoff-nats.service, which loads them from /etc/handsoff/tls/.
LEAF_TLS_DIR: Final = Path("/run/credentials/handsoff-nats.service")

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")


class DeployError(NatsConfigError):
    """The deployment files cannot be made as asked."""


def leaf_user(partner: str) -> str:
    """The hub's NATS user of a partner's leaf connection (`_` cannot be in a partner id)."""
    return f"leaf_{subjects.token(partner)}"


def _host(value: str, what: str) -> str:
    if not _HOST.match(value):
        raise DeployError(f"{what}: {value!r} is not a host name or address")
    return value


def _hostport(value: str, default_port: int, what: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or host.endswith(":") or (host.count(":") and not host.startswith("[")):
        host, port = value, str(default_port)  # no port given (or a bare IPv6 address)
    if not port.isdigit():
        raise DeployError(f"{what}: {value!r} is not HOST or HOST:PORT")
    return f"{_host(host, what)}:{_port(int(port))}"


def _check_leaves(doc: RegionDocument, leaves: Iterable[str]) -> list[str]:
    out: list[str] = []
    for p in leaves:
        doc.partner(p)  # UnknownPartner if it is not in the document
        if p == HUB_DOMAIN:
            raise DeployError(
                f"partner {p!r} cannot run a leaf node: its JetStream domain would be the hub's"
            )
        if p not in out:
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------
# Credentials


def deploy_credentials(
    doc: RegionDocument, leaves: Iterable[str], previous: Credentials | None = None
) -> Credentials:
    """`natsconf.generate_credentials`, plus a password per leaf connection. Like every
    other password, a leaf's is kept while its partner is in the document (also when this
    run does not ask for the leaf: asking again later needs no new handover)."""
    base = generate_credentials(doc, previous)
    old = previous.users if previous is not None else {}
    users = dict(base.users)
    members = {leaf_user(p.id) for p in doc.partners}
    users |= {name: secret for name, secret in old.items() if name in members}
    for p in _check_leaves(doc, leaves):
        name = leaf_user(p)
        users[name] = old.get(name) or secrets.token_urlsafe(24)
    return msgspec.structs.replace(base, users=users)


# ---------------------------------------------------------------------------------------
# Permissions and mappings of a leaf


def _consumer_api(domain_prefix: str, stream: str, consumer: str) -> dict[str, str]:
    base = f"{domain_prefix}.CONSUMER.%s.{stream}.{consumer}"
    return {
        "create": base % "CREATE",  # + "." + filter subject
        "info": base % "INFO",
        "next": base % "MSG.NEXT",
        "delete": base % "DELETE",
    }


def _hub_reads(region: str, partner: str) -> list[tuple[str, str, str]]:
    """(stream, consumer, filter) the leaf's node reads on the hub rather than locally."""
    return [
        (
            subjects.referrals_stream(region),
            subjects.referrals_consumer(partner),
            subjects.referrals_to(region, partner),
        ),
        (
            subjects.events_stream(region),
            subjects.checkpoint_consumer(partner),
            subjects.events_of(region, partner),
        ),
        (
            subjects.aggregates_stream(region),
            subjects.region_consumer(partner),
            subjects.region_taken(region),
        ),
    ]


def leaf_mappings(region: str, partner: str) -> dict[str, str]:
    """Subject mappings of the leaf's account: the node's own JetStream API requests for its
    referral inbox, its checkpoint read-back and its look at the region versions announced
    go to the hub's domain."""
    hub = f"$JS.{HUB_DOMAIN}.API"
    out: dict[str, str] = {}
    for stream, consumer, _ in _hub_reads(region, partner):
        local, remote = (
            _consumer_api("$JS.API", stream, consumer),
            _consumer_api(hub, stream, consumer),
        )
        out[f"{local['create']}.>"] = f"{remote['create']}.>"
        for op in ("info", "next", "delete"):
            out[local[op]] = remote[op]
    return out


def leaf_permissions(doc: RegionDocument, partner: str) -> tuple[list[str], list[str]]:
    """(publish allow, subscribe allow) of the hub's `leaf_<partner>` user: what the leaf
    connection may send into the hub, and what the hub sends it."""
    region = doc.region
    doc.partner(partner)
    hub = f"$JS.{HUB_DOMAIN}.API"
    publish = [
        "$JS.S.>",  # deliveries of the hub's sourcing consumers on this leaf's streams
        "$JSC.R.>",  # replies to the hub's API requests (creating those consumers)
    ]
    for stream, consumer, filter_subject in _hub_reads(region, partner):
        api = _consumer_api(hub, stream, consumer)
        publish += [
            f"{api['create']}.{filter_subject}",  # only this filter (nats-server err 10131)
            api["info"],
            api["next"],
            api["delete"],
        ]
    publish.append(
        f"$JS.ACK.{subjects.referrals_stream(region)}.{subjects.referrals_consumer(partner)}.>"
    )
    subscribe = [
        f"$JS.{partner}.API.>",  # the hub's requests to this leaf's JetStream
        "$JS.FC.>",  # flow control of the sourcing consumers
        f"{subjects.inbox_prefix(partner)}.>",  # replies and pulled messages, its own only
    ]
    return publish, subscribe


def leaf_local_permissions(doc: RegionDocument, partner: str) -> tuple[list[str], list[str]]:
    """(publish allow, subscribe allow) of the node's user on the partner's own server: what
    it has on the hub when connected directly, the mapped hub API subjects, and managing its
    local streams (`handsoff region leaf-streams`)."""
    publish, subscribe = partner_permissions(doc, partner)
    publish = [*publish, *leaf_mappings(doc.region, partner).values()]
    for config in leaf_stream_configs(doc.region, partner):
        publish += [f"$JS.API.STREAM.{op}.{config.name}" for op in ("CREATE", "INFO", "UPDATE")]
    return list(dict.fromkeys(publish)), subscribe


# ---------------------------------------------------------------------------------------
# Streams


def _outbox(region: str, partner: str) -> list[tuple[str, str, str]]:
    """(stream name, the partner's subjects in it, what) of the leaf's outbox streams."""
    token = subjects.token(partner)
    return [
        (subjects.events_stream(region), subjects.events_of(region, partner), "shared events"),
        (
            subjects.referrals_stream(region),
            f"{subjects.PREFIX}.{subjects.token(region)}.referrals.{token}.>",
            "sealed referrals it sends",
        ),
        (
            subjects.checkpoints_stream(region),
            f"{subjects.PREFIX}.{subjects.token(region)}.checkpoints.{token}.>",
            "signed checkpoints",
        ),
    ]


def leaf_stream_configs(region: str, partner: str) -> list[StreamConfig]:
    """The streams on a partner's own server: the region's stream names, each capturing only
    this partner's subjects; kept (no limits) so nothing is lost however long it is offline."""
    return [
        StreamConfig(
            name=name,
            description=f"handsoff region {region}, partner {partner}: {what} (outbox)",
            subjects=[subject],
            storage=StorageType.FILE,
            num_replicas=1,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        for name, subject, what in _outbox(region, partner)
    ]


def hub_sources(region: str, partner: str) -> dict[str, StreamSource]:
    """Hub stream name -> its source on the partner's leaf stream of the same name."""
    return {
        name: StreamSource(
            name=name,
            filter_subject=subject,
            external=ExternalStream(api=f"$JS.{subjects.token(partner)}.API"),
        )
        for name, subject, _ in _outbox(region, partner)
    }


def _source_key(s: StreamSource) -> tuple[str, str]:
    return (s.name, s.external.api if s.external is not None else "")


async def ensure_hub_streams(
    js: JetStreamContext, region: str, leaves: Sequence[str] = (), *, replicas: int = 1
) -> list[StreamInfo]:
    """Creates or updates the region's streams (`natsconf.stream_configs`), sourcing each
    leaf partner's outbox. Sources a stream already has are kept: running this again, with
    or without `leaves`, never stops the hub from sourcing a leaf."""
    wanted: dict[str, list[StreamSource]] = {}
    for p in leaves:
        for name, source in hub_sources(region, p).items():
            wanted.setdefault(name, []).append(source)
    infos: list[StreamInfo] = []
    for config in stream_configs(region, replicas=replicas):
        assert config.name is not None
        try:
            current: StreamInfo | None = await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            current = None
        sources = {
            _source_key(s): s for s in (current.config.sources or [] if current is not None else [])
        }
        for s in wanted.get(config.name, []):
            sources.setdefault(_source_key(s), s)
        if sources:
            config.sources = list(sources.values())
        if current is None:
            infos.append(await js.add_stream(config))
        else:
            infos.append(await js.update_stream(config))
    return infos


async def ensure_leaf_streams(js: JetStreamContext, region: str, partner: str) -> list[StreamInfo]:
    """Creates (or updates) the outbox streams on a partner's own server."""
    return await natsconf.ensure(js, leaf_stream_configs(region, partner))


# ---------------------------------------------------------------------------------------
# Configuration text


@dataclass(frozen=True)
class HubLayout:
    """Where the hub's servers run. `hosts[i]` is server i+1's name as the other servers and
    the leaf nodes reach it; every server listens on `listen_host`."""

    hosts: tuple[str, ...] = ("nats-1", "nats-2", "nats-3")
    listen_host: str = "0.0.0.0"  # noqa: S104 (inside a container or behind a firewall)
    client_port: int = CLIENT_PORT
    cluster_port: int = CLUSTER_PORT
    leaf_port: int = LEAF_PORT
    monitor_host: str = "127.0.0.1"
    monitor_port: int = MONITOR_PORT  # 0: no monitoring endpoint
    store_dir: Path = Path("/data/jetstream")
    cluster_name: str | None = None  # default: the region id
    tls: ServerTls | None = None  # client, cluster and leaf ports (files as servers see them)


def numbered_hosts(servers: int) -> tuple[str, ...]:
    """`nats-1` ... `nats-<servers>`: the hub's servers in deploy/compose.yaml."""
    if not 1 <= servers <= 9:
        raise DeployError("--servers: between 1 and 9 (a JetStream cluster: 3 or 5)")
    return tuple(server_name(i) for i in range(servers))


def server_name(index: int) -> str:
    return f"nats-{index + 1}"


def _insert_once(text: str, anchor: str, addition: str, *, after: bool = True) -> str:
    if text.count(anchor) != 1:
        raise DeployError(
            "the nats-server configuration does not have the expected shape "
            f"(anchor {anchor!r}); update handsoff.services.deploy_gen with natsconf"
        )
    return text.replace(anchor, anchor + addition if after else addition + anchor)


def _account_users_end() -> str:
    return "    ]\n  }\n}\n"


def _leaf_hub_user(doc: RegionDocument, credentials: Credentials, partner: str) -> str:
    publish, subscribe = leaf_permissions(doc, partner)
    name = leaf_user(partner)
    return (
        "      {\n"
        f"        user: {_q(name)}\n"
        f"        password: {_q(credentials.password(name))}\n"
        '        allowed_connection_types: ["LEAFNODE"]\n'
        "        permissions: {\n"
        f"          publish: {{ allow: {_list(publish)} }}\n"
        f"          subscribe: {{ allow: {_list(subscribe)} }}\n"
        "        }\n"
        "      }\n"
    )


def hub_config(
    doc: RegionDocument,
    credentials: Credentials,
    layout: HubLayout,
    index: int,
    leaves: Sequence[str] = (),
) -> str:
    """The configuration of hub server `index` (0-based). Holds passwords: mode 0600."""
    leaves = _check_leaves(doc, leaves)
    hosts = [_host(h, "hub host") for h in layout.hosts]
    if not 0 <= index < len(hosts):
        raise DeployError(f"server {index + 1} is not one of the {len(hosts)} hub servers")
    cluster = None
    if len(hosts) > 1:
        cluster = Cluster(
            name=layout.cluster_name or doc.region,
            server_name=server_name(index),
            host=layout.listen_host,
            port=layout.cluster_port,
            routes=[f"{h}:{layout.cluster_port}" for i, h in enumerate(hosts) if i != index],
        )
    text = nats_config(
        doc,
        credentials,
        host=layout.listen_host,
        port=layout.client_port,
        store_dir=layout.store_dir,
        cluster=cluster,
        tls=layout.tls,
    )
    text = text.replace("`handsoff region nats-config`", "`handsoff region deploy`", 1)
    if cluster is None:
        text = _insert_once(text, "port: ", f"server_name: {_q(server_name(index))}\n", after=False)
    # JetStream domain: leaf nodes reach this JetStream as $JS.hub.API (their own is local).
    text = _insert_once(text, "  sync_interval: always\n", f"  domain: {_q(HUB_DOMAIN)}\n")
    if leaves:
        users = "".join(_leaf_hub_user(doc, credentials, p) for p in leaves)
        text = _insert_once(text, _account_users_end(), users, after=False)
    # no_advertise: leaves reach the hub at the addresses their configuration lists
    # (--leaf-remote); the servers' own addresses (container or private ones) mean nothing
    # to them, and a leaf must not go around the way it was given.
    text += "\n".join(
        [
            "leafnodes {",
            f"  host: {_q(layout.listen_host)}",
            f"  port: {_port(layout.leaf_port)}",
            "  no_advertise: true",
        ]
    )
    if layout.tls is not None:
        # with the region's CA, leaves must show a certificate it signed (mutual TLS)
        verify = layout.tls.ca_file is not None
        text += "\n" + server_tls_block(layout.tls, verify=verify, indent="  ").rstrip("\n")
    text += "\n}\n"
    if layout.monitor_port:
        text += f"http: {_q(f'{layout.monitor_host}:{_port(layout.monitor_port)}')}\n"
    return text


def leaf_config(
    doc: RegionDocument,
    credentials: Credentials,
    partner: str,
    hub: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = CLIENT_PORT,
    store_dir: Path = Path("/var/lib/handsoff-nats/jetstream"),
    monitor_port: int = MONITOR_PORT,
    tls: RemoteTls | None = None,
) -> str:
    """The configuration of a partner's own nats-server, a leaf node of the hub servers
    `hub` ("host" or "host:port" of their leaf ports). Holds passwords: mode 0600.
    With `tls`, it reaches the hub over TLS (needed when the hub's leaf port has it)."""
    _check_leaves(doc, [partner])
    if not hub:
        raise DeployError("a leaf node needs the hub's leaf address (--leaf-remote)")
    name = leaf_user(partner)
    secret = credentials.password(name)
    urls = [f"nats-leaf://{name}:{secret}@{_hostport(h, LEAF_PORT, '--leaf-remote')}" for h in hub]
    publish, subscribe = leaf_local_permissions(doc, partner)
    mappings = "".join(
        f"      {_q(src)}: {_q(dst)}\n" for src, dst in leaf_mappings(doc.region, partner).items()
    )
    lines = [
        f"# nats-server configuration of partner {partner}'s own server, a leaf node of "
        f"handsoff region {doc.region} (region document version {doc.version}).",
        "# Generated by `handsoff region deploy`; do not edit. Holds passwords: mode 0600.",
        "# The node publishes here (`node join --nats nats://127.0.0.1:4222`); the streams",
        "# keep its messages while the internet is down (`handsoff region leaf-streams`).",
        f"server_name: {_q(f'leaf-{partner}')}",
        f"host: {_q(_host(host, 'leaf host'))}",
        f"port: {_port(port)}",
        "jetstream {",
        f"  store_dir: {_q(str(Path(store_dir).absolute()))}",
        "  sync_interval: always",
        f"  domain: {_q(partner)}",
        "}",
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
        "      {",
        f"        user: {_q(partner)}",
        f"        password: {_q(credentials.password(partner))}",
        "        permissions: {",
        f"          publish: {{ allow: {_list(publish)} }}",
        f"          subscribe: {{ allow: {_list(subscribe)} }}",
        "        }",
        "      }",
        "    ]",
        "    # the referral inbox and the checkpoint read-back are the hub's (JetStream domain",
        f"    # {HUB_DOMAIN}); everything else the node does stays on this server",
        "    mappings: {",
    ]
    tail = [
        "    }",
        "  }",
        "}",
        "leafnodes {",
        "  remotes: [",
        "    {",
        f"      urls: {_list(urls)}",
        f"      account: {_q(ACCOUNT)}",
        "      # the node's messages reach the hub only through the hub's sourcing",
        f"      deny_exports: {_list([f'{subjects.PREFIX}.>'])}",
        f"      deny_imports: {_list([f'{subjects.PREFIX}.>'])}",
    ]
    if tls is not None:
        tail.append(remote_tls_block(tls, " " * 6).rstrip("\n"))
    tail += [
        "    }",
        "  ]",
        "}",
    ]
    if monitor_port:
        tail.append(f"http: {_q(f'127.0.0.1:{_port(monitor_port)}')}")
    return "\n".join(lines) + "\n" + mappings + "\n".join(tail) + "\n"


# ---------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class DeployRequest:
    layout: HubLayout
    leaves: tuple[str, ...] = ()
    leaf_remotes: tuple[str, ...] = ()  # default: every hub host at the leaf port
    leaf_store_dir: Path = Path("/var/lib/handsoff-nats/jetstream")
    leaf_client_port: int = CLIENT_PORT  # where a leaf listens (127.0.0.1) for its node
    leaf_monitor_port: int = MONITOR_PORT
    compose_nodes: tuple[str, ...] = ()  # partners of node-a, node-b in deploy/compose.yaml
    leaf_tls: RemoteTls | None = None  # how leaves reach a hub with TLS (`leaf_remote_tls`)


def leaf_remote_tls(
    hub: ServerTls,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> RemoteTls:
    """How the leaves reach a hub whose leaf port has TLS `hub`: files on the partners'
    machines. A hub with the region's CA checks the leaves' certificates, so each leaf then
    needs the CA, a certificate and its key: by default those `LEAF_TLS_DIR` holds
    (`ca.pem`, `cert.pem`, `key.pem`). A hub without it (a certificate from a public CA)
    needs neither."""
    if hub.ca_file is not None:
        ca_file = ca_file or str(LEAF_TLS_DIR / "ca.pem")
        cert_file = cert_file or str(LEAF_TLS_DIR / "cert.pem")
        key_file = key_file or str(LEAF_TLS_DIR / "key.pem")
    return RemoteTls(ca_file=ca_file, cert_file=cert_file, key_file=key_file, timeout=hub.timeout)


def _write(path: Path, data: bytes, mode: int) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _atomic_write(path, data, mode)
    except OSError as e:
        raise DeployError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def write_deployment(
    signed: SignedRegion,
    doc: RegionDocument,
    credentials: Credentials,
    out: Path,
    request: DeployRequest,
) -> list[Path]:
    """Writes every file into `out` (the secrets mode 0600) and returns their paths."""
    leaves = _check_leaves(doc, request.leaves)
    if len(request.compose_nodes) > len(COMPOSE_NODES):
        raise DeployError(f"the compose file has {len(COMPOSE_NODES)} partner nodes")
    for partner_id in request.compose_nodes:
        doc.partner(partner_id)
    hub_tls = request.layout.tls
    if leaves and (hub_tls is None) != (request.leaf_tls is None):
        raise DeployError(
            "leaf nodes and the hub's leaf port must agree on TLS: "
            + ("the hub has none" if hub_tls is None else "the hub's leaf port needs TLS")
        )
    if leaves and hub_tls is not None and hub_tls.ca_file is not None:
        assert request.leaf_tls is not None
        if request.leaf_tls.cert_file is None:
            raise DeployError(
                "the hub checks its leaves' certificates (--tls-ca): each leaf needs one"
            )
    written: list[Path] = []
    for i in range(len(request.layout.hosts)):
        text = hub_config(doc, credentials, request.layout, i, leaves)
        written.append(_write(out / f"{server_name(i)}.conf", text.encode(), 0o600))
    for member in doc.partners:
        secret = credentials.password(member.id) + "\n"
        path = out / "partners" / member.id / "nats-password"
        written.append(_write(path, secret.encode(), 0o600))
    remotes = list(request.leaf_remotes) or [
        f"{h}:{request.layout.leaf_port}" for h in request.layout.hosts
    ]
    for p in leaves:
        text = leaf_config(
            doc,
            credentials,
            p,
            remotes,
            port=request.leaf_client_port,
            store_dir=request.leaf_store_dir,
            monitor_port=request.leaf_monitor_port,
            tls=request.leaf_tls,
        )
        written.append(_write(out / "partners" / p / "nats-leaf.conf", text.encode(), 0o600))
    compose = {"aggregator": AGGREGATOR_USER} | dict(
        zip(COMPOSE_NODES, request.compose_nodes, strict=False)
    )
    for file, user in compose.items():
        secret = credentials.password(user) + "\n"
        written.append(_write(out / "secrets" / f"{file}.nats-password", secret.encode(), 0o600))
    save_region(out / "region.json", signed)
    written.append(out / "region.json")
    return written
