"""Region membership: the signed region document, the root of trust of a region.

A region document names the region's coordinators (and how many of them must sign), the
aggregator, and every partner with its public keys and the subjects it may publish on. It is
stored as `SignedRegion`, a JSON file

    {"document": {...the document...}, "signatures": [{"coordinator": id, "signature": b64}]}

Each signature is Ed25519 over `b"hx-region-v1\\x00" + <the exact bytes of the embedded
document>`. The document is kept as the bytes it was read as (`msgspec.Raw`) and is never
re-encoded to verify: reformatting the embedded JSON breaks every signature.

Acceptance (`accept`), the rule every node and the aggregator applies:

1. The first document a node accepts (no held document): the candidate's own coordinators
   count, and its own threshold applies. Given `trusted_coordinators` (public keys handed
   over out of band), only signatures by coordinators with one of those keys count, so a
   document made up by someone else cannot bootstrap a node.
2. Every later document: it must be for the same region and have a higher version than the
   held one (`stale` otherwise: never go back or sideways), and it must carry the threshold
   of the HELD version, signed by coordinators of the HELD version. A minority of the
   current coordinators can therefore neither replace the coordinator set nor lower the
   threshold. Versions may be skipped, as long as the held version's coordinators signed
   the candidate; a node that missed a coordinator change applies the versions in between,
   in order.
3. Always: `now < expires_at` (`expired`), and `issued_at` no later than `now` plus a small
   clock skew (`not_yet_valid`).
4. Signatures count once per coordinator id; a signature by an unknown coordinator, a
   forged or corrupt signature, and a repeated signer add nothing (`insufficient_signatures`).

Every refusal is a `RegionProblem` (a `RegionError`) with a stable `.reason` code.

Editing (`add_partner`, `add_partner_key`, `revoke_key`, `set_breakdowns`, `renew`,
`set_coordinators`) returns a NEW document with version + 1; wrap it with
`SignedRegion.unsigned` and have the coordinators sign it again.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, ClassVar, Final, Literal, TypeVar

import msgspec

from handsoff.federation import subjects
from handsoff.federation.errors import RegionError
from handsoff.keys import BadSignature, SigningKey, key_id, kid_hex, verify_signature

FORMAT: Final = "handsoff-region/1"
DOMAIN: Final = b"hx-region-v1\x00"
CLOCK_SKEW: Final = timedelta(minutes=5)
# NATS user names that natsconf gives to non-partners; a partner may not take them.
RESERVED_IDS: Final = frozenset({"aggregator", "operator"})

Token = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
PublicKey = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Kid = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]
CountryCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Breakdowns = Literal["country", "partner"]
MAX_GRACE_HOURS: Final = 24 * 90
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------
# Errors


class RegionProblem(RegionError):
    """A region check failed; `reason` is a stable code, the message says more."""

    reason: ClassVar[str] = "region"


class MalformedRegion(RegionProblem):
    reason = "malformed"


class RegionFileError(RegionProblem):
    reason = "unreadable"


class WrongRegion(RegionProblem):
    reason = "wrong_region"


class StaleRegion(RegionProblem):
    reason = "stale"


class RegionExpired(RegionProblem):
    reason = "expired"


class RegionNotYetValid(RegionProblem):
    reason = "not_yet_valid"


class InsufficientSignatures(RegionProblem):
    reason = "insufficient_signatures"


class UnknownPartner(RegionProblem):
    reason = "unknown_partner"


class UnknownPartnerKey(RegionProblem):
    reason = "unknown_key"


class PartnerKeyRevoked(RegionProblem):
    reason = "key_revoked"


class PartnerKeyNotValid(RegionProblem):
    reason = "key_not_valid"


class InvalidEdit(RegionProblem):
    reason = "invalid_edit"


# ---------------------------------------------------------------------------------------
# The document


class Coordinator(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Token
    name: Name
    public_key: PublicKey


class Aggregator(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Token
    public_key: PublicKey


class PartnerKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kid: Kid  # hex of handsoff.keys.key_id(public_key)
    public_key: PublicKey
    valid_from: Timestamp
    valid_until: Timestamp | None = None
    revoked_at: Timestamp | None = None


class Partner(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Token
    name: Name
    country: CountryCode  # ISO 3166-1 alpha-2
    keys: Annotated[list[PartnerKey], msgspec.Meta(min_length=1)]
    # Subject patterns (NATS wildcards) it may publish on; `add_partner` defaults this to
    # subjects.own_subjects(region, id). Listed explicitly: what is signed is what applies.
    publish: list[str]


_SUBJECT_TOKEN = re.compile(r"^(?:[A-Za-z0-9_-]+|\*|>)$")


def _subject_tokens(pattern: str) -> list[str] | None:
    """The tokens of a subject or pattern, or None if it is not one."""
    tokens = pattern.split(".")
    if not all(_SUBJECT_TOKEN.match(t) for t in tokens):
        return None
    if ">" in tokens[:-1]:
        return None
    return tokens


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS semantics: `*` is exactly one token, a final `>` one or more tokens.

    `subject` must be a literal subject (no wildcards): publishing on a pattern is never
    allowed.
    """
    p, s = _subject_tokens(pattern), _subject_tokens(subject)
    if p is None or s is None or "*" in s or ">" in s:
        return False
    for i, part in enumerate(p):
        if part == ">":
            return len(s) > i
        if i >= len(s) or part not in ("*", s[i]):
            return False
    return len(s) == len(p)


def aggregates_prefix(region: str) -> str:
    """Subjects starting with this are the aggregator's (subjects.aggregates)."""
    return f"{subjects.PREFIX}.{subjects.token(region)}.aggregates."


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} ({at.isoformat()}) must be timezone-aware")
    return at


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class RegionDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a region's coordinators sign. Checked as a whole on construction and decoding."""

    format: Literal["handsoff-region/1"] = FORMAT
    region: Token
    version: Annotated[int, msgspec.Meta(ge=1)]
    issued_at: Timestamp
    expires_at: Timestamp
    threshold: Annotated[int, msgspec.Meta(ge=1)]  # coordinator signatures needed
    coordinators: list[Coordinator]
    aggregator: Aggregator
    partners: list[Partner] = []
    # Whether partner-level aggregate breakdowns may be published ("country": only countries).
    breakdowns: Breakdowns = "country"
    # For how many hours after this version is issued (or, if later, announced by the
    # aggregator: grace_until) a message sent under an EARLIER version is still accepted (a
    # node that has not taken this version yet: offline, or between the aggregator's
    # announcement and its own next look). Such a message is verified with this version's
    # keys, so a key it revokes is refused at once. After that: `stale_region`.
    # 0 (the default, and what a document without the field means): stale once issued.
    version_grace_hours: Annotated[int, msgspec.Meta(ge=0, le=MAX_GRACE_HOURS)] = 0

    def __post_init__(self) -> None:
        _check_document(self)

    # -- queries -------------------------------------------------------------------------

    def partner(self, partner_id: str) -> Partner:
        for p in self.partners:
            if p.id == partner_id:
                return p
        raise UnknownPartner(
            f"{partner_id!r} is not a partner of region {self.region} (version {self.version})"
        )

    def partner_key(self, partner_id: str, kid: str | bytes, at: datetime) -> bytes:
        """The public key `kid` of a partner, if it was valid at `at`; else a RegionProblem.

        Valid means valid_from <= at < valid_until and, if revoked, at < revoked_at.
        """
        _aware(at, "at")
        wanted = kid_hex(kid) if isinstance(kid, bytes) else kid.lower()
        partner = self.partner(partner_id)
        for k in partner.keys:
            if k.kid == wanted:
                break
        else:
            raise UnknownPartnerKey(
                f"key {wanted} is not a key of partner {partner_id} in region {self.region} "
                f"(version {self.version})"
            )
        if k.revoked_at is not None and at >= k.revoked_at:
            raise PartnerKeyRevoked(
                f"key {wanted} of partner {partner_id} was revoked at {_iso(k.revoked_at)} "
                f"(used at {_iso(at)})"
            )
        if at < k.valid_from:
            raise PartnerKeyNotValid(
                f"key {wanted} of partner {partner_id} is not valid before "
                f"{_iso(k.valid_from)} (used at {_iso(at)})"
            )
        if k.valid_until is not None and at >= k.valid_until:
            raise PartnerKeyNotValid(
                f"key {wanted} of partner {partner_id} expired at {_iso(k.valid_until)} "
                f"(used at {_iso(at)})"
            )
        return k.public_key

    def current_key(self, partner_id: str, at: datetime) -> bytes:
        """The partner's newest key valid at `at` (never a revoked or expired one): the key
        to encrypt for. PartnerKeyNotValid if it has none."""
        _aware(at, "at")
        for k in reversed(self.partner(partner_id).keys):
            revoked = k.revoked_at is not None and at >= k.revoked_at
            expired = k.valid_until is not None and at >= k.valid_until
            if k.valid_from <= at and not revoked and not expired:
                return k.public_key
        raise PartnerKeyNotValid(f"partner {partner_id} has no key valid at {_iso(at)}")

    def may_publish(self, partner_id: str, subject: str) -> bool:
        """Whether the document lets a partner publish on a (literal) subject.

        The aggregates subjects (`hx.<region>.aggregates.>`) belong to the aggregator, even
        where a partner's pattern (`hx.<region>.*.<partner>.>`) would match them, and so do
        its cosignatures of checkpoints (`hx.<region>.witness.<partner>`).
        """
        if subject.startswith(aggregates_prefix(self.region)):
            return False
        if subject.startswith(f"{subjects.PREFIX}.{subjects.token(self.region)}.witness."):
            return False
        for p in self.partners:
            if p.id == partner_id:
                return any(subject_matches(pattern, subject) for pattern in p.publish)
        return False

    def coordinator_keys(self) -> dict[str, bytes]:
        return {c.id: c.public_key for c in self.coordinators}

    @property
    def older_versions_until(self) -> datetime:
        """Until when messages sent under an earlier version are accepted (not stale)."""
        return grace_until(self, None)

    # -- editing: each returns a new, unsigned version ------------------------------------

    def _next(self, issued_at: datetime | None, **changes: object) -> RegionDocument:
        at = _now() if issued_at is None else _aware(issued_at, "issued_at")
        try:
            return msgspec.structs.replace(self, version=self.version + 1, issued_at=at, **changes)
        except MalformedRegion as e:
            raise InvalidEdit(str(e)) from None

    def add_partner(
        self,
        partner_id: str,
        name: str,
        country: str,
        public_key: bytes,
        *,
        valid_from: datetime | None = None,
        publish: Sequence[str] | None = None,
        issued_at: datetime | None = None,
    ) -> RegionDocument:
        """Add a partner with its first key (valid from `valid_from`, default now)."""
        if any(p.id == partner_id for p in self.partners):
            raise InvalidEdit(f"partner {partner_id} is already in region {self.region}")
        partner = _convert(
            {
                "id": partner_id,
                "name": name,
                "country": country,
                "keys": [_new_key(public_key, valid_from)],
                "publish": list(publish)
                if publish is not None
                else [_own_subjects(self.region, partner_id)],
            },
            Partner,
        )
        return self._next(issued_at, partners=[*self.partners, partner])

    def add_partner_key(
        self,
        partner_id: str,
        public_key: bytes,
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        issued_at: datetime | None = None,
    ) -> RegionDocument:
        """Add a key to a partner (e.g. after `handsoff node keys rotate`)."""
        partner = self.partner(partner_id)
        key = _new_key(public_key, valid_from, valid_until)
        changed = msgspec.structs.replace(partner, keys=[*partner.keys, key])
        return self._next(issued_at, partners=self._with_partner(changed))

    def revoke_key(
        self, partner_id: str, kid: str, at: datetime, *, issued_at: datetime | None = None
    ) -> RegionDocument:
        """Revoke a partner key from `at` on (may lie in the past: a key found compromised)."""
        _aware(at, "at")
        partner = self.partner(partner_id)
        wanted = kid.lower()
        if not any(k.kid == wanted for k in partner.keys):
            raise UnknownPartnerKey(f"key {wanted} is not a key of partner {partner_id}")
        keys: list[PartnerKey] = []
        for k in partner.keys:
            if k.kid != wanted:
                keys.append(k)
                continue
            if k.revoked_at is not None and k.revoked_at <= at:
                raise InvalidEdit(
                    f"key {wanted} of partner {partner_id} is already revoked at "
                    f"{_iso(k.revoked_at)}"
                )
            keys.append(msgspec.structs.replace(k, revoked_at=at))
        changed = msgspec.structs.replace(partner, keys=keys)
        return self._next(issued_at, partners=self._with_partner(changed))

    def set_breakdowns(
        self, breakdowns: Breakdowns, *, issued_at: datetime | None = None
    ) -> RegionDocument:
        if breakdowns not in ("country", "partner"):
            raise InvalidEdit(f"breakdowns must be 'country' or 'partner', not {breakdowns!r}")
        return self._next(issued_at, breakdowns=breakdowns)

    def set_version_grace(self, hours: int, *, issued_at: datetime | None = None) -> RegionDocument:
        if not 0 <= hours <= MAX_GRACE_HOURS:
            raise InvalidEdit(
                f"the version grace must be 0 to {MAX_GRACE_HOURS} hours, not {hours}"
            )
        return self._next(issued_at, version_grace_hours=hours)

    def renew(self, expires_at: datetime, *, issued_at: datetime | None = None) -> RegionDocument:
        _aware(expires_at, "expires_at")
        return self._next(issued_at, expires_at=expires_at)

    def set_coordinators(
        self,
        coordinators: Sequence[Coordinator],
        threshold: int,
        *,
        issued_at: datetime | None = None,
    ) -> RegionDocument:
        """Replace the coordinator set; the CURRENT coordinators must sign the result."""
        return self._next(issued_at, coordinators=list(coordinators), threshold=threshold)

    def _with_partner(self, changed: Partner) -> list[Partner]:
        return [changed if p.id == changed.id else p for p in self.partners]


def grace_until(document: RegionDocument, announced_at: datetime | None) -> datetime:
    """Until when messages sent under a version before `document` are accepted: its grace
    after it was issued or, if later, after the aggregator announced it (`announced_at`,
    the announcement's stream time, to the second: nobody could take it from NATS before).
    A grace of 0 is strict: stale once issued, announced or not."""
    grace = timedelta(hours=document.version_grace_hours)
    if not grace or announced_at is None:
        return document.issued_at + grace
    return max(document.issued_at, announced_at.replace(microsecond=0)) + grace


class KeyTable:
    """A region document's partner keys by (partner, key id), for verifying message after
    message (ingest, audits): the answers and errors of `RegionDocument.partner_key`
    without scanning partners and keys each time. A KeyDirectory, like the document;
    `announced_at`: when the aggregator announced the version (`grace_until`)."""

    __slots__ = ("_keys", "document", "older_versions_until")

    def __init__(self, document: RegionDocument, announced_at: datetime | None = None) -> None:
        self.document = document
        self._keys = {(p.id, k.kid): k for p in document.partners for k in p.keys}
        self.older_versions_until = grace_until(document, announced_at)

    @property
    def version(self) -> int:
        return self.document.version

    @property
    def issued_at(self) -> datetime:
        return self.document.issued_at

    def partner_key(self, partner_id: str, kid: str | bytes, at: datetime) -> bytes:
        k = self._keys.get((partner_id, kid)) if isinstance(kid, str) else None
        if (
            k is not None
            and at.tzinfo is not None
            and k.valid_from <= at
            and (k.valid_until is None or at < k.valid_until)
            and (k.revoked_at is None or at < k.revoked_at)
        ):
            return k.public_key
        return self.document.partner_key(partner_id, kid, at)  # the error, named precisely


def _own_subjects(region: str, partner_id: str) -> str:
    try:
        return subjects.own_subjects(region, partner_id)
    except ValueError as e:
        raise InvalidEdit(str(e)) from None


def _convert(raw: Mapping[str, object], t: type[_T]) -> _T:
    try:
        return msgspec.convert(raw, t)
    except msgspec.ValidationError as e:
        raise InvalidEdit(f"invalid {t.__name__.lower()}: {e}") from None


def _new_key(
    public_key: bytes, valid_from: datetime | None, valid_until: datetime | None = None
) -> PartnerKey:
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise InvalidEdit("a partner's public key must be 32 bytes (Ed25519)")
    start = _now() if valid_from is None else _aware(valid_from, "valid_from")
    if valid_until is not None:
        _aware(valid_until, "valid_until")
    return PartnerKey(kid_hex(key_id(public_key)), public_key, start, valid_until)


def _check_document(doc: RegionDocument) -> None:
    """Cross-field rules that msgspec's types cannot express."""
    where = f"region {doc.region} version {doc.version}"

    def bad(msg: str) -> MalformedRegion:
        return MalformedRegion(f"{where}: {msg}")

    if doc.expires_at <= doc.issued_at:
        raise bad(
            f"expires at {_iso(doc.expires_at)}, not after it is issued ({_iso(doc.issued_at)})"
        )
    if not doc.coordinators:
        raise bad("no coordinators")
    if doc.threshold > len(doc.coordinators):
        raise bad(f"threshold {doc.threshold} exceeds the {len(doc.coordinators)} coordinators")
    if len({c.id for c in doc.coordinators}) != len(doc.coordinators):
        raise bad("a coordinator id appears twice")
    if len({c.public_key for c in doc.coordinators}) != len(doc.coordinators):
        raise bad("two coordinators share a public key")
    _check_partners(doc, bad)


def _check_partners(doc: RegionDocument, bad: Callable[[str], MalformedRegion]) -> None:
    seen_partners: set[str] = set()
    seen_keys: set[bytes] = set()
    for p in doc.partners:
        if p.id in RESERVED_IDS:
            raise bad(f"partner id {p.id!r} is reserved")
        if p.id in seen_partners:
            raise bad(f"partner {p.id} appears twice")
        seen_partners.add(p.id)
        for k in p.keys:
            if kid_hex(key_id(k.public_key)) != k.kid:
                raise bad(f"partner {p.id}: kid {k.kid} does not match its public key")
            if k.public_key in seen_keys:
                raise bad(f"partner {p.id}: key {k.kid} appears twice in the document")
            seen_keys.add(k.public_key)
            if k.valid_until is not None and k.valid_until <= k.valid_from:
                raise bad(f"partner {p.id}: key {k.kid} is valid until before it is valid from")
        for pattern in p.publish:
            if not _publishable(doc.region, p.id, pattern):
                raise bad(
                    f"partner {p.id} may not publish on {pattern!r}: a publish subject must be "
                    f"{subjects.PREFIX}.{doc.region}.<kind>.{p.id}[...] (NATS wildcards are "
                    "allowed, except in the partner token)"
                )


def _publishable(region: str, partner_id: str, pattern: str) -> bool:
    tokens = _subject_tokens(pattern)
    return (
        tokens is not None
        and len(tokens) >= 4
        and tokens[0] == subjects.PREFIX
        and tokens[1] == region
        # The partner's own id in the fourth token: the signer must match the subject.
        and tokens[3] == partner_id
    )


# ---------------------------------------------------------------------------------------
# Signed file


class RegionSignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    coordinator: str
    signature: bytes


class _RegionFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    document: msgspec.Raw
    signatures: list[RegionSignature] = []


_FILE_DECODER = msgspec.json.Decoder(_RegionFile)
_DOCUMENT_DECODER = msgspec.json.Decoder(RegionDocument)
_ENCODER = msgspec.json.Encoder()


def _decode_document(data: bytes) -> RegionDocument:
    try:
        return _DOCUMENT_DECODER.decode(data)
    except msgspec.DecodeError as e:
        raise MalformedRegion(f"not a valid region document: {e}") from None


class SignedRegion:
    """A region document as the exact bytes that were signed, and the signatures."""

    __slots__ = ("_document", "_raw", "_signatures")

    def __init__(self, document_bytes: bytes, signatures: Iterable[RegionSignature] = ()) -> None:
        self._raw = bytes(document_bytes)
        self._signatures = tuple(signatures)
        self._document = _decode_document(self._raw)

    @classmethod
    def unsigned(cls, document: RegionDocument) -> SignedRegion:
        """A new document to sign. Indented, so coordinators can read and diff the file."""
        return cls(msgspec.json.format(_ENCODER.encode(document), indent=2))

    @classmethod
    def decode(cls, data: bytes) -> SignedRegion:
        try:
            f = _FILE_DECODER.decode(data)
        except msgspec.DecodeError as e:
            raise MalformedRegion(f"not a signed region file: {e}") from None
        return cls(bytes(f.document), f.signatures)

    def encode(self) -> bytes:
        """The file: the document's bytes embedded verbatim (re-encoding would break them)."""
        sigs = msgspec.json.format(_ENCODER.encode(list(self._signatures)), indent=2)
        return b'{"document": ' + self._raw + b',\n"signatures": ' + sigs + b"}\n"

    @property
    def document(self) -> RegionDocument:
        return self._document

    @property
    def document_bytes(self) -> bytes:
        return self._raw

    @property
    def signatures(self) -> tuple[RegionSignature, ...]:
        return self._signatures

    def signing_input(self) -> bytes:
        return DOMAIN + self._raw

    def with_signatures(self, signatures: Iterable[RegionSignature]) -> SignedRegion:
        new = object.__new__(SignedRegion)
        new._raw, new._document, new._signatures = self._raw, self._document, tuple(signatures)
        return new

    def valid_signers(self, keys: Mapping[str, bytes]) -> set[str]:
        """Ids in `keys` (coordinator id -> public key) with a valid signature here."""
        message = self.signing_input()
        valid: set[str] = set()
        for s in self._signatures:
            public_key = keys.get(s.coordinator)
            if public_key is None or s.coordinator in valid:
                continue
            try:
                verify_signature(public_key, message, s.signature)
            except BadSignature:
                continue
            valid.add(s.coordinator)
        return valid

    def __repr__(self) -> str:
        d = self._document
        return f"SignedRegion({d.region} v{d.version}, {len(self._signatures)} signature(s))"


def sign_region(signed: SignedRegion, coordinator_id: str, key: SigningKey) -> SignedRegion:
    """Add (or replace) `coordinator_id`'s signature.

    A coordinator listed in this version must sign with its listed key. An id that is not
    listed may sign (a coordinator of the previous version signing its own replacement).
    """
    listed = signed.document.coordinator_keys().get(coordinator_id)
    if listed is not None and listed != key.public_key:
        raise InvalidEdit(
            f"coordinator {coordinator_id} is listed with key {kid_hex(key_id(listed))}, "
            f"not {kid_hex(key.kid)}"
        )
    signature = RegionSignature(coordinator_id, key.sign(signed.signing_input()))
    others = [s for s in signed.signatures if s.coordinator != coordinator_id]
    return signed.with_signatures([*others, signature])


def accept(
    candidate: SignedRegion,
    *,
    held: RegionDocument | None,
    trusted_coordinators: Collection[bytes] | None = None,
    now: datetime,
) -> RegionDocument:
    """The candidate's document if this node may take it on; else a RegionProblem.

    See the module docstring for the rule. `trusted_coordinators` only applies to the first
    document (held is None): afterwards, the held document is the anchor.
    """
    _aware(now, "now")
    doc = candidate.document
    name = f"region {doc.region} version {doc.version}"
    if held is not None:
        if doc.region != held.region:
            raise WrongRegion(f"{name} is not for region {held.region}")
        if doc.version <= held.version:
            raise StaleRegion(f"{name} is not newer than the held version {held.version}")
    if doc.issued_at > now + CLOCK_SKEW:
        raise RegionNotYetValid(f"{name} is issued at {_iso(doc.issued_at)}, in the future")
    if now >= doc.expires_at:
        raise RegionExpired(f"{name} expired at {_iso(doc.expires_at)}")
    authority = held if held is not None else doc
    keys = authority.coordinator_keys()
    if held is None and trusted_coordinators is not None:
        trusted = {bytes(k) for k in trusted_coordinators}
        keys = {cid: pk for cid, pk in keys.items() if pk in trusted}
    valid = candidate.valid_signers(keys)
    if len(valid) < authority.threshold:
        whose = (
            f"coordinators of the held version {held.version}"
            if held is not None
            else ("trusted coordinators" if trusted_coordinators is not None else "coordinators")
        )
        not_counted = sorted({s.coordinator for s in candidate.signatures} - valid)
        detail = f"; not counted: {', '.join(not_counted)}" if not_counted else ""
        raise InsufficientSignatures(
            f"{name} carries {len(valid)} valid signature(s) of the {authority.threshold} "
            f"needed from the {whose}{detail}"
        )
    return doc


# ---------------------------------------------------------------------------------------
# Files


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace path with data: readers (and a crash) see the old or the new file, never half.

    Raises OSError; callers convert it to their own error.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load_region(path: Path) -> SignedRegion:
    """Read a signed region file (signatures are checked by `accept`, not here)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RegionFileError(f"region file {path} does not exist") from None
    except OSError as e:
        raise RegionFileError(f"cannot read region file {path}: {e.strerror or e}") from None
    try:
        return SignedRegion.decode(data)
    except MalformedRegion as e:
        raise MalformedRegion(f"{path}: {e}") from None


def save_region(path: Path, signed: SignedRegion) -> None:
    """Atomically write a signed region file (public data, mode 0644)."""
    path = Path(path)
    try:
        _atomic_write(path, signed.encode(), 0o644)
    except OSError as e:
        raise RegionFileError(f"cannot write region file {path}: {e.strerror or e}") from None
