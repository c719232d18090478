"""The per-message checks of a region replay that need nothing but the message and the
region's keys: run in the replay itself, or in worker processes (parallel.py), which is why
this module imports only the federation's wire formats (a worker starts in a fraction of a
second).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from handsoff.federation import envelope
from handsoff.federation.checkpoints import published_leaf, published_leaf_of
from handsoff.federation.errors import EnvelopeRejected
from handsoff.federation.history import RegionHistory


class Examined(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What the replay needs of one message before folding it (flat: millions of these
    cross from the workers).

    reason, detail  why the envelope was rejected (headers, membership, key validity,
                    signature: envelope.check_envelope); "" when it verified
    partner, number the partner and message number it stands for: of the verified
                    envelope, else of its published leaf ("", 0 if none)
    leaf            its leaf hash in that partner's published log (checkpoints.py), or None
                    if it stands for none

    The payload is decoded where it is folded (envelope.open_payload): msgpack would carry
    the decoded event back no cheaper than decoding its JSON again.
    """

    reason: str
    detail: str
    partner: str
    number: int
    leaf: bytes | None

    def checked(self, msg_id: str) -> envelope.Checked:
        return envelope.Checked(self.partner, msg_id, self.number)


def examine(
    keys: envelope.KeyDirectory | RegionHistory,
    subject: str,
    headers: Mapping[str, str] | None,
    data: bytes,
    at: datetime,
    seq: int = 0,
) -> Examined:
    """`keys`: a RegionHistory judges the message (events stream sequence `seq`, stored at
    `at`) by the version the aggregator announced for it, else the one in force at `at`."""
    if isinstance(keys, RegionHistory):
        keys = keys.keys_for(seq, at)
    try:
        checked = envelope.check_envelope(keys, subject, headers, data, at)
    except EnvelopeRejected as e:
        published = published_leaf(subject, headers, data)
        if published is None:
            return Examined(e.reason, str(e), "", 0, None)
        return Examined(e.reason, str(e), *published)
    published = published_leaf_of(checked, subject, headers or {}, data)
    return Examined("", "", checked.partner, checked.number, published and published.leaf)


# --- the worker side of parallel.py ---------------------------------------------------------

# subject, headers, data, stream time, stream sequence
Message = tuple[str, dict[str, str], bytes, datetime, int]


def serve(connection: object, region_json: bytes) -> None:
    """A worker process: chunks of messages in (msgpack), what `examine` found out, in the
    same order; an empty chunk or a closed pipe ends it."""
    from multiprocessing.connection import Connection

    assert isinstance(connection, Connection)
    keys = RegionHistory.decode(region_json)
    messages = msgspec.msgpack.Decoder(list[Message])
    encode = msgspec.msgpack.Encoder().encode
    while True:
        try:
            raw = connection.recv_bytes()
        except EOFError:
            return
        if not raw:
            return
        found = [examine(keys, s, h, d, at, seq) for s, h, d, at, seq in messages.decode(raw)]
        connection.send_bytes(encode(found))
