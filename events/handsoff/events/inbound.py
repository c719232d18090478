"""Referrals received from other partners of the region, and what this partner did with them.

A referral arrives sealed for this node alone and carries only the details the survivor
agreed to share with this organisation; those are personal data here too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeAlias

import msgspec

from handsoff.events.case import AwareDatetime, DistrictCode, PartnerId
from handsoff.events.codes import (
    ReferralDeclineReason,
    ReferralOutcome,
    ReferralStatus,
    ServiceType,
    ViolenceType,
)
from handsoff.events.errors import CaseRuleViolation, EventsError
from handsoff.events.personal import PersonalContact, PersonalName, PersonalText

INBOUND_TOPIC_PREFIX = "handsoff.inbound:"


class _Inbound(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    pass


class ReferralReceived(_Inbound, frozen=True, kw_only=True, tag="referral_received/1"):
    from_partner: PartnerId
    message_id: str  # the sender's message id: (from_partner, message_id) is unique
    reply_token: bytes  # opaque to us: echoed back with our answer so the sender finds its case
    service: ServiceType
    made_at: AwareDatetime
    received_at: AwareDatetime
    survivor_name: PersonalName | None = None
    survivor_contact: PersonalContact | None = None
    violence_types: list[ViolenceType] = msgspec.field(default_factory=list)
    occurred_at: AwareDatetime | None = None
    district: DistrictCode | None = None
    narrative: PersonalText | None = None
    note: PersonalText | None = None


class InboundReferralAccepted(
    _Inbound, frozen=True, kw_only=True, tag="inbound_referral_accepted/1"
):
    accepted_at: AwareDatetime


class InboundReferralDeclined(
    _Inbound, frozen=True, kw_only=True, tag="inbound_referral_declined/1"
):
    declined_at: AwareDatetime
    reason: ReferralDeclineReason


class InboundReferralCompleted(
    _Inbound, frozen=True, kw_only=True, tag="inbound_referral_completed/1"
):
    completed_at: AwareDatetime
    outcome: ReferralOutcome


InboundChange: TypeAlias = (
    ReferralReceived | InboundReferralAccepted | InboundReferralDeclined | InboundReferralCompleted
)
INBOUND_CHANGES: tuple[type[InboundChange], ...] = (
    ReferralReceived,
    InboundReferralAccepted,
    InboundReferralDeclined,
    InboundReferralCompleted,
)
_BY_TOPIC = {
    INBOUND_TOPIC_PREFIX + t.__struct_config__.tag: t  # type: ignore[operator]
    for t in INBOUND_CHANGES
}
_BY_TYPE = {t: topic for topic, t in _BY_TOPIC.items()}


def inbound_topic_of(change_type: type) -> str:
    try:
        return _BY_TYPE[change_type]
    except KeyError:
        raise EventsError(f"{change_type.__name__} is not an inbound referral change") from None


def inbound_type_of(topic: str) -> type[InboundChange]:
    try:
        return _BY_TOPIC[topic]
    except KeyError:
        raise EventsError(f"unknown inbound referral topic {topic!r}") from None


class InboundState(msgspec.Struct, frozen=True, kw_only=True):
    """An inbound referral as this partner sees it (no personal data)."""

    from_partner: str
    message_id: str
    service: ServiceType
    made_at: datetime
    received_at: datetime
    reply_token: bytes = b""  # the sender's, echoed back with every answer
    status: ReferralStatus = ReferralStatus.MADE
    version: int = 1


def check_inbound(state: InboundState | None, change: InboundChange) -> None:
    if state is None:
        if not isinstance(change, ReferralReceived):
            raise CaseRuleViolation("an inbound referral starts with its receipt")
        return
    if isinstance(change, ReferralReceived):
        raise CaseRuleViolation("this referral was already received")
    if isinstance(change, InboundReferralCompleted):
        if state.status != ReferralStatus.ACCEPTED:
            raise CaseRuleViolation(
                f"referral is {state.status.value}: only an accepted one can be completed"
            )
    elif state.status != ReferralStatus.MADE:
        raise CaseRuleViolation(f"referral was already {state.status.value}")


def apply_inbound(state: InboundState | None, change: InboundChange) -> InboundState:
    if isinstance(change, ReferralReceived):
        return InboundState(
            from_partner=change.from_partner,
            message_id=change.message_id,
            service=change.service,
            made_at=change.made_at,
            received_at=change.received_at,
            reply_token=change.reply_token,
        )
    if state is None:
        raise CaseRuleViolation("an inbound referral starts with its receipt")
    status = {
        InboundReferralAccepted: ReferralStatus.ACCEPTED,
        InboundReferralDeclined: ReferralStatus.DECLINED,
        InboundReferralCompleted: ReferralStatus.COMPLETED,
    }[type(change)]
    return msgspec.structs.replace(state, status=status, version=state.version + 1)


def fold_inbound(changes: Iterable[InboundChange]) -> InboundState:
    state: InboundState | None = None
    for change in changes:
        state = apply_inbound(state, change)
    if state is None:
        raise CaseRuleViolation("an inbound referral needs at least its receipt")
    return state
