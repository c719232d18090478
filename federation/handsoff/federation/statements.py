"""Signed aggregate statements: what the aggregator publishes (a wire format, pinned here).

A *release* is numbered (1, 2, 3 ...) and holds one statement per indicator, all computed
from the same inputs. A statement names those inputs, so an auditor can recompute it from the
region's events stream alone:

    inputs.stream       the events stream (HX_<R>_EVENTS)
    inputs.first_seq    1: a release always covers the stream from its start
    inputs.last_seq     the last stream sequence the aggregator had processed
    inputs.accepted     how many envelopes in that range were accepted (verified, first seen)
    inputs.commitment   hex RFC 6962 Merkle root over envelope.leaf() of the accepted
                        envelopes, in stream order
    as_of               the stream timestamp of message last_seq (never the wall clock, so a
                        rebuild reproduces a release byte for byte)

Figures are a number or the string "suppressed" (disclosure control). A statistic that is
not published is null.

Partner breakdowns. Where the region document allows them (`breakdowns` "partner"), a count
indicator's `tables` hold, after each period's country table (`dimension` "country", the
default, left out of the bytes), a table of the same period with `dimension` "partner":
one row per partner, `countries` naming each row's country (a country's cells in that
period's country table are the sums of its partners' cells), the same columns, and the
region's margins as column totals and total. Statistics and shares of a partner
name it in `partner` (their `area` is then its country); left out for countries and the
region. Fields left at their default are not encoded, so statements without partner
breakdowns have exactly the bytes they had before these fields existed.

The signed form, on NATS (hx.<region>.aggregates.<indicator>), in the KeyValue bucket of
latest releases and over HTTP, embeds the statement's exact bytes:

    {"statement": {...}, "kid": "<hex key id>", "signature": "<hex Ed25519>"}

    signature over "hx-aggregate-statement-v1\\0" | statement bytes
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

from handsoff.federation.errors import FederationError
from handsoff.federation.region import RegionDocument
from handsoff.keys import BadSignature, SigningKey, key_id, verify_signature

DOMAIN: Final = b"hx-aggregate-statement-v1\x00"
SUPPRESSED: Final = "suppressed"
# What the rows of a table are (pinned names).
COUNTRY: Final = "country"
PARTNER: Final = "partner"

Figure = int | Literal["suppressed"]
Dimension = Literal["country", "partner"]


class StatementRejected(FederationError):
    """A signed statement that does not verify; `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Inputs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stream: str
    first_seq: int
    last_seq: int
    accepted: int
    commitment: str


class PublishedTable(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One period of a count indicator: rows are countries (`dimension` "country") or
    partners ("partner", each in the country `countries` names), columns the breakdown (a
    single column "count" when there is none); totals are the margins, the grand total the
    region."""

    period: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[tuple[Figure, ...], ...]
    row_totals: tuple[Figure, ...]
    column_totals: tuple[Figure, ...]
    total: Figure
    dimension: Dimension = "country"
    countries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        expected = len(self.rows) if self.dimension == PARTNER else 0
        if len(self.countries) != expected:
            raise ValueError("countries: one per row of a partner table, none in a country table")


class PublishedStat(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Whole hours: how many cases, their median and 90th percentile (null: not published,
    because n is suppressed, below k, or 0). `partner`: a partner's figures (`area` is then
    its country)."""

    period: str
    area: str
    n: Figure
    median: float | None
    p90: float | None
    partner: str | None = None


class PublishedShare(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Incidents with police among the perpetrators, out of all incidents (share null: not
    published, because either count is suppressed or there were no incidents). `partner`: a
    partner's figures (`area` is then its country)."""

    period: str
    area: str
    police: Figure
    incidents: Figure
    share: float | None
    partner: str | None = None


class AggregateStatement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Literal["hx-aggregate-statement-v1"] = "hx-aggregate-statement-v1"
    region: str
    region_version: int
    aggregator: str
    release: int
    indicator: str
    k: int
    breakdowns: str
    as_of: datetime | None
    inputs: Inputs
    tables: tuple[PublishedTable, ...] = ()
    stats: tuple[PublishedStat, ...] = ()
    shares: tuple[PublishedShare, ...] = ()


class _Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    statement: msgspec.Raw
    kid: str
    signature: str


_ENCODER = msgspec.json.Encoder()
_SIGNED = msgspec.json.Decoder(_Signed)
_STATEMENT = msgspec.json.Decoder(AggregateStatement)


def sign(statement: AggregateStatement, key: SigningKey) -> bytes:
    """The signed form (deterministic: Ed25519 signatures are, and so is msgspec's JSON)."""
    body = _ENCODER.encode(statement)
    signature = key.sign(DOMAIN + body)
    return _ENCODER.encode(
        _Signed(statement=msgspec.Raw(body), kid=key.kid.hex(), signature=signature.hex())
    )


def verify(signed: bytes, region: RegionDocument) -> AggregateStatement:
    """The statement, if the region's aggregator signed exactly these bytes; otherwise
    StatementRejected (malformed, unknown_key, bad_signature, schema, wrong_region)."""
    try:
        wrapper = _SIGNED.decode(signed)
    except msgspec.DecodeError as e:
        raise StatementRejected("malformed", f"not a signed statement: {e}") from None
    public_key = region.aggregator.public_key
    if wrapper.kid != key_id(public_key).hex():
        raise StatementRejected(
            "unknown_key",
            f"signed with key {wrapper.kid}, not the region aggregator's "
            f"{key_id(public_key).hex()}",
        )
    body = bytes(wrapper.statement)
    try:
        verify_signature(public_key, DOMAIN + body, bytes.fromhex(wrapper.signature))
    except (ValueError, BadSignature):
        raise StatementRejected(
            "bad_signature", "statement signature does not verify with the aggregator's key"
        ) from None
    try:
        statement = _STATEMENT.decode(body)
    except msgspec.DecodeError as e:
        raise StatementRejected("schema", f"signed statement: {e}") from None
    if statement.region != region.region:
        raise StatementRejected(
            "wrong_region", f"statement of region {statement.region}, not {region.region}"
        )
    return statement


def statement_bytes(signed: bytes) -> bytes:
    """The exact statement bytes inside a signed form (no verification)."""
    return bytes(_SIGNED.decode(signed).statement)
