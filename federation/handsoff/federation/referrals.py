"""Referrals between partners: sealed for the receiving partner alone, signed by the sender.

    subject   hx.<region>.referrals.<sender>.<receiver>
    payload   SealedBox(receiver's X25519 key, msgspec JSON of a package or a reply)
    headers   the same signed envelope as shared events (envelope.py), over the ciphertext

NATS, the aggregator and every other partner see only who refers to whom. A package holds
only the details the survivor agreed to share with that organisation. The reply token is
the sender's own sealed note of which case and referral it was: the receiver echoes it
back with its answer, and only the sender can open it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

import msgspec
import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing

from handsoff.events import (
    CaseState,
    IncidentReported,
    ReferralDeclineReason,
    ReferralDetail,
    ReferralMade,
    ReferralOutcome,
    ServiceType,
    ViolenceType,
)
from handsoff.federation.envelope import KeyDirectory, Opened, open_message, seal_headers
from handsoff.federation.errors import FederationError
from handsoff.federation.shared import InvalidSharedEvent
from handsoff.keys import SigningKey

Aware = Annotated[datetime, msgspec.Meta(tz=True)]


class ReferralPackage(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag="referral.package/1",
    kw_only=True,
):
    reply_token: bytes
    service: ServiceType
    made_at: Aware
    survivor_name: str | None = None
    survivor_contact: str | None = None
    violence_types: list[ViolenceType] = msgspec.field(default_factory=list)
    occurred_at: Aware | None = None
    district: str | None = None
    narrative: str | None = None
    note: str | None = None


class ReferralReply(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag="referral.reply/1",
    kw_only=True,
):
    reply_token: bytes
    status: Literal["accepted", "declined", "completed"]
    at: Aware
    decline_reason: ReferralDeclineReason | None = None
    outcome: ReferralOutcome | None = None


ReferralMessage: TypeAlias = ReferralPackage | ReferralReply
_DECODER = msgspec.json.Decoder(ReferralMessage)
_ENCODER = msgspec.json.Encoder()


class ReferralUnreadable(FederationError):
    pass


def package_for(
    incident: IncidentReported, referral: ReferralMade, state: CaseState, reply_token: bytes
) -> ReferralPackage:
    """Only what the survivor agreed to share with the receiving organisation."""
    allowed = set(state.referral_details.get(referral.to_organisation, ()))
    summary = ReferralDetail.INCIDENT_SUMMARY in allowed
    return ReferralPackage(
        reply_token=reply_token,
        service=referral.service,
        made_at=referral.made_at,
        survivor_name=incident.survivor_name if ReferralDetail.SURVIVOR_NAME in allowed else None,
        survivor_contact=(
            incident.survivor_contact if ReferralDetail.SURVIVOR_CONTACT in allowed else None
        ),
        violence_types=list(incident.violence_types) if summary else [],
        occurred_at=incident.occurred_at if summary else None,
        district=incident.district if summary else None,
        narrative=incident.narrative if ReferralDetail.NARRATIVE in allowed else None,
        note=referral.note if ReferralDetail.REFERRAL_NOTE in allowed else None,
    )


def seal(message: ReferralMessage, receiver_public_key: bytes) -> bytes:
    """Encrypts for the receiver's key (its Ed25519 key, converted to X25519)."""
    verify_key = nacl.signing.VerifyKey(receiver_public_key)
    box = nacl.public.SealedBox(verify_key.to_curve25519_public_key())
    return bytes(box.encrypt(_ENCODER.encode(message)))


def unseal(payload: bytes, my_key: SigningKey) -> ReferralMessage:
    private = nacl.signing.SigningKey(my_key.seed).to_curve25519_private_key()
    try:
        plain = nacl.public.SealedBox(private).decrypt(payload)
    except nacl.exceptions.CryptoError:
        raise ReferralUnreadable("cannot decrypt: not sealed for this partner's key") from None
    try:
        message: ReferralMessage = _DECODER.decode(plain)
    except msgspec.DecodeError as e:
        raise ReferralUnreadable(f"not a referral message: {e}") from None
    return message


def sealed_message(
    signer: SigningKey,
    subject: str,
    msg_id: str,
    message: ReferralMessage,
    receiver_public_key: bytes,
    region_version: int,
) -> tuple[bytes, dict[str, str]]:
    payload = seal(message, receiver_public_key)
    return payload, seal_headers(signer, subject, msg_id, payload, region_version)


def open_referral(
    directory: KeyDirectory,
    my_key: SigningKey,
    subject: str,
    headers: Mapping[str, str] | None,
    payload: bytes,
    at: datetime,
) -> Opened:
    """Verifies the sender's signature (over the ciphertext), then decrypts."""

    def decode(raw: bytes) -> Any:
        try:
            return unseal(raw, my_key)
        except ReferralUnreadable as e:
            raise InvalidSharedEvent(str(e)) from None

    return open_message(directory, subject, headers, payload, at, decode)


class ReplyTokens:
    """The sender's sealed note of (case id, referral id); opaque to everyone else."""

    def __init__(self, data_key: bytes) -> None:
        self._box = nacl.secret.SecretBox(data_key)

    def make(self, case_id: bytes, referral_id: str) -> bytes:
        return bytes(self._box.encrypt(case_id + referral_id.encode()))

    def open(self, token: bytes) -> tuple[bytes, str]:
        try:
            plain = self._box.decrypt(token)
        except nacl.exceptions.CryptoError:
            raise ReferralUnreadable("reply token was not made by this node") from None
        return plain[:16], plain[16:].decode()
