"""A tamper campaign: 1,000 random tamperings of copies of a node log, the region stream and
an export bundle. Every one is detected, with the reason its kind calls for.

The region's tail after its last release is covered by the node checkpoints (issue #6,
checkpoints.py), not by releases: stream tamperings here pick messages a release covers.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import msgspec
import pytest

from aggregator_support import Region, make_region
from handsoff.federation import statements, subjects
from handsoff.federation.checkpoints import make_checkpoint, read_checkpoint, sign_checkpoint
from handsoff.federation.envelope import KID, MSG_ID, REGION_VERSION, SIGNATURE, signing_input
from handsoff.federation.region import SignedRegion
from handsoff.federation.statements import AggregateStatement
from handsoff.keys import SigningKey, load_keyring
from handsoff.services.aggregator.service import AggregatorPaths, take_region
from handsoff.services.auditor.bundle import Bundle, audit_bundle, new_bundle, sign_bundle
from handsoff.services.auditor.region import StreamMessage, audit_messages, read_streams
from handsoff.services.auditor.report import AuditReport
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import NodePaths, load_config
from handsoff.services.node.sealing import link_digest, unseal
from handsoff.services.node.verify import verify_node

SEED = 20261129
STREAM_TRIALS, BUNDLE_TRIALS, NODE_TRIALS = 450, 300, 250  # 1,000 in all
WORKER = Path(__file__).parents[1] / "aggregator" / "aggregator_worker.py"



# --- the region stream ------------------------------------------------------------------


class World:
    def __init__(self, region: Region, revoked: SigningKey, events: list[StreamMessage],
                 aggregates: list[StreamMessage], checkpoints: list[StreamMessage]) -> None:
        self.region, self.revoked = region, revoked
        self.events, self.aggregates, self.checkpoints = events, aggregates, checkpoints
        self.doc = region.document
        self.signers = {n.config.partner: n.signer for n in region.nodes}
        # the statements (the aggregates stream also holds the region version announced)
        self.statements = [
            i for i, m in enumerate(aggregates) if not subjects.is_region_taken(m.subject)
        ]
        assert len(self.statements) < len(aggregates)
        last = max(
            statements.verify(aggregates[i].data, self.doc).inputs.last_seq
            for i in self.statements
        )
        self.covered = [i for i, m in enumerate(events) if m.seq <= last]


def resign(m: StreamMessage, key: SigningKey, version: int | None = None) -> StreamMessage:
    headers = dict(m.headers)
    v = int(headers[REGION_VERSION]) if version is None else version
    headers[REGION_VERSION] = str(v)
    headers[KID] = key.kid.hex()
    headers[SIGNATURE] = key.sign(signing_input(m.subject, headers[MSG_ID], v, m.data)).hex()
    return replace(m, headers=headers)


Tamper = Callable[
    [random.Random, World, list[StreamMessage], list[StreamMessage], list[StreamMessage]], None
]


def edit_payload(rng: random.Random, w: World, ev: list[StreamMessage],
                 ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    i = rng.choice(w.covered)
    data = bytearray(ev[i].data)
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    ev[i] = replace(ev[i], data=bytes(data))


def edit_signature(rng: random.Random, w: World, ev: list[StreamMessage],
                   ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    i = rng.choice(w.covered)
    headers = dict(ev[i].headers)
    sig = bytearray(bytes.fromhex(headers[SIGNATURE]))
    sig[rng.randrange(64)] ^= 1 << rng.randrange(8)
    headers[SIGNATURE] = sig.hex()
    ev[i] = replace(ev[i], headers=headers)


def delete(rng: random.Random, w: World, ev: list[StreamMessage],
           ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    """A message in the middle: the ones after it remain."""
    del ev[rng.choice(w.covered[:-1])]


def truncate(rng: random.Random, w: World, ev: list[StreamMessage],
             ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    """The newest messages, down to inside what the last release covers."""
    del ev[rng.choice(w.covered[1:]):]


def insert_forged(rng: random.Random, w: World, ev: list[StreamMessage],
                  ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    i = rng.choice(w.covered)
    forged = resign(ev[rng.randrange(len(ev))], SigningKey.generate())
    ev.insert(i, replace(forged, seq=ev[i].seq, time=ev[i].time))
    for j in range(i + 1, len(ev)):
        ev[j] = replace(ev[j], seq=ev[j].seq + 1)


def reorder(rng: random.Random, w: World, ev: list[StreamMessage],
            ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    i, j = sorted(rng.sample(w.covered, 2))
    ev[i], ev[j] = ev[j], ev[i]


def resign_revoked(rng: random.Random, w: World, ev: list[StreamMessage],
                   ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    i = rng.choice([i for i in w.covered if ev[i].headers[MSG_ID].startswith("p1:")])
    ev[i] = resign(ev[i], w.revoked)


def resign_foreign(rng: random.Random, w: World, ev: list[StreamMessage],
                   ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    i = rng.choice(w.covered)
    ev[i] = resign(ev[i], SigningKey.generate())


def stale_membership(rng: random.Random, w: World, ev: list[StreamMessage],
                     ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    i = rng.choice(w.covered)
    partner = ev[i].headers[MSG_ID].split(":")[0]
    ev[i] = resign(ev[i], w.signers[partner], version=w.doc.version - 1)


def _altered_statement(rng: random.Random, w: World, raw: bytes) -> AggregateStatement:
    s = statements.verify(raw, w.doc)
    if s.tables:
        k = rng.randrange(len(s.tables))
        t = s.tables[k]
        total = t.total + 1 if isinstance(t.total, int) else 1
        tables = list(s.tables)
        tables[k] = msgspec.structs.replace(t, total=total)
        return msgspec.structs.replace(s, tables=tuple(tables))
    return msgspec.structs.replace(s, k=s.k + 1)


def alter_statement(rng: random.Random, w: World, ev: list[StreamMessage],
                    ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    """A figure changed and signed again with the aggregator's own key."""
    i = rng.choice(w.statements)
    forged = statements.sign(_altered_statement(rng, w, ag[i].data), w.region.aggregator_key)
    ag[i] = replace(ag[i], data=forged)


def forge_statement(rng: random.Random, w: World, ev: list[StreamMessage],
                    ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    """A figure changed without the aggregator's key (the old signature kept)."""
    i = rng.choice(w.statements)
    s = _altered_statement(rng, w, ag[i].data)
    wrapper = msgspec.json.decode(ag[i].data)
    wrapper["statement"] = msgspec.to_builtins(s)
    ag[i] = replace(ag[i], data=msgspec.json.encode(wrapper))


def rewrite_checkpoint(rng: random.Random, w: World, ev: list[StreamMessage],
                       ag: list[StreamMessage], cp: list[StreamMessage]) -> None:
    """A partner re-signs a checkpoint over history other than what it published."""
    i = rng.choice([i for i, m in enumerate(cp) if ".checkpoints." in m.subject])
    old = read_checkpoint(cp[i].data)
    forged = make_checkpoint(
        old.region, old.partner, old.size, bytes(rng.randrange(256) for _ in range(32)), 0, []
    )
    cp[i] = replace(cp[i], data=sign_checkpoint(forged, w.signers[old.partner]))


# kind -> (tamper, (check, reason) that must be among the findings)
STREAM_KINDS: dict[str, tuple[Tamper, tuple[str, str]]] = {
    "edit": (edit_payload, ("signatures", "bad_signature")),
    "edit-signature": (edit_signature, ("signatures", "bad_signature")),
    "delete": (delete, ("sequence", "gap")),
    "truncate": (truncate, ("releases", "inputs")),
    "insert": (insert_forged, ("signatures", "unknown_key")),
    "reorder": (reorder, ("sequence", "order")),
    "revoked-key": (resign_revoked, ("signatures", "key_revoked")),
    "foreign-key": (resign_foreign, ("signatures", "unknown_key")),
    "stale-membership": (stale_membership, ("signatures", "stale_region")),
    "altered-statement": (alter_statement, ("releases", "release_mismatch")),
    "forged-statement": (forge_statement, ("statements", "bad_signature")),
    "rewritten-checkpoint": (rewrite_checkpoint, ("checkpoints", "mismatch")),
}


def findings(report: AuditReport) -> set[tuple[str, str]]:
    return {(f.check, f.reason) for f in report.findings if f.severity == "error"}


def stream_campaign(w: World, rng: random.Random, trials: int) -> Counter[str]:
    done: Counter[str] = Counter()
    kinds = sorted(STREAM_KINDS)
    for n in range(trials):
        kind = kinds[n % len(kinds)]
        tamper, expected = STREAM_KINDS[kind]
        ev, ag, cp = list(w.events), list(w.aggregates), list(w.checkpoints)
        tamper(rng, w, ev, ag, cp)
        report = audit_messages(w.doc, ev, ag, checkpoints=cp)
        assert not report.ok, f"stream trial {n} ({kind}) went undetected"
        assert expected in findings(report), (kind, report.findings)
        done[kind] += 1
    return done


# --- the bundle -------------------------------------------------------------------------


def bundle_campaign(w: World, rng: random.Random, trials: int) -> Counter[str]:
    signed_region = SignedRegion.decode(w.region.region_file.read_bytes())
    clean = new_bundle(signed_region, w.events, w.aggregates, w.checkpoints)
    key = w.region.aggregator_key
    assert audit_bundle(sign_bundle(clean, key)).ok
    done: Counter[str] = Counter()
    kinds = [*sorted(STREAM_KINDS), "unsigned-edit", "foreign-exporter", "region-swapped"]
    for n in range(trials):
        kind = kinds[n % len(kinds)]
        ev, ag, cp = list(w.events), list(w.aggregates), list(w.checkpoints)
        if kind in STREAM_KINDS:  # a dishonest exporter: content changed, bundle re-signed
            tamper, expected = STREAM_KINDS[kind]
            tamper(rng, w, ev, ag, cp)
            data = sign_bundle(new_bundle(signed_region, ev, ag, cp), key)
        elif kind == "unsigned-edit":
            data = bytearray(sign_bundle(clean, key))
            at = data.index(b'"events"') + rng.randrange(200, 2000)
            data[at] = ord("A") if data[at] != ord("A") else ord("B")
            data, expected = bytes(data), ("bundle", "bad_signature")
        elif kind == "foreign-exporter":
            data, expected = sign_bundle(clean, SigningKey.generate()), ("bundle", "unknown_key")
        else:  # the region document inside loses its coordinators' signatures (and the
            # announcement carrying the signed document is left out)
            unsigned = SignedRegion(signed_region.document_bytes)
            bundle = msgspec.structs.replace(
                clean,
                region=unsigned.encode().decode(),
                statements=[m for m in clean.statements if not subjects.is_region_taken(m.subject)],
            )
            data = sign_bundle(bundle, key)
            expected = ("membership", "insufficient_signatures")
        report = audit_bundle(data)
        assert not report.ok, f"bundle trial {n} ({kind}) went undetected"
        found = findings(report)
        # An edit inside the signed bytes may also break the bundle's own structure.
        broken = kind == "unsigned-edit" and ("bundle", "malformed") in found
        assert expected in found or broken, (kind, report.findings)
        done[kind] += 1
    return done


# --- the node log -----------------------------------------------------------------------


def _rows(db: sqlite3.Connection) -> list[tuple[int, str, int, str, bytes]]:
    return db.execute(
        "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
    ).fetchall()


def node_campaign(node_dir: Path, tmp: Path, rng: random.Random, trials: int) -> Counter[str]:
    config = load_config(NodePaths(node_dir))
    keyring = load_keyring(NodePaths(node_dir).keyring)
    intruder = SigningKey.generate()
    done: Counter[str] = Counter()
    kinds = ["edit", "delete", "swap", "insert", "foreign-key"]
    expected = {
        "edit": "signature does not verify",
        "delete": "missing",
        "swap": "signature does not verify",
        "insert": "signature does not verify",
        "foreign-key": "not in the node's keyring",
    }
    for n in range(trials):
        kind = kinds[n % len(kinds)]
        copy = tmp / f"node-{n}"
        shutil.copytree(node_dir, copy)
        with sqlite3.connect(copy / "data" / "cases.sqlite") as db:
            rows = _rows(db)
            by_case: dict[str, list[tuple[int, str, int, str, bytes]]] = {}
            for r in rows:
                by_case.setdefault(r[1], []).append(r)
            long = [sorted(v, key=lambda r: r[2]) for v in by_case.values() if len(v) >= 3]
            case = rng.choice(long)
            rowid, cid, version, topic, state = case[rng.randrange(len(case) - 1)]
            if kind == "edit":
                b = bytearray(state)
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (bytes(b), rowid))
            elif kind == "delete":  # a middle event: a later one of the case remains
                middle = case[rng.randrange(1, len(case) - 1)]
                db.execute("DELETE FROM stored_events WHERE rowid=?", (middle[0],))
            elif kind == "swap":
                other = case[version]  # the next event of the same case
                db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (other[4], rowid))
                db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (state, other[0]))
            elif kind == "insert":  # an event copied into another case as its next version
                target = rng.choice([c for c in long if c[0][1] != cid])
                last = target[-1][2]
                db.execute(
                    "INSERT INTO stored_events VALUES (?, ?, ?, ?)",
                    (target[0][1], last + 1, topic, state),
                )
            else:
                s = unseal(state, "campaign")
                link = link_digest(s.prev, UUID(cid), version, topic, s.body)
                forged = b"\x01" + intruder.kid + s.prev + intruder.sign(link) + s.body
                db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (forged, rowid))
        report = verify_node(config, copy / "data", keyring)
        assert not report.intact, f"node trial {n} ({kind}) went undetected"
        failures = " ".join(log.failure or "" for log in report.logs)
        assert expected[kind] in failures, (kind, failures)
        shutil.rmtree(copy)
        done[kind] += 1
    return done


async def test_a_thousand_tamperings_are_all_detected(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    revoked = SigningKey.generate()
    region = await make_region(tmp_path, nats_server.url, stories=10, revoked=revoked)
    try:
        take_region(AggregatorPaths(region.aggregator_dir), region.region_file)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(WORKER), str(region.aggregator_dir), region.url, "none", "0"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        import nats

        nc = await nats.connect(region.url)
        try:
            events, aggregates, checkpoints = await read_streams(nc.jetstream(), "sadc")
        finally:
            await nc.close()
        w = World(region, revoked, events, aggregates, checkpoints)
        assert sum(".checkpoints." in m.subject for m in checkpoints) >= 3
        clean = audit_messages(w.doc, events, aggregates, checkpoints=checkpoints)
        assert clean.ok, clean.findings  # the untouched copy is clean
        rng = random.Random(SEED)
        stream = stream_campaign(w, rng, STREAM_TRIALS)
        bundle = bundle_campaign(w, rng, BUNDLE_TRIALS)
        node_dir = region.nodes[0].paths.root
        region.nodes[0].close()
        node = await asyncio.to_thread(node_campaign, node_dir, tmp_path, rng, NODE_TRIALS)
        assert sum(stream.values()) + sum(bundle.values()) + sum(node.values()) == 1000
        print({"stream": dict(stream), "bundle": dict(bundle), "node": dict(node)})
    finally:
        region.close()


def test_bundle_type_is_strict() -> None:
    other = (
        b'{"format": "other", "region": "", "exported_at": "2026-01-01T00:00:00Z",'
        b' "events": [], "statements": []}'
    )
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(other, type=Bundle)
