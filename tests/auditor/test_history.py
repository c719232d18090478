"""The region's membership history (federation/history.py, auditor/membership.py): versions
checked as a chain with region.accept, the version in force at a moment, and what a
tampered history looks like (too few signatures, a forged version, a takeover of the
coordinators, a gap, a version issued before its predecessor, two documents under one
version number)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from handsoff.federation.history import RegionHistory, verify_history
from handsoff.federation.region import (
    Aggregator,
    Coordinator,
    RegionDocument,
    RegionProblem,
    RegionSignature,
    SignedRegion,
    sign_region,
)
from handsoff.keys import SigningKey, kid_hex
from handsoff.services.auditor.membership import VersionUse, check_history
from handsoff.services.auditor.report import Collector

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
COORDINATORS = {f"c{i}": SigningKey.generate() for i in (1, 2, 3)}
P1, P1_NEW, P2, P3 = (SigningKey.generate() for _ in range(4))


def signed(
    doc: RegionDocument, *who: str, keys: dict[str, SigningKey] | None = None
) -> SignedRegion:
    keys = keys or COORDINATORS
    s = SignedRegion.unsigned(doc)
    for cid in who:
        s = sign_region(s, cid, keys[cid])
    return s


def base() -> RegionDocument:
    doc = RegionDocument(
        region="sadc",
        version=1,
        issued_at=T0,
        expires_at=T0 + timedelta(days=365),
        threshold=2,
        coordinators=[
            Coordinator(c, f"Coordinator {c}", k.public_key) for c, k in COORDINATORS.items()
        ],
        aggregator=Aggregator("aggregator", SigningKey.generate().public_key),
    )
    doc = doc.add_partner("p1", "P1", "BW", P1.public_key, valid_from=T0, issued_at=T0)
    return doc.add_partner("p2", "P2", "ZA", P2.public_key, valid_from=T0, issued_at=T0)


def history() -> list[SignedRegion]:
    """v3: p1, p2; v4: p3 added; v5: p1's new key; v6: p1's first key revoked."""
    v3 = base()
    v4 = v3.add_partner("p3", "P3", "NA", P3.public_key, valid_from=T0 + timedelta(days=1),
                        issued_at=T0 + timedelta(days=1))
    v5 = v4.add_partner_key("p1", P1_NEW.public_key, valid_from=T0 + timedelta(days=2),
                            issued_at=T0 + timedelta(days=2))
    v6 = v5.revoke_key("p1", kid_hex(P1.kid), T0 + timedelta(days=3),
                       issued_at=T0 + timedelta(days=3))
    return [signed(d, "c1", "c2") for d in (v3, v4, v5, v6)]


def problems(versions: list[SignedRegion]) -> tuple[list[int], set[tuple[int, str, str]]]:
    taken, found = verify_history(versions)
    return [s.document.version for s in taken], {(p.version, p.reason, p.severity) for p in found}


def test_a_signed_chain_is_taken_whole_and_judges_by_the_version_in_force() -> None:
    versions = history()
    assert [v.document.version for v in versions] == [3, 4, 5, 6]
    # Any order in, the same chain out; a file given twice counts once.
    assert problems([versions[2], versions[0], versions[3], versions[1], versions[0]]) == (
        [3, 4, 5, 6], set(),
    )
    # One document signed in two files (a signature each): the signatures are pooled.
    halves = [SignedRegion(versions[1].document_bytes, [s]) for s in versions[1].signatures]
    assert problems([versions[0], *halves]) == ([3, 4], set())
    assert problems([versions[0], halves[0]])[1] == {(4, "insufficient_signatures", "error")}
    h = RegionHistory([v.document for v in versions])
    assert h.in_force(T0 - timedelta(days=1)).version == 3  # before the first: the first
    assert h.in_force(T0 + timedelta(days=1) - timedelta(microseconds=1)).version == 3
    assert h.in_force(T0 + timedelta(days=1)).version == 4  # from its issued_at on
    assert h.in_force(T0 + timedelta(days=30)).version == 6
    # p3 is unknown under version 3, a member under 4.
    at = T0 + timedelta(hours=30)
    assert h.keys_at(at).partner_key("p3", kid_hex(P3.kid), at) == P3.public_key
    # p1's first key: valid when used under version 5, revoked under version 6.
    at = T0 + timedelta(days=2, hours=1)
    assert h.keys_at(at).partner_key("p1", kid_hex(P1.kid), at) == P1.public_key
    assert RegionHistory.decode(h.encode()).documents == h.documents
    assert RegionHistory.decode(versions[0].document_bytes).documents == (versions[0].document,)
    with pytest.raises(ValueError, match="in order"):
        RegionHistory([versions[1].document, versions[0].document])


def test_a_version_with_too_few_signatures_is_left_out_and_named() -> None:
    v3, v4, v5, v6 = history()
    weak = signed(v5.document, "c1")  # one of the two signatures version 4 asks for
    taken, found = problems([v3, v4, weak, v6])
    assert taken == [3, 4, 6]
    assert found == {(5, "insufficient_signatures", "error"), (6, "gap", "warning")}
    _, detail = verify_history([v3, v4, weak, v6])
    insufficient = next(p for p in detail if p.reason == "insufficient_signatures")
    assert "1 valid signature(s) of the 2 needed" in insufficient.detail
    assert "version 4" in insufficient.detail  # whose coordinators had to sign


def test_forged_versions_are_detected_with_a_reason() -> None:
    v3, v4, v5, v6 = history()
    impostors = {cid: SigningKey.generate() for cid in COORDINATORS}
    # Signatures under the coordinators' ids, made with other keys.
    forged = SignedRegion(v5.document_bytes, [
        RegionSignature(cid, impostors[cid].sign(v5.signing_input())) for cid in ("c1", "c2")
    ])
    taken, found = problems([v3, v4, forged, v6])
    assert (5, "insufficient_signatures", "error") in found
    assert taken == [3, 4, 6]
    # A takeover: a version naming new coordinators, signed only by them.
    takeover = v4.document.set_coordinators(
        [Coordinator(c, c, k.public_key) for c, k in impostors.items()], 1,
        issued_at=T0 + timedelta(days=2),
    )
    taken, found = problems([v3, v4, signed(takeover, "c1", keys=impostors)])
    assert taken == [3, 4]
    assert found == {(5, "insufficient_signatures", "error")}
    # An edited document under the old signatures.
    edited = SignedRegion(v5.document_bytes.replace(b'"BW"', b'"ZA"'), v5.signatures)
    assert (5, "insufficient_signatures", "error") in problems([v3, v4, edited])[1]


def test_order_and_uniqueness_of_versions() -> None:
    v3, v4, v5, _ = history()
    # Version 5 issued before version 4: "in force" would be ambiguous.
    early = signed(
        RegionDocument(**{**_fields(v5.document), "issued_at": T0 + timedelta(hours=12)}),
        "c1", "c2",
    )
    assert problems([v3, v4, early])[1] == {(5, "backwards", "error")}
    # Two different documents, both signed, under one version number: the second is refused.
    other = signed(v4.document.renew(T0 + timedelta(days=400), issued_at=T0 + timedelta(days=1)),
                   "c1", "c2")
    twin = signed(RegionDocument(**{**_fields(other.document), "version": 4}), "c1", "c2")
    taken, found = problems([v3, v4, twin, v5])
    assert taken == [3, 4, 5]
    assert found == {(4, "conflict", "error")}
    # Another region's document in the history.
    stranger = signed(RegionDocument(**{**_fields(v4.document), "region": "ecowas",
                                        "partners": []}), "c1", "c2")
    assert problems([v3, stranger])[1] == {(4, "wrong_region", "error")}
    # The first version vouches for itself only with its own coordinators' threshold.
    assert problems([signed(v3.document, "c3"), v4])[0] == [4]


def _fields(doc: RegionDocument) -> dict[str, object]:
    return {f: getattr(doc, f) for f in doc.__struct_fields__}


def test_the_membership_check_names_versions_and_the_trusted_one() -> None:
    v3, v4, v5, v6 = history()
    found = Collector()
    h = check_history([v3, v4, signed(v5.document, "c2"), v6], found)
    assert [d.version for d in h.documents] == [3, 4, 6]
    assert [(f.reason, f.where, f.severity) for f in found.findings] == [
        ("insufficient_signatures", "region version 5", "error"),
        ("gap", "region version 6", "warning"),
    ]
    assert found.checked["membership"] == 4
    # The version an auditor trusts must be one of the history's, byte for byte.
    found = Collector()
    check_history([v3, v4], found, trusted=v4)
    assert found.findings == []
    check_history([v3, v4], found, trusted=v6)
    check_history([v3, v4], found, trusted=signed(v4.document, "c1", "c3"))  # same document
    assert [f.reason for f in found.findings] == ["different_region"]
    # Nothing verifies: the newest given is audited with, and the audit fails.
    found = Collector()
    h = check_history([SignedRegion(v3.document_bytes), SignedRegion(v4.document_bytes)], found)
    assert [d.version for d in h.documents] == [4]
    assert found.report("region", "sadc").ok is False


def test_trusted_versions_anchor_the_first_one() -> None:
    """Signatures vouch forward only: versions forged before a genuine one chain to it (the
    last forged one hands over to the real coordinators' public keys), unless the auditor's
    own copy anchors the start."""
    _, v4, v5, _ = history()
    forgers = {f"f{i}": SigningKey.generate() for i in (1, 2)}
    fake = RegionDocument(**{
        **_fields(v4.document), "version": 2, "issued_at": T0 - timedelta(days=2),
        "threshold": 2,
        "coordinators": [Coordinator(c, c, k.public_key) for c, k in forgers.items()],
    })
    handover = fake.set_coordinators(
        v4.document.coordinators, 2, issued_at=T0 - timedelta(days=1)
    )
    assert handover.version == 3
    forged = [signed(fake, "f1", "f2", keys=forgers), signed(handover, "f1", "f2", keys=forgers)]
    assert problems([*forged, v4, v5]) == ([2, 3, 4, 5], set())  # self-anchored: no proof
    found = Collector()
    h = check_history([*forged, v4, v5], found, trusted=[v5])
    assert [d.version for d in h.documents] == [4, 5]
    assert [(f.reason, f.where) for f in found.findings] == [
        ("insufficient_signatures", "region version 2"),
        ("insufficient_signatures", "region version 3"),
    ]
    assert "trusted coordinators" in found.findings[0].detail
    found = Collector()
    check_history([v4, v5], found, trusted=v5)
    assert found.findings == []


def test_version_use_names_unknown_versions_and_keys_revoked_later() -> None:
    v3, v4, v5, v6 = history()
    # v7 revokes p1's first key from inside version 4's time (found compromised late).
    v7 = signed(v6.document.revoke_key("p1", kid_hex(P1.kid), T0 + timedelta(days=1, hours=6),
                                       issued_at=T0 + timedelta(days=4)), "c1", "c2")
    h = RegionHistory([v.document for v in (v3, v4, v5, v6, v7)])
    used = VersionUse(h)
    kid = kid_hex(P1.kid)
    for hours, version in ((2, 3), (31, 4), (32, 4), (49, 5), (49, 9)):
        used.note({"Nats-Msg-Id": f"p1:{hours}", "Hx-Kid": kid, "Hx-Region": str(version)},
                  T0 + timedelta(hours=hours))
    found = Collector()
    used.report(found)
    assert [(f.reason, f.where, f.severity) for f in found.findings] == [
        ("unknown_version", "region version 9", "warning"),
        ("revoked_later", "region version 4", "warning"),
        ("revoked_later", "region version 5", "warning"),
    ]
    assert found.findings[1].detail.startswith("2 message(s) of p1 signed with key " + kid)
    # One version only: every message judged by it, nothing "revoked later".
    used = VersionUse(RegionHistory([v7.document]))
    used.note({"Nats-Msg-Id": "p1:1", "Hx-Kid": kid, "Hx-Region": "7"}, T0 + timedelta(hours=31))
    found = Collector()
    used.report(found)
    assert found.findings == []


def test_announcements_judge_by_sequence_number_and_fall_back_to_stream_time() -> None:
    """The aggregator took version 3 after events seq 10 and version 5 after seq 40: a
    message is judged by the version announced for its sequence number whatever its time;
    before the first announcement, by the version in force at its stream time."""
    versions = history()
    h = RegionHistory([v.document for v in versions]).with_taken([(10, 3), (40, 5)])
    assert h.taken == ((10, 3), (40, 5))
    late = T0 + timedelta(days=30)  # version 6's time
    assert h.judged_by(5, late).version == 6  # before the first announcement: by time
    assert h.judged_by(10, late).version == 6
    assert h.judged_by(11, late).version == 3  # the aggregator still held version 3
    assert h.judged_by(40, late).version == 3
    assert h.judged_by(41, T0).version == 5  # ... and then version 5 (4 never taken)
    at = T0 + timedelta(hours=30)  # p3 joined in version 4, which version 3 does not know
    with pytest.raises(RegionProblem, match="not a partner"):
        h.keys_for(11, at).partner_key("p3", kid_hex(P3.kid), at)
    assert h.keys_for(41, at).partner_key("p3", kid_hex(P3.kid), at) == P3.public_key
    # Handed to a worker process with the schedule.
    again = RegionHistory.decode(h.encode())
    assert again.taken == h.taken
    assert again.documents == h.documents
    # Two announcements after the same position: the later one counts.
    same = RegionHistory([v.document for v in versions]).with_taken([(10, 3), (10, 4)])
    assert same.judged_by(11, T0).version == 4
    with pytest.raises(ValueError, match="forward"):
        RegionHistory([v.document for v in versions], [(10, 4), (20, 3)])
    with pytest.raises(ValueError, match="forward"):
        RegionHistory([v.document for v in versions], [(20, 3), (10, 4)])
    with pytest.raises(ValueError, match="not among"):
        RegionHistory([v.document for v in versions], [(10, 7)])
