"""The signed envelope: what verification accepts, and every rejection with its stable reason.

Messages are built as the relay builds them: real shared events from a real SharePolicy fed
real case changes, encoded with shared.encode and signed with envelope.seal_headers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID

import msgspec
import pytest

from handsoff.events import (
    ConsentGiven,
    ConsentPurpose,
    ConsentWithdrawn,
    FirstResponseGiven,
    ResponderRole,
)
from handsoff.federation import subjects
from handsoff.federation.envelope import (
    KID,
    MSG_ID,
    REGION_VERSION,
    SIGNATURE,
    KeyDirectory,
    Opened,
    message_id,
    open_message,
    seal_headers,
)
from handsoff.federation.errors import EnvelopeRejected
from handsoff.federation.policy import SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.region import (
    Aggregator,
    Coordinator,
    InvalidEdit,
    KeyTable,
    RegionDocument,
)
from handsoff.federation.shared import (
    SharedEvent,
    SharedFirstResponse,
    SharedIncident,
    SharedRetraction,
    decode,
    encode,
    kind_of,
)
from handsoff.keys import SigningKey
from support import T0, incident

REGION = "sadc"
CASE = UUID("0b5e7c1a-0000-4000-8000-000000000001")
ISSUED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # region document version of the fixtures
AT = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)  # when messages are "stored" (JetStream time)
REVOKED = AT + timedelta(days=1)  # p1's first key revoked from here on
REISSUED = AT + timedelta(days=2)  # the next document version is issued here
SECOND = timedelta(seconds=1)

P1 = SigningKey.from_seed(bytes([1]) * 32)
P2 = SigningKey.from_seed(bytes([2]) * 32)
STRANGER = SigningKey.from_seed(bytes([3]) * 32)  # in no region document


class Message(NamedTuple):
    subject: str
    headers: dict[str, str]
    payload: bytes


def region() -> RegionDocument:
    """Region `sadc` with partners p1 and p2, one key each, valid from ISSUED."""
    coordinators = [
        Coordinator(
            f"c{i}", f"Coordinator {i}", SigningKey.from_seed(bytes([10 + i]) * 32).public_key
        )
        for i in range(1, 4)
    ]
    doc = RegionDocument(
        region=REGION,
        version=1,
        issued_at=ISSUED,
        expires_at=ISSUED + timedelta(days=365),
        threshold=2,
        coordinators=coordinators,
        aggregator=Aggregator("aggregator", SigningKey.from_seed(bytes([20]) * 32).public_key),
    )
    for partner, key in (("p1", P1), ("p2", P2)):
        doc = doc.add_partner(
            partner, f"Partner {partner}", "BW", key.public_key, valid_from=ISSUED, issued_at=ISSUED
        )
    return doc


def shared_events(partner: str = "p1") -> list[SharedEvent]:
    """What a real share policy makes of a real case: an incident, its first response (held
    back until consent, then released), and the retraction when consent is withdrawn."""
    policy = SharePolicy(partner, Pseudonymiser(bytes(range(32))))
    regional = ConsentPurpose.REGIONAL_STATISTICS
    changes = [
        incident("envelope"),
        FirstResponseGiven(
            responded_at=T0 + timedelta(hours=3),
            responder_role=ResponderRole.PARALEGAL,
            responder="Thandi",
        ),
        ConsentGiven(purpose=regional, given_at=T0 + timedelta(hours=4)),
        ConsentWithdrawn(purpose=regional, withdrawn_at=T0 + timedelta(days=3)),
    ]
    out: list[SharedEvent] = []
    for change in changes:
        out += policy.process(CASE, change)
    assert [type(e) for e in out] == [SharedIncident, SharedFirstResponse, SharedRetraction]
    return out


EVENTS = shared_events()
INCIDENT = EVENTS[0]


def seal(
    event: SharedEvent,
    *,
    signer: SigningKey = P1,
    partner: str = "p1",
    number: int = 1,
    version: int,
    msg_id: str | None = None,
) -> Message:
    """A message as the relay makes it (subject by kind, msg id, signed headers)."""
    subject = subjects.events(REGION, partner, kind_of(type(event)))
    msg_id = message_id(partner, number) if msg_id is None else msg_id
    payload = encode(event)
    return Message(subject, seal_headers(signer, subject, msg_id, payload, version), payload)


def open_(doc: KeyDirectory, m: Message, at: datetime = AT) -> Opened:
    return open_message(doc, m.subject, m.headers, m.payload, at, decode)


def rejected(doc: KeyDirectory, m: Message, at: datetime = AT) -> EnvelopeRejected:
    with pytest.raises(EnvelopeRejected) as caught:
        open_(doc, m, at)
    e = caught.value
    assert str(e) == f"{e.reason}: {e.detail}"
    return e


# -- the happy path ---------------------------------------------------------------------


def test_a_sealed_message_opens_to_its_partner_id_number_and_event() -> None:
    doc = region()
    for number, event in enumerate(EVENTS, 1):
        m = seal(event, number=number, version=doc.version)
        assert m.headers[MSG_ID] == f"p1:{number}"
        assert m.headers[KID] == P1.kid.hex()
        assert m.headers[REGION_VERSION] == str(doc.version)
        opened = open_(doc, m)
        assert opened == Opened("p1", f"p1:{number}", number, event)
        assert type(opened.event) is type(event)
        assert encode(opened.event) == m.payload  # the bytes that were signed, unchanged


def test_each_partner_opens_with_its_own_key_on_its_own_subjects() -> None:
    doc = region()
    event = shared_events("p2")[0]
    opened = open_(doc, seal(event, signer=P2, partner="p2", number=7, version=doc.version))
    assert (opened.partner, opened.msg_id, opened.number) == ("p2", "p2:7", 7)
    assert opened.event == event


# -- who signed -------------------------------------------------------------------------


def test_another_partners_key_on_my_subject_is_not_my_key() -> None:
    """p2 signs (with its own, valid, key id) a message on p1's subject: the key id is looked
    up among p1's keys only, so it is unknown there."""
    doc = region()
    m = seal(INCIDENT, signer=P2, version=doc.version)
    e = rejected(doc, m)
    assert e.reason == "unknown_key"
    assert P2.kid.hex() in e.detail
    assert "partner p1" in e.detail


def test_my_key_id_with_a_foreign_signature_is_a_bad_signature() -> None:
    doc = region()
    forged = seal(INCIDENT, signer=P2, version=doc.version)
    m = forged._replace(headers={**forged.headers, KID: P1.kid.hex()})
    e = rejected(doc, m)
    assert e.reason == "bad_signature"
    assert "p1:1" in e.detail
    assert "p1's key" in e.detail
    assert P1.kid.hex() in e.detail


def test_an_unknown_key_id_is_rejected() -> None:
    doc = region()
    e = rejected(doc, seal(INCIDENT, signer=STRANGER, version=doc.version))
    assert e.reason == "unknown_key"
    assert STRANGER.kid.hex() in e.detail
    assert "partner p1" in e.detail


def test_a_signature_that_is_not_hex_is_a_bad_signature() -> None:
    doc = region()
    m = seal(INCIDENT, version=doc.version)
    e = rejected(doc, m._replace(headers={**m.headers, SIGNATURE: "not-hex"}))
    assert e.reason == "bad_signature"
    assert "p1:1" in e.detail


# -- keys in time -----------------------------------------------------------------------


def test_a_revoked_key_is_refused_from_its_revocation_on() -> None:
    held = region()
    revoked = held.revoke_key("p1", P1.kid.hex(), REVOKED, issued_at=REISSUED)
    assert revoked.version == held.version + 1
    m = seal(INCIDENT, version=revoked.version)
    for at in (REVOKED, REVOKED + SECOND, REISSUED + timedelta(days=1)):
        e = rejected(revoked, m, at)
        assert e.reason == "key_revoked"
        assert P1.kid.hex() in e.detail
        assert "partner p1" in e.detail
        assert "revoked at 2026-03-06T12:00:00Z" in e.detail
    # Signed before the revocation: still good.
    assert open_(revoked, m, REVOKED - SECOND).event == INCIDENT


def test_a_revocation_back_dated_before_its_issue_catches_messages_under_the_old_version() -> None:
    """A compromised key is revoked from a moment before the new document is issued: a
    message sent under the old version in between is not stale, but its key is revoked."""
    held = region()
    revoked = held.revoke_key("p1", P1.kid.hex(), REVOKED, issued_at=REISSUED)
    old = seal(INCIDENT, version=held.version)
    between = REVOKED + timedelta(hours=1)
    assert between < revoked.issued_at
    assert rejected(revoked, old, between).reason == "key_revoked"
    assert open_(revoked, old, REVOKED - SECOND).event == INCIDENT


def test_a_key_outside_its_validity_window_is_refused() -> None:
    held = region()
    newer = SigningKey.from_seed(bytes([4]) * 32)
    valid_from, valid_until = AT + timedelta(days=10), AT + timedelta(days=20)
    doc = held.add_partner_key(
        "p1", newer.public_key, valid_from=valid_from, valid_until=valid_until, issued_at=ISSUED
    )
    m = seal(INCIDENT, signer=newer, version=doc.version)

    early = rejected(doc, m, valid_from - SECOND)
    assert early.reason == "key_not_valid"
    assert newer.kid.hex() in early.detail
    assert "not valid before 2026-03-15T12:00:00Z" in early.detail

    for at in (valid_until, valid_until + timedelta(days=1)):
        late = rejected(doc, m, at)
        assert late.reason == "key_not_valid"
        assert newer.kid.hex() in late.detail
        assert "expired at 2026-03-25T12:00:00Z" in late.detail

    assert open_(doc, m, valid_from).event == INCIDENT
    assert open_(doc, m, valid_until - SECOND).event == INCIDENT


def test_a_key_used_before_it_was_listed_as_valid_is_refused() -> None:
    doc = region()
    e = rejected(doc, seal(INCIDENT, version=doc.version), ISSUED - SECOND)
    assert e.reason == "key_not_valid"
    assert P1.kid.hex() in e.detail
    assert "not valid before 2026-03-01T08:00:00Z" in e.detail


# -- region versions --------------------------------------------------------------------


def test_a_message_under_an_older_region_version_after_the_newer_was_issued_is_stale() -> None:
    held = region()
    newer = held.set_breakdowns("partner", issued_at=REISSUED)
    m = seal(INCIDENT, version=held.version)
    for at in (REISSUED, REISSUED + timedelta(days=1)):
        e = rejected(newer, m, at)
        assert e.reason == "stale_region"
        assert f"region version {held.version} " in e.detail
        assert f"version {newer.version} was issued" in e.detail
    # Sent before the newer version existed: the sender could not have known it.
    assert open_(newer, m, REISSUED - SECOND).event == INCIDENT
    # Under the held version itself, or a newer one the verifier has not seen yet: not stale.
    assert open_(newer, seal(INCIDENT, version=newer.version), REISSUED).event == INCIDENT
    assert open_(newer, seal(INCIDENT, version=newer.version + 1), REISSUED).event == INCIDENT


def test_within_the_newer_versions_grace_an_older_version_message_is_accepted() -> None:
    """A node that has not taken the new version yet (offline, or between the aggregator's
    announcement and its next look) keeps counting for the grace the new version gives."""
    held = region()
    newer = held.set_breakdowns("partner", issued_at=REISSUED).set_version_grace(
        24, issued_at=REISSUED
    )
    assert newer.older_versions_until == REISSUED + timedelta(hours=24)
    m = seal(INCIDENT, version=held.version)
    for at in (REISSUED, REISSUED + timedelta(hours=24) - SECOND):
        assert open_(newer, m, at).event == INCIDENT
        assert open_(KeyTable(newer), m, at).event == INCIDENT
    for at in (REISSUED + timedelta(hours=24), REISSUED + timedelta(days=3)):
        for directory in (newer, KeyTable(newer)):
            e = rejected(directory, m, at)
            assert e.reason == "stale_region"
            assert f"version {newer.version} was issued and its grace of 24 h had passed" in (
                e.detail
            )


def test_the_grace_runs_from_the_aggregators_announcement_when_that_came_later() -> None:
    """A version handed to the aggregator days after it was issued: nodes can take it from
    NATS only then, so its grace runs from the announcement (to the second)."""
    held = region()
    newer = held.set_version_grace(24, issued_at=REISSUED)
    announced = REISSUED + timedelta(days=3, microseconds=700_000)
    table = KeyTable(newer, announced)
    assert table.older_versions_until == REISSUED + timedelta(days=4)
    m = seal(INCIDENT, version=held.version)
    assert open_(table, m, REISSUED + timedelta(days=4) - SECOND).event == INCIDENT
    assert rejected(table, m, REISSUED + timedelta(days=4)).reason == "stale_region"
    # announced before it was issued (clocks): the issue still counts
    assert KeyTable(newer, REISSUED - SECOND).older_versions_until == newer.older_versions_until
    # no grace means none: stale once issued, whenever it was announced
    strict = held.set_version_grace(0, issued_at=REISSUED)
    assert KeyTable(strict, announced).older_versions_until == REISSUED
    assert rejected(KeyTable(strict, announced), m, REISSUED).reason == "stale_region"


def test_within_the_grace_the_newer_versions_keys_judge_so_a_revocation_holds_at_once() -> None:
    held = region()
    revoked = held.set_version_grace(72, issued_at=REISSUED).revoke_key(
        "p1", P1.kid.hex(), REISSUED, issued_at=REISSUED
    )
    old = seal(INCIDENT, version=held.version)
    assert rejected(revoked, old, REISSUED + SECOND).reason == "key_revoked"
    # p2's key is untouched: its message under the old version still counts
    theirs = seal(shared_events("p2")[0], signer=P2, partner="p2", version=held.version)
    assert open_(revoked, theirs, REISSUED + SECOND).partner == "p2"


def test_a_document_without_a_grace_reads_as_none_and_an_edit_checks_its_bounds() -> None:
    doc = region()
    assert doc.version_grace_hours == 0
    assert doc.older_versions_until == doc.issued_at
    for hours in (-1, 24 * 90 + 1):
        with pytest.raises(InvalidEdit, match="version grace"):
            doc.set_version_grace(hours)


# -- ids, headers, subjects -------------------------------------------------------------


def test_a_message_id_of_another_partner_is_the_wrong_sender() -> None:
    doc = region()
    for signer in (P1, P2):
        m = seal(INCIDENT, signer=signer, msg_id="p2:1", version=doc.version)
        e = rejected(doc, m)
        assert e.reason == "wrong_sender"
        assert e.detail == "message id names p2, subject belongs to p1"


@pytest.mark.parametrize("header", [MSG_ID, KID, SIGNATURE, REGION_VERSION])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_a_missing_header_is_malformed(header: str, how: str) -> None:
    doc = region()
    m = seal(INCIDENT, version=doc.version)
    headers = {k: v for k, v in m.headers.items() if k != header}
    if how == "empty":
        headers[header] = ""
    e = rejected(doc, m._replace(headers=headers))
    assert e.reason == "malformed"
    assert e.detail == f"missing header(s) {header}"


@pytest.mark.parametrize("headers", [None, {}])
def test_no_headers_at_all_is_malformed_naming_all_four(headers: dict[str, str] | None) -> None:
    m = seal(INCIDENT, version=1)
    with pytest.raises(EnvelopeRejected) as caught:
        open_message(region(), m.subject, headers, m.payload, AT, decode)
    assert caught.value.reason == "malformed"
    assert (
        caught.value.detail == f"missing header(s) {MSG_ID}, {KID}, {SIGNATURE}, {REGION_VERSION}"
    )


@pytest.mark.parametrize(
    "msg_id", ["p1", "p1:", "p1:0", "p1:x", "p1:-1", "p1:1.5", "p1:+1", "p1: 1"]
)
def test_a_message_id_that_is_not_partner_colon_number_is_malformed(msg_id: str) -> None:
    doc = region()
    e = rejected(doc, seal(INCIDENT, msg_id=msg_id, version=doc.version))
    assert e.reason == "malformed"
    assert e.detail == f"message id {msg_id!r} is not <partner>:<n>"


@pytest.mark.parametrize(
    "msg_id",
    [
        pytest.param("p1:\u00b2", id="superscript-two"),  # str.isdigit(), but int() refuses it
        pytest.param("p1:" + "9" * 5000, id="5000-digits"),  # beyond int()'s digit limit
        pytest.param("p1:01", id="leading-zero"),  # another id for message number 1
        pytest.param("p1:\u0661", id="arabic-indic-one"),  # another id for message number 1
    ],
)
def test_a_non_canonical_message_number_is_malformed(msg_id: str) -> None:
    """PRODUCT BUG (envelope.parse_message_id): `str.isdigit()` accepts digits int() refuses
    (a ValueError escapes open_message, before any signature is checked) and numbers that
    are not written as the relay writes them (a second msg id, which JetStream does not
    deduplicate, for the same (partner, number))."""
    doc = region()
    e = rejected(doc, seal(INCIDENT, msg_id=msg_id, version=doc.version))
    assert e.reason == "malformed"
    assert "is not <partner>:<n>" in e.detail


@pytest.mark.parametrize("version", ["v3", "3.0", "three"])
def test_a_region_version_that_is_not_a_number_is_malformed(version: str) -> None:
    doc = region()
    m = seal(INCIDENT, version=doc.version)
    e = rejected(doc, m._replace(headers={**m.headers, REGION_VERSION: version}))
    assert e.reason == "malformed"
    assert e.detail == "Hx-Region is not a number"


@pytest.mark.parametrize("subject", ["events.p1.incident", "hx.sadc.events", "nats.sadc.events.p1"])
def test_a_subject_that_is_not_a_handsoff_subject_is_malformed(subject: str) -> None:
    doc = region()
    m = seal(INCIDENT, version=doc.version)
    headers = seal_headers(P1, subject, "p1:1", m.payload, doc.version)
    e = rejected(doc, Message(subject, headers, m.payload))
    assert e.reason == "malformed"
    assert repr(subject) in e.detail


# -- the payload ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"type":"shared.nonsense/1","partner":"p1"}', id="unknown-type"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(msgspec.json.encode(incident("schema")), id="a-case-change"),
        pytest.param(
            encode(INCIDENT).replace(
                b'"type":"shared.incident/1"', b'"type":"shared.incident/1","x":1'
            ),
            id="unknown-field",
        ),
    ],
)
def test_a_signed_payload_that_is_not_a_shared_event_fails_the_schema(payload: bytes) -> None:
    doc = region()
    subject = subjects.events(REGION, "p1", "incident")
    m = Message(subject, seal_headers(P1, subject, "p1:1", payload, doc.version), payload)
    e = rejected(doc, m)
    assert e.reason == "schema"
    assert e.detail.startswith("p1:1: ")


def test_a_payload_naming_another_partner_is_a_partner_mismatch() -> None:
    doc = region()
    theirs = shared_events("p2")[0]
    assert theirs.partner == "p2"
    e = rejected(doc, seal(theirs, signer=P1, partner="p1", version=doc.version))
    assert e.reason == "partner_mismatch"
    assert e.detail == "p1:1: payload names p2"


@pytest.mark.parametrize("where", [0, len(encode(INCIDENT)) // 2, -1])
def test_a_payload_altered_by_one_byte_is_a_bad_signature(where: int) -> None:
    doc = region()
    m = seal(INCIDENT, version=doc.version)
    altered = bytearray(m.payload)
    altered[where] ^= 0x01
    e = rejected(doc, m._replace(payload=bytes(altered)))
    assert e.reason == "bad_signature"
    assert e.detail == f"p1:1: signature does not verify with p1's key {P1.kid.hex()}"


def test_a_meaningful_one_byte_change_is_a_bad_signature() -> None:
    """The same schema-valid event with one count changed: only the signature catches it."""
    doc = region()
    m = seal(EVENTS[1], version=doc.version)  # SharedFirstResponse, hours_to_first_response
    hours = EVENTS[1].hours_to_first_response  # type: ignore[union-attr]
    assert 0 <= hours < 9
    field = b'"hours_to_first_response":%d' % hours
    assert m.payload.count(field) == 1
    payload = m.payload.replace(field, b'"hours_to_first_response":%d' % (hours + 1))
    assert len(payload) == len(m.payload)
    assert decode(payload) != EVENTS[1]  # still a valid shared event
    assert rejected(doc, m._replace(payload=payload)).reason == "bad_signature"


def test_the_subject_and_message_id_are_signed_too() -> None:
    doc = region()
    m = seal(INCIDENT, number=1, version=doc.version)
    other_kind = subjects.events(REGION, "p1", "court")
    assert rejected(doc, m._replace(subject=other_kind)).reason == "bad_signature"
    renumbered = m._replace(headers={**m.headers, MSG_ID: "p1:2"})
    e = rejected(doc, renumbered)
    assert e.reason == "bad_signature"
    assert e.detail.startswith("p1:2: ")


def test_the_region_version_header_is_signed_too() -> None:
    doc = region()
    m = seal(INCIDENT, number=1, version=doc.version)
    older = m._replace(headers={**m.headers, REGION_VERSION: str(doc.version + 1)})
    assert rejected(doc, older).reason == "bad_signature"


def test_an_event_signed_onto_the_wrong_kind_of_subject_is_rejected() -> None:
    doc = region()
    payload = encode(INCIDENT)
    subject = subjects.events(REGION, "p1", "retraction")
    headers = seal_headers(P1, subject, "p1:1", payload, doc.version)
    e = rejected(doc, Message(subject, headers, payload))
    assert e.reason == "wrong_kind"
    assert "SharedIncident on subject kind retraction" in e.detail
