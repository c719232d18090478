"""The node's link to its region: the relay (outbox) running beside the API.

Recording never depends on NATS: the relay reads the log and catches up whenever NATS is
reachable again. The first connection is retried here (nats-py does not retry it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client

from handsoff.federation import subjects
from handsoff.federation.checkpoints import Checkpoint
from handsoff.federation.natsconf import server_urls
from handsoff.federation.policy import SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.region import (
    RegionDocument,
    SignedRegion,
    accept,
    load_region,
    save_region,
)
from handsoff.federation.relay import Relay, RelaySettings
from handsoff.services.errors import ConfigError
from handsoff.services.natsclient import NatsTlsError, connect
from handsoff.services.node.checkpointer import FILE as CHECKPOINTS_FILE
from handsoff.services.node.checkpointer import Checkpointer, CheckpointError
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.errors import NodeError
from handsoff.services.node.follow import RegionFollower
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource, TrackedPosition
from handsoff.services.node.persistence import store_env
from handsoff.services.node.referral_link import ReferralLink

log = logging.getLogger("handsoff.link")


class LinkStatus(msgspec.Struct, frozen=True):
    configured: bool
    connected: bool = False
    region: str | None = None
    region_version: int | None = None
    relay_position: int = 0
    log_head: int = 0
    relay_lag: int = 0
    published: int = 0
    last_error: str | None = None
    referrals_sent: int = 0
    referrals_received: int = 0
    referrals_rejected: dict[str, int] = msgspec.field(default_factory=dict)
    checkpointed: int = 0  # the size of the last signed checkpoint published (issue #6)
    checkpoint_root: str | None = None
    checkpoint_error: str | None = None
    # Why the relay stopped sharing (the region's stream holds this partner's messages that
    # this log does not make: a restore from a backup?); recording goes on. Until a restart.
    relay_blocked: str | None = None
    # Why the last look at the aggregator's region announcements took nothing new although
    # there was something to take (or could not look); None when all is well.
    region_error: str | None = None


def relay_position(node: Node) -> TrackedPosition:
    """The relay's committed position (its own store beside the node's logs)."""
    return TrackedPosition(store_env(node.config, node.paths.data, "relay"))


def held_region(node: Node) -> RegionDocument:
    if not node.paths.region.exists():
        raise ConfigError(f"{node.paths.root} has not joined a region (`handsoff node join`)")
    return load_region(node.paths.region).document


def join_region(node: Node, region_file: Any, now: datetime | None = None) -> RegionDocument:
    """Accepts a signed region document (newer than the held one) and keeps a copy."""
    return take_region(node, load_region(region_file), now)


def take_region(node: Node, candidate: SignedRegion, now: datetime | None = None) -> RegionDocument:
    """`join_region` for a document already read (from a file, or as the aggregator
    announced it): accepted against the held version, and listing this node's key."""
    held = held_region(node) if node.paths.region.exists() else None
    doc = accept(candidate, held=held, now=now or datetime.now(UTC))
    partner = doc.partner(node.config.partner)  # raises if this node is not a member
    current = node.keyring.current.kid
    if not any(k.kid == current for k in partner.keys):
        raise ConfigError(
            f"the region lists no key {current} for {partner.id}: "
            "ask the coordinators to add this node's current key"
        )
    save_region(node.paths.region, candidate)
    return doc


class NodeLink:
    def __init__(self, node: Node, settings: FederationSettings) -> None:
        self.node = node
        self.settings = settings
        self.servers = server_urls(settings.nats_url)  # one URL, or a cluster's, comma-separated
        self.region = held_region(node)
        self.position = relay_position(node)
        self.relay = Relay(
            RelaySettings(
                region=self.region.region,
                partner=node.config.partner,
                interval=settings.publish_interval,
                region_version=lambda: self.region.version,
            ),
            signer=lambda: node.signer,
            policy=SharePolicy(node.config.partner, Pseudonymiser(node.pseudonym_key)),
            source=LogSource(node.cases),
            store=self.position,
            gaps=node.admin.number_gaps(),  # resumptions after restores (node/resume.py)
        )
        self.referrals = ReferralLink(node, self.region)
        self.checkpoints = Checkpointer(
            self.region.region,
            node.config.partner,
            lambda: node.signer,
            node.paths.data / CHECKPOINTS_FILE,
            interval=settings.checkpoint_interval,
        )
        self.follower = RegionFollower(
            self.region.region,
            node.config.partner,
            lambda: self.region,
            self._take,
            interval=settings.region_check_interval,
        )
        # every version announced while this node was away, before anything is sent again
        self.relay.before_resending = self.follower.catch_up
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._nc: Client | None = None

    def status(self) -> LinkStatus:
        s = self.relay.status
        head = self.node.cases.recorder.max_notification_id() or 0
        connected = self._nc is not None and self._nc.is_connected and s.last_error is None
        return LinkStatus(
            True,
            connected,
            self.region.region,
            self.region.version,
            s.position,
            head,
            max(head - s.position, 0),
            s.published,
            s.last_error,
            self.referrals.sent,
            self.referrals.received,
            dict(self.referrals.rejected),
            checkpointed=self.checkpoints.status.checkpointed,
            checkpoint_root=self.checkpoints.status.root,
            checkpoint_error=self.checkpoints.status.last_error,
            relay_blocked=s.blocked,
            region_error=self.follower.status.last_error,
        )

    def _take(self, candidate: SignedRegion, as_of: datetime | None) -> RegionDocument:
        """A newer version announced: kept (the node's region file), then used by the relay
        from its next batch and by referrals from the next package. `as_of`: the moment it
        is judged at (follow.py: an intermediate version that has expired since)."""
        doc = take_region(self.node, candidate, as_of)
        self.region = self.referrals.region = doc
        return doc

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="handsoff-relay")

    @property
    def running(self) -> bool:
        """Started and neither stopped nor crashed (connected to NATS or not: recording
        never waits for the region, so a node without NATS is still ready)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=15)
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.close()
        self.position.close()
        self.referrals.close()
        self.checkpoints.close()

    async def _run(self) -> None:
        self._nc = await self._connect()
        if self._nc is None:
            return
        js = self._nc.jetstream()
        nc = self._nc
        await asyncio.gather(
            self.follower.run(js, self._stop),
            self.relay.run(js, self._stop, connected=lambda: nc.is_connected),
            self.referrals.send_loop(js, self._stop),
            self.referrals.receive_loop(js, self._stop),
            self.checkpoints.run(js, self._stop, lambda: self.relay.status.published),
        )

    async def checkpoint_now(self) -> Checkpoint:
        """Publishes a signed checkpoint of what the node has published, now (on demand)."""
        if self._nc is None or not self._nc.is_connected:
            raise CheckpointError("not connected to the region's NATS: try again later")
        checkpoint = await self.checkpoints.checkpoint(self._nc.jetstream(), force=True)
        assert checkpoint is not None  # force: one, or CheckpointError
        return checkpoint

    async def _connect(self) -> Client | None:
        wait = 0.25
        while not self._stop.is_set():
            try:
                return await connect(
                    self.servers,
                    self.settings.nats_tls,
                    user=self.settings.nats_user,
                    password=self.settings.password(),
                    inbox_prefix=subjects.inbox_prefix(self.node.config.partner),
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    error_cb=self._error,
                    name=self.node.config.partner,
                )
            except NatsTlsError as e:
                # a configuration problem (or someone in the middle): say it, keep trying
                self.relay.status.last_error = f"connecting: {e}"
                log.warning("link: cannot reach NATS (%s); retrying", e)
            except (nats.errors.Error, OSError) as e:
                self.relay.status.last_error = f"connecting: {type(e).__name__}: {e}"
                log.warning("link: cannot reach NATS (%s); retrying", type(e).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=wait)
                wait = min(wait * 2, 5.0)
        return None

    async def _error(self, e: Exception) -> None:
        log.warning("link: NATS error: %s", e)
        if subjects.region_consumer(self.node.config.partner) in str(e):
            # a NATS configuration from before the follower: its look is refused, not the
            # relay's publishing (which would otherwise show as disconnected)
            self.follower.status.last_error = f"region announcements not readable: {e}"
            return
        self.relay.status.last_error = str(e)


class RegionUnreachable(NodeError):
    """The region's NATS cannot be reached now (a command run while not serving)."""


async def connect_once(node: Node) -> Client:
    """One connection to the region's NATS, for a command run while the node is not serving
    (no reconnection); RegionUnreachable if it cannot be made."""
    settings = node.config.federation
    if settings is None:
        raise ConfigError(f"{node.paths.root} has not joined a region (`handsoff node join`)")
    try:
        return await connect(
            settings.nats_url,
            settings.nats_tls,
            user=settings.nats_user,
            password=settings.password(),
            inbox_prefix=subjects.inbox_prefix(node.config.partner),
            max_reconnect_attempts=1,
            connect_timeout=5,
            name=node.config.partner,
        )
    except (nats.errors.Error, OSError, NatsTlsError) as e:
        raise RegionUnreachable(f"cannot reach NATS at {settings.nats_url}: {e}") from None


async def publish_checkpoint(node: Node) -> Checkpoint:
    """One signed checkpoint of what the node has published, now (`handsoff node
    checkpoint`, the node not serving: a serving node publishes its own, and one on demand
    through `POST /checkpoint`)."""
    region = held_region(node)
    nc = await connect_once(node)
    checkpointer = Checkpointer(
        region.region,
        node.config.partner,
        lambda: node.signer,
        node.paths.data / CHECKPOINTS_FILE,
    )
    try:
        checkpoint = await checkpointer.checkpoint(nc.jetstream(), force=True)
    except (nats.errors.Error, TimeoutError) as e:
        raise CheckpointError(f"checkpoint not published: {type(e).__name__}: {e}") from None
    finally:
        checkpointer.close()
        with contextlib.suppress(nats.errors.Error):
            await nc.close()
    assert checkpoint is not None  # force: one, or CheckpointError
    return checkpoint
