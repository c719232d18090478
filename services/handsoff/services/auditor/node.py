"""`handsoff audit node`: a partner's internal auditor checks its own node.

log      every signature and chain link (node verify, public keys only)
consent  the case log replayed in order through the share policy (what the relay sends,
         numbered as it numbers them); each shared message is checked against an
         independent fold of the case (events.state.apply):
         - a shared step leaves only while the survivor's consent to regional
           statistics is in force;
         - a withdrawal of that consent, once anything of the case has left, is
           followed at once by a retraction, and after it nothing more of the case
           leaves;
stream   (with the region's NATS) what this partner's subjects hold equals what the
         policy says may leave, byte for byte: nothing else left the node. Numbers a
         resumption after a restore recorded as lost (admin log, node/resume.py) are
         reported as a warning, `lost_in_restore`: shared from events the log no longer has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from handsoff.events import CaseState, ConsentPurpose, has_consent
from handsoff.events.state import apply
from handsoff.federation.envelope import message_id, parse_message_id
from handsoff.federation.errors import FederationError
from handsoff.federation.policy import SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.relay import NumberGap, Numbering
from handsoff.federation.shared import SharedRetraction, encode
from handsoff.services.auditor.report import AuditReport, Collector
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource

LOG, CONSENT, STREAM = "log", "consent", "stream"
STATISTICS = ConsentPurpose.REGIONAL_STATISTICS
PAGE = 1000


def _verify_log(node: Node, found: Collector) -> None:
    report = node.verify()
    if not report.keyring_intact:
        found.find(LOG, "keyring", "keyring", report.problem or "the keyring does not verify")
    for log in report.logs:
        found.count(LOG, log.events)
        if not log.intact:
            found.find(LOG, "broken", f"{log.log} log", log.failure or "does not verify")


def shared_messages(node: Node, found: Collector) -> dict[str, bytes]:
    """msg id -> payload of everything the policy lets leave, checked against consent."""
    partner = node.config.partner
    policy = SharePolicy(partner, Pseudonymiser(node.pseudonym_key))
    states: dict[UUID, CaseState] = {}
    shared_any: set[UUID] = set()
    retracted: set[UUID] = set()
    out: dict[str, bytes] = {}
    numbering = Numbering(node.admin.number_gaps())
    source = LogSource(node.cases)
    position = 0
    while True:
        page = source.changes_after(position, PAGE)
        if not page:
            return out
        for c in page:
            position = c.notification_id
            before = states.get(c.case_id)
            state = apply(before, c.case_id, c.change)
            states[c.case_id] = state
            leaving = policy.process(c.case_id, c.change)
            where = f"case event {c.notification_id}"
            found.count(CONSENT)
            withdrawn = (
                before is not None
                and has_consent(before, STATISTICS)
                and not has_consent(state, STATISTICS)
            )
            for n, event in zip(
                numbering.numbers(c.notification_id, len(leaving)), leaving, strict=True
            ):
                out[message_id(partner, n)] = encode(event)
                if isinstance(event, SharedRetraction):
                    retracted.add(c.case_id)
                    continue
                if c.case_id in retracted:
                    found.find(CONSENT, "after_retraction", where, "shared after its retraction")
                elif not has_consent(state, STATISTICS):
                    found.find(CONSENT, "no_consent", where, "shared without statistics consent")
                shared_any.add(c.case_id)
            if withdrawn and c.case_id in shared_any and c.case_id not in retracted:
                found.find(
                    CONSENT,
                    "no_retraction",
                    where,
                    "consent withdrawn after sharing, but no retraction followed",
                )


def compare_stream(
    expected: Mapping[str, bytes],
    stored: Mapping[str, bytes],
    found: Collector,
    gaps: Sequence[NumberGap] = (),
) -> None:
    """What left (the partner's messages in the stream) against what may leave."""
    lost: dict[NumberGap, int] = {}
    for msg_id, payload in stored.items():
        found.count(STREAM)
        if msg_id not in expected:
            gap = _lost_in(gaps, msg_id)
            if gap is not None:
                lost[gap] = lost.get(gap, 0) + 1
                continue
            found.find(STREAM, "unexplained", msg_id, "in the stream, not allowed by the log")
        elif expected[msg_id] != payload:
            found.find(STREAM, "altered", msg_id, "differs from what the log allows")
    for gap, n in lost.items():
        found.find(
            STREAM,
            "lost_in_restore",
            f"numbers {gap.first_lost} to {gap.last_lost}",
            f"{n} message(s) shared from events this log lost with a restore (sharing resumed "
            f"after case event {gap.after_notification}): their cases are no longer here",
            severity="warning",
        )
    waiting = [m for m in expected if m not in stored]
    if waiting:
        found.find(
            STREAM,
            "not_yet_published",
            f"{len(waiting)} message(s)",
            f"allowed but not (yet) in the stream, from {waiting[0]}",
            severity="warning",
        )


def _lost_in(gaps: Sequence[NumberGap], msg_id: str) -> NumberGap | None:
    try:
        _, number = parse_message_id(msg_id)
    except FederationError:
        return None
    return next((g for g in gaps if g.first_lost <= number <= g.last_lost), None)


def audit_node(node: Node, stored: Mapping[str, bytes] | None = None) -> AuditReport:
    found = Collector()
    _verify_log(node, found)
    expected = shared_messages(node, found)
    if stored is not None:
        compare_stream(expected, stored, found, node.admin.number_gaps())
    return found.report("node", node.config.partner)
