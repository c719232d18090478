"""nats-server configuration and JetStream streams for a region (static users, one account).

Every partner is its own NATS user in the account `HX`, with its own password. What it may
do is what nats-server enforces, not what a client promises:

- publish on the subjects its region entry lists (by default `hx.<region>.*.<partner>.>`:
  its events, its outgoing referrals, its checkpoints, all with its id in the fourth token),
  except `hx.<region>.aggregates.>`, which the default pattern would match
  (`hx.<region>.aggregates.<partner>.x`) but which belongs to the aggregator;
- pull its referrals through its own durable consumer `referrals-<partner>` on the
  referrals stream. Creating that consumer is allowed only through the subject-filtered
  create API, `$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>` with the filter
  `hx.<region>.referrals.*.<partner>`: nats-server refuses a request whose configured filter
  differs from the one in the subject (err 10131) or that has several filters (10137), so a
  partner cannot widen its consumer to other partners' referrals. The unfiltered create
  subjects (`...CREATE.<stream>.<consumer>`, `...DURABLE.CREATE...`) would allow exactly that
  and are not granted;
- read back its own stored events through `relay-<partner>` on the events stream (what the
  relay does after a failure, to publish exactly once), filtered to its own events, and
  through `checkpoint-<partner>` (what it checkpoints: federation/checkpoints.py);
- read the aggregator's announcements of the region versions it takes through
  `region-<partner>` on the aggregates stream, filtered to `hx.<region>.aggregates._region`
  (what a serving node takes new versions from: services/node/follow.py); the statements
  beside them are the region's published figures, but a partner has no need of them;
- never publish on `hx.<region>.witness.>`: the aggregator's cosignatures of checkpoints;
- receive replies only on its own inbox prefix `_INBOX_<partner>`, so PubAcks stay private.

The `aggregator` user reads through JetStream (`$JS.API.>`), publishes aggregates, KV and
cosignatures of checkpoints (`hx.<region>.witness.<partner>`), and
may not delete, purge or reconfigure the region's streams nor touch partners' consumers. The
`operator` user may do anything (it creates the streams): an ops credential, keep it offline.
Streams deny message deletion and purging; nothing but the operator can remove them.

With `ServerTls`, the client port speaks TLS from the first byte and a cluster's routes
authenticate each other with the region's CA (`RemoteTls`: a leaf's way to the hub,
services/deploy_gen.py); without it the configuration is exactly what it was before TLS.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
import nats.js.errors
from nats.js.api import StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext

from handsoff.federation import subjects
from handsoff.federation.errors import FederationError
from handsoff.federation.region import RegionDocument, _atomic_write, aggregates_prefix

ACCOUNT: Final = "HX"
AGGREGATOR_USER: Final = "aggregator"
OPERATOR_USER: Final = "operator"
ROUTE_USER: Final = "route"
CREDENTIALS_FORMAT: Final = "handsoff-nats-credentials/1"
DUPLICATE_WINDOW_S: Final = 120.0

Token = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
Password = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{16,}$")]


class NatsConfigError(FederationError):
    """A nats-server configuration or credentials file cannot be made, read or written."""


# ---------------------------------------------------------------------------------------
# Credentials


class Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """NATS passwords of one region: user -> password, and the cluster route password.

    Secret: saved mode 0600. Each partner gets only its own entry.
    """

    format: Literal["handsoff-nats-credentials/1"] = CREDENTIALS_FORMAT
    region: Token
    users: dict[str, Password]
    route: Password

    def password(self, user: str) -> str:
        try:
            return self.users[user]
        except KeyError:
            raise NatsConfigError(
                f"the credentials of region {self.region} have no password for {user!r}: "
                "regenerate them for this region document"
            ) from None

    def __repr__(self) -> str:
        return f"Credentials(region={self.region}, users={sorted(self.users)})"

    def __rich_repr__(self) -> list[tuple[str, object]]:
        return [("region", self.region), ("users", sorted(self.users))]


def _new_password() -> str:
    return secrets.token_urlsafe(24)


def generate_credentials(doc: RegionDocument, previous: Credentials | None = None) -> Credentials:
    """A password per partner, the aggregator and the operator, and a route password.

    Passwords in `previous` (same region) are kept for users still present, so regenerating
    after adding a partner does not lock the others out. Removed partners lose theirs.
    """
    if previous is not None and previous.region != doc.region:
        raise NatsConfigError(
            f"the existing credentials are for region {previous.region}, not {doc.region}"
        )
    old = previous.users if previous is not None else {}
    names = [AGGREGATOR_USER, OPERATOR_USER, *(p.id for p in doc.partners)]
    users = {name: old.get(name) or _new_password() for name in names}
    route = previous.route if previous is not None else _new_password()
    return Credentials(region=doc.region, users=users, route=route)


_CREDENTIALS_DECODER = msgspec.json.Decoder(Credentials)


def load_credentials(path: Path) -> Credentials:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NatsConfigError(f"credentials file {path} does not exist") from None
    except OSError as e:
        raise NatsConfigError(f"cannot read credentials file {path}: {e.strerror or e}") from None
    try:
        return _CREDENTIALS_DECODER.decode(data)
    except msgspec.DecodeError as e:
        raise NatsConfigError(f"{path} is not a valid credentials file: {e}") from None


def save_credentials(path: Path, credentials: Credentials) -> None:
    """Atomically write the credentials, mode 0600."""
    path = Path(path)
    data = msgspec.json.format(msgspec.json.encode(credentials), indent=2) + b"\n"
    try:
        _atomic_write(path, data, 0o600)
    except OSError as e:
        raise NatsConfigError(f"cannot write credentials file {path}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------
# Client side


def server_urls(nats_url: str) -> list[str]:
    """The servers in a NATS URL setting: one URL, or several separated by commas (the
    servers of a cluster: a client starts with any one that answers and fails over to the
    others). `"nats://a:4222, nats://b:4222"` -> `["nats://a:4222", "nats://b:4222"]`."""
    urls = [u.strip() for u in nats_url.split(",")]
    if not all(urls):
        raise NatsConfigError(
            f"{nats_url!r} is not a NATS URL or a comma-separated list of NATS URLs"
        )
    return urls


# ---------------------------------------------------------------------------------------
# Permissions


def _api(stream: str, consumer: str) -> dict[str, str]:
    base = f"$JS.API.CONSUMER.%s.{stream}.{consumer}"
    return {
        "info": base % "INFO",
        "next": base % "MSG.NEXT",
        "delete": base % "DELETE",
        "create": base % "CREATE",  # + "." + filter subject
        "ack": f"$JS.ACK.{stream}.{consumer}.>",
    }


def partner_permissions(doc: RegionDocument, partner_id: str) -> tuple[list[str], list[str]]:
    """(publish allow, subscribe allow) of a partner's NATS user."""
    region = doc.region
    partner = doc.partner(partner_id)
    referrals = _api(subjects.referrals_stream(region), subjects.referrals_consumer(partner_id))
    relay = _api(subjects.events_stream(region), subjects.relay_consumer(partner_id))
    readback = _api(subjects.events_stream(region), subjects.checkpoint_consumer(partner_id))
    follow = _api(subjects.aggregates_stream(region), subjects.region_consumer(partner_id))
    publish = [
        *partner.publish,
        # its referrals: its own durable pull consumer, filtered to referrals addressed to it
        f"{referrals['create']}.{subjects.referrals_to(region, partner_id)}",
        referrals["info"],
        referrals["next"],
        referrals["ack"],
        # reading back its own stored events (relay recovery), no acks (AckPolicy.NONE)
        f"{relay['create']}.{subjects.events_of(region, partner_id)}",
        relay["info"],
        relay["next"],
        relay["delete"],
        # reading back its own stored events to checkpoint them, no acks either
        f"{readback['create']}.{subjects.events_of(region, partner_id)}",
        readback["info"],
        readback["next"],
        readback["delete"],
        # the region versions the aggregator announces, no acks either
        f"{follow['create']}.{subjects.region_taken(region)}",
        follow["info"],
        follow["next"],
        follow["delete"],
    ]
    return publish, [f"{subjects.inbox_prefix(partner_id)}.>"]


def aggregator_permissions(doc: RegionDocument) -> tuple[list[str], list[str], list[str]]:
    """(publish allow, publish deny, subscribe allow) of the aggregator's NATS user."""
    region = doc.region
    allow = [
        "$JS.API.>",
        "$JS.ACK.>",
        f"{aggregates_prefix(region)}>",
        subjects.all_witness(region),
        subjects.all_quarantine(region),
        f"$KV.{subjects.latest_bucket(region)}.>",
    ]
    deny: list[str] = []
    for stream in _stream_names(region):
        deny += [f"$JS.API.STREAM.{op}.{stream}" for op in ("DELETE", "PURGE", "UPDATE")]
        deny.append(f"$JS.API.STREAM.MSG.DELETE.{stream}")
    for p in doc.partners:
        for stream, consumer in (
            (subjects.referrals_stream(region), subjects.referrals_consumer(p.id)),
            (subjects.events_stream(region), subjects.relay_consumer(p.id)),
            (subjects.events_stream(region), subjects.checkpoint_consumer(p.id)),
            (subjects.aggregates_stream(region), subjects.region_consumer(p.id)),
        ):
            deny += [
                f"$JS.API.CONSUMER.*.{stream}.{consumer}",
                f"$JS.API.CONSUMER.*.{stream}.{consumer}.>",
                f"$JS.API.CONSUMER.*.*.{stream}.{consumer}",
                f"$JS.ACK.{stream}.{consumer}.>",
            ]
    return allow, deny, [f"{subjects.inbox_prefix(AGGREGATOR_USER)}.>"]


# ---------------------------------------------------------------------------------------
# Configuration text


class Cluster(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """JetStream clustering of the region's servers (routes authenticated by `route`)."""

    name: Token  # the cluster's name, the same on every server
    server_name: Token  # this server's name, unique in the cluster
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 6222
    routes: list[str] = []  # "host:port" of the other servers' cluster ports


class ServerTls(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """TLS of a server's listeners: files as the server reads them (absolute paths).

    The client port then speaks TLS from the first byte (`handshake_first`): a client that
    waits for the server's greeting before starting TLS could be talked into sending its
    password in clear by anyone in the middle (nats-py does exactly that), so only clients
    that start with TLS are served (handsoff's own do; the `nats` CLI needs `--tlsfirst`).
    With `ca_file`, the servers of a cluster and the hub and its leaf nodes authenticate
    each other with certificates the CA signed (mutual TLS), besides their passwords.
    """

    cert_file: str  # this server's certificate (chain), PEM
    key_file: str  # its private key, PEM (readable by the server only)
    ca_file: str | None = None  # the region's CA, PEM: checks other servers, leaves, clients
    verify: bool = False  # clients too must present a certificate the CA signed
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0  # seconds for the handshake


class RemoteTls(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """TLS of a leaf node's connection to the hub: files as the leaf's server reads them."""

    ca_file: str | None = None  # the CA of the hub's certificate (None: the system's CAs)
    cert_file: str | None = None  # the leaf's certificate, for a hub that checks leaves
    key_file: str | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0


def _tls_files(what: str, **files: str | None) -> list[str]:
    lines = []
    for name, value in files.items():
        if value is None:
            continue
        if not Path(value).is_absolute():
            raise NatsConfigError(f"{what}: {value!r} is not an absolute path")
        lines.append(f"{name}: {_q(value)}")
    return lines


def _tls_block(lines: list[str], indent: str) -> str:
    inner = "".join(f"{indent}  {line}\n" for line in lines)
    return f"{indent}tls {{\n{inner}{indent}}}\n"


def _timeout(seconds: float) -> str:
    if not 0 < seconds <= 60:
        raise NatsConfigError(f"TLS timeout {seconds!r}: between 0 and 60 seconds")
    return f"timeout: {seconds:g}"


def server_tls_block(
    tls: ServerTls, *, verify: bool, handshake_first: bool = False, indent: str = ""
) -> str:
    """A `tls { ... }` block of a listener: client port, cluster routes or leaf nodes."""
    if verify and tls.ca_file is None:
        raise NatsConfigError(
            "checking the other side's certificate needs the CA that signs them (--tls-ca)"
        )
    lines = _tls_files("TLS", cert_file=tls.cert_file, key_file=tls.key_file, ca_file=tls.ca_file)
    lines += [f"verify: {'true' if verify else 'false'}", _timeout(tls.timeout)]
    if handshake_first:
        lines.append("handshake_first: true")
    return _tls_block(lines, indent)


def remote_tls_block(tls: RemoteTls, indent: str) -> str:
    """The `tls { ... }` block of a leaf node's remote (the connection to the hub)."""
    if (tls.cert_file is None) != (tls.key_file is None):
        raise NatsConfigError("a leaf's certificate needs its key, and the key its certificate")
    lines = _tls_files(
        "leaf TLS", ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file
    )
    return _tls_block([*lines, _timeout(tls.timeout)], indent)


_ROUTE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$")


def _q(value: str) -> str:
    """A double-quoted config string. Anything that could escape the quotes is refused."""
    if not value.isprintable() or '"' in value or "\\" in value:
        raise NatsConfigError(f"{value!r} cannot be written into a nats-server configuration")
    return f'"{value}"'


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _port(port: int) -> str:
    if not isinstance(port, int) or not 0 < port < 65536:
        raise NatsConfigError(f"{port!r} is not a TCP port")
    return str(port)


def _user(
    name: str, password: str, publish: list[str], subscribe: list[str], deny: list[str]
) -> str:
    publish_rule = f"allow: {_list(publish)}"
    if deny:
        publish_rule += f", deny: {_list(deny)}"
    return (
        "      {\n"
        f"        user: {_q(name)}\n"
        f"        password: {_q(password)}\n"
        "        permissions: {\n"
        f"          publish: {{ {publish_rule} }}\n"
        f"          subscribe: {{ allow: {_list(subscribe)} }}\n"
        "        }\n"
        "      }\n"
    )


def nats_config(
    doc: RegionDocument,
    credentials: Credentials,
    *,
    host: str = "127.0.0.1",
    port: int = 4222,
    store_dir: Path,
    cluster: Cluster | None = None,
    tls: ServerTls | None = None,
) -> str:
    """The nats-server configuration for `doc` (it holds passwords: keep it mode 0600).

    With `tls`, the client port and the cluster routes need TLS (see `ServerTls`)."""
    if credentials.region != doc.region:
        raise NatsConfigError(
            f"the credentials are for region {credentials.region}, not {doc.region}"
        )
    lines = [
        f"# nats-server configuration of handsoff region {doc.region}, "
        f"region document version {doc.version}.",
        "# Generated by `handsoff region nats-config`; do not edit. Holds passwords: mode 0600.",
    ]
    if cluster is not None:
        lines.append(f"server_name: {_q(cluster.server_name)}")
    lines += [
        f"host: {_q(host)}",
        f"port: {_port(port)}",
    ]
    if tls is not None:
        lines.append(server_tls_block(tls, verify=tls.verify, handshake_first=True).rstrip("\n"))
    lines += [
        "jetstream {",
        f"  store_dir: {_q(str(Path(store_dir).absolute()))}",
        "  sync_interval: always",
        "}",
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    users: list[str] = []
    for p in doc.partners:
        publish, subscribe = partner_permissions(doc, p.id)
        # the aggregator's, whatever publish says
        deny = [f"{aggregates_prefix(doc.region)}>", subjects.all_witness(doc.region)]
        users.append(_user(p.id, credentials.password(p.id), publish, subscribe, deny))
    allow, deny, subscribe = aggregator_permissions(doc)
    users.append(
        _user(AGGREGATOR_USER, credentials.password(AGGREGATOR_USER), allow, subscribe, deny)
    )
    users.append(_user(OPERATOR_USER, credentials.password(OPERATOR_USER), [">"], [">"], []))
    text = "\n".join(lines) + "\n" + "".join(users) + "    ]\n  }\n}\n"
    if cluster is not None:
        text += _cluster(cluster, credentials.route, tls)
    return text


def _cluster(cluster: Cluster, password: str, tls: ServerTls | None = None) -> str:
    for route in cluster.routes:
        if not _ROUTE.match(route):
            raise NatsConfigError(f"cluster route {route!r} is not host:port")
    routes = [f"nats-route://{ROUTE_USER}:{password}@{r}" for r in cluster.routes]
    secured = ""
    if tls is not None:
        if tls.ca_file is None:
            raise NatsConfigError(
                "TLS between the servers of a cluster needs the region's CA (--tls-ca): "
                "nats-server always checks the other server's certificate on a route"
            )
        # Clients are given every server's address; the addresses servers would advertise
        # (container or private ones) are not the names their certificates carry.
        secured = "  no_advertise: true\n" + server_tls_block(tls, verify=True, indent="  ")
    return (
        "cluster {\n"
        f"  name: {_q(cluster.name)}\n"
        f"  host: {_q(cluster.host)}\n"
        f"  port: {_port(cluster.port)}\n"
        f"  authorization {{ user: {_q(ROUTE_USER)}, password: {_q(password)} }}\n"
        f"{secured}"
        f"  routes: {_list(routes)}\n"
        "}\n"
    )


# ---------------------------------------------------------------------------------------
# Streams


def _stream_names(region: str) -> list[str]:
    return [
        subjects.events_stream(region),
        subjects.referrals_stream(region),
        subjects.checkpoints_stream(region),
        subjects.aggregates_stream(region),
        subjects.quarantine_stream(region),
    ]


def stream_configs(region: str, *, replicas: int = 1) -> list[StreamConfig]:
    """The region's streams: events, referrals, checkpoints, the aggregator's statements and
    its quarantine. Append-only, deduplicating."""
    captured = [
        [subjects.all_events(region)],
        [subjects.all_referrals(region)],
        [subjects.all_checkpoints(region), subjects.all_witness(region)],
        [subjects.all_aggregates(region)],
        [subjects.all_quarantine(region)],
    ]
    what = [
        "shared case events",
        "sealed referrals",
        "signed log checkpoints and their cosignatures",
        "signed aggregate statements",
        "messages the aggregator rejected, with the reason",
    ]
    return [
        StreamConfig(
            name=name,
            description=f"handsoff region {region}: {w}",
            subjects=subject_list,
            storage=StorageType.FILE,
            num_replicas=replicas,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        for name, subject_list, w in zip(_stream_names(region), captured, what, strict=True)
    ]


async def ensure_streams(
    js: JetStreamContext, region: str, *, replicas: int = 1
) -> list[StreamInfo]:
    """Create the region's streams, or update them to the configuration above."""
    return await ensure(js, stream_configs(region, replicas=replicas))


async def ensure(js: JetStreamContext, configs: Iterable[StreamConfig]) -> list[StreamInfo]:
    """Each stream created, or updated to its configuration if it exists."""
    infos: list[StreamInfo] = []
    for config in configs:
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            infos.append(await js.add_stream(config))
        else:
            infos.append(await js.update_stream(config))
    return infos
