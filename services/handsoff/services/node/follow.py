"""A serving node takes each newer region version the aggregator announces.

    hx.<r>.aggregates._region (HX_<R>_AGGREGATES; the aggregator's RegionTaken, each
    carrying the signed region file it took) --(consumer "region-<partner>", after the last
    announcement read)--> open_taken (the aggregator's signature over what it says)
        --> take (services/node/link.py: `accept` against the version held, i.e. the
            threshold of the HELD version's coordinators, and this node's key listed)
        --> the node's region file replaced; the relay signs under the new version from its
            next batch; referrals encrypt to the new version's keys

Why: a node that takes a new version late has what it sends under the old one refused as
`stale_region` once the new version's grace has passed, so its consented events would not
count. With the announcements a connected node is at most one `interval` behind the
aggregator, and a node that was offline takes every version it missed, in order, before its
relay sends anything again (the relay runs `catch_up` at start and after every failure, and
seals what it had built but not sent again under the version taken: federation/relay.py).
What nats-py had buffered when the line went down still goes out as it was sealed.

The aggregator is not trusted for the document: only the coordinators' signatures, checked
as a chain from the version held, decide. An announcement that does not verify, a version
that cannot be accepted (signatures, expiry, this node's key missing) is skipped and said
in `status.last_error`; the version held stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from handsoff.federation import announcements, subjects
from handsoff.federation.errors import FederationError
from handsoff.federation.readback import pages_after
from handsoff.federation.region import RegionDocument, RegionProblem, SignedRegion, accept
from handsoff.services.errors import ServiceError

log = logging.getLogger("handsoff.follow")


@dataclass
class FollowStatus:
    read_seq: int = 0  # the aggregates stream sequence of the last announcement read
    taken: int = 0  # versions taken by this process
    looks: int = 0  # looks made by this process (read or not)
    last_error: str | None = None


class RegionFollower:
    """Reads the aggregator's announcements and takes every newer version, in order."""

    def __init__(
        self,
        region: str,
        partner: str,
        held: Callable[[], RegionDocument],
        take: Callable[[SignedRegion, datetime | None], RegionDocument],
        *,
        interval: float = 30.0,
        fetch_timeout: float = 5.0,
    ) -> None:
        self.region = region
        self.partner = partner
        self.held = held
        self.take = take
        self.interval = interval
        self.fetch_timeout = fetch_timeout
        self.status = FollowStatus()
        self._busy = asyncio.Lock()  # one look at a time: they share the consumer's name

    async def run(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.catch_up(js)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def catch_up(self, js: JetStreamContext) -> int:
        """Reads the announcements made since the last read and takes each newer version;
        returns how many it took. Never raises for NATS or a bad announcement: says it in
        `status.last_error` (the relay goes on under the version held)."""
        async with self._busy:
            try:
                return await self._catch_up(js)
            finally:
                self.status.looks += 1

    async def _catch_up(self, js: JetStreamContext) -> int:
        try:
            read = await self._read(js)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as e:
            self.status.last_error = (
                f"region announcements not read: {type(e).__name__}: {e} (if this lasts "
                "while the relay is connected: a NATS configuration older than this "
                "release does not let partners read them; `handsoff region nats-config` "
                "writes one that does)"
            )
            log.warning("follow: %s", self.status.last_error)
            return 0
        error: str | None = None
        retry_from: int | None = None
        newer: list[tuple[int, SignedRegion]] = []  # (seq, version) each newer than the last
        latest = self.held().version
        for seq, data in read:
            try:
                opened = announcements.open_taken(data, self.region)
            except FederationError as e:
                error, retry_from = f"announcement not opened: {e}", retry_from or seq
                log.warning("follow: %s", error)
                continue
            if opened.version > latest:
                newer.append((seq, opened.region))
                latest = opened.version
        taken = 0
        chain, refusal = self._chain(newer)
        for seq, signed, as_of in chain:
            try:
                doc = self.take(signed, as_of)
            except (FederationError, ServiceError) as e:
                error, retry_from = f"region version not taken: {e}", retry_from or seq
                log.warning("follow: %s", error)
                break
            taken += 1
            log.info("follow: took region %s version %d", self.region, doc.version)
        if len(newer) > taken and error is None:
            seq, signed = newer[taken]
            error = f"region version {signed.document.version} not taken: {refusal}"
            retry_from = retry_from or seq
            log.warning("follow: %s", error)
        if read:
            self.status.read_seq = (retry_from - 1) if retry_from is not None else read[-1][0]
        self.status.taken += taken
        self.status.last_error = error
        return taken

    def _chain(
        self, candidates: list[tuple[int, SignedRegion]]
    ) -> tuple[list[tuple[int, SignedRegion, datetime | None]], str]:
        """The versions to take, in order, each with the moment it is judged at: now, or,
        for one that has expired since, when its successor was issued (as an auditor
        checks a chain: federation/history.py), but only when a later version valid now
        follows, so an expired version is never where a node ends up; and why the chain
        stops where it does ("" if it does not)."""
        refusal = ""
        held, now = self.held(), datetime.now(UTC)
        chain: list[tuple[int, SignedRegion, datetime | None]] = []
        usable = 0
        for i, (seq, candidate) in enumerate(candidates):
            then = candidates[i + 1][1].document.issued_at if i + 1 < len(candidates) else None
            try:
                accept(candidate, held=held, now=now)
                chain.append((seq, candidate, None))
                usable = len(chain)
            except RegionProblem as e:
                if then is None:
                    refusal = str(e)
                    break
                try:
                    accept(candidate, held=held, now=then)
                except RegionProblem:
                    refusal = str(e)
                    break
                chain.append((seq, candidate, then))
            held = candidate.document
        return chain[:usable], refusal

    async def _read(self, js: JetStreamContext) -> list[tuple[int, bytes]]:
        """(stream sequence, data) of every announcement after `status.read_seq`."""
        out: list[tuple[int, bytes]] = []
        pages = pages_after(
            js,
            subjects.aggregates_stream(self.region),
            subjects.region_consumer(self.partner),
            subjects.region_taken(self.region),
            self.status.read_seq,
            timeout=self.fetch_timeout,
            page=64,
        )
        async with contextlib.aclosing(pages):
            async for msgs in pages:
                out += [(m.metadata.sequence.stream, m.data) for m in msgs]
        return sorted(out)
