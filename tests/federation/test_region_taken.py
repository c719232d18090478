"""The aggregator's announcement of a region version it takes (federation/announcements.py):
a pinned wire format, signed by the aggregator of the version it carries, deterministic;
every way it can be wrong has a stable reason. And the auditor's reading of a series of
them (auditor/announcements.py): duplicates, conflicts, going back, the checkpoints rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from handsoff.federation import announcements, subjects
from handsoff.federation.announcements import RegionTaken, TakenRejected, open_taken
from handsoff.federation.history import RegionHistory
from handsoff.federation.region import (
    Aggregator,
    Coordinator,
    RegionDocument,
    SignedRegion,
    sign_region,
)
from handsoff.keys import SigningKey
from handsoff.services.auditor.announcements import Announced, Decided, schedule
from handsoff.services.auditor.report import Collector

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
COORDS = {f"c{i}": SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3)}
AGG = SigningKey.from_seed(b"\x09" * 32)


def region(version: int = 1, issued_at: datetime = T0) -> SignedRegion:
    doc = RegionDocument(
        region="sadc",
        version=version,
        issued_at=issued_at,
        expires_at=T0 + timedelta(days=90),
        threshold=2,
        coordinators=[Coordinator(c, c, k.public_key) for c, k in COORDS.items()],
        aggregator=Aggregator("agg", AGG.public_key),
    )
    signed = SignedRegion.unsigned(doc)
    for cid in ("c1", "c2"):
        signed = sign_region(signed, cid, COORDS[cid])
    return signed


def test_the_subject_is_pinned_and_never_an_indicator() -> None:
    assert subjects.region_taken("sadc") == "hx.sadc.aggregates._region"
    assert subjects.is_region_taken("hx.sadc.aggregates._region")
    assert not subjects.is_region_taken(subjects.aggregates("sadc", "incidents"))
    assert not subjects.is_region_taken("hx.sadc.aggregates._region.x")
    with pytest.raises(ValueError, match="subject token"):
        subjects.aggregates("sadc", subjects.REGION_TAKEN)  # no indicator can take it
    assert announcements.msg_id(4, 93) == "region-taken:4:93"


def test_an_announcement_round_trips_deterministically() -> None:
    held = region()
    taken = announcements.announcement(held, 17, 5, [7, 6])
    signed = announcements.sign(taken, AGG)
    assert signed == announcements.sign(announcements.announcement(held, 17, 5, [6, 7]), AGG)
    opened = open_taken(signed, "sadc")
    assert opened.taken == taken
    assert (opened.version, opened.after_seq) == (1, 17)
    assert opened.taken.checkpoints_pending == (6, 7)
    assert opened.region.document_bytes == held.document_bytes
    assert opened.region.signatures == held.signatures
    wrapper = msgspec.json.decode(signed)
    assert set(wrapper) == {"taken", "kid", "signature"}
    assert wrapper["taken"]["type"] == "hx-region-taken-v1"


def test_every_fault_has_a_reason() -> None:
    held = region()
    taken = announcements.announcement(held, 3)

    def reason(data: bytes, of: str = "sadc") -> str:
        with pytest.raises(TakenRejected) as e:
            open_taken(data, of)
        return e.value.reason

    good = announcements.sign(taken, AGG)
    assert reason(b"not json") == "malformed"
    assert reason(good, "other") == "wrong_region"
    assert reason(announcements.sign(taken, SigningKey.generate())) == "unknown_key"
    wrapper = msgspec.json.decode(good)
    wrapper["signature"] = "00" * 64
    assert reason(msgspec.json.encode(wrapper)) == "bad_signature"
    edited = good.replace(b'\\"version\\": 1', b'\\"version\\": 2')
    assert edited != good
    assert reason(edited) == "inconsistent"  # says version 1, carries version 2
    # strict: an unknown field, or another type tag, is refused
    body = msgspec.to_builtins(taken)
    body["extra"] = 1
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, RegionTaken)
    body = msgspec.to_builtins(taken)
    body["type"] = "hx-region-taken-v2"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, RegionTaken)
    wrapper = msgspec.json.decode(good)
    wrapper["taken"]["after_seq"] = -1
    wrapper["signature"] = AGG.sign(
        announcements.DOMAIN + msgspec.json.encode(wrapper["taken"])
    ).hex()
    assert reason(msgspec.json.encode(wrapper)) == "schema"
    wrapper = msgspec.json.decode(good)
    wrapper["taken"]["region_file"] = "{}"
    wrapper["signature"] = AGG.sign(
        announcements.DOMAIN + msgspec.json.encode(wrapper["taken"])
    ).hex()
    assert reason(msgspec.json.encode(wrapper)) == "malformed"


def test_the_schedule_counts_copies_once_and_refuses_going_back() -> None:
    v1, v2 = region(1), region(2, T0 + timedelta(days=1))
    history = RegionHistory([v1.document, v2.document])

    def made(seq: int, r: SignedRegion, after: int, cp: int = 0) -> Announced:
        signed = announcements.sign(announcements.announcement(r, after, cp), AGG)
        return Announced(seq, open_taken(signed, "sadc"))

    a1, a2 = made(1, v1, 0), made(5, v2, 30, 4)
    found = Collector()
    assert schedule([a1, a2, made(9, v2, 30, 4)], history, found) == [a1, a2]
    assert found.findings == []
    cases = {
        "conflict": made(9, v2, 31, 4),  # version 2 again, elsewhere
        "backwards": made(9, v1, 40, 4),  # version 1 after version 2
    }
    for why, bad in cases.items():
        found = Collector()
        assert schedule([a1, a2, bad], history, found) == [a1, a2]
        assert [f.reason for f in found.findings] == [why]
    first = made(1, v1, 25, 2)
    for bad in (made(5, v2, 20, 4), made(5, v2, 30, 0)):  # a position going back
        found = Collector()
        assert schedule([first, bad], history, found) == [first]
        assert [f.reason for f in found.findings] == ["backwards"]
    # A document the chain did not take.
    found = Collector()
    assert schedule([a1, a2], RegionHistory([v1.document]), found) == [a1]
    assert [f.reason for f in found.findings] == ["not_chained"]


def test_checkpoints_are_judged_by_the_version_the_witness_decided_them_under() -> None:
    v1, v2, v3 = region(1), region(2, T0 + timedelta(days=1)), region(3, T0 + timedelta(days=2))
    history = RegionHistory([v1.document, v2.document, v3.document])

    def made(seq: int, r: SignedRegion, cp: int, pending: list[int]) -> Announced:
        taken = announcements.announcement(r, 0, cp, pending)
        return Announced(seq, open_taken(announcements.sign(taken, AGG), "sadc"))

    # Version 2 taken when the witness had taken checkpoints up to 10 (8 still waiting),
    # version 3 at 20 (8 and 15 still waiting).
    decided = Decided(history, [made(1, v2, 10, [8]), made(2, v3, 20, [8, 15])])
    late = T0 + timedelta(days=30)
    assert decided(3, late).version == 3  # before the first announcement: by time
    assert decided(3, T0).version == 1
    assert decided(8, T0).version == 3  # waited through both restarts
    assert decided(11, T0).version == 2
    assert decided(15, T0).version == 3
    assert decided(16, T0).version == 2
    assert decided(21, T0).version == 3
