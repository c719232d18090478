"""Referrals received from other partners: one sealed aggregate per inbound referral.

The aggregate id derives from (sender, message id), so a redelivered message finds its
referral already recorded and changes nothing.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID, uuid5

from eventsourcing.persistence import IntegrityError

from handsoff.events.inbound import (
    InboundChange,
    InboundState,
    ReferralReceived,
    apply_inbound,
    check_inbound,
    inbound_topic_of,
    inbound_type_of,
)
from handsoff.services.node.errors import NodeError
from handsoff.services.node.indexed import IndexedLog

_NAMESPACE = UUID("0d6f4f0e-4c1b-4b54-9d3c-8a7f3e0e2a61")  # pinned: ids derive from it


class InboundTopics:
    def topic_of(self, change_type: type) -> str:
        return inbound_topic_of(change_type)

    def change_type_of(self, topic: str) -> type:
        return inbound_type_of(topic)


class InboundNotFound(NodeError):
    def __init__(self, referral_id: UUID) -> None:
        super().__init__(f"inbound referral {referral_id} not found")


def inbound_id(from_partner: str, message_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"{from_partner}|{message_id}")


class InboundLog(IndexedLog[InboundState]):
    name = "inbound"
    topics = InboundTopics()

    def fold(self, state: InboundState | None, aggregate_id: UUID, change: Any) -> InboundState:
        return apply_inbound(state, cast(InboundChange, change))

    def check(self, state: InboundState | None, change: Any) -> None:
        check_inbound(state, cast(InboundChange, change))

    def version_of(self, state: InboundState) -> int:
        return state.version

    def not_found(self, aggregate_id: UUID) -> InboundNotFound:
        return InboundNotFound(aggregate_id)

    def receive(self, change: ReferralReceived) -> UUID | None:
        """Records a received referral; None when it was recorded before (redelivery)."""
        referral_id = inbound_id(change.from_partner, change.message_id)
        with self.lock:
            self.refresh()
            if referral_id in self.states:
                return None
            try:
                self.start(referral_id, change, f"partner {change.from_partner}")
            except IntegrityError:  # another process recorded it first
                return None
        return referral_id
