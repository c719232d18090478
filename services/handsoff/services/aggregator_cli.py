"""`handsoff aggregator init | serve | rebuild | status`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from handsoff.keys import KdfStrength
from handsoff.services.aggregator.disclosure import DEFAULT_K
from handsoff.services.aggregator.service import (
    AggregatorConfig,
    AggregatorError,
    AggregatorPaths,
    init_aggregator,
)
from handsoff.services.cli import EXIT_BROKEN, KDF_OPTION, passphrase
from handsoff.services.logs import add_log_options, configure_logging
from handsoff.services.natsclient import add_tls_options, tls_from_args


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as e:
        raise AggregatorError(f"cannot read NATS password file {path}: {e.strerror}") from None


def _config(args: argparse.Namespace) -> AggregatorConfig:
    return AggregatorConfig(
        dir=args.dir,
        nats_url=args.nats,
        region_file=args.region,
        nats_user=args.user,
        nats_password=_password(args.password_file),
        nats_tls=tls_from_args(args),
        k=args.k,
        release_interval=args.interval,
        replicas=getattr(args, "replicas", 1),  # serve only
    )


def cmd_init(args: argparse.Namespace) -> int:
    key = init_aggregator(args.dir, passphrase(os.environ), KdfStrength(args.kdf))
    _out(f"initialised aggregator in {args.dir}")
    _out(f"public key {key.public_key.hex()}")
    _out(f"  (for the region document: --aggregator aggregator={key.public_key.hex()})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from handsoff.services.aggregator.service import serve

    configure_logging(args.log_format, args.log_level)
    config = _config(args)

    def ready(_: object, port: int) -> None:
        _out(f"aggregator ingesting from {config.nats_url}")
        _out(f"dashboard and feeds on http://{args.host}:{port}/")

    asyncio.run(serve(config, passphrase(os.environ), host=args.host, port=args.port, ready=ready))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from handsoff.services.aggregator.ingest import IngestStore
    from handsoff.services.aggregator.rebuild import rebuild
    from handsoff.services.aggregator.service import connect, open_key, take_region

    source = AggregatorPaths(args.dir)
    target = AggregatorPaths(args.into)
    if target.store.exists():
        raise AggregatorError(f"{target.store} exists: rebuild needs a fresh folder")
    take_region(source, args.region)
    versions = source.region_versions()  # every version held: the announced ones chain on
    key = open_key(args.dir, passphrase(os.environ))
    target.root.mkdir(parents=True, exist_ok=True)
    store = IngestStore(target.store)

    async def run() -> Any:
        nc = await connect(_config(args))
        try:
            return await rebuild(nc.jetstream(), versions, store, key)
        finally:
            await nc.drain()

    try:
        report = asyncio.run(run())
    finally:
        store.close()
    _out(f"replayed the events stream to sequence {report.position} into {target.store}")
    _out(f"releases reproduced byte for byte: {report.identical} of {report.releases}")
    for line in report.differences:
        _out(f"  DIFFERENT {line}")
    return 0 if report.ok else EXIT_BROKEN


def cmd_status(args: argparse.Namespace) -> int:
    from handsoff.services.aggregator.announce import TakenBook
    from handsoff.services.aggregator.ingest import IngestStore
    from handsoff.services.aggregator.releases import ReleaseBook
    from handsoff.services.aggregator.witness import WitnessBook

    paths = AggregatorPaths(args.dir)
    if not paths.store.exists():
        raise AggregatorError(f"no aggregator store in {args.dir}")
    store = IngestStore(paths.store)
    try:
        state = ReleaseBook(store).state()
        body = {
            "position": store.position(),
            "accepted": store.accepted_count(),
            "rejected": store.rejected_by_reason(),
            "release": state.release if state else 0,
            "published": state.published if state else 0,
            "checkpoints": WitnessBook(store).status(),
            # the region versions it announced taking, from which stream position on
            "announced": [
                {"version": t.version, "after_seq": t.after_seq} for t in TakenBook(store).all()
            ],
        }
    finally:
        store.close()
    _out(json.dumps(body, indent=2, sort_keys=True))
    return 0


def _with_nats(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--dir", type=Path, required=True, help="the aggregator folder")
    p.add_argument(
        "--region",
        type=Path,
        help="a signed region file to take on (serve: read again on SIGHUP)",
    )
    p.add_argument(
        "--nats",
        required=True,
        help="the region's NATS URL (a cluster's servers: several, comma-separated)",
    )
    p.add_argument("--user", default="aggregator", help="NATS user (default aggregator)")
    p.add_argument("--password-file", type=Path, help="file holding the NATS password")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="disclosure threshold (default 5)")
    p.add_argument(
        "--interval", type=float, default=60.0, help="seconds between releases (default 60)"
    )
    add_tls_options(p)
    return p


def add_aggregator_commands(sub: Any) -> None:
    agg = sub.add_parser("aggregator", help="the regional aggregator")
    ags = agg.add_subparsers(dest="aggregator_command", required=True)

    init = ags.add_parser("init", help="create the aggregator's signing key")
    init.add_argument("--dir", type=Path, required=True, help="the aggregator folder")
    init.add_argument("--kdf", **KDF_OPTION)
    init.set_defaults(func=cmd_init)

    serve = _with_nats(ags.add_parser("serve", help="ingest, release and serve the feeds"))
    serve.add_argument(
        "--replicas", type=int, default=1, help="KV bucket replicas (3 in a 3-server cluster)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8700)
    add_log_options(serve)
    serve.set_defaults(func=cmd_serve)

    rebuild = _with_nats(
        ags.add_parser("rebuild", help="replay the stream into a fresh store, compare releases")
    )
    rebuild.add_argument("--into", type=Path, required=True, help="a new folder for the store")
    rebuild.set_defaults(func=cmd_rebuild)

    status = ags.add_parser("status", help="position, counts, releases (offline)")
    status.add_argument("--dir", type=Path, required=True, help="the aggregator folder")
    status.set_defaults(func=cmd_status)
