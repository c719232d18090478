"""Shared by the benchmarks: a node on real SQLite files and a realistic case lifecycle.

Imports handsoff only (never tests/), so the scripts run from a checkout's venv alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from handsoff.events import (
    AgeBand,
    CaseChange,
    CaseClosed,
    ClosureReason,
    ConsentGiven,
    ConsentPurpose,
    Country,
    FirstResponseGiven,
    Gender,
    IncidentReported,
    LocationType,
    PerpetratorCategory,
    PoliceReportFiled,
    PoliceResponded,
    PoliceResponse,
    ReferralAccepted,
    ReferralCompleted,
    ReferralMade,
    ReferralOutcome,
    ResponderRole,
    ServiceType,
    ViolenceType,
)
from handsoff.keys import KdfStrength, load_keyring, read_key_file
from handsoff.services.node.config import NodeConfig, NodePaths
from handsoff.services.node.node import Node

PASSPHRASE = b"bench passphrase, not a secret"
T0 = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)
LEGAL_AID = "Legal Aid Botswana"
CONFIG = NodeConfig(partner="bench-bw", country="BW")

# How many events each case gets, cycled over the cases: some cases stop after the first
# response, some go all the way to closure. Mean 6.5 events a case.
CASE_LENGTHS = (2, 5, 8, 11)


def incident(marker: str) -> IncidentReported:
    """Like tests/support.py incident(): every field filled, personal ones included."""
    return IncidentReported(
        occurred_at=T0,
        reported_at=T0 + timedelta(hours=2),
        country=Country.BW,
        district="BW-Gaborone",
        violence_types=[ViolenceType.PHYSICAL_ASSAULT, ViolenceType.EXTORTION_OR_BRIBERY],
        perpetrators=[PerpetratorCategory.POLICE_OR_LAW_ENFORCEMENT],
        perpetrator_count=2,
        location_type=LocationType.STREET,
        survivor_age_band=AgeBand.AGE_25_29,
        survivor_gender=Gender.TRANS_WOMAN,
        survivor_name=f"Survivor {marker}",
        survivor_contact=f"+267 555 0100 {marker}",
        narrative=f"Stopped and beaten near the rank {marker}",
    )


def lifecycle(marker: str) -> list[CaseChange]:
    """One case's full life (11 changes), each allowed by the rules after the ones before."""
    h = timedelta(hours=1)
    return [
        incident(marker),
        FirstResponseGiven(
            responded_at=T0 + 3 * h, responder_role=ResponderRole.PARALEGAL, responder="Paralegal A"
        ),
        ConsentGiven(purpose=ConsentPurpose.REGIONAL_STATISTICS, given_at=T0 + 3 * h),
        ConsentGiven(purpose=ConsentPurpose.REFERRAL, given_at=T0 + 3 * h, organisation=LEGAL_AID),
        ReferralMade(
            referral_id="r1",
            service=ServiceType.LEGAL_AID,
            made_at=T0 + 4 * h,
            to_organisation=LEGAL_AID,
            note=f"Needs help with a complaint against the officers {marker}",
        ),
        ReferralAccepted(referral_id="r1", accepted_at=T0 + 30 * h),
        ConsentGiven(purpose=ConsentPurpose.POLICE_REPORT, given_at=T0 + 30 * h),
        PoliceReportFiled(filed_at=T0 + 48 * h, district="BW-Gaborone"),
        PoliceResponded(responded_at=T0 + 50 * h, response=PoliceResponse.PERPETRATOR_WAS_POLICE),
        ReferralCompleted(
            referral_id="r1", completed_at=T0 + 400 * h, outcome=ReferralOutcome.SERVICE_RECEIVED
        ),
        CaseClosed(closed_at=T0 + 500 * h, reason=ClosureReason.RESOLVED),
    ]


def case_changes(total: int) -> Iterator[tuple[int, CaseChange]]:
    """`total` changes as (case number, change), whole cases in order, the last one cut short."""
    case = 0
    emitted = 0
    while emitted < total:
        length = CASE_LENGTHS[case % len(CASE_LENGTHS)]
        for change in lifecycle(str(case))[: min(length, total - emitted)]:
            yield case, change
            emitted += 1
        case += 1


def new_node_dir(directory: Path) -> None:
    """`node init` (INTERACTIVE key-file KDF), then closed: open it with `open_node`."""
    Node.init(directory, CONFIG, PASSPHRASE, KdfStrength.INTERACTIVE).close()


def open_node(directory: Path, *, signing: bool) -> Node:
    """Like Node.open, but with the `signing` switch (False: the zero-signature baseline)."""
    paths = NodePaths(directory)
    secrets = read_key_file(paths.key_file, PASSPHRASE)
    return Node(paths, CONFIG, secrets, load_keyring(paths.keyring), signing=signing)


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"min {min(values):,.0f}, max {max(values):,.0f}"
