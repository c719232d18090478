"""The node's encrypted key file, NodeSecrets and passphrase_from_env."""

from __future__ import annotations

import base64
import inspect
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nacl.pwhash.argon2id as argon2id
import pytest
from nacl.secret import SecretBox

from handsoff.keys import (
    KdfStrength,
    KeyFileError,
    KeysError,
    NodeSecrets,
    PassphraseMissing,
    SigningKey,
    kid_hex,
    passphrase_from_env,
    read_key_file,
    write_key_file,
)

PASS = b"correct horse battery staple"
FAST = KdfStrength.INTERACTIVE


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeSecrets, bytes]:
    """One key file for the module: each argon2id run costs ~0.1 s."""
    secrets = NodeSecrets.generate()
    path = tmp_path_factory.mktemp("keyfile") / "node.key"
    write_key_file(path, secrets, PASS, FAST)
    return secrets, path.read_bytes()


@pytest.fixture
def secrets(written: tuple[NodeSecrets, bytes]) -> NodeSecrets:
    return written[0]


@pytest.fixture
def key_file(tmp_path: Path, written: tuple[NodeSecrets, bytes]) -> Path:
    path = tmp_path / "node.key"
    path.write_bytes(written[1])
    return path


def _header(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_bytes())
    return data


def _rewrite(path: Path, **fields: object) -> None:
    path.write_text(json.dumps({**_header(path), **fields}))


# --- round trip and file format -------------------------------------------------------------


def test_round_trip(key_file: Path, secrets: NodeSecrets) -> None:
    back = read_key_file(key_file, PASS)
    assert back == secrets
    assert back.signing_key() == secrets.signing_key()


def test_file_format_and_no_plaintext(key_file: Path, secrets: NodeSecrets) -> None:
    header = _header(key_file)
    ops, mem = FAST.limits
    assert header["format"] == "handsoff-keyfile/1"
    assert header["kdf"] == "argon2id"
    assert (header["opslimit"], header["memlimit"]) == (ops, mem)
    assert len(base64.b64decode(str(header["salt"]))) == argon2id.SALTBYTES
    raw = key_file.read_bytes()
    for secret in (secrets.signing_seed, secrets.data_key, secrets.pseudonym_key):
        assert secret not in raw
        assert base64.b64encode(secret)[:16] not in raw
    assert PASS not in raw


def test_each_write_uses_a_fresh_salt(tmp_path: Path, secrets: NodeSecrets) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_key_file(a, secrets, PASS, FAST)
    write_key_file(b, secrets, PASS, FAST)
    assert _header(a)["salt"] != _header(b)["salt"]
    assert _header(a)["box"] != _header(b)["box"]


def test_kdf_strengths() -> None:
    assert KdfStrength.INTERACTIVE.limits == (
        argon2id.OPSLIMIT_INTERACTIVE,
        argon2id.MEMLIMIT_INTERACTIVE,
    )
    assert KdfStrength.MODERATE.limits == (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
    assert KdfStrength.SENSITIVE.limits == (
        argon2id.OPSLIMIT_SENSITIVE,
        argon2id.MEMLIMIT_SENSITIVE,
    )
    assert KdfStrength("moderate") is KdfStrength.MODERATE
    default = inspect.signature(write_key_file).parameters["strength"].default
    assert default is KdfStrength.MODERATE


def test_unknown_strength_refused(tmp_path: Path, secrets: NodeSecrets) -> None:
    with pytest.raises(KeyFileError, match="strength"):
        write_key_file(tmp_path / "k", secrets, PASS, "weak")  # type: ignore[arg-type]


# --- wrong passphrase, corruption -----------------------------------------------------------


def test_wrong_passphrase(key_file: Path) -> None:
    wrong = b"correct horse battery stapler"
    with pytest.raises(KeyFileError) as info:
        read_key_file(key_file, wrong)
    msg = str(info.value)
    assert msg == f"wrong passphrase or corrupted key file {key_file}"
    for pw in (wrong, PASS):
        assert pw.decode() not in msg
        assert pw.decode() not in repr(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("field", ["box", "salt"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_in_ciphertext_or_salt(key_file: Path, field: str, where: str) -> None:
    value = bytearray(base64.b64decode(str(_header(key_file)[field])))
    i = {"first": 0, "middle": len(value) // 2, "last": len(value) - 1}[where]
    value[i] ^= 0x80
    _rewrite(key_file, **{field: base64.b64encode(value).decode()})
    with pytest.raises(KeyFileError, match="wrong passphrase or corrupted"):
        read_key_file(key_file, PASS)


@pytest.mark.parametrize(
    "change",
    [
        {"opslimit": argon2id.OPSLIMIT_INTERACTIVE + 1},
        {"memlimit": argon2id.MEMLIMIT_INTERACTIVE * 2},
    ],
)
def test_changed_kdf_limits_fail_decryption(key_file: Path, change: dict[str, int]) -> None:
    # The limits are not signed, but they feed the key derivation.
    _rewrite(key_file, **change)
    with pytest.raises(KeyFileError, match="wrong passphrase or corrupted"):
        read_key_file(key_file, PASS)


def test_one_byte_flipped_in_the_raw_file(key_file: Path) -> None:
    raw = bytearray(key_file.read_bytes())
    raw[len(raw) // 2] ^= 0x04  # lands in the base64 of the box
    key_file.write_bytes(raw)
    with pytest.raises(KeyFileError, match=r"corrupted key file|not a valid"):
        read_key_file(key_file, PASS)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a valid handsoff key file"),
        (b"{", "not a valid handsoff key file"),
        (b"[]", "not a valid handsoff key file"),
        (b'{"format": "handsoff-keyfile/2"}', "not a valid handsoff key file"),
    ],
)
def test_malformed_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match):
        read_key_file(path, PASS)


@pytest.mark.parametrize(
    "change",
    [
        {"format": "handsoff-keyfile/2"},
        {"kdf": "scrypt"},
        {"memlimit": 2**40},  # would need 1 TiB: must be refused before deriving
        {"opslimit": 0},
        {"salt": base64.b64encode(b"short").decode()},
        {"box": base64.b64encode(b"short").decode()},
        {"box": "not base64!"},
        {"extra": 1},
    ],
)
def test_bad_header_fields(key_file: Path, change: dict[str, object]) -> None:
    _rewrite(key_file, **change)
    with pytest.raises(KeyFileError, match="not a valid handsoff key file"):
        read_key_file(key_file, PASS)


def test_authentic_but_invalid_content(tmp_path: Path) -> None:
    # A box that decrypts fine but holds no NodeSecrets (e.g. another version wrote it).
    salt = b"\x07" * argon2id.SALTBYTES
    ops, mem = FAST.limits
    key = argon2id.kdf(SecretBox.KEY_SIZE, PASS, salt, opslimit=ops, memlimit=mem)
    box = SecretBox(key).encrypt(msgspec.msgpack.encode({"signing_seed": b"\0" * 31}))
    path = tmp_path / "k"
    path.write_bytes(
        msgspec.json.encode(
            {
                "format": "handsoff-keyfile/1",
                "kdf": "argon2id",
                "opslimit": ops,
                "memlimit": mem,
                "salt": salt,
                "box": bytes(box),
            }
        )
    )
    with pytest.raises(KeyFileError, match="holds no valid node secrets"):
        read_key_file(path, PASS)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError, match=f"{path} does not exist"):
        read_key_file(path, PASS)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        read_key_file(tmp_path, PASS)


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("passphrase", [b"", b"1234567"])
def test_short_passphrase_refused(tmp_path: Path, secrets: NodeSecrets, passphrase: bytes) -> None:
    path = tmp_path / "k"
    with pytest.raises(KeyFileError, match="at least 8 bytes"):
        write_key_file(path, secrets, passphrase, FAST)
    assert not path.exists()


def test_eight_byte_passphrase_accepted(tmp_path: Path, secrets: NodeSecrets) -> None:
    write_key_file(tmp_path / "k", secrets, b"12345678", FAST)
    assert read_key_file(tmp_path / "k", b"12345678") == secrets


def test_str_passphrase_refused(tmp_path: Path, secrets: NodeSecrets) -> None:
    with pytest.raises(KeyFileError, match="bytes"):
        write_key_file(tmp_path / "k", secrets, PASS.decode(), FAST)  # type: ignore[arg-type]


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_mode_0600_even_when_replacing_a_readable_file(
    tmp_path: Path, secrets: NodeSecrets
) -> None:
    path = tmp_path / "node.key"
    path.write_text("old")
    path.chmod(0o644)
    write_key_file(path, secrets, PASS, FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path, PASS) == secrets


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, second = NodeSecrets.generate(), NodeSecrets.generate()
    write_key_file(path, first, PASS, FAST)
    write_key_file(path, second, PASS, FAST)
    assert read_key_file(path, PASS) == second
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_write_into_missing_directory(tmp_path: Path, secrets: NodeSecrets) -> None:
    with pytest.raises(KeyFileError, match="cannot write key file"):
        write_key_file(tmp_path / "no" / "such" / "k", secrets, PASS, FAST)


# --- NodeSecrets ----------------------------------------------------------------------------


def test_node_secrets_repr_hides_secrets(secrets: NodeSecrets) -> None:
    text = repr(secrets) + str(secrets)
    for secret in (secrets.signing_seed, secrets.data_key, secrets.pseudonym_key):
        assert secret.hex() not in text
        assert repr(secret) not in text
    assert kid_hex(secrets.signing_key().kid) in text


def test_node_secrets_generate_distinct_keys(secrets: NodeSecrets) -> None:
    assert len({secrets.signing_seed, secrets.data_key, secrets.pseudonym_key}) == 3
    assert NodeSecrets.generate() != secrets


def test_with_signing_key(secrets: NodeSecrets) -> None:
    new = SigningKey.generate()
    rotated = secrets.with_signing_key(new)
    assert rotated.signing_key() == new
    assert (rotated.data_key, rotated.pseudonym_key) == (secrets.data_key, secrets.pseudonym_key)
    assert secrets.signing_key() != new  # frozen: the original is unchanged


@pytest.mark.parametrize("field", ["signing_seed", "data_key", "pseudonym_key"])
def test_node_secrets_need_32_byte_keys(field: str) -> None:
    values = {"signing_seed": b"\1" * 32, "data_key": b"\2" * 32, "pseudonym_key": b"\3" * 32}
    with pytest.raises(KeysError, match=field):
        NodeSecrets(**{**values, field: b"\0" * 16})


# --- passphrase_from_env --------------------------------------------------------------------


def test_passphrase_from_variable() -> None:
    assert passphrase_from_env({"HANDSOFF_PASSPHRASE": "pässwörd 1"}) == "pässwörd 1".encode()


def test_passphrase_from_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"from a file\n\n")
    # Exactly one trailing newline goes: the rest is part of the passphrase.
    assert passphrase_from_env({"HANDSOFF_PASSPHRASE_FILE": str(f)}) == b"from a file\n"
    f.write_bytes(b"crlf\r\n")
    assert passphrase_from_env({"HANDSOFF_PASSPHRASE_FILE": str(f)}) == b"crlf"
    f.write_bytes(b"no newline")
    assert passphrase_from_env({"HANDSOFF_PASSPHRASE_FILE": str(f)}) == b"no newline"


def test_variable_wins_over_file_and_empty_counts_as_unset(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"file secret\n")
    env = {"HANDSOFF_PASSPHRASE": "var secret", "HANDSOFF_PASSPHRASE_FILE": str(f)}
    assert passphrase_from_env(env) == b"var secret"
    assert passphrase_from_env({**env, "HANDSOFF_PASSPHRASE": ""}) == b"file secret"


def test_custom_variable_names(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"x" * 10)
    env = {"A": "a" * 10, "B": str(f)}
    assert passphrase_from_env(env, var="A", file_var="B") == b"a" * 10
    assert passphrase_from_env({"B": str(f)}, var="A", file_var="B") == b"x" * 10


def test_passphrase_missing_names_both_variables() -> None:
    for env in ({}, {"HANDSOFF_PASSPHRASE": "", "HANDSOFF_PASSPHRASE_FILE": ""}):
        with pytest.raises(PassphraseMissing) as info:
            passphrase_from_env(env)
        assert "HANDSOFF_PASSPHRASE " in f"{info.value} "
        assert "HANDSOFF_PASSPHRASE_FILE" in str(info.value)
    assert issubclass(PassphraseMissing, KeyFileError)


def test_passphrase_file_missing_or_empty(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(KeyFileError, match=str(missing)) as info:
        passphrase_from_env({"HANDSOFF_PASSPHRASE_FILE": str(missing)})
    assert not isinstance(info.value, PassphraseMissing)
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(PassphraseMissing, match="empty"):
        passphrase_from_env({"HANDSOFF_PASSPHRASE_FILE": str(empty)})


def test_env_passphrase_opens_key_file(tmp_path: Path, secrets: NodeSecrets) -> None:
    f = tmp_path / "pw"
    f.write_bytes(PASS + b"\n")
    path = tmp_path / "node.key"
    write_key_file(path, secrets, passphrase_from_env({"HANDSOFF_PASSPHRASE_FILE": str(f)}), FAST)
    assert read_key_file(path, passphrase_from_env({"HANDSOFF_PASSPHRASE": PASS.decode()})) == (
        secrets
    )
