"""Builders shared by the tests: a node on real SQLite files, a realistic incident, a signed
region file; `eventually`, waiting on a condition with a deadline."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats

from handsoff.events import (
    AgeBand,
    Country,
    Gender,
    IncidentReported,
    LocationType,
    PerpetratorCategory,
    ViolenceType,
)
from handsoff.federation import subjects
from handsoff.federation.natsconf import ensure, stream_configs
from handsoff.federation.region import (
    Aggregator,
    Coordinator,
    RegionDocument,
    SignedRegion,
    save_region,
    sign_region,
)
from handsoff.keys import KdfStrength, SigningKey
from handsoff.services.node.config import NodeConfig
from handsoff.services.node.node import Node

PASSPHRASE = b"correct horse battery staple"
T0 = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)


def incident(marker: str = "", **overrides: object) -> IncidentReported:
    fields: dict[str, object] = {
        "occurred_at": T0,
        "reported_at": T0 + timedelta(hours=2),
        "country": Country.BW,
        "district": "BW-Gaborone",
        "violence_types": [ViolenceType.PHYSICAL_ASSAULT, ViolenceType.EXTORTION_OR_BRIBERY],
        "perpetrators": [PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT],
        "perpetrator_count": 2,
        "location_type": LocationType.STREET,
        "survivor_age_band": AgeBand.AGE_25_29,
        "survivor_gender": Gender.TRANS_WOMAN,
        "survivor_name": f"Survivor {marker}".strip(),
        "survivor_contact": f"+267 555 0100 {marker}".strip(),
        "narrative": f"Stopped and beaten near the rank {marker}".strip(),
    }
    fields.update(overrides)
    return IncidentReported(**fields)  # type: ignore[arg-type]


def make_node(directory: Path, partner: str = "sisonke-bw", country: str = "BW") -> Node:
    return Node.init(
        directory,
        NodeConfig(partner=partner, country=country),
        PASSPHRASE,
        KdfStrength.INTERACTIVE,
    )


# --- regions -------------------------------------------------------------------------------


class RegionKit:
    """A signed region of the given nodes, with its coordinators' and aggregator's keys."""

    def __init__(
        self, nodes: list[Node], region: str = "sadc", threshold: int = 2, aggregator: Any = None
    ) -> None:
        from handsoff.federation.region import Aggregator, Coordinator, RegionDocument
        from handsoff.keys import SigningKey

        now = datetime.now(UTC) - timedelta(minutes=1)
        self.coordinators = {f"c{i}": SigningKey.generate() for i in range(1, 4)}
        self.aggregator = aggregator or SigningKey.generate()
        doc = RegionDocument(
            region=region,
            version=1,
            issued_at=now,
            expires_at=now + timedelta(days=30),
            threshold=threshold,
            coordinators=[
                Coordinator(cid, f"Coordinator {cid}", k.public_key)
                for cid, k in self.coordinators.items()
            ],
            aggregator=Aggregator("aggregator", self.aggregator.public_key),
        )
        for n in nodes:
            doc = doc.add_partner(
                n.config.partner,
                f"Partner {n.config.partner}",
                n.config.country,
                n.signer.public_key,
                valid_from=now,
                issued_at=now,
            )
        self.threshold = threshold
        self.signed = self.sign(doc)
        self.document = self.signed.document

    def sign(self, doc: Any, signers: int | None = None) -> Any:
        """`doc` (a RegionDocument) signed by the first `signers` coordinators (default:
        the threshold), as a SignedRegion."""
        from handsoff.federation.region import SignedRegion, sign_region

        signed = SignedRegion.unsigned(doc)
        for cid in list(self.coordinators)[: self.threshold if signers is None else signers]:
            signed = sign_region(signed, cid, self.coordinators[cid])
        return signed

    def save(self, path: Path) -> Path:
        from handsoff.federation.region import save_region

        save_region(path, self.signed)
        return path


def signed_region(path: Path, partners: tuple[str, ...], region: str = "sadc") -> RegionDocument:
    """A region document (version 1, valid from a minute ago, one coordinator), signed and
    saved at `path`."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    coordinator = SigningKey.generate()
    doc = RegionDocument(
        region=region,
        version=1,
        issued_at=now,
        expires_at=now + timedelta(days=30),
        threshold=1,
        coordinators=[Coordinator("c1", "Coordinator", coordinator.public_key)],
        aggregator=Aggregator("aggregator", SigningKey.generate().public_key),
    )
    for p in partners:
        doc = doc.add_partner(
            p, f"Partner {p}", "BW", SigningKey.generate().public_key, valid_from=now, issued_at=now
        )
    save_region(path, sign_region(SignedRegion.unsigned(doc), "c1", coordinator))
    return doc


async def eventually(what: str, condition: Callable[[], Any], deadline_s: float = 60) -> None:
    """Polls `condition` (a coroutine function's result is awaited) until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, f"timed out after {deadline_s} s waiting for {what}"
        await asyncio.sleep(0.1)


async def create_region_streams(
    url: str, region: str = "sadc", *, events_window: float | None = None
) -> None:
    """The region's JetStream streams on the server at `url`, as `region streams` makes them
    (production configuration). `events_window`: a short duplicate window for the events
    stream, set when it is created, so a test can store a copy of a message again soon (as
    a relay retrying after the window would); shortening the window of a stream that
    already holds messages proved unreliable in CI (the copy stayed a duplicate for 30 s)."""
    configs = stream_configs(region)
    if events_window is not None:
        events = subjects.events_stream(region)
        configs = [
            dataclasses.replace(c, duplicate_window=events_window) if c.name == events else c
            for c in configs
        ]
    nc = await nats.connect(url)
    try:
        await ensure(nc.jetstream(), configs)
    finally:
        await nc.close()
