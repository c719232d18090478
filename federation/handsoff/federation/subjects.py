"""NATS subjects and stream names: a wire format, pinned here and nowhere else.

Every subject a partner publishes on carries its own partner id in the fourth token, so
a nats-server permission `hx.<region>.*.<partner>.>` is all a partner needs:

    hx.<region>.events.<partner>.<kind>           consented, pseudonymised case events
    hx.<region>.referrals.<partner>.<to_partner>  sealed referrals between partners
    hx.<region>.checkpoints.<partner>.log         signed log checkpoints (issue #6)
    hx.<region>.witness.<partner>                 the aggregator's cosignatures of them
    hx.<region>.aggregates.<indicator>            the aggregator's releases (issue #4)
    hx.<region>.aggregates._region                the region versions the aggregator takes
    hx.<region>.quarantine.<reason>               messages the aggregator rejected, and why

The witness subject has four tokens, so no partner pattern `hx.<region>.*.<partner>.>`
matches it: only the aggregator publishes cosignatures. `_region` (announcements.py) can
never be an indicator's name: a token starts with a-z or 0-9.

Streams (file storage, deny delete and purge): HX_<R>_EVENTS, _REFERRALS, _CHECKPOINTS (it
holds the checkpoints and the cosignatures), _AGGREGATES, _QUARANTINE; KeyValue bucket
HX_<R>_LATEST (latest statement per indicator).
"""

from __future__ import annotations

import re

PREFIX = "hx"
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def token(value: str) -> str:
    """A region or partner id as a subject token (no dots, wildcards or spaces)."""
    if not _TOKEN.match(value):
        raise ValueError(f"{value!r} cannot be a subject token (a-z, 0-9, '-', max 32)")
    return value


def events(region: str, partner: str, kind: str) -> str:
    return f"{PREFIX}.{token(region)}.events.{token(partner)}.{token(kind)}"


def events_of(region: str, partner: str) -> str:
    return f"{PREFIX}.{token(region)}.events.{token(partner)}.>"


def all_events(region: str) -> str:
    return f"{PREFIX}.{token(region)}.events.>"


def referral(region: str, sender: str, receiver: str) -> str:
    return f"{PREFIX}.{token(region)}.referrals.{token(sender)}.{token(receiver)}"


def referrals_to(region: str, receiver: str) -> str:
    return f"{PREFIX}.{token(region)}.referrals.*.{token(receiver)}"


def all_referrals(region: str) -> str:
    return f"{PREFIX}.{token(region)}.referrals.>"


def checkpoints(region: str, partner: str) -> str:
    return f"{PREFIX}.{token(region)}.checkpoints.{token(partner)}.log"


def witness(region: str, partner: str) -> str:
    """The aggregator's cosignatures of a partner's checkpoints."""
    return f"{PREFIX}.{token(region)}.witness.{token(partner)}"


def all_witness(region: str) -> str:
    return f"{PREFIX}.{token(region)}.witness.*"


def aggregates(region: str, indicator: str) -> str:
    return f"{PREFIX}.{token(region)}.aggregates.{token(indicator)}"


# Pinned: the last token of the aggregator's announcements of the region versions it takes
# (federation/announcements.py), in the aggregates stream beside the statements. Not a
# `token`: those start with a-z or 0-9, so no indicator can ever be named this.
REGION_TAKEN = "_region"


def region_taken(region: str) -> str:
    """Where the aggregator announces each region version it takes (aggregates stream)."""
    return f"{PREFIX}.{token(region)}.aggregates.{REGION_TAKEN}"


def is_region_taken(subject: str) -> bool:
    """An announcement's subject (any region), as opposed to a statement's."""
    parts = subject.split(".")
    return len(parts) == 4 and parts[0] == PREFIX and parts[2:] == ["aggregates", REGION_TAKEN]


def own_subjects(region: str, partner: str) -> str:
    """What a partner may publish on: every subject carrying its id in the fourth token."""
    return f"{PREFIX}.{token(region)}.*.{token(partner)}.>"


def partner_of(subject: str) -> str:
    """The partner a subject belongs to (fourth token); the signer must match it."""
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != PREFIX:
        raise ValueError(f"not a handsoff subject: {subject!r}")
    return parts[3]


def inbox_prefix(partner: str) -> str:
    """Per-partner reply inbox, so PubAcks stay private and permissions stay tight."""
    return f"_INBOX_{token(partner).replace('-', '_')}"


def _stream_name(region: str, what: str) -> str:
    """HX_<REGION>_<WHAT>: JetStream names allow no '.', so '-' becomes '_'."""
    return f"HX_{token(region).upper().replace('-', '_')}_{what}"


def events_stream(region: str) -> str:
    return _stream_name(region, "EVENTS")


def checkpoints_stream(region: str) -> str:
    return _stream_name(region, "CHECKPOINTS")


def referrals_consumer(partner: str) -> str:
    """The durable consumer through which a partner receives its referrals."""
    return f"referrals-{token(partner)}"


def relay_consumer(partner: str) -> str:
    """The short-lived consumer a relay uses to read back its own stored messages."""
    return f"relay-{token(partner)}"


def checkpoint_consumer(partner: str) -> str:
    """The short-lived consumer a node uses to read back its own stored events, to
    checkpoint them."""
    return f"checkpoint-{token(partner)}"


def region_consumer(partner: str) -> str:
    """The short-lived consumer a node uses to read the aggregator's announcements of the
    region versions it takes (on the aggregates stream, filtered to `region_taken`)."""
    return f"region-{token(partner)}"


def referrals_stream(region: str) -> str:
    return _stream_name(region, "REFERRALS")


def all_checkpoints(region: str) -> str:
    return f"{PREFIX}.{token(region)}.checkpoints.>"


def all_aggregates(region: str) -> str:
    return f"{PREFIX}.{token(region)}.aggregates.>"


def aggregates_stream(region: str) -> str:
    """Every signed aggregate statement ever published (the release history)."""
    return _stream_name(region, "AGGREGATES")


def latest_bucket(region: str) -> str:
    """KeyValue bucket of the latest signed statement per indicator (key: indicator)."""
    return _stream_name(region, "LATEST")


_REASON = re.compile(r"[a-z0-9_-]{1,32}")


def quarantine(region: str, reason: str) -> str:
    """Where the aggregator files a rejected message, by reason code ("other" if odd)."""
    reason = reason if _REASON.fullmatch(reason) else "other"
    return f"{PREFIX}.{token(region)}.quarantine.{reason}"


def all_quarantine(region: str) -> str:
    return f"{PREFIX}.{token(region)}.quarantine.>"


def quarantine_stream(region: str) -> str:
    return _stream_name(region, "QUARANTINE")
