"""`handsoff demo`: a whole region on this machine, fed realistic synthetic cases.

    embedded nats-server (JetStream, generated config: a user per partner, sync always)
    five partner nodes (BW, MZ, NA, ZA, ZW; SQLite), each serving its HTTP API and relaying
    a signed region document (2 of 3 coordinators), the region's streams
    synthetic stories recorded through each node's API, as a paralegal's tool would
    the aggregator (started once every relay has caught up, so the figures printed are its
    first release), its dashboard and feeds

Then it prints the regional figures, verifies every node's log and every signed statement
with public keys only, and serves until Ctrl-C (or exits, with --no-serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import uvicorn

from handsoff.events import Country
from handsoff.federation import statements, subjects
from handsoff.federation.natsconf import (
    AGGREGATOR_USER,
    OPERATOR_USER,
    Credentials,
    ensure_streams,
    generate_credentials,
    nats_config,
)
from handsoff.federation.region import (
    Aggregator,
    Coordinator,
    RegionDocument,
    SignedRegion,
    save_region,
    sign_region,
)
from handsoff.keys import KdfStrength, SigningKey
from handsoff.services.aggregator.service import AggregatorConfig, init_aggregator, serve
from handsoff.services.aggregator.summary import region_lines
from handsoff.services.api import create_app
from handsoff.services.auditor.region import audit_region
from handsoff.services.auditor.report import summary
from handsoff.services.client import NodeClient, record_story
from handsoff.services.natsserver import EmbeddedNats, free_port
from handsoff.services.node.admin import Role
from handsoff.services.node.config import FederationSettings, NodeConfig
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from handsoff.services.node.verify import VerificationReport
from handsoff.services.progress import Progress
from handsoff.services.simulate import StoryTeller

REGION = "sadc-demo"
# (partner id, country, name): one partner in each of five countries.
PARTNERS: tuple[tuple[str, Country, str], ...] = (
    ("bw-hands-off", Country.BW, "Hands Off Botswana (demo)"),
    ("mz-hands-off", Country.MZ, "Hands Off Mozambique (demo)"),
    ("na-hands-off", Country.NA, "Hands Off Namibia (demo)"),
    ("za-hands-off", Country.ZA, "Hands Off South Africa (demo)"),
    ("zw-hands-off", Country.ZW, "Hands Off Zimbabwe (demo)"),
)
RELEASE_INTERVAL_S = 10.0
WAIT_S = 300.0


@dataclass(frozen=True)
class DemoOptions:
    seed: int = 1
    incidents: int = 200
    serve: bool = True
    directory: Path | None = None  # kept afterwards when given; a temporary one otherwise
    port: int = 0  # the dashboard's (default: a free one)


class SharedProgress(Progress):
    """A Progress fed from several threads."""

    def __init__(self, total: int, label: str) -> None:
        super().__init__(total, label)
        self._done = 0
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            self._done += 1
            self.update(self._done)


@contextlib.contextmanager
def serving(node: Node, port: int, link: NodeLink | None = None) -> Iterator[str]:
    app = create_app(node, link)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="handsoff-node-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the node API did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def feed(
    url: str, tokens: dict[Role, str], teller: StoryTeller, n: int, progress: SharedProgress
) -> int:
    """Records n stories through one node's API; returns the number of changes recorded."""
    paralegal = NodeClient(url, tokens[Role.PARALEGAL])
    supervisor = NodeClient(url, tokens[Role.SUPERVISOR])
    changes = 0
    for story in teller.stories(n):
        changes += record_story(paralegal, story, supervisor)
        progress.step()
    return changes


def _print_verification(report: VerificationReport) -> None:
    for log in report.logs:
        status = "intact" if log.intact else f"BROKEN: {log.failure}"
        print(f"    {log.log:7} {log.events:6} events, signatures and chains {status}")


@dataclass
class DemoRegion:
    root: Path
    passphrase: bytes
    nodes: list[Node]
    signed: SignedRegion
    credentials: Credentials
    nats: EmbeddedNats

    @property
    def document(self) -> RegionDocument:
        return self.signed.document

    @property
    def region_file(self) -> Path:
        return self.root / "region.json"

    def password_file(self, user: str) -> Path:
        path = self.root / "nats-passwords" / user
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_text(self.credentials.password(user))
            path.chmod(0o600)
        return path


def build_region(root: Path, passphrase: bytes, stack: contextlib.ExitStack) -> DemoRegion:
    """Keys, nodes, a signed region document, a nats-server configured from it."""
    nodes = []
    for partner, country, _ in PARTNERS:
        node = Node.init(
            root / partner,
            NodeConfig(partner=partner, country=country.value),
            passphrase,
            KdfStrength.INTERACTIVE,
        )
        stack.callback(node.close)
        nodes.append(node)
    aggregator = init_aggregator(root / "aggregator", passphrase, KdfStrength.INTERACTIVE)
    coordinators = {f"coordinator-{i}": SigningKey.generate() for i in (1, 2, 3)}
    now = datetime.now(UTC) - timedelta(minutes=1)
    doc = RegionDocument(
        region=REGION,
        version=1,
        issued_at=now,
        expires_at=now + timedelta(days=90),
        threshold=2,
        coordinators=[Coordinator(c, c, k.public_key) for c, k in coordinators.items()],
        aggregator=Aggregator(AGGREGATOR_USER, aggregator.public_key),
        version_grace_hours=24,
    )
    for node, (partner, country, name) in zip(nodes, PARTNERS, strict=True):
        doc = doc.add_partner(
            partner, name, country.value, node.signer.public_key, valid_from=now, issued_at=now
        )
    signed = SignedRegion.unsigned(doc)
    for c in list(coordinators)[:2]:
        signed = sign_region(signed, c, coordinators[c])
    save_region(root / "region.json", signed)
    credentials = generate_credentials(doc)
    port = free_port()
    config = root / "nats.conf"
    config.write_text(nats_config(doc, credentials, port=port, store_dir=root / "nats"))
    config.chmod(0o600)
    server = EmbeddedNats(root / "nats", port=port, config_file=config).start()
    stack.callback(server.stop)
    region = DemoRegion(root, passphrase, nodes, signed, credentials, server)
    for node in nodes:
        join_region(node, region.region_file)
    return region


async def _create_streams(region: DemoRegion) -> None:
    nc = await nats.connect(
        region.nats.url, user=OPERATOR_USER, password=region.credentials.password(OPERATOR_USER)
    )
    try:
        await ensure_streams(nc.jetstream(), REGION)
    finally:
        await nc.close()


def _link(region: DemoRegion, node: Node) -> NodeLink:
    partner = node.config.partner
    settings = FederationSettings(
        nats_url=region.nats.url,
        nats_user=partner,
        nats_password_file=str(region.password_file(partner)),
        publish_interval=0,
    )
    return NodeLink(node, settings)


async def _until(what: str, check: object, deadline_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError(f"the demo gave up waiting for {what}")
        await asyncio.sleep(0.1)


async def _run(options: DemoOptions, region: DemoRegion, stack: contextlib.ExitStack) -> int:
    await _create_streams(region)
    links = [_link(region, node) for node in region.nodes]
    urls = []
    for node, link in zip(region.nodes, links, strict=True):
        # The API's lifespan runs the node's link (relay, referral inbox) on its own loop.
        urls.append(stack.enter_context(serving(node, free_port(), link)))
    return await _feed_and_report(options, region, links, urls)


async def _feed_and_report(
    options: DemoOptions, region: DemoRegion, links: list[NodeLink], urls: list[str]
) -> int:
    tokens = [
        {role: node.add_user(f"demo-{role.value}", role, "handsoff demo") for role in Role}
        for node in region.nodes
    ]
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    shares = [options.incidents // len(PARTNERS)] * len(PARTNERS)
    for i in range(options.incidents % len(PARTNERS)):
        shares[i] += 1
    print(f"region {REGION}: five partner nodes and NATS on {region.nats.url}")
    for (partner, _, name), url in zip(PARTNERS, urls, strict=True):
        print(f"  {partner:13} {name:32} API {url}")
    print(f"recording {options.incidents} synthetic incidents through the nodes' APIs")
    progress = SharedProgress(options.incidents, "recording incidents")
    began = time.monotonic()
    changes = await asyncio.gather(
        *(
            asyncio.to_thread(
                feed,
                url,
                token,
                # a year of incidents ending six weeks ago: their later steps (responses,
                # referrals, court) mostly fall before today
                StoryTeller(
                    options.seed * 100 + i,
                    country,
                    start - timedelta(days=407),
                    until=datetime.now(UTC),
                ),
                n,
                progress,
            )
            for i, (url, token, (_, country, _), n) in enumerate(
                zip(urls, tokens, PARTNERS, shares, strict=True)
            )
        )
    )
    print(f"recorded {sum(changes)} changes in {time.monotonic() - began:.1f} s")
    await _until("the relays", lambda: all(x.status().relay_lag == 0 for x in links))
    print(f"relayed {sum(x.status().published for x in links)} consented, pseudonymised events")

    stop = asyncio.Event()
    ready: list[tuple[object, int]] = []
    config = AggregatorConfig(
        dir=region.root / "aggregator",
        nats_url=region.nats.url,
        region_file=region.region_file,
        nats_user=AGGREGATOR_USER,
        nats_password=region.credentials.password(AGGREGATOR_USER),
        release_interval=RELEASE_INTERVAL_S,
        fetch_timeout=0.2,
    )
    task = asyncio.create_task(
        serve(
            config,
            region.passphrase,
            host="127.0.0.1",
            port=options.port,
            ready=lambda agg, port: ready.append((agg, port)),
            stop=stop,
        )
    )
    try:
        await _until("the aggregator to start", lambda: bool(ready) or task.done())
        if task.done():
            await task  # raises why it stopped
        aggregator, port = ready[0]
        return await _report(options, region, aggregator, port, stop)
    finally:
        stop.set()
        await task


async def _report(
    options: DemoOptions,
    region: DemoRegion,
    aggregator: object,
    port: int,
    stop: asyncio.Event,
) -> int:
    from handsoff.services.aggregator.service import Aggregator

    assert isinstance(aggregator, Aggregator)
    nc = await nats.connect(
        region.nats.url, user=OPERATOR_USER, password=region.credentials.password(OPERATOR_USER)
    )
    try:
        info = await nc.jetstream().stream_info(subjects.events_stream(REGION))
    finally:
        await nc.close()
    end = info.state.last_seq

    def released() -> bool:
        state = aggregator.book.state()
        return state is not None and state.last_seq >= end and state.published >= state.release

    await _until("the aggregator's first release", released)
    latest = aggregator.feed.latest
    assert latest is not None
    print(
        f"\nregional figures (release {latest.number}, k = {latest.statements[0].k}), "
        f"from {latest.statements[0].inputs.accepted} verified events"
    )
    for line in region_lines(latest.statements):
        print("  " + line)

    print("\nverification with public keys only")
    intact = True
    for node in region.nodes:
        report = node.verify()
        intact &= report.intact
        print(f"  {node.config.partner}: {'intact' if report.intact else 'FAILED'}")
        _print_verification(report)
    for raw in latest.signed:
        statements.verify(raw, region.document)  # raises if not the aggregator's signature
    print(f"  aggregate statements: {len(latest.signed)} signed by the aggregator, verified")
    print("  the region's streams, replayed as an auditor does (handsoff audit region):")
    nc = await nats.connect(
        region.nats.url, user=OPERATOR_USER, password=region.credentials.password(OPERATOR_USER)
    )
    try:
        audit = await audit_region(nc.jetstream(), region.document)
    finally:
        await nc.close()
    for line in summary(audit):
        print("    " + line)
    intact &= audit.ok
    print(f"  result: {'intact' if intact else 'FAILED'}")

    url = f"http://127.0.0.1:{port}/"
    print(f"\ndashboard: {url}")
    if not options.serve:
        return 0 if intact else 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("serving until Ctrl-C", flush=True)
    await stop.wait()
    print("stopping")
    return 0 if intact else 1


def run_demo(options: DemoOptions) -> int:
    with contextlib.ExitStack() as stack:
        root = options.directory or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="handsoff-demo-"))
        )
        passphrase = secrets.token_urlsafe(24).encode()
        if options.directory is not None:  # a kept demo must be reopenable: demo only!
            root.mkdir(parents=True, exist_ok=True)
            secret_file = root / "demo-passphrase"
            secret_file.write_bytes(passphrase)
            secret_file.chmod(0o600)
        region = build_region(root, passphrase, stack)
        return asyncio.run(_run(options, region, stack))
    return 1  # pragma: no cover (ExitStack never swallows here)
