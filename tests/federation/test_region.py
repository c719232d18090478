"""The signed region document: thresholds, acceptance rules, exact bytes, keys, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from handsoff.federation import subjects
from handsoff.federation.errors import FederationError, RegionError
from handsoff.federation.natsconf import load_credentials
from handsoff.federation.region import (
    CLOCK_SKEW,
    Aggregator,
    Coordinator,
    InvalidEdit,
    MalformedRegion,
    PartnerKey,
    RegionDocument,
    RegionFileError,
    RegionProblem,
    RegionSignature,
    SignedRegion,
    accept,
    load_region,
    save_region,
    sign_region,
    subject_matches,
)
from handsoff.keys import SigningKey, key_id, kid_hex
from handsoff.services.cli import main

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
COORDS = {f"c{i}": SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3)}
AGG = SigningKey.from_seed(b"\x09" * 32)
P1, P2, P3 = (SigningKey.from_seed(bytes([0x40 + i]) * 32) for i in (1, 2, 3))
PASS = "a long enough passphrase"


def coordinators(keys: dict[str, SigningKey]) -> list[Coordinator]:
    return [Coordinator(cid, f"Coordinator {cid}", k.public_key) for cid, k in keys.items()]


def base_doc(
    threshold: int = 2, keys: dict[str, SigningKey] | None = None, region: str = "sadc"
) -> RegionDocument:
    doc = RegionDocument(
        region=region,
        version=1,
        issued_at=T0,
        expires_at=T0 + timedelta(days=90),
        threshold=threshold,
        coordinators=coordinators(keys or COORDS),
        aggregator=Aggregator("agg", AGG.public_key),
    )
    doc = doc.add_partner("p1", "Partner One", "BW", P1.public_key, valid_from=T0, issued_at=T0)
    return doc.add_partner("p2", "Partner Two", "ZA", P2.public_key, valid_from=T0, issued_at=T0)


def signed(
    doc: RegionDocument, *signers: str, keys: dict[str, SigningKey] = COORDS
) -> SignedRegion:
    s = SignedRegion.unsigned(doc)
    for cid in signers:
        s = sign_region(s, cid, keys[cid])
    return s


def refused(
    reason: str,
    candidate: SignedRegion,
    held: RegionDocument | None = None,
    now: datetime = NOW,
    trusted: Sequence[bytes] | None = None,
) -> RegionProblem:
    with pytest.raises(RegionProblem) as info:
        accept(candidate, held=held, trusted_coordinators=trusted, now=now)
    assert info.value.reason == reason, info.value
    assert isinstance(info.value, RegionError)
    assert isinstance(info.value, FederationError)
    return info.value


# ---------------------------------------------------------------------------------------
# Signatures and thresholds


def test_two_of_three_is_accepted_one_is_not() -> None:
    doc = base_doc()
    assert accept(signed(doc, "c1", "c2"), held=None, now=NOW) == doc
    assert accept(signed(doc, "c3", "c1", "c2"), held=None, now=NOW) == doc
    e = refused("insufficient_signatures", signed(doc, "c2"))
    assert "1 valid signature(s) of the 2 needed" in str(e)
    refused("insufficient_signatures", signed(doc))


def test_forged_and_unknown_signatures_do_not_count() -> None:
    doc = base_doc()
    good = signed(doc, "c1")
    impostor = SigningKey.from_seed(b"\x77" * 32)
    forged = RegionSignature("c2", impostor.sign(good.signing_input()))  # c2's id, wrong key
    unknown = RegionSignature("c9", impostor.sign(good.signing_input()))  # not a coordinator
    garbage = RegionSignature("c3", b"\x00" * 10)  # malformed: ignored, no crash
    other_doc = RegionSignature("c3", COORDS["c3"].sign(b"hx-region-v1\x00{}"))  # other bytes
    candidate = good.with_signatures([*good.signatures, forged, unknown, garbage, other_doc])
    e = refused("insufficient_signatures", candidate)
    assert "not counted: c2, c3, c9" in str(e)
    # Signing without the domain prefix does not count either.
    bare = RegionSignature("c2", COORDS["c2"].sign(good.document_bytes))
    refused("insufficient_signatures", good.with_signatures([*good.signatures, bare]))


def test_a_repeated_signer_counts_once() -> None:
    doc = base_doc()
    once = signed(doc, "c1")
    twice = once.with_signatures([*once.signatures, *once.signatures])
    refused("insufficient_signatures", twice)
    # Signing again replaces the earlier signature instead of adding one.
    assert len(sign_region(once, "c1", COORDS["c1"]).signatures) == 1
    # A bad entry before a good one for the same id does not block it.
    bad_first = RegionSignature("c2", b"\x01" * 64)
    good = signed(doc, "c1", "c2")
    assert accept(good.with_signatures([bad_first, *good.signatures]), held=None, now=NOW)


def test_sign_refuses_a_key_that_is_not_the_listed_one() -> None:
    with pytest.raises(InvalidEdit, match="listed with key"):
        sign_region(signed(base_doc()), "c1", COORDS["c2"])


def test_trusted_coordinators_pin_the_first_document() -> None:
    doc = base_doc()
    c1, c2, c3 = (COORDS[c].public_key for c in ("c1", "c2", "c3"))
    assert accept(signed(doc, "c1", "c2"), held=None, trusted_coordinators=[c1, c2], now=NOW)
    refused("insufficient_signatures", signed(doc, "c1", "c2"), trusted=[c1, c3])
    # Without a pin, a self-consistent document by strangers would bootstrap a node; with
    # one it does not.
    strangers = {f"s{i}": SigningKey.from_seed(bytes([0x60 + i]) * 32) for i in (1, 2)}
    fake = base_doc(threshold=1, keys=strangers)
    assert accept(signed(fake, "s1", keys=strangers), held=None, now=NOW)
    e = refused("insufficient_signatures", signed(fake, "s1", keys=strangers), trusted=[c1, c2])
    assert "trusted coordinators" in str(e)


# ---------------------------------------------------------------------------------------
# Acceptance rules


def test_stale_versions_are_refused() -> None:
    v1 = base_doc()
    v2 = v1.renew(T0 + timedelta(days=120), issued_at=T0 + timedelta(hours=1))
    assert accept(signed(v2, "c1", "c2"), held=v1, now=NOW) == v2
    refused("stale", signed(v2, "c1", "c2"), held=v2)  # the same version again
    refused("stale", signed(v1, "c1", "c2", "c3"), held=v2)  # an older one
    other = base_doc(region="east")
    refused(
        "wrong_region",
        signed(other.renew(T0 + timedelta(days=9), issued_at=T0), "c1", "c2"),
        held=v2,
    )


def test_expired_and_not_yet_valid() -> None:
    doc = base_doc()
    s = signed(doc, "c1", "c2")
    refused("expired", s, now=doc.expires_at)
    refused("expired", s, now=doc.expires_at + timedelta(seconds=1))
    assert accept(s, held=None, now=doc.expires_at - timedelta(seconds=1))
    assert accept(s, held=None, now=T0 - CLOCK_SKEW)  # a slightly slow clock is fine
    e = refused("not_yet_valid", s, now=T0 - CLOCK_SKEW - timedelta(seconds=1))
    assert "in the future" in str(e)
    with pytest.raises(ValueError, match="timezone-aware"):
        accept(s, held=None, now=datetime(2026, 3, 2))


def test_later_versions_need_the_held_coordinators() -> None:
    v1 = base_doc()  # c1, c2, c3; threshold 2
    newcomers = {f"n{i}": SigningKey.from_seed(bytes([0x50 + i]) * 32) for i in (1, 2)}
    everyone = {**COORDS, **newcomers}
    at = T0 + timedelta(hours=2)
    v2 = v1.set_coordinators(coordinators(newcomers), threshold=1, issued_at=at)
    assert v2.version == v1.version + 1
    # The new coordinators alone cannot take over, nor can one held coordinator help them.
    refused("insufficient_signatures", signed(v2, "n1", "n2", keys=everyone), held=v1)
    e = refused("insufficient_signatures", signed(v2, "n1", "c1", keys=everyone), held=v1)
    assert f"coordinators of the held version {v1.version}" in str(e)
    # A minority of the held coordinators cannot lower the threshold either.
    lowered = v1.set_coordinators(coordinators(COORDS), threshold=1, issued_at=at)
    refused("insufficient_signatures", signed(lowered, "c3"), held=v1)
    # The held threshold, by held coordinators (not listed in v2 any more): accepted.
    assert accept(signed(v2, "c1", "c3", keys=everyone), held=v1, now=NOW) == v2
    # From then on the new set decides, and the old one no longer counts.
    v3 = v2.set_breakdowns("partner", issued_at=at + timedelta(hours=1))
    assert accept(signed(v3, "n2", keys=everyone), held=v2, now=NOW) == v3
    refused("insufficient_signatures", signed(v3, "c1", "c2", "c3"), held=v2)
    # A node still holding v1 cannot jump to v3: it applies v2 first.
    refused("insufficient_signatures", signed(v3, "n2", keys=everyone), held=v1)


def test_signatures_cover_the_exact_bytes(tmp_path: Path) -> None:
    s = signed(base_doc(), "c1", "c2")
    path = tmp_path / "region.json"
    save_region(path, s)
    data = path.read_bytes()
    loaded = load_region(path)
    assert loaded.document_bytes == s.document_bytes
    assert loaded.encode() == data
    assert accept(loaded, held=None, now=NOW) == s.document
    assert oct(path.stat().st_mode & 0o777) == "0o644"

    outer = json.loads(data)
    # The same document, reformatted (compact, other indentation, sorted keys): same
    # meaning, other bytes -- and no valid signature left.
    for reformatted in (
        json.dumps(outer),
        json.dumps(outer, indent=4),
        json.dumps(outer, sort_keys=True, indent=2),
        msgspec.json.format(data, indent=0).decode(),
    ):
        other = SignedRegion.decode(reformatted.encode())
        assert other.document == s.document
        assert other.document_bytes != s.document_bytes
        refused("insufficient_signatures", other)
    # A changed value: likewise.
    tampered = data.replace(b'"breakdowns": "country"', b'"breakdowns": "partner"')
    assert tampered != data
    refused("insufficient_signatures", SignedRegion.decode(tampered))


def test_malformed_files_and_documents(tmp_path: Path) -> None:
    path = tmp_path / "region.json"
    with pytest.raises(RegionFileError, match="does not exist"):
        load_region(path)
    for content in (
        b"not json",
        b'{"signatures": []}',
        b'{"document": "a string", "signatures": []}',
        b'{"document": {"format": "handsoff-region/1"}, "signatures": []}',
    ):
        path.write_bytes(content)
        with pytest.raises(MalformedRegion) as info:
            load_region(path)
        assert info.value.reason == "malformed"
    good = json.loads(SignedRegion.unsigned(base_doc()).document_bytes)

    def broken(**changes: object) -> bytes:
        return json.dumps({"document": {**good, **changes}, "signatures": []}).encode()

    cases = {
        "unknown field": broken(extra=1),
        "threshold 4 exceeds the 3": broken(threshold=4),
        "expires at": broken(expires_at=good["issued_at"]),
        "timezone": broken(issued_at="2026-03-01T08:00:00"),
        "reserved": broken(partners=[{**good["partners"][0], "id": "operator"}]),
        "may not publish": broken(
            partners=[{**good["partners"][0], "publish": ["hx.sadc.events.p2.>"]}]
        ),
        "partner p1 appears twice": broken(partners=[good["partners"][0]] * 2),
        "coordinator id appears twice": broken(coordinators=[good["coordinators"][0]] * 2),
        "share a public key": broken(
            coordinators=[good["coordinators"][0], {**good["coordinators"][0], "id": "cx"}],
            threshold=1,
        ),
    }
    cases["does not match its public key"] = broken(
        partners=[
            {
                **good["partners"][0],
                "keys": [{**good["partners"][0]["keys"][0], "kid": "00" * 8}],
            }
        ]
    )
    for fragment, content in cases.items():
        with pytest.raises(MalformedRegion) as info:
            SignedRegion.decode(content)
        assert info.value.reason == "malformed"
        assert fragment in str(info.value).lower() or fragment == "unknown field", (
            fragment,
            info.value,
        )


# ---------------------------------------------------------------------------------------
# Queries


def test_partner_key_validity_and_revocation() -> None:
    doc = base_doc()
    kid1 = kid_hex(P1.kid)
    assert doc.partner_key("p1", kid1, T0) == P1.public_key
    assert doc.partner_key("p1", kid1.upper(), NOW) == P1.public_key
    assert doc.partner_key("p1", P1.kid, NOW) == P1.public_key

    def reason(partner: str, kid: str, at: datetime) -> str:
        with pytest.raises(RegionProblem) as info:
            d.partner_key(partner, kid, at)
        return info.value.reason

    d = doc
    assert reason("p9", kid1, NOW) == "unknown_partner"
    assert reason("p2", kid1, NOW) == "unknown_key"  # p1's key is not p2's
    assert reason("p1", kid1, T0 - timedelta(seconds=1)) == "key_not_valid"

    # A second key with an end; then p1's first key is revoked.
    rotated_at = T0 + timedelta(days=10)
    until = T0 + timedelta(days=20)
    d = doc.add_partner_key(
        "p1", P3.public_key, valid_from=rotated_at, valid_until=until, issued_at=NOW
    )
    kid3 = kid_hex(P3.kid)
    assert d.partner_key("p1", kid3, rotated_at) == P3.public_key
    assert reason("p1", kid3, rotated_at - timedelta(seconds=1)) == "key_not_valid"
    assert reason("p1", kid3, until) == "key_not_valid"

    revoked_at = T0 + timedelta(days=5)
    d = d.revoke_key("p1", kid1, revoked_at, issued_at=NOW)
    assert d.partner_key("p1", kid1, revoked_at - timedelta(seconds=1)) == P1.public_key
    assert reason("p1", kid1, revoked_at) == "key_revoked"
    assert reason("p1", kid1, NOW + timedelta(days=30)) == "key_revoked"
    with pytest.raises(InvalidEdit, match="already revoked"):
        d.revoke_key("p1", kid1, revoked_at + timedelta(days=1), issued_at=NOW)
    # Moving a revocation earlier (the key was compromised before we knew) is allowed.
    earlier = d.revoke_key("p1", kid1, revoked_at - timedelta(days=1), issued_at=NOW)
    assert earlier.partner("p1").keys[0].revoked_at == revoked_at - timedelta(days=1)
    with pytest.raises(RegionProblem) as info:
        d.revoke_key("p1", "00" * 8, revoked_at)
    assert info.value.reason == "unknown_key"


def test_may_publish_follows_nats_wildcards() -> None:
    doc = base_doc()
    assert doc.partner("p1").publish == [subjects.own_subjects("sadc", "p1")]
    yes = [
        subjects.events("sadc", "p1", "incident-reported"),
        subjects.referral("sadc", "p1", "p2"),
        subjects.checkpoints("sadc", "p1"),
        "hx.sadc.events.p1.a.b.c",
    ]
    no = [
        subjects.events("sadc", "p2", "incident-reported"),  # another partner's
        subjects.referral("sadc", "p2", "p1"),  # a referral *to* p1 is sent by p2
        "hx.sadc.events.p1",  # `>` needs at least one more token
        "hx.other.events.p1.x",  # another region
        "hx.sadc.*.p1.x",  # publishing on a wildcard
        "hx.sadc.events.p1.>",
        "hx.sadc.aggregates.p1.x",  # the aggregator's subjects
        subjects.witness("sadc", "p1"),  # the aggregator's cosignatures of p1's checkpoints
        "hx.sadc.witness.p1.x",
        "hx.sadc..p1.x",
        "",
    ]
    for s in yes:
        assert doc.may_publish("p1", s), s
    for s in no:
        assert not doc.may_publish("p1", s), s
    assert not doc.may_publish("p9", subjects.events("sadc", "p9", "x"))

    assert subject_matches("a.*.c", "a.b.c")
    assert not subject_matches("a.*.c", "a.b.b.c")
    assert not subject_matches("a.*", "a")
    assert subject_matches("a.>", "a.b.c.d")
    assert not subject_matches("a.>", "a")
    assert subject_matches("a.b", "a.b")
    assert not subject_matches("a.b", "a.b.c")
    assert not subject_matches("a.>.c", "a.b.c")  # `>` only at the end


def test_edits_make_a_new_unsigned_version() -> None:
    v = base_doc()
    assert v.version == 3  # 1, then two partners added
    s = signed(v, "c1", "c2")
    edits = [
        v.add_partner("p3", "Partner Three", "NA", P3.public_key, issued_at=NOW),
        v.add_partner_key("p2", P3.public_key, valid_from=NOW, issued_at=NOW),
        v.revoke_key("p1", kid_hex(P1.kid), NOW, issued_at=NOW),
        v.set_breakdowns("partner", issued_at=NOW),
        v.renew(NOW + timedelta(days=365), issued_at=NOW),
    ]
    for new in edits:
        assert new.version == v.version + 1
        assert new.issued_at == NOW
        unsigned = SignedRegion.unsigned(new)
        assert unsigned.signatures == ()
        refused("insufficient_signatures", unsigned, held=v)
        # The old signatures do not carry over to the new bytes.
        refused("insufficient_signatures", unsigned.with_signatures(s.signatures), held=v)
        assert accept(signed(new, "c2", "c3"), held=v, now=NOW) == new
    assert edits[0].partner("p3").publish == ["hx.sadc.*.p3.>"]
    assert edits[0].partner("p3").keys[0].kid == kid_hex(key_id(P3.public_key))
    assert edits[3].breakdowns == "partner"

    for bad, match in [
        (lambda: v.add_partner("p1", "Again", "BW", P3.public_key), "already in region"),
        (lambda: v.add_partner("operator", "Ops", "BW", P3.public_key, issued_at=NOW), "reserved"),
        (lambda: v.add_partner("Bad Id", "X", "BW", P3.public_key), "subject token"),
        (lambda: v.add_partner("p3", "X", "bw", P3.public_key), "country"),
        (lambda: v.add_partner("p3", "X", "BW", P1.public_key, issued_at=NOW), "appears twice"),
        (lambda: v.add_partner("p3", "X", "BW", b"short"), "32 bytes"),
        (lambda: v.add_partner("p3", "X", "BW", P3.public_key), "not after it is issued"),
        (lambda: v.renew(T0 - timedelta(days=1), issued_at=T0), "not after it is issued"),
        (lambda: v.set_coordinators(coordinators(COORDS), 4, issued_at=NOW), "threshold"),
        (
            lambda: v.add_partner(
                "p3", "X", "BW", P3.public_key, publish=["hx.sadc.*.p1.>"], issued_at=NOW
            ),
            "may not publish",
        ),
    ]:
        with pytest.raises(InvalidEdit, match=match):
            bad()


def test_partner_key_struct_rejects_naive_times() -> None:
    with pytest.raises(msgspec.ValidationError, match="Expected `datetime` with a timezone"):
        msgspec.convert(
            {
                "kid": kid_hex(P1.kid),
                "public_key": P1.public_key,
                "valid_from": "2026-03-01T00:00:00",
            },
            PartnerKey,
        )


# ---------------------------------------------------------------------------------------
# The CLI, in process


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return out


def error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert err.startswith("handsoff: error: ")
    assert err.count("\n") == 1, err
    return err


def test_cli_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDSOFF_PASSPHRASE", PASS)
    monkeypatch.delenv("HANDSOFF_PASSPHRASE_FILE", raising=False)
    f = str(tmp_path / "region.json")

    # Three coordinators make their keys.
    keys = {}
    for cid in ("c1", "c2", "c3"):
        out = ok(
            capsys,
            *("region", "coordinator-key", "--out", str(tmp_path / f"{cid}.key")),
            *("--kdf", "interactive"),
        )
        keys[cid] = out.strip()
        assert len(bytes.fromhex(keys[cid])) == 32
        assert oct((tmp_path / f"{cid}.key").stat().st_mode & 0o777) == "0o600"
    assert "exists" in error(capsys, "region", "coordinator-key", "--out", str(tmp_path / "c1.key"))

    ok(
        capsys,
        *("region", "init", "--file", f, "--region", "sadc", "--threshold", "2"),
        *(a for cid, k in keys.items() for a in ("--coordinator", f"{cid}={k}")),
        *("--aggregator", f"agg={AGG.public_key.hex()}", "--expires-days", "30"),
    )
    assert "exists" in error(
        capsys,
        *("region", "init", "--file", f, "--region", "sadc", "--threshold", "1"),
        *("--coordinator", f"c1={keys['c1']}", "--aggregator", f"agg={keys['c1']}"),
    )

    # Partner one is a real node: its key comes from `handsoff node keys show`.
    node = tmp_path / "node"
    ok(
        capsys,
        *("node", "init", "--dir", str(node), "--partner", "p1", "--country", "BW"),
        *("--kdf", "interactive"),
    )
    shown = ok(capsys, "node", "keys", "show", "--dir", str(node)).splitlines()
    node_kid, node_key = shown[1].split()[:2]
    partners = [
        ("p1", "Partner One", "BW", node_key),
        ("p2", "Partner Two", "ZA", P2.public_key.hex()),
    ]
    partners.append(("p3", "Partner Three", "NA", P3.public_key.hex()))
    for pid, name, country, key in partners:
        out = ok(
            capsys,
            *("region", "add-partner", "--file", f, "--partner", pid, "--name", name),
            *("--country", country, "--key", key),
        )
        assert "unsigned" in out
    assert load_region(Path(f)).document.partner("p1").keys[0].kid == node_kid
    assert "already in region" in error(
        capsys,
        *("region", "add-partner", "--file", f, "--partner", "p2", "--name", "X"),
        *("--country", "ZA", "--key", P3.public_key.hex()),
    )
    assert "not hex" in error(
        capsys,
        *("region", "add-partner", "--file", f, "--partner", "p4", "--name", "X"),
        *("--country", "ZA", "--key", "zz"),
    )

    out_dir = tmp_path / "nats"
    nats_config = ("region", "nats-config", "--file", f, "--out", str(out_dir), "--port", "14999")
    assert "0 valid signature(s) of the 2 needed" in error(capsys, *nats_config)
    assert not out_dir.exists()

    def sign(cid: str, key_file: str | None = None) -> str:
        return ok(
            capsys,
            *("region", "sign", "--file", f, "--coordinator", cid),
            *("--key-file", key_file or str(tmp_path / f"{cid}.key")),
        )

    assert "1 of 2 needed" in sign("c1")
    assert "listed with key" in error(
        capsys,
        *("region", "sign", "--file", f, "--coordinator", "c2"),
        *("--key-file", str(tmp_path / "c3.key")),
    )
    assert "1 valid signature(s) of the 2 needed" in error(capsys, *nats_config)
    assert "2 of 2 needed" in sign("c3")

    out = ok(capsys, "region", "show", "--file", f)
    assert "region sadc version 4" in out
    assert "signatures: 2 valid of 2 needed (signed)" in out
    assert f"key {node_kid}  valid from" in out
    view = msgspec.json.decode(ok(capsys, "region", "show", "--file", f, "--json"))
    assert view["signed"] is True
    assert view["valid_signatures"] == 2
    assert [p["id"] for p in view["partners"]] == ["p1", "p2", "p3"]
    assert view["coordinators"] == keys
    assert view["version_grace_hours"] == 24  # `region init`'s default
    assert "messages under earlier versions accepted for 24 h" in out

    out = ok(capsys, *nats_config)
    assert "region sadc version 4 (3 partner(s))" in out
    conf, creds = out_dir / "nats-server.conf", out_dir / "credentials.json"
    for written in (conf, creds):
        assert oct(written.stat().st_mode & 0o777) == "0o600"
    credentials = load_credentials(creds)
    assert sorted(credentials.users) == ["aggregator", "operator", "p1", "p2", "p3"]
    for password in credentials.users.values():
        assert f'password: "{password}"' in conf.read_text()
    binary = Path(sys.executable).with_name("nats-server")
    check = subprocess.run(
        [str(binary), "-t", "-c", str(conf)], check=False, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stderr

    # A revocation is a new version: refused until the held version's coordinators sign it.
    held = tmp_path / "deployed.json"
    held.write_bytes(Path(f).read_bytes())
    ok(capsys, "region", "revoke-key", "--file", f, "--partner", "p2", "--kid", kid_hex(P2.kid))
    with_held = (*nats_config, "--held", str(held))
    assert "0 valid signature(s) of the 2 needed from the coordinators of the held" in error(
        capsys, *with_held
    )
    sign("c2")
    sign("c1")
    ok(capsys, *with_held)
    again = load_credentials(creds)
    assert again.users == credentials.users  # passwords are kept
    assert "is not newer than the held version 5" in error(
        capsys, *nats_config[:3], str(held), *nats_config[4:], "--held", f
    )

    # The grace for messages under earlier versions is a signed edit like any other.
    assert "0 to 2160 hours, not 3000" in error(
        capsys, "region", "set-version-grace", "--file", f, "--hours", "3000"
    )
    assert load_region(Path(f)).document.version == 5
    out = ok(capsys, "region", "set-version-grace", "--file", f, "--hours", "72")
    assert "accepted for 72 h" in out
    edited = load_region(Path(f)).document
    assert (edited.version, edited.version_grace_hours) == (6, 72)
    sign("c1")
    sign("c2")

    # Pinning coordinators for a first deployment.
    assert "trusted coordinators" in error(capsys, *nats_config, "--trust-coordinator", keys["c1"])
    ok(capsys, *nats_config, "--trust-coordinator", keys["c1"], "--trust-coordinator", keys["c2"])

    monkeypatch.setenv("HANDSOFF_PASSPHRASE", "not the passphrase")
    assert "wrong passphrase" in error(
        capsys,
        *("region", "sign", "--file", f, "--coordinator", "c1"),
        *("--key-file", str(tmp_path / "c1.key")),
    )
    assert "does not exist" in error(capsys, "region", "show", "--file", str(tmp_path / "no"))


def test_current_key_is_the_newest_valid_never_a_revoked_one() -> None:
    doc = base_doc()
    assert doc.current_key("p1", NOW) == P1.public_key
    rotated_at = T0 + timedelta(days=10)
    d = doc.add_partner_key("p1", P3.public_key, valid_from=rotated_at, issued_at=NOW)
    assert d.current_key("p1", rotated_at - timedelta(seconds=1)) == P1.public_key
    assert d.current_key("p1", rotated_at) == P3.public_key  # the newest
    # The newest key revoked (compromised): encrypt for the older one still valid.
    d = d.revoke_key("p1", kid_hex(P3.kid), rotated_at + timedelta(days=1), issued_at=NOW)
    assert d.current_key("p1", rotated_at + timedelta(days=2)) == P1.public_key
    # No valid key at all: refused, naming why.
    d = d.revoke_key("p1", kid_hex(P1.kid), rotated_at + timedelta(days=1), issued_at=NOW)
    with pytest.raises(RegionProblem) as info:
        d.current_key("p1", rotated_at + timedelta(days=2))
    assert info.value.reason == "key_not_valid"
