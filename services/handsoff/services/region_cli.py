"""`handsoff region ...`: the coordinators' tools for the signed region document.

A typical round: each coordinator makes a key (`coordinator-key`), one of them drafts the
document (`init`, `add-partner`, ...), every change makes a new unsigned version, enough
coordinators `sign` it, and the operator of the region's nats-server runs `nats-config`
(which refuses a document without enough valid signatures) and `streams`. For a cluster, the
compose file in deploy/ and partners behind a leaf node, `deploy` writes every server's
configuration (services/handsoff/services/deploy_gen.py), and each leaf partner runs
`leaf-streams` against its own server.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from handsoff.federation.natsconf import (
    OPERATOR_USER,
    ServerTls,
    generate_credentials,
    load_credentials,
    nats_config,
    save_credentials,
)
from handsoff.federation.region import (
    Breakdowns,
    RegionDocument,
    SignedRegion,
    _atomic_write,
    accept,
    load_region,
    save_region,
    sign_region,
)
from handsoff.keys import (
    KdfStrength,
    NodeSecrets,
    PassphraseMissing,
    SigningKey,
    key_id,
    kid_hex,
    passphrase_from_env,
    read_key_file,
    write_key_file,
)
from handsoff.services.cli import CliError
from handsoff.services.deploy_gen import (
    CLIENT_PORT,
    LEAF_PORT,
    LEAF_TLS_DIR,
    MONITOR_PORT,
    DeployRequest,
    HubLayout,
    deploy_credentials,
    ensure_hub_streams,
    ensure_leaf_streams,
    leaf_remote_tls,
    numbered_hosts,
    write_deployment,
)
from handsoff.services.natsclient import NatsTlsError, add_tls_options, tls_from_args
from handsoff.services.natsclient import connect as connect_nats

CONFIG_FILE = "nats-server.conf"
# A new region's grace for messages under an earlier version: a serving node takes a new
# version from the aggregator's announcement within seconds, so this covers a node that
# was offline or is run by hand (`node join`) and is updated within a working day.
DEFAULT_GRACE_HOURS = 24
CREDENTIALS_FILE = "credentials.json"


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _note(line: str) -> None:
    sys.stderr.write(line + "\n")


def _passphrase() -> bytes:
    """From HANDSOFF_PASSPHRASE(_FILE); a terminal may type it. Never from an argument."""
    try:
        return passphrase_from_env(os.environ)
    except PassphraseMissing:
        if sys.stdin.isatty():
            return getpass.getpass("coordinator key passphrase: ").encode()
        raise


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _public_key(text: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise CliError(f"{what}: {text!r} is not hex") from None
    if len(key) != 32:
        raise CliError(f"{what}: an Ed25519 public key is 32 bytes (64 hex digits)")
    return key


def _id_and_key(text: str, what: str) -> tuple[str, bytes]:
    ident, sep, key = text.partition("=")
    if not sep or not ident:
        raise CliError(f"{what}: expected ID=HEXPUBKEY, got {text!r}")
    return ident, _public_key(key, f"{what} {ident}")


def _when(text: str | None, what: str) -> datetime:
    if text is None:
        return _now()
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{what}: {text!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise CliError(f"{what}: {text!r} needs a time zone, e.g. 2026-03-01T00:00:00Z")
    return at


def _iso(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _save_edit(path: Path, previous: RegionDocument, doc: RegionDocument, what: str) -> None:
    save_region(path, SignedRegion.unsigned(doc))
    _out(
        f"{what}: region {doc.region} is now version {doc.version}, unsigned; it needs "
        f"{previous.threshold} signature(s) from the coordinators of version {previous.version}"
    )


# ---------------------------------------------------------------------------------------
# Commands


def cmd_init(args: argparse.Namespace) -> int:
    path: Path = args.file
    if path.exists():
        raise CliError(f"{path} exists; edit it with the other `handsoff region` commands")
    coordinators = []
    for text in args.coordinator:
        cid, key = _id_and_key(text, "--coordinator")
        coordinators.append({"id": cid, "name": cid, "public_key": key})
    aid, akey = _id_and_key(args.aggregator, "--aggregator")
    if args.expires_days < 1:
        raise CliError("--expires-days must be at least 1")
    issued = _now()
    raw: dict[str, Any] = {
        "region": args.region,
        "version": 1,
        "issued_at": issued,
        "expires_at": issued + timedelta(days=args.expires_days),
        "threshold": args.threshold,
        "coordinators": coordinators,
        "aggregator": {"id": aid, "public_key": akey},
        "partners": [],
        "breakdowns": args.breakdowns,
        "version_grace_hours": args.version_grace_hours,
    }
    try:
        doc = msgspec.convert(raw, RegionDocument)
    except msgspec.ValidationError as e:
        raise CliError(f"invalid region document: {e}") from None
    save_region(path, SignedRegion.unsigned(doc))
    _out(
        f"region {doc.region} version 1 written to {path}, unsigned; it needs {doc.threshold} "
        f"of {len(doc.coordinators)} coordinator signatures"
    )
    return 0


def cmd_add_partner(args: argparse.Namespace) -> int:
    doc = load_region(args.file).document
    key = _public_key(args.key, "--key")
    new = doc.add_partner(
        args.partner,
        args.name,
        args.country,
        key,
        valid_from=_when(args.valid_from, "--valid-from"),
    )
    _save_edit(args.file, doc, new, f"partner {args.partner} added with key {kid_hex(key_id(key))}")
    return 0


def cmd_add_key(args: argparse.Namespace) -> int:
    doc = load_region(args.file).document
    key = _public_key(args.key, "--key")
    new = doc.add_partner_key(
        args.partner,
        key,
        valid_from=_when(args.valid_from, "--valid-from"),
        valid_until=_when(args.valid_until, "--valid-until") if args.valid_until else None,
    )
    _save_edit(args.file, doc, new, f"key {kid_hex(key_id(key))} added to {args.partner}")
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    doc = load_region(args.file).document
    at = _when(args.at, "--at")
    new = doc.revoke_key(args.partner, args.kid, at)
    _save_edit(args.file, doc, new, f"key {args.kid} of {args.partner} revoked from {_iso(at)}")
    return 0


def cmd_set_breakdowns(args: argparse.Namespace) -> int:
    doc = load_region(args.file).document
    value: Breakdowns = args.breakdowns
    _save_edit(args.file, doc, doc.set_breakdowns(value), f"breakdowns set to {value}")
    return 0


def cmd_set_version_grace(args: argparse.Namespace) -> int:
    doc = load_region(args.file).document
    new = doc.set_version_grace(args.hours)
    _save_edit(
        args.file,
        doc,
        new,
        f"messages under earlier versions accepted for {args.hours} h after a version is issued",
    )
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    doc = load_region(args.file).document
    if args.expires_days < 1:
        raise CliError("--expires-days must be at least 1")
    new = doc.renew(_now() + timedelta(days=args.expires_days))
    _save_edit(args.file, doc, new, f"renewed until {_iso(new.expires_at)}")
    return 0


def cmd_coordinator_key(args: argparse.Namespace) -> int:
    path: Path = args.out
    if path.exists():
        raise CliError(f"{path} exists; refusing to overwrite a key")
    # A coordinator key file is a node key file whose signing key is the coordinator's;
    # its other two secrets are random and unused.
    secrets = NodeSecrets.generate()
    write_key_file(path, secrets, _passphrase(), KdfStrength(args.kdf))
    key = secrets.signing_key()
    _out(key.public_key.hex())
    _note(
        f"coordinator key {kid_hex(key.kid)} written to {path}; give the public key above "
        "to whoever drafts the region document"
    )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    signed = load_region(args.file)
    key: SigningKey = read_key_file(args.key_file, _passphrase()).signing_key()
    doc = signed.document
    signed = sign_region(signed, args.coordinator, key)
    save_region(args.file, signed)
    valid = signed.valid_signers(doc.coordinator_keys())
    _out(
        f"signed region {doc.region} version {doc.version} as {args.coordinator}: "
        f"{len(valid)} of {doc.threshold} needed signature(s) by its coordinators"
    )
    if args.coordinator not in doc.coordinator_keys():
        _note(
            f"note: {args.coordinator} is not a coordinator of this version; the signature "
            "counts for nodes that hold a version in which it is"
        )
    return 0


class _KeyView(msgspec.Struct):
    kid: str
    public_key: str
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None


class _PartnerView(msgspec.Struct):
    id: str
    name: str
    country: str
    publish: list[str]
    keys: list[_KeyView]


class _SignatureView(msgspec.Struct):
    coordinator: str
    valid: bool


class _RegionView(msgspec.Struct):
    region: str
    version: int
    issued_at: datetime
    expires_at: datetime
    expired: bool
    breakdowns: str
    version_grace_hours: int
    threshold: int
    coordinators: dict[str, str]  # id -> public key hex
    aggregator: dict[str, str]
    partners: list[_PartnerView]
    signatures: list[_SignatureView]
    valid_signatures: int
    signed: bool  # enough valid signatures by this version's own coordinators


def _view(signed: SignedRegion, now: datetime) -> _RegionView:
    doc = signed.document
    valid = signed.valid_signers(doc.coordinator_keys())
    return _RegionView(
        region=doc.region,
        version=doc.version,
        issued_at=doc.issued_at,
        expires_at=doc.expires_at,
        expired=now >= doc.expires_at,
        breakdowns=doc.breakdowns,
        version_grace_hours=doc.version_grace_hours,
        threshold=doc.threshold,
        coordinators={c.id: c.public_key.hex() for c in doc.coordinators},
        aggregator={"id": doc.aggregator.id, "public_key": doc.aggregator.public_key.hex()},
        partners=[
            _PartnerView(
                p.id,
                p.name,
                p.country,
                p.publish,
                [
                    _KeyView(k.kid, k.public_key.hex(), k.valid_from, k.valid_until, k.revoked_at)
                    for k in p.keys
                ],
            )
            for p in doc.partners
        ],
        signatures=[
            _SignatureView(s.coordinator, s.coordinator in valid) for s in signed.signatures
        ],
        valid_signatures=len(valid),
        signed=len(valid) >= doc.threshold,
    )


def cmd_show(args: argparse.Namespace) -> int:
    now = _now()
    view = _view(load_region(args.file), now)
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(view), indent=2).decode() + "\n")
        return 0
    _out(f"region {view.region} version {view.version}")
    state = "EXPIRED" if view.expired else f"{(view.expires_at - now).days} days left"
    _out(f"issued {_iso(view.issued_at)}, expires {_iso(view.expires_at)} ({state})")
    _out(f"breakdowns: {view.breakdowns}")
    _out(
        f"messages under earlier versions accepted for {view.version_grace_hours} h "
        "after this version is issued"
    )
    _out(f"aggregator {view.aggregator['id']} {view.aggregator['public_key']}")
    _out(f"coordinators ({view.threshold} of {len(view.coordinators)} must sign):")
    for cid, key in view.coordinators.items():
        _out(f"  {cid}  {key}")
    _out(f"partners ({len(view.partners)}):")
    for p in view.partners:
        _out(f"  {p.id}  {p.name} ({p.country})  publishes {', '.join(p.publish)}")
        for k in p.keys:
            state = f"valid from {_iso(k.valid_from)}"
            if k.valid_until is not None:
                state += f" until {_iso(k.valid_until)}"
            if k.revoked_at is not None:
                state += f", REVOKED at {_iso(k.revoked_at)}"
            _out(f"    key {k.kid}  {state}")
    for s in view.signatures:
        _out(
            f"signature by {s.coordinator}: {'valid' if s.valid else 'NOT VALID for this version'}"
        )
    verdict = "signed" if view.signed else "NOT SIGNED ENOUGH"
    _out(f"signatures: {view.valid_signatures} valid of {view.threshold} needed ({verdict})")
    return 0


def cmd_nats_config(args: argparse.Namespace) -> int:
    signed = load_region(args.file)
    held = load_region(args.held).document if args.held else None
    trusted = [_public_key(k, "--trust-coordinator") for k in args.trust_coordinator] or None
    doc = accept(signed, held=held, trusted_coordinators=trusted, now=datetime.now(UTC))
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise CliError(f"cannot create {out}: {e.strerror or e}") from None
    store_dir = (args.store_dir or out / "jetstream").absolute()
    credentials_path = out / CREDENTIALS_FILE
    previous = load_credentials(credentials_path) if credentials_path.exists() else None
    credentials = generate_credentials(doc, previous)
    tls = _server_tls(args)
    text = nats_config(
        doc, credentials, host=args.host, port=args.port, store_dir=store_dir, tls=tls
    )
    save_credentials(credentials_path, credentials)
    config_path = out / CONFIG_FILE
    try:
        _atomic_write(config_path, text.encode(), 0o600)
    except OSError as e:
        raise CliError(f"cannot write {config_path}: {e.strerror or e}") from None
    _out(
        f"wrote {config_path} for region {doc.region} version {doc.version} "
        f"({len(doc.partners)} partner(s)) and {credentials_path} (mode 0600)"
        + ("" if tls is None else ", with TLS" + (" (mutual)" if tls.verify else ""))
    )
    _note(
        "give each partner only its own password; keep the operator password offline "
        f"(`handsoff region streams --credentials {credentials_path}{_tls_hint(tls)}` "
        "creates the streams)"
    )
    return 0


def _tls_hint(tls: ServerTls | None) -> str:
    """What a client of these servers adds to its command line."""
    if tls is None:
        return ""
    hint = f" --nats-ca {tls.ca_file}" if tls.ca_file else " (tls:// URLs)"
    return hint + (" --nats-cert ... --nats-key ..." if tls.verify else "")


def _server_tls(args: argparse.Namespace) -> ServerTls | None:
    """The --tls-* flags (`with_server_tls`) as settings, or None for no TLS."""
    cert, key, ca = args.tls_cert, args.tls_key, args.tls_ca
    if cert is None and key is None:
        if ca is not None or args.tls_verify:
            raise CliError("--tls-ca and --tls-verify need --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise CliError("--tls-cert and --tls-key go together")
    if args.tls_verify and ca is None:
        raise CliError("--tls-verify needs --tls-ca: the CA that signs the clients' certificates")
    if args.tls_timeout <= 0 or args.tls_timeout > 60:
        raise CliError("--tls-timeout: between 0 and 60 seconds")
    return ServerTls(
        cert_file=str(cert.absolute()),
        key_file=str(key.absolute()),
        ca_file=str(ca.absolute()) if ca is not None else None,
        verify=args.tls_verify,
        timeout=args.tls_timeout,
    )


def _accepted(args: argparse.Namespace) -> tuple[SignedRegion, RegionDocument]:
    """The region file, if it is signed enough to deploy (see `accept`)."""
    signed = load_region(args.file)
    held = load_region(args.held).document if args.held else None
    trusted = [_public_key(k, "--trust-coordinator") for k in args.trust_coordinator] or None
    return signed, accept(signed, held=held, trusted_coordinators=trusted, now=datetime.now(UTC))


def cmd_deploy(args: argparse.Namespace) -> int:
    signed, doc = _accepted(args)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise CliError(f"cannot create {out}: {e.strerror or e}") from None
    hosts = tuple(args.hub_host) or numbered_hosts(args.servers)
    tls = _server_tls(args)
    leaf_files = (args.leaf_tls_ca, args.leaf_tls_cert, args.leaf_tls_key)
    if tls is None and any(f is not None for f in leaf_files):
        raise CliError("--leaf-tls-* need TLS on the hub (--tls-cert, --tls-key)")
    layout = HubLayout(
        hosts=hosts,
        listen_host=args.listen_host,
        client_port=args.port,
        leaf_port=args.leaf_port,
        monitor_port=args.monitor_port,
        store_dir=args.store_dir,
        tls=tls,
    )
    request = DeployRequest(
        layout=layout,
        leaves=tuple(args.leaf),
        leaf_remotes=tuple(args.leaf_remote),
        leaf_store_dir=args.leaf_store_dir,
        leaf_client_port=args.leaf_client_port,
        leaf_monitor_port=args.leaf_monitor_port,
        compose_nodes=tuple(args.compose_node),
        leaf_tls=None if tls is None else leaf_remote_tls(tls, *leaf_files),
    )
    credentials_path: Path = args.credentials or out / CREDENTIALS_FILE
    previous = load_credentials(credentials_path) if credentials_path.exists() else None
    credentials = deploy_credentials(doc, request.leaves, previous)
    save_credentials(credentials_path, credentials)  # first: the files below use them
    written = write_deployment(signed, doc, credentials, out, request)
    _out(
        f"region {doc.region} version {doc.version}: {len(hosts)} hub server(s), "
        f"{len(doc.partners)} partner(s), {len(request.leaves)} behind a leaf node"
        + ("" if tls is None else ", TLS" + (" (mutual)" if tls.ca_file else ""))
    )
    for path in written:
        _out(f"  {path}")
    _out(f"  {credentials_path} (every password; keep it with the region's operator)")
    _note(
        "hand each partner only its own partners/<id>/ folder; then "
        f"`handsoff region streams --credentials {credentials_path} --url ...{_tls_hint(tls)} "
        f"--replicas {min(len(hosts), 3)}"
        + "".join(f" --leaf {p}" for p in request.leaves)
        + "` creates the streams"
    )
    return 0


def cmd_leaf_streams(args: argparse.Namespace) -> int:
    import nats
    import nats.errors
    import nats.js.errors

    from handsoff.federation import subjects

    doc = load_region(args.file).document
    doc.partner(args.partner)  # UnknownPartner if not a member
    try:
        password = args.password_file.read_text().strip()
    except OSError as e:
        raise CliError(f"cannot read {args.password_file}: {e.strerror or e}") from None
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e) or type(e).__name__)

    async def run() -> list[str]:
        nc = await nats.connect(
            args.url,
            user=args.partner,
            password=password,
            inbox_prefix=subjects.inbox_prefix(args.partner),
            error_cb=on_error,
            connect_timeout=5,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
        )
        try:
            infos = await ensure_leaf_streams(nc.jetstream(timeout=5), doc.region, args.partner)
            return [f"{i.config.name}: {i.state.messages} message(s)" for i in infos]
        finally:
            await nc.close()

    try:
        lines = asyncio.run(run())
    except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as e:
        cause = errors[-1] if errors else str(e) or type(e).__name__
        raise CliError(f"cannot set up the leaf's streams at {args.url}: {cause}") from None
    for line in lines:
        _out(line)
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    import nats
    import nats.errors
    import nats.js.errors

    credentials = load_credentials(args.credentials)

    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e) or type(e).__name__)

    async def run() -> list[str]:
        # nats-py 2.16: max_reconnect_attempts=0 retries forever and allow_reconnect=False
        # leaks the socket on an authorization error; one quick retry it is.
        nc = await connect_nats(
            args.url,
            tls_from_args(args),
            user=OPERATOR_USER,
            password=credentials.password(OPERATOR_USER),
            error_cb=on_error,
            connect_timeout=5,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
        )
        try:
            infos = await ensure_hub_streams(
                nc.jetstream(), credentials.region, args.leaf, replicas=args.replicas
            )
            lines = []
            for i in infos:
                lines.append(f"{i.config.name}: {i.state.messages} message(s)")
                if i.config.sources:
                    lines += await _source_lines(nc, i.config.name or "")
            return lines
        finally:
            await nc.close()

    try:
        lines = asyncio.run(run())
    except NatsTlsError as e:
        raise CliError(f"cannot set up the streams at {args.url}: {e}") from None
    except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as e:
        cause = errors[-1] if errors else str(e) or type(e).__name__
        raise CliError(f"cannot set up the streams at {args.url}: {cause}") from None
    for line in lines:
        _out(line)
    return 0


async def _source_lines(nc: Any, stream: str) -> list[str]:
    """One line per leaf a hub stream sources: how far behind, how long since last heard.
    (Read raw: nats-py's StreamSourceInfo drops which leaf a source is.)"""
    import json

    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    lines = []
    for source in json.loads(reply.data).get("sources") or []:
        origin = (source.get("external") or {}).get("api") or source.get("name")
        active = source.get("active", -1)
        heard = "never heard from" if active < 0 else f"last heard {active / 1e9:.1f} s ago"
        error = source.get("error")
        lines.append(
            f"  from {origin}: {source.get('lag', 0)} message(s) behind, {heard}"
            + (f", error: {error.get('description', error)}" if error else "")
        )
    return lines


# ---------------------------------------------------------------------------------------
# Parser


def with_file(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--file", type=Path, required=True, help="the region document")
    return parser


def with_server_tls(parser: argparse.ArgumentParser, where: str) -> argparse.ArgumentParser:
    """--tls-cert, --tls-key, --tls-ca, --tls-verify, --tls-timeout (`_server_tls`)."""
    group = parser.add_argument_group(
        "TLS (docs/operations.md, section 8)", f"Files as {where} reads them, PEM."
    )
    group.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="the server's certificate: clients (and routes, leaf nodes) need TLS, started first",
    )
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key")
    group.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="the region's CA: servers of a cluster, and the hub and its leaf nodes, "
        "check each other's certificates against it (mutual TLS)",
    )
    group.add_argument(
        "--tls-verify",
        action="store_true",
        help="clients too must show a certificate the CA signed (mutual TLS on the "
        "client port; they still log in with their passwords)",
    )
    group.add_argument(
        "--tls-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="time allowed for a TLS handshake (default 2)",
    )
    return parser


def add_region_commands(sub: Any) -> None:
    """Add `region` and its commands to the `handsoff` subparsers."""
    region = sub.add_parser("region", help="the signed region document and the region's NATS")
    rs = region.add_subparsers(dest="region_command", required=True)

    init = with_file(rs.add_parser("init", help="draft version 1 of a region document"))
    init.add_argument("--region", required=True, help="region id, e.g. sadc")
    init.add_argument("--threshold", type=int, required=True, help="signatures needed")
    init.add_argument(
        "--coordinator",
        action="append",
        required=True,
        metavar="ID=HEXPUBKEY",
        help="a coordinator and the public key from `coordinator-key` (repeat)",
    )
    init.add_argument("--aggregator", required=True, metavar="ID=HEXPUBKEY")
    init.add_argument("--expires-days", type=int, default=365)
    init.add_argument("--breakdowns", choices=["country", "partner"], default="country")
    init.add_argument(
        "--version-grace-hours",
        type=int,
        default=DEFAULT_GRACE_HOURS,
        metavar="H",
        help="after a new version is issued, messages under earlier ones are accepted for "
        f"H hours (nodes that have not taken it yet); default {DEFAULT_GRACE_HOURS}",
    )
    init.set_defaults(func=cmd_init)

    add = with_file(rs.add_parser("add-partner", help="add a partner with its node's key"))
    add.add_argument("--partner", required=True, help="partner id, e.g. sisonke-bw")
    add.add_argument("--name", required=True)
    add.add_argument("--country", required=True, help="ISO 3166 alpha-2, e.g. BW")
    add.add_argument(
        "--key", required=True, metavar="HEXPUBKEY", help="from `handsoff node keys show`"
    )
    add.add_argument("--valid-from", metavar="ISO", help="default: now")
    add.set_defaults(func=cmd_add_partner)

    addk = with_file(rs.add_parser("add-key", help="add a key to a partner (after a rotation)"))
    addk.add_argument("--partner", required=True)
    addk.add_argument("--key", required=True, metavar="HEXPUBKEY")
    addk.add_argument("--valid-from", metavar="ISO", help="default: now")
    addk.add_argument("--valid-until", metavar="ISO")
    addk.set_defaults(func=cmd_add_key)

    revoke = with_file(rs.add_parser("revoke-key", help="revoke a partner's key"))
    revoke.add_argument("--partner", required=True)
    revoke.add_argument("--kid", required=True, help="key id (hex)")
    revoke.add_argument("--at", metavar="ISO", help="revoked from (default: now; may be past)")
    revoke.set_defaults(func=cmd_revoke_key)

    bd = with_file(rs.add_parser("set-breakdowns", help="allow partner-level breakdowns or not"))
    bd.add_argument("--breakdowns", choices=["country", "partner"], required=True)
    bd.set_defaults(func=cmd_set_breakdowns)

    grace = with_file(
        rs.add_parser(
            "set-version-grace",
            help="for how long after a new version messages under earlier ones are accepted",
        )
    )
    grace.add_argument("--hours", type=int, required=True)
    grace.set_defaults(func=cmd_set_version_grace)

    renew = with_file(rs.add_parser("renew", help="push the expiry out"))
    renew.add_argument("--expires-days", type=int, default=365)
    renew.set_defaults(func=cmd_renew)

    _add_key_and_nats_commands(rs)


def with_deployment_trust(parser: argparse.ArgumentParser) -> None:
    """Which coordinators' signatures a deployment takes the region file on."""
    parser.add_argument(
        "--held", type=Path, help="the region file deployed so far (its coordinators must sign)"
    )
    parser.add_argument(
        "--trust-coordinator",
        action="append",
        default=[],
        metavar="HEXPUBKEY",
        help="for a first deployment: only these coordinator keys count (repeat)",
    )


def _add_key_and_nats_commands(rs: Any) -> None:
    ck = rs.add_parser("coordinator-key", help="make a coordinator key (encrypted key file)")
    ck.add_argument("--out", type=Path, required=True, help="the key file to write")
    ck.add_argument(
        "--kdf",
        choices=[k.value for k in KdfStrength],
        default=KdfStrength.MODERATE.value,
        help="argon2id strength for the key file (interactive for small machines)",
    )
    ck.set_defaults(func=cmd_coordinator_key)

    sign = with_file(rs.add_parser("sign", help="sign the document as a coordinator"))
    sign.add_argument("--coordinator", required=True, help="your coordinator id")
    sign.add_argument("--key-file", type=Path, required=True)
    sign.set_defaults(func=cmd_sign)

    show = with_file(rs.add_parser("show", help="show the document and its signatures"))
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    nc = with_file(rs.add_parser("nats-config", help="write nats-server.conf and credentials"))
    nc.add_argument("--out", type=Path, required=True, help="directory to write into")
    nc.add_argument("--host", default="127.0.0.1")
    nc.add_argument("--port", type=int, default=4222)
    nc.add_argument("--store-dir", type=Path, help="JetStream store (default OUT/jetstream)")
    with_deployment_trust(nc)
    with_server_tls(nc, "the server")
    nc.set_defaults(func=cmd_nats_config)

    st = rs.add_parser("streams", help="create or update the region's JetStream streams")
    st.add_argument("--credentials", type=Path, required=True, help="from `nats-config`")
    st.add_argument("--url", default="nats://127.0.0.1:4222")
    st.add_argument(
        "--replicas", type=int, default=1, help="copies of each stream (3 on a 3-server cluster)"
    )
    st.add_argument(
        "--leaf",
        action="append",
        default=[],
        metavar="PARTNER",
        help="source this partner's leaf node (repeat); sources already set are kept",
    )
    add_tls_options(st)
    st.set_defaults(func=cmd_streams)

    _add_deploy_commands(rs)


def _add_deploy_commands(rs: Any) -> None:
    dp = with_file(
        rs.add_parser(
            "deploy",
            help="write the hub's nats-server configurations, leaf nodes' and compose secrets",
        )
    )
    dp.add_argument("--out", type=Path, required=True, help="directory to write into")
    dp.add_argument(
        "--credentials",
        type=Path,
        help="the region's NATS passwords, kept and extended (default OUT/credentials.json)",
    )
    dp.add_argument("--servers", type=int, default=3, help="hub servers nats-1..N (default 3)")
    dp.add_argument(
        "--hub-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a hub server's host name, as the others reach it (repeat; replaces --servers)",
    )
    dp.add_argument("--listen-host", default="0.0.0.0", help="where the hub servers listen")  # noqa: S104
    dp.add_argument("--port", type=int, default=CLIENT_PORT, help="client port")
    dp.add_argument("--leaf-port", type=int, default=LEAF_PORT, help="leaf node port of the hub")
    dp.add_argument(
        "--monitor-port",
        type=int,
        default=MONITOR_PORT,
        help="monitoring port (/healthz) on 127.0.0.1; 0 for none",
    )
    dp.add_argument(
        "--store-dir", type=Path, default=Path("/data/jetstream"), help="the hub's JetStream store"
    )
    dp.add_argument(
        "--leaf",
        action="append",
        default=[],
        metavar="PARTNER",
        help="a partner running its own nats-server as a leaf node (repeat)",
    )
    dp.add_argument(
        "--leaf-remote",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="the hub's leaf address as partners reach it (repeat; default every hub host)",
    )
    dp.add_argument(
        "--leaf-store-dir",
        type=Path,
        default=Path("/var/lib/handsoff-nats/jetstream"),
        help="a leaf's JetStream store on the partner's machine",
    )
    dp.add_argument(
        "--leaf-client-port",
        type=int,
        default=CLIENT_PORT,
        help="where a leaf listens, on 127.0.0.1, for its node (default 4222)",
    )
    dp.add_argument(
        "--leaf-monitor-port",
        type=int,
        default=MONITOR_PORT,
        help="a leaf's monitoring port on 127.0.0.1 (/healthz, /leafz); 0 for none",
    )
    dp.add_argument(
        "--compose-node",
        action="append",
        default=[],
        metavar="PARTNER",
        help="the partner of node-a, then node-b, in deploy/compose.yaml",
    )
    with_deployment_trust(dp)
    with_server_tls(dp, "each hub server")
    leaf_tls = dp.add_argument_group(
        "TLS of the leaf nodes",
        "With --tls-cert, leaves reach the hub over TLS. Files as the partner's server reads "
        "them; with --tls-ca (the hub checks leaves) by default ca.pem, cert.pem and key.pem "
        f"in {LEAF_TLS_DIR} (deploy/systemd/handsoff-nats.service loads them there).",
    )
    leaf_tls.add_argument("--leaf-tls-ca", metavar="FILE", help="the CA of the hub's certificate")
    leaf_tls.add_argument("--leaf-tls-cert", metavar="FILE", help="the leaf's certificate")
    leaf_tls.add_argument("--leaf-tls-key", metavar="FILE", help="its private key")
    dp.set_defaults(func=cmd_deploy)

    ls = with_file(
        rs.add_parser("leaf-streams", help="create a leaf partner's streams on its own server")
    )
    ls.add_argument("--partner", required=True, help="your partner id")
    ls.add_argument("--url", default="nats://127.0.0.1:4222", help="your own nats-server")
    ls.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="your NATS password (partners/<id>/nats-password)",
    )
    ls.set_defaults(func=cmd_leaf_streams)
