"""Builders shared by the tests: a node on real SQLite files, a realistic incident."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from handsoff.events import (
    AgeBand,
    Country,
    Gender,
    IncidentReported,
    LocationType,
    PerpetratorCategory,
    ViolenceType,
)
from handsoff.keys import KdfStrength
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


def make_node(directory: Path, partner: str = "sisonke-bw") -> Node:
    return Node.init(
        directory, NodeConfig(partner=partner, country="BW"), PASSPHRASE, KdfStrength.INTERACTIVE
    )
