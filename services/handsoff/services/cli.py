"""The `handsoff` command line. User errors get one clear line, never a traceback."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from handsoff.events import EventsError
from handsoff.federation.errors import FederationError
from handsoff.keys import (
    KdfStrength,
    KeysError,
    PassphraseMissing,
    load_keyring,
    passphrase_from_env,
)
from handsoff.services.errors import ServiceError
from handsoff.services.logs import add_log_options
from handsoff.services.natsclient import add_tls_options, ssl_context, tls_enabled, tls_from_args
from handsoff.services.node.admin import Role
from handsoff.services.node.config import NodeConfig, NodePaths, PostgresSettings, load_config
from handsoff.services.node.node import Node, exclusive
from handsoff.services.node.verify import VerificationReport, verify_node

EXIT_BROKEN = 1  # verification found a problem
EXIT_USAGE = 2  # the user asked for something impossible


class CliError(Exception):
    pass


def passphrase(env: dict[str, str] | os._Environ[str]) -> bytes:
    """From HANDSOFF_PASSPHRASE(_FILE); a terminal may type it. Never from an argument."""
    try:
        return passphrase_from_env(env)
    except PassphraseMissing:
        if sys.stdin.isatty():
            return getpass.getpass("node passphrase: ").encode()
        raise


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def cmd_init(args: argparse.Namespace) -> int:
    postgres = None
    if args.backend == "postgres":
        postgres = PostgresSettings(
            schema=args.pg_schema or f"handsoff_{args.partner.replace('-', '_')}",
            dbname=args.pg_dbname,
            host=args.pg_host,
            port=args.pg_port,
            user=args.pg_user,
            password_env=args.pg_password_env,
        )
    config = _validated(
        NodeConfig,
        {
            "partner": args.partner,
            "country": args.country,
            "backend": args.backend,
            "postgres": msgspec.to_builtins(postgres) if postgres else None,
            "host": args.host,
            "port": args.port,
        },
    )
    node = Node.init(args.dir, config, passphrase(os.environ), KdfStrength(args.kdf))
    try:
        _out(f"initialised node {config.partner} ({config.country}) in {args.dir}")
        _out(f"signing key {node.keyring.current.kid}")
        _out(
            f"genesis fingerprint {node.keyring.fingerprint}  (give this to your region's "
            "coordinators, out of band)"
        )
    finally:
        node.close()
    return 0


def _validated(t: type[NodeConfig], raw: dict[str, object]) -> NodeConfig:
    try:
        return msgspec.convert(raw, t)
    except msgspec.ValidationError as e:
        raise CliError(f"invalid setting: {e}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from handsoff.services.api import create_app
    from handsoff.services.logs import configure_logging

    configure_logging(args.log_format, args.log_level)
    paths = NodePaths(args.dir)
    with exclusive(paths):
        secret = passphrase(os.environ)
        node = Node.open(args.dir, secret)
        try:
            link = None
            settings = node.config.federation
            if settings is not None:
                from handsoff.services.node.link import NodeLink

                link = NodeLink(node, settings)
                secure = settings.nats_tls is not None or "tls://" in settings.nats_url
                tls = " over TLS" if secure else ""
                _out(f"relaying consented events to {settings.nats_url}{tls}")
            app = create_app(node, link)
            app.state.passphrase = secret
            host = args.host or node.config.host
            port = args.port if args.port is not None else node.config.port
            _out(f"node {node.config.partner} serving on http://{host}:{port}")
            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to
            # whatever handler was there before: make that a no-op so we close and exit 0.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: None)
            # log_config=None: uvicorn's lines take the structured format configured above;
            # its access log (client address, full path with case ids) is off: the API logs
            # each request by route template instead (handsoff.services.ops.AccessLog).
            uvicorn.run(
                app,
                host=host,
                port=port,
                log_level=args.log_level,
                server_header=False,
                log_config=None,
                access_log=False,
            )
        finally:
            node.close()
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from handsoff.federation.natsconf import server_urls
    from handsoff.services.node.config import FederationSettings, save_config
    from handsoff.services.node.link import join_region

    if args.region_check_interval <= 0:
        raise CliError("--region-check-interval must be more than 0 seconds")
    tls = tls_from_args(args)
    if tls is not None:
        ssl_context(tls)  # the files are there and usable, or say so now
    node = Node.open(args.dir, passphrase(os.environ))
    try:
        doc = join_region(node, args.region)
        settings = FederationSettings(
            nats_url=args.nats,
            nats_user=args.user or node.config.partner,
            nats_password_file=str(args.password_file.resolve()) if args.password_file else None,
            publish_interval=args.publish_interval,
            checkpoint_interval=args.checkpoint_interval,
            region_check_interval=args.region_check_interval,
            nats_tls=tls,
        )
        save_config(node.paths, msgspec.structs.replace(node.config, federation=settings))
    finally:
        node.close()
    secure = " over TLS" if tls_enabled(server_urls(args.nats), tls) else ""
    _out(
        f"joined region {doc.region} (version {doc.version}); relaying to {args.nats}"
        f"{secure} when the node serves"
    )
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    import asyncio

    from handsoff.services.node.link import publish_checkpoint
    from handsoff.services.node.node import NodeBusy

    paths = NodePaths(args.dir)
    try:
        with exclusive(paths):
            node = Node.open(args.dir, passphrase(os.environ))
            try:
                checkpoint = asyncio.run(publish_checkpoint(node))
            finally:
                node.close()
    except NodeBusy:
        raise CliError(
            f"node {args.dir} is serving: it publishes checkpoints itself; for one now, "
            "POST /checkpoint (admin)"
        ) from None
    _out(
        f"checkpoint of {checkpoint.partner}: {checkpoint.size} message(s), root "
        f"{checkpoint.root} (previous checkpoint: {checkpoint.previous_size})"
    )
    return 0


def cmd_resume_sharing(args: argparse.Namespace) -> int:
    import asyncio

    from handsoff.federation.envelope import message_id
    from handsoff.services.node.node import NodeBusy
    from handsoff.services.node.resume import resume_sharing_now

    try:
        with exclusive(NodePaths(args.dir)):
            node = Node.open(args.dir, passphrase(os.environ))
            try:
                done = asyncio.run(resume_sharing_now(node, "handsoff node resume-sharing"))
            finally:
                node.close()
    except NodeBusy:
        raise CliError(f"node {args.dir} is serving: stop it first") from None
    partner = node.config.partner
    _out(
        f"sharing resumed: {message_id(partner, done.first_lost)} to "
        f"{message_id(partner, done.last_lost)} are in the region's stream for events this "
        f"log no longer has; what the case log records after notification "
        f"{done.after_notification} is numbered from {message_id(partner, done.last_lost + 1)}"
        " (recorded in the admin log); start the node"
    )
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    node = Node.open(args.dir, passphrase(os.environ))
    try:
        token = node.add_user(args.name, Role(args.role), "handsoff node users add")
    finally:
        node.close()
    _out(token)
    sys.stderr.write(f"user {args.name} ({args.role}) added; the token above is shown only once\n")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    node = Node.open(args.dir, passphrase(os.environ))
    try:
        node.admin.refresh()
        for u in node.admin.users.values():
            _out(f"{u.name}\t{u.role.value}\t{'active' if u.active else 'revoked'}")
    finally:
        node.close()
    return 0


def cmd_users_revoke(args: argparse.Namespace) -> int:
    node = Node.open(args.dir, passphrase(os.environ))
    try:
        node.admin.revoke_user(args.name, "handsoff node users revoke")
    finally:
        node.close()
    _out(f"user {args.name} revoked")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    ring = load_keyring(NodePaths(args.dir).keyring)
    _out(f"owner {ring.owner}; genesis fingerprint {ring.fingerprint}")
    for r in ring.keys:
        state = "current" if r is ring.current else f"retired {r.retired_at:%Y-%m-%dT%H:%M:%SZ}"
        _out(
            f"{r.kid}  {r.public_key.hex()}  activated {r.activated_at:%Y-%m-%dT%H:%M:%SZ}  {state}"
        )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    paths = NodePaths(args.dir)
    with exclusive(paths):
        secret = passphrase(os.environ)
        node = Node.open(args.dir, secret)
        try:
            old = node.keyring.current.kid
            new = node.rotate_key(secret, "handsoff node keys rotate", KdfStrength(args.kdf))
        finally:
            node.close()
    _out(f"rotated: {old} -> {new.kid}; the rotation is recorded and signed by {old}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    paths = NodePaths(args.dir)
    config = load_config(paths)
    report = verify_node(config, paths.data, load_keyring(paths.keyring), args.trust)
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(report), indent=2).decode() + "\n")
    else:
        _print_report(report)
    return 0 if report.intact else EXIT_BROKEN


def _print_report(report: VerificationReport) -> None:
    _out(
        f"node {report.partner}: keyring {'intact' if report.keyring_intact else 'BROKEN'} "
        f"({len(report.keys)} key(s))"
    )
    if report.problem:
        _out(f"  {report.problem}")
    for log in report.logs:
        status = "intact" if log.intact else "BROKEN"
        _out(f"  {log.log}: {log.events} events in {log.aggregates} aggregates, {status}")
        if log.failure:
            _out(f"    first broken event: {log.failure}")
    _out("verified: intact" if report.intact else "verification FAILED")


def cmd_demo(args: argparse.Namespace) -> int:
    from handsoff.services.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            seed=args.seed,
            incidents=args.incidents,
            serve=not args.no_serve,
            directory=args.dir,
            port=args.port,
        )
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from handsoff.events import Country
    from handsoff.services.client import NodeClient, record_story
    from handsoff.services.simulate import StoryTeller

    token = os.environ.get(args.token_env)
    if not token:
        raise CliError(f"set {args.token_env} to a paralegal's or supervisor's API token")
    client = NodeClient(args.url, token)
    start = datetime.now(UTC) - timedelta(days=365)
    teller = StoryTeller(args.seed, Country(args.country), start)
    recorded = 0
    for story in teller.stories(args.incidents):
        record_story(client, story, client if args.supervisor else None)
        recorded += 1
    _out(f"recorded {recorded} synthetic incidents at {args.url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="handsoff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run and look after a partner node")
    ns = node.add_subparsers(dest="node_command", required=True)

    _add_init(ns)
    _add_node_commands(ns)
    _add_tools(sub)
    from handsoff.services.region_cli import add_region_commands  # it imports this module

    add_region_commands(sub)
    from handsoff.services.aggregator_cli import add_aggregator_commands

    add_aggregator_commands(sub)
    from handsoff.services.audit_cli import add_audit_commands

    add_audit_commands(sub)
    return p


def with_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--dir", type=Path, required=True, help="the node directory")
    return parser


KDF_OPTION: dict[str, Any] = {
    "choices": [k.value for k in KdfStrength],
    "default": KdfStrength.MODERATE.value,
    "help": "argon2id strength for the key file (interactive for small machines)",
}


def _add_init(ns: Any) -> None:
    init = with_dir(ns.add_parser("init", help="create config, keys and stores"))
    init.add_argument("--partner", required=True, help="partner id, e.g. sisonke-bw")
    init.add_argument("--country", required=True, help="ISO 3166 alpha-2 code, e.g. BW")
    init.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    init.add_argument("--host", default="127.0.0.1")
    init.add_argument("--port", type=int, default=8600)
    init.add_argument("--kdf", **KDF_OPTION)
    init.add_argument("--pg-schema")
    init.add_argument("--pg-dbname", default="handsoff")
    init.add_argument("--pg-host", default="127.0.0.1")
    init.add_argument("--pg-port", type=int, default=5432)
    init.add_argument("--pg-user", default="postgres")
    init.add_argument("--pg-password-env", help="name of the variable holding the password")
    init.set_defaults(func=cmd_init)


def _add_node_commands(ns: Any) -> None:

    serve = with_dir(ns.add_parser("serve", help="serve the HTTP API"))
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    add_log_options(serve)
    serve.set_defaults(func=cmd_serve)

    join = with_dir(ns.add_parser("join", help="join a region (signed region document)"))
    join.add_argument("--region", type=Path, required=True, help="the signed region file")
    join.add_argument(
        "--nats",
        required=True,
        help="the region's NATS URL (a cluster's servers: several, comma-separated)",
    )
    join.add_argument("--user", help="NATS user (default: the partner id)")
    join.add_argument("--password-file", type=Path, help="file holding the NATS password")
    join.add_argument(
        "--publish-interval",
        type=float,
        default=300.0,
        help="seconds between publishing rounds (default 300)",
    )
    join.add_argument(
        "--checkpoint-interval",
        type=float,
        default=600.0,
        help="seconds between signed checkpoints of what was published (default 600)",
    )
    join.add_argument(
        "--region-check-interval",
        type=float,
        default=30.0,
        help="seconds between looks at the region versions the aggregator announces "
        "(default 30; a newer one is taken at once)",
    )
    add_tls_options(join)
    join.set_defaults(func=cmd_join)

    checkpoint = with_dir(
        ns.add_parser(
            "checkpoint",
            help="publish a signed checkpoint of what the node has shared, now (not serving)",
        )
    )
    checkpoint.set_defaults(func=cmd_checkpoint)

    resume = with_dir(
        ns.add_parser(
            "resume-sharing",
            help="after a restore from a backup: number new messages past those the region "
            "holds for lost events (not serving; docs/operations.md section 5)",
        )
    )
    resume.set_defaults(func=cmd_resume_sharing)

    users = ns.add_parser("users", help="API users and their tokens")
    us = users.add_subparsers(dest="users_command", required=True)
    add = with_dir(us.add_parser("add", help="add a user and print their token once"))
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.set_defaults(func=cmd_users_add)
    with_dir(us.add_parser("list", help="list users")).set_defaults(func=cmd_users_list)
    revoke = with_dir(us.add_parser("revoke", help="revoke a user's token"))
    revoke.add_argument("--name", required=True)
    revoke.set_defaults(func=cmd_users_revoke)

    keys = ns.add_parser("keys", help="the node's signing keys")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    with_dir(ks.add_parser("show", help="show public keys")).set_defaults(func=cmd_keys_show)
    rotate = with_dir(ks.add_parser("rotate", help="rotate the signing key (node stopped)"))
    rotate.add_argument("--kdf", **KDF_OPTION)
    rotate.set_defaults(func=cmd_keys_rotate)

    verify = with_dir(ns.add_parser("verify", help="verify every signature and chain link"))
    verify.add_argument(
        "--trust",
        metavar="FINGERPRINT",
        help="the genesis fingerprint you trust (from `node init`)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=cmd_verify)


def _add_tools(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run a node on this machine and feed it synthetic cases")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--incidents", type=int, default=200)
    demo.add_argument("--no-serve", action="store_true", help="run, print, verify and exit")
    demo.add_argument("--dir", type=Path, help="keep the demo's node here (default: temporary)")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("simulate", help="feed synthetic cases to a running node's API")
    sim.add_argument("--url", required=True, help="the node's API, e.g. http://127.0.0.1:8600")
    sim.add_argument(
        "--token-env",
        default="HANDSOFF_TOKEN",
        help="variable holding the API token (default HANDSOFF_TOKEN)",
    )
    sim.add_argument("--incidents", type=int, default=50)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--country", default="BW", choices=["BW", "MZ", "NA", "ZA", "ZW"])
    sim.add_argument(
        "--supervisor", action="store_true", help="the token is a supervisor's: also close cases"
    )
    sim.set_defaults(func=cmd_simulate)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CliError, ServiceError, KeysError, EventsError, FederationError) as e:
        sys.stderr.write(f"handsoff: error: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
