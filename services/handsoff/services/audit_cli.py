"""`handsoff audit region | node | export | bundle`: exit 0 only when everything verifies.

`audit region` and `audit export` take the region's history: `--region` once per signed
version (a file, or a directory of them), every version checked as a chain and each message
judged by the version in force at its stream time (auditor/membership.py). Where the
aggregator announces the versions it takes (the aggregates stream), `audit region` takes
them from the stream, anchored in the `--region` files (at least the first version), and
judges each message by the version the aggregator held when it ingested it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from handsoff.services.auditor.report import AuditReport, summary, to_html
from handsoff.services.cli import EXIT_BROKEN, passphrase
from handsoff.services.natsclient import add_tls_options, connect, tls_from_args
from handsoff.services.progress import Progress


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _finish(report: AuditReport, args: argparse.Namespace) -> int:
    for line in summary(report):
        _out(line)
    if args.json is not None:
        args.json.write_bytes(report.json())
        _out(f"JSON report: {args.json}")
    if args.html is not None:
        args.html.write_text(to_html(report))
        _out(f"HTML report: {args.html}")
    return 0 if report.ok else EXIT_BROKEN


async def _connect(args: argparse.Namespace) -> Any:
    password = args.password_file.read_text().strip() if args.password_file else None
    return await connect(
        args.nats,
        tls_from_args(args),
        user=args.user if password else None,
        password=password,
        name="handsoff-audit",
    )


def _region(args: argparse.Namespace) -> Any:
    from handsoff.federation.region import load_region

    return load_region(args.region).document


def _versions(paths: list[Path]) -> list[Any]:
    """The signed region files given: each file, and every *.json file of each directory."""
    from handsoff.federation.region import load_region

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise SystemExit(f"handsoff: error: {path} holds no region file (*.json)")
            files.extend(found)
        else:
            files.append(path)
    return [load_region(f) for f in files]


def _workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes checking envelopes and signatures beside the replay (default: one "
        "per core; 1: all in one process)",
    )


def cmd_region(args: argparse.Namespace) -> int:
    from handsoff.services.auditor.region import audit_region

    versions = _versions(args.region)  # checked with the announced ones, and their anchor
    bar: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress(total, "replaying events"))
        bar[0].update(done)

    async def run() -> AuditReport:
        nc = await _connect(args)
        try:
            return await audit_region(nc.jetstream(), versions, progress, workers=args.workers)
        finally:
            await nc.close()

    return _finish(asyncio.run(run()), args)


def cmd_node(args: argparse.Namespace) -> int:
    from handsoff.services.auditor.node import audit_node
    from handsoff.services.node.node import Node

    stored = None
    if args.nats is not None:
        stored = asyncio.run(_stored(args))
    node = Node.open(args.dir, passphrase(os.environ))
    try:
        return _finish(audit_node(node, stored), args)
    finally:
        node.close()


async def _stored(args: argparse.Namespace) -> dict[str, bytes]:
    """This partner's messages in the region stream: msg id -> payload."""
    from handsoff.federation import subjects
    from handsoff.federation.envelope import MSG_ID
    from handsoff.services.auditor.region import read_stream
    from handsoff.services.node.config import NodePaths, load_config

    if args.region is None:
        raise SystemExit("handsoff: error: --nats needs --region")
    region = _region(args)
    partner = load_config(NodePaths(args.dir)).partner
    nc = await _connect(args)
    out: dict[str, bytes] = {}
    try:
        js = nc.jetstream()
        stream = subjects.events_stream(region.region)
        async for _, m in read_stream(js, stream, subjects.all_events(region.region)):
            if subjects.partner_of(m.subject) == partner and m.headers:
                out.setdefault(m.headers.get(MSG_ID, "?"), m.data)
    finally:
        await nc.close()
    return out


def cmd_export(args: argparse.Namespace) -> int:
    from handsoff.federation import subjects
    from handsoff.services.aggregator.service import AggregatorPaths, open_key
    from handsoff.services.auditor.bundle import new_bundle, sign_bundle
    from handsoff.services.auditor.region import read_streams

    paths = AggregatorPaths(args.dir)
    versions = _versions(args.region) if args.region else paths.region_versions()
    if not versions:
        raise SystemExit(f"handsoff: error: no region document held in {args.dir}: pass --region")
    signed_region = max(versions, key=lambda s: (s.document.version, s.document.issued_at))
    r = signed_region.document.region
    key = open_key(args.dir, passphrase(os.environ))

    async def run() -> bytes:
        nc = await _connect(args)
        try:
            events, aggregates, checkpoints = await read_streams(nc.jetstream(), r)
        finally:
            await nc.close()
        bundle = new_bundle(signed_region, events, aggregates, checkpoints, versions)
        taken = sum(subjects.is_region_taken(m.subject) for m in aggregates)
        _out(
            f"bundled {len(events)} events, {len(aggregates) - taken} statements, "
            f"{taken} announcement(s) of region versions taken, "
            f"{len(checkpoints)} checkpoints of region {r}, "
            f"{len(bundle.history) + 1} region version(s)"
        )
        return sign_bundle(bundle, key)

    args.out.write_bytes(asyncio.run(run()))
    _out(f"signed audit bundle: {args.out}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from handsoff.services.auditor.bundle import audit_bundle

    trusted = _versions(args.region) if args.region else None
    return _finish(audit_bundle(args.file.read_bytes(), trusted, workers=args.workers), args)


def _reports(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--json", type=Path, help="write the JSON report here")
    p.add_argument("--html", type=Path, help="write the HTML report here")
    p.add_argument("--user", default="operator", help="NATS user (default operator)")
    p.add_argument("--password-file", type=Path, help="file holding the NATS password")
    add_tls_options(p)
    return p


def add_audit_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify logs, streams and published figures")
    aus = audit.add_subparsers(dest="audit_command", required=True)

    region = _reports(
        aus.add_parser(
            "region",
            help="replay the region's streams",
            description="Replays the region's streams from the start with public keys only. "
            "Give the signed versions of the region document you trust (--region once per "
            "file, or a directory of them; at least the first): the versions the aggregator "
            "announced on the aggregates stream are checked with them as a chain (each signed "
            "by enough coordinators of the version before it), and each message is judged by "
            "the version the aggregator announced for it. Without announcements (an older "
            "aggregator), give every version: each message is judged by the version in force "
            "at its stream time; given one version, every message is judged by it.",
        )
    )
    region.add_argument("--nats", required=True, help="the region's NATS URL")
    region.add_argument(
        "--region",
        type=Path,
        action="append",
        required=True,
        help="a signed region file or a directory of them (repeatable): the trust anchor, "
        "and the versions the stream does not announce",
    )
    _workers(region)
    region.set_defaults(func=cmd_region)

    node = _reports(aus.add_parser("node", help="a node's log and its consent record"))
    node.add_argument("--dir", type=Path, required=True, help="the node directory")
    node.add_argument("--nats", help="also compare with what the region stream holds")
    node.add_argument("--region", type=Path, help="the signed region file (with --nats)")
    node.set_defaults(func=cmd_node)

    export = _reports(aus.add_parser("export", help="write a signed, self-contained bundle"))
    export.add_argument("--dir", type=Path, required=True, help="the aggregator folder (key)")
    export.add_argument("--nats", required=True, help="the region's NATS URL")
    export.add_argument(
        "--region",
        type=Path,
        action="append",
        help="a signed region file or directory, repeatable (default: every version the "
        "aggregator has held, DIR/regions/ and DIR/region.json)",
    )
    export.add_argument("--out", type=Path, required=True, help="the bundle file to write")
    export.set_defaults(func=cmd_export)

    bundle = _reports(aus.add_parser("bundle", help="verify a bundle offline"))
    bundle.add_argument("file", type=Path, help="the bundle")
    bundle.add_argument(
        "--region",
        type=Path,
        action="append",
        help="a region file you hold and trust, or a directory of them (optional, "
        "repeatable): each must be one of the bundle's versions, and the bundle's first "
        "version must be signed by coordinators they list",
    )
    _workers(bundle)
    bundle.set_defaults(func=cmd_bundle)
