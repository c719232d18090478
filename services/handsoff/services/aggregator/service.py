"""The aggregator as a running service: one composition root, config passed in.

    handsoff aggregator init  --dir DIR                 a signing key (passphrase-protected)
    handsoff aggregator serve --dir DIR --region FILE --nats URL
        ingest (durable consumer, verified, one transaction per batch)
        -> every `release_interval` seconds, if the stream position moved: a release
        -> HTTP feeds (JSON, CSV, SSE, dashboard) and NATS (aggregates stream + KV bucket)

The folder holds `aggregator.key` (the signing key, argon2id + SecretBox), `region.json`
(the region document held: a newer one is taken only under the acceptance rule),
`regions/region-v<N>.json` (every version held, kept for audit exports) and
`aggregator.sqlite` (accepted envelopes, figures, position, releases, suppression memory,
the versions announced).

A version is taken only at start, and announced then, before anything is ingested under it
(announce.py: hx.<r>.aggregates._region, with the store's position and the signed file), so
an auditor judges every message by the version this aggregator held when it ingested it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from handsoff.federation import subjects
from handsoff.federation.errors import RegionError
from handsoff.federation.natsconf import AGGREGATOR_USER
from handsoff.federation.region import (
    RegionDocument,
    SignedRegion,
    accept,
    load_region,
    save_region,
)
from handsoff.keys import KdfStrength, NodeSecrets, SigningKey, read_key_file, write_key_file
from handsoff.services.aggregator.announce import TakenBook, announce, announced_at
from handsoff.services.aggregator.disclosure import DEFAULT_K, SuppressionMemory
from handsoff.services.aggregator.feed import ReleaseFeed
from handsoff.services.aggregator.ingest import Ingest, IngestResult, IngestStore
from handsoff.services.aggregator.releases import (
    Cutter,
    ReleaseBook,
    ensure_latest_bucket,
    publish,
)
from handsoff.services.aggregator.witness import Witness
from handsoff.services.errors import ServiceError
from handsoff.services.natsclient import NatsTls
from handsoff.services.natsclient import connect as connect_nats

log = logging.getLogger("handsoff.aggregator")

KEY_FILE: Final = "aggregator.key"
REGION_FILE: Final = "region.json"
REGIONS_DIR: Final = "regions"
STORE_FILE: Final = "aggregator.sqlite"


class AggregatorError(ServiceError):
    pass


@dataclass(frozen=True)
class AggregatorPaths:
    root: Path

    @property
    def key_file(self) -> Path:
        return self.root / KEY_FILE

    @property
    def region(self) -> Path:
        return self.root / REGION_FILE

    @property
    def regions(self) -> Path:
        """Every version of the region document held, one file each."""
        return self.root / REGIONS_DIR

    def region_versions(self) -> list[SignedRegion]:
        """The versions kept in `regions/` and the one held (for `audit export`)."""
        files = sorted(self.regions.glob("region-v*.json")) if self.regions.is_dir() else []
        if self.region.exists():
            files.append(self.region)
        return [load_region(f) for f in files]

    @property
    def store(self) -> Path:
        return self.root / STORE_FILE


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything `serve` needs, built once at the entry point."""

    dir: Path
    nats_url: str  # one URL, or the servers of a cluster separated by commas
    region_file: Path | None = None  # a newer region document to take on at start
    nats_user: str | None = AGGREGATOR_USER
    nats_password: str | None = None
    nats_tls: NatsTls | None = None  # TLS to the region's NATS (--nats-ca, ...)
    k: int = DEFAULT_K
    release_interval: float = 60.0  # seconds between releases (when something new arrived)
    batch: int = 256
    fetch_timeout: float = 1.0
    stream_check_interval: float = 10.0  # seconds between reading the stream's end (lag)
    replicas: int = 1  # of the KV bucket of latest statements (3 in a 3-server cluster)


def init_aggregator(
    directory: Path, passphrase: bytes, kdf: KdfStrength = KdfStrength.INTERACTIVE
) -> SigningKey:
    """A new aggregator folder with its signing key; the public key goes in the region."""
    paths = AggregatorPaths(Path(directory))
    if paths.key_file.exists():
        raise AggregatorError(f"{paths.key_file} exists: this folder is initialised already")
    paths.root.mkdir(parents=True, exist_ok=True)
    secrets = NodeSecrets.generate()
    write_key_file(paths.key_file, secrets, passphrase, kdf)
    return SigningKey(secrets.signing_seed)


def open_key(directory: Path, passphrase: bytes) -> SigningKey:
    return SigningKey(read_key_file(AggregatorPaths(directory).key_file, passphrase).signing_seed)


def take_region(
    paths: AggregatorPaths, candidate_file: Path | None, now: datetime | None = None
) -> RegionDocument:
    """The region document held, after taking on `candidate_file` if it is newer. Every
    version held is also kept in `regions/`."""
    return take_signed_region(paths, candidate_file, now).document


def take_signed_region(
    paths: AggregatorPaths, candidate_file: Path | None, now: datetime | None = None
) -> SignedRegion:
    """`take_region`, as the signed file held (what the aggregator announces)."""
    now = now or datetime.now(UTC)
    held_file = load_region(paths.region) if paths.region.exists() else None
    held = held_file.document if held_file is not None else None
    if held_file is not None:
        _keep_version(paths, held_file)  # a folder from before versions were kept
    if candidate_file is not None:
        candidate = load_region(candidate_file)
        if held is None or candidate.document.version != held.version:
            accept(candidate, held=held, now=now)
            save_region(paths.region, candidate)
            _keep_version(paths, candidate)
            return candidate
    if held_file is None:
        raise AggregatorError(f"no region document held in {paths.root}: pass --region FILE")
    return held_file


def held_file(paths: AggregatorPaths, document: RegionDocument) -> SignedRegion:
    """The signed file of `document` in the folder (region.json, or regions/)."""
    for path in (paths.region, paths.regions / f"region-v{document.version}.json"):
        if path.exists():
            signed = load_region(path)
            if signed.document == document:
                return signed
    raise AggregatorError(
        f"the signed file of region version {document.version} is not in {paths.root} "
        "(take it on with --region FILE): the aggregator announces the file it holds"
    )


def _keep_version(paths: AggregatorPaths, signed: SignedRegion) -> None:
    path = paths.regions / f"region-v{signed.document.version}.json"
    if not path.exists():
        paths.regions.mkdir(exist_ok=True)
        save_region(path, signed)


@dataclass(frozen=True)
class Vitals:
    """The aggregator's figures for /readyz and /metrics: memory and single-row reads only,
    so a probe or a scrape never scans a table and never waits on NATS."""

    position: int  # the events stream's sequence ingested up to
    stream_last_seq: int  # the stream's end, as last read (never below the position)
    accepted: int  # envelopes accepted, ever (the stored count at start + this process's)
    rejected: dict[str, int]  # messages rejected, ever, by reason code
    duplicates: int  # copies of accepted messages, since this process started
    releases_kept: int  # the newest release kept (stored, signed)
    releases_published: int  # the newest release acknowledged by NATS
    seconds_since_release: float | None  # None until this process cuts a release
    connected: bool

    @property
    def lag(self) -> int:
        return self.stream_last_seq - self.position


@dataclass
class Aggregator:
    """Ingest, releases and publication over one NATS connection and one SQLite file."""

    region: RegionDocument
    key: SigningKey
    store: IngestStore
    nc: NATS
    config: AggregatorConfig
    feed: ReleaseFeed = field(default_factory=ReleaseFeed)
    clock: Callable[[], float] = time.monotonic
    counts: IngestResult = field(default_factory=IngestResult)
    # The signed file of `region`, announced at start (None: read from the folder).
    signed_region: SignedRegion | None = None

    def __post_init__(self) -> None:
        if self.region.aggregator.public_key != self.key.public_key:
            raise AggregatorError(
                f"this folder's key {self.key.kid.hex()} is not the region's aggregator key"
            )
        if self.signed_region is None:
            self.signed_region = held_file(AggregatorPaths(self.config.dir), self.region)
        elif self.signed_region.document != self.region:
            raise AggregatorError("the signed region file is not of the region document held")
        self.taken = TakenBook(self.store)
        js = self.nc.jetstream()
        self.js = js
        self.book = ReleaseBook(self.store)
        self.cutter = Cutter(self.region, self.key, self.config.k)
        self.ingest = self._ingest(self.region)
        self._last_release_at: float | None = None
        # Checks and countersigns the partners' checkpoints (witness.py).
        self.witness = Witness(self.region, self.key, self.store, js)
        self._witnessed_at: float | None = None
        # The stored totals at start; this process's own are added from self.counts.
        self._accepted_before = self.store.accepted_count()
        self._rejected_before = Counter(self.store.rejected_by_reason())
        self.stream_last_seq = 0
        self._stream_checked_at: float | None = None
        # Why the last reload of the region file (SIGHUP) took nothing; None if it did.
        self.region_error: str | None = None
        self._resumed = False  # ingest and the witness running under the version held

    def _ingest(self, region: RegionDocument) -> Ingest:
        return Ingest(
            region,
            self.store,
            self.js,
            batch=self.config.batch,
            fetch_timeout=self.config.fetch_timeout,
        )

    async def start(self) -> None:
        for stream in (
            subjects.events_stream(self.region.region),
            subjects.aggregates_stream(self.region.region),
            subjects.quarantine_stream(self.region.region),
            subjects.checkpoints_stream(self.region.region),
        ):
            try:
                await self.js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                raise AggregatorError(
                    f"stream {stream} does not exist: create the region's streams first "
                    "(handsoff region streams)"
                ) from None
        await ensure_latest_bucket(self.js, self.region.region, self.config.replicas)
        latest = self.book.latest()
        if latest is not None:
            await self.feed.publish(latest.number, latest.statements, latest.signed)
        await self._resume()

    async def _resume(self) -> None:
        """Ingest and the witness (re)started under the version held, announced first; a
        release cut under the version held before goes out before that announcement."""
        self._resumed = False
        await self._publish_pending()
        await self.announce()
        await self.ingest.start()
        await self.witness.start()
        await self._check_stream()
        self._resumed = True

    async def announce(self) -> None:
        """Announces the version held unless done already (announce.py): before ingest."""
        assert self.signed_region is not None
        made = await announce(
            self.js,
            self.taken,
            self.signed_region,
            self.key,
            self.store.position(),
            self.witness.book.position(),
            self.witness.book.undecided(),
        )
        if made is not None:
            log.info(
                "region version announced",
                extra={"version": made.version, "after_seq": made.after_seq},
            )
        self.ingest.announced(await announced_at(self.js, self.region.region, self.region.version))

    async def stop(self) -> None:
        await self.ingest.stop()
        await self.witness.stop()

    async def reload_region(self) -> bool:
        """Reads the region file given at start again (SIGHUP) and takes it if it is a newer
        version the held one's coordinators signed (as a restart with ``--region`` would).
        A file it cannot take changes nothing: ``region_error`` and the log say why."""
        paths = AggregatorPaths(self.config.dir)
        try:
            if self.config.region_file is not None:  # refused before it is kept as held
                self._check_key(load_region(self.config.region_file).document)
            signed = take_signed_region(paths, self.config.region_file)
            if signed.document.version != self.region.version:
                await self.take(signed)
        except (RegionError, AggregatorError) as e:
            self.region_error = str(e)
            log.warning("region file not taken", extra={"error": str(e)})
            return False
        self.region_error = None
        return True

    def _check_key(self, document: RegionDocument) -> None:
        if document.aggregator.public_key != self.key.public_key:
            raise AggregatorError(
                f"region version {document.version} names another aggregator key: this "
                f"folder's key is {self.key.kid.hex()}"
            )

    async def take(self, signed: SignedRegion) -> None:
        """Takes a newer version while running: releases kept under the version held go out
        first, then the new one is announced after what has been ingested so far and judges
        everything after it (ingest and the witness start again under it)."""
        document = signed.document
        self._check_key(document)
        await self.stop()
        self._resumed = False  # if NATS fails below, run() resumes until it succeeds
        self.region, self.signed_region = document, signed
        self.cutter = Cutter(document, self.key, self.config.k)
        self.ingest = self._ingest(document)
        self.witness = Witness(document, self.key, self.store, self.js)
        log.info("region version taken", extra={"version": document.version})
        await self._resume()

    async def step(self) -> IngestResult:
        """One ingest batch, then a release if one is due."""
        await self._check_stream()
        result = await self.ingest.run_once()
        self.counts.add(result)
        # Only once caught up (a short batch): a backlog makes one release, not one per
        # batch of partial figures (each of which would also bind the suppression memory).
        if result.messages < self.config.batch and self._release_due():
            await self.release()
        await self._witness_step(caught_up=result.messages < self.config.batch)
        return result

    async def _witness_step(self, caught_up: bool) -> None:
        """Checkpoints when ingest is caught up, or every second under a backlog."""
        now = self.clock()
        if caught_up or self._witnessed_at is None or now - self._witnessed_at >= 1.0:
            self._witnessed_at = now
            await self.witness.step()

    def _release_due(self) -> bool:
        state = self.book.state()
        if self.store.position() <= (state.last_seq if state else 0):
            return False
        if self._last_release_at is None:
            return True
        return self.clock() - self._last_release_at >= self.config.release_interval

    async def release(self) -> int:
        """Cut, keep and publish a release of what has been ingested so far."""
        state = self.book.state()
        number = (state.release if state else 0) + 1
        memory = state.memory if state else SuppressionMemory()
        made, signed = await asyncio.to_thread(self._cut, number, memory)
        self.book.keep(number, self.store.position(), made.memory, signed)
        self._last_release_at = self.clock()
        await self.feed.publish(number, made.statements, signed)
        await self._publish_pending()
        log.info("release kept", extra={"release": number, "position": self.store.position()})
        return number

    def _cut(self, number: int, memory: SuppressionMemory) -> tuple[Any, list[bytes]]:
        # On a worker thread with its own connection (SQLite connections stay on the thread
        # that made them); ingest is paused meanwhile, so it reads the same state.
        reader = IngestStore(self.store.path)
        try:
            return self.cutter.cut(reader, number, memory)
        finally:
            reader.close()

    async def _publish_pending(self) -> None:
        state = self.book.state()
        latest = self.feed.latest
        if state is None or latest is None or state.published >= state.release:
            return
        try:
            await publish(self.js, self.region.region, latest)
        except (nats.errors.Error, nats.js.errors.Error) as e:
            log.warning(
                "release not published yet; will retry",
                extra={"release": latest.number, "error": str(e) or type(e).__name__},
            )
            return
        self.book.mark_published(latest.number)
        log.info("release published", extra={"release": latest.number})

    async def _check_stream(self) -> None:
        """Reads the events stream's last sequence, at most every `stream_check_interval`
        seconds (the lag figure; a scrape reads the value kept here)."""
        now = self.clock()
        checked = self._stream_checked_at
        if checked is not None and now - checked < self.config.stream_check_interval:
            return
        self._stream_checked_at = now
        info = await self.js.stream_info(subjects.events_stream(self.region.region))
        self.stream_last_seq = int(info.state.last_seq)

    async def run(self, stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
        """Steps until `stop` is set; reads the region file again whenever `reload` is set."""
        while not stop.is_set():
            try:
                if not self._resumed:
                    await self._resume()
                if reload is not None and reload.is_set():
                    reload.clear()
                    await self.reload_region()
                await self.step()
                await self._publish_pending()
            except (nats.errors.Error, nats.js.errors.Error) as e:
                log.warning("NATS error; retrying", extra={"error": type(e).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    def vitals(self) -> Vitals:
        position = self.store.position()
        kept, published = self.book.numbers()
        rejected = self._rejected_before + self.counts.rejected
        since = self._last_release_at
        return Vitals(
            position=position,
            stream_last_seq=max(self.stream_last_seq, position),
            accepted=self._accepted_before + self.counts.accepted,
            rejected=dict(sorted(rejected.items())),
            duplicates=self.counts.duplicates,
            releases_kept=kept,
            releases_published=published,
            seconds_since_release=None if since is None else self.clock() - since,
            connected=self.nc.is_connected,
        )

    def status(self) -> dict[str, object]:
        v = self.vitals()
        return {
            "position": v.position,
            "stream_last_seq": v.stream_last_seq,
            "lag": v.lag,
            "accepted": v.accepted,
            "rejected": v.rejected,
            "release": v.releases_kept,
            "published": v.releases_published,
            "connected": v.connected,
            "checkpoints": self.witness.status(),
            "region_version": self.region.version,
            "region_error": self.region_error,
        }


async def connect(config: AggregatorConfig) -> NATS:
    return await connect_nats(
        config.nats_url,
        config.nats_tls,
        user=config.nats_user if config.nats_password else None,
        password=config.nats_password,
        inbox_prefix=subjects.inbox_prefix(AGGREGATOR_USER).encode(),
        name="handsoff-aggregator",
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
    )


async def serve(
    config: AggregatorConfig,
    passphrase: bytes,
    *,
    host: str,
    port: int,
    ready: Callable[[Aggregator, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ingest, releases and the HTTP feeds until `stop` is set (or SIGINT/SIGTERM)."""
    import signal

    import uvicorn

    from handsoff.services.aggregator.http import create_app
    from handsoff.services.aggregator.metrics import AggregatorCollector

    paths = AggregatorPaths(config.dir)
    signed_region = take_signed_region(paths, config.region_file)
    region = signed_region.document
    key = open_key(config.dir, passphrase)
    stop = stop or asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig, event in ((signal.SIGINT, stop), (signal.SIGTERM, stop), (signal.SIGHUP, reload)):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, event.set)
    store = IngestStore(paths.store)
    nc = await connect(config)
    try:
        aggregator = Aggregator(region, key, store, nc, config, signed_region=signed_region)
        await aggregator.start()
        app = create_app(
            aggregator.feed, status=aggregator.status, metrics=AggregatorCollector(aggregator)
        )
        # log_config=None: uvicorn's lines go through the process's logging configuration
        # (structured, see handsoff.services.logs); requests are logged by AccessLog.
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                log_config=None,
                access_log=False,
            )
        )
        # uvicorn captures SIGINT/SIGTERM while it serves and raises them again when it
        # has stopped, which reaches the loop's handler above: both halves stop.
        http = asyncio.create_task(server.serve())
        http.add_done_callback(lambda _: stop.set())
        while not server.started and not http.done():
            await asyncio.sleep(0.02)
        if http.done():
            await http  # raises why it could not start
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        if ready is not None:
            ready(aggregator, bound)
        try:
            await aggregator.run(stop, reload)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            server.should_exit = True
            await http
            await aggregator.stop()
    finally:
        await nc.drain()
        store.close()
