"""The node's secrets, encrypted at rest under a passphrase (argon2id key, SecretBox).

The header (KDF limits, salt) is not authenticated separately and need not be: every header
field feeds the key derivation, so changing one only makes decryption fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import nacl.exceptions
import nacl.utils
from nacl.pwhash import argon2id
from nacl.secret import SecretBox

from handsoff.keys._files import atomic_write, read_bytes
from handsoff.keys.errors import KeyFileError, KeysError, PassphraseMissing
from handsoff.keys.signing import SigningKey, kid_hex

FORMAT: Final = "handsoff-keyfile/1"
MIN_PASSPHRASE_LEN = 8
SECRET_LEN = 32


class NodeSecrets(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a node must keep secret. repr shows only the signing key id."""

    signing_seed: bytes  # current Ed25519 seed
    data_key: bytes  # SecretBox key for personal data at rest
    pseudonym_key: bytes  # key for keyed pseudonyms

    def __post_init__(self) -> None:
        # Runs on construction and on decoding, so a short key can never get in.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != SECRET_LEN:
                raise KeysError(f"NodeSecrets.{name} must be {SECRET_LEN} bytes")

    @classmethod
    def generate(cls) -> NodeSecrets:
        return cls(*(nacl.utils.random(SECRET_LEN) for _ in range(3)))

    def signing_key(self) -> SigningKey:
        return SigningKey.from_seed(self.signing_seed)

    def with_signing_key(self, key: SigningKey) -> NodeSecrets:
        return msgspec.structs.replace(self, signing_seed=key.seed)

    def __repr__(self) -> str:
        return f"NodeSecrets(signing kid={kid_hex(self.signing_key().kid)})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # msgspec's default would hand every secret field to rich.
        return [("signing kid", kid_hex(self.signing_key().kid))]


class KdfStrength(StrEnum):
    """argon2id cost presets; interactive is for modest hardware and tests."""

    INTERACTIVE = "interactive"
    MODERATE = "moderate"
    SENSITIVE = "sensitive"

    @property
    def limits(self) -> tuple[int, int]:
        """(opslimit, memlimit)."""
        return _LIMITS[self]


_LIMITS = {
    KdfStrength.INTERACTIVE: (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
    KdfStrength.MODERATE: (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
    KdfStrength.SENSITIVE: (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
}
# A corrupt or hostile file must not make us spend more than the strongest preset.
_MAX_OPS, _MAX_MEM = KdfStrength.SENSITIVE.limits


class _KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: Literal["handsoff-keyfile/1"]
    kdf: Literal["argon2id"]
    opslimit: Annotated[int, msgspec.Meta(ge=argon2id.OPSLIMIT_MIN, le=_MAX_OPS)]
    memlimit: Annotated[int, msgspec.Meta(ge=argon2id.MEMLIMIT_MIN, le=_MAX_MEM)]
    salt: Annotated[
        bytes, msgspec.Meta(min_length=argon2id.SALTBYTES, max_length=argon2id.SALTBYTES)
    ]
    box: Annotated[bytes, msgspec.Meta(min_length=SecretBox.NONCE_SIZE + SecretBox.MACBYTES)]


_FILE_DECODER = msgspec.json.Decoder(_KeyFile)
_SECRETS_DECODER = msgspec.msgpack.Decoder(NodeSecrets)


def _box(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> SecretBox:
    try:
        key = argon2id.kdf(
            SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
        )
    except nacl.exceptions.CryptoError as e:
        # nacl's message names the limits at most, never the passphrase.
        raise KeyFileError(
            f"argon2id key derivation failed (opslimit={opslimit}, memlimit={memlimit}): {e}"
        ) from None
    return SecretBox(key)


def write_key_file(
    path: Path,
    secrets: NodeSecrets,
    passphrase: bytes,
    strength: KdfStrength = KdfStrength.MODERATE,
) -> None:
    """Encrypt secrets under passphrase and atomically write them to path (mode 0600)."""
    if not isinstance(passphrase, bytes):
        raise KeyFileError("the passphrase must be bytes")
    if len(passphrase) < MIN_PASSPHRASE_LEN:
        raise KeyFileError(f"the passphrase must be at least {MIN_PASSPHRASE_LEN} bytes long")
    try:
        opslimit, memlimit = KdfStrength(strength).limits
    except ValueError:
        raise KeyFileError(f"unknown KDF strength {strength!r}") from None
    salt = nacl.utils.random(argon2id.SALTBYTES)
    box = _box(passphrase, salt, opslimit, memlimit).encrypt(msgspec.msgpack.encode(secrets))
    header = _KeyFile(FORMAT, "argon2id", opslimit, memlimit, salt, bytes(box))
    atomic_write(Path(path), msgspec.json.encode(header) + b"\n", 0o600, "key file")


def read_key_file(path: Path, passphrase: bytes) -> NodeSecrets:
    """Decrypt the key file at path; KeyFileError if missing, malformed or undecryptable."""
    path = Path(path)
    if not isinstance(passphrase, bytes):
        raise KeyFileError("the passphrase must be bytes")
    try:
        header = _FILE_DECODER.decode(read_bytes(path, "key file"))
    except msgspec.DecodeError as e:
        raise KeyFileError(f"{path} is not a valid handsoff key file: {e}") from None
    box = _box(passphrase, header.salt, header.opslimit, header.memlimit)
    try:
        plain = box.decrypt(header.box)
    except nacl.exceptions.CryptoError:
        raise KeyFileError(f"wrong passphrase or corrupted key file {path}") from None
    try:
        return _SECRETS_DECODER.decode(plain)
    except (msgspec.DecodeError, KeysError):
        # Authentic but unreadable: written by an incompatible version. Details could leak secrets.
        raise KeyFileError(f"key file {path} decrypted but holds no valid node secrets") from None


def passphrase_from_env(
    env: Mapping[str, str],
    *,
    var: str = "HANDSOFF_PASSPHRASE",
    file_var: str = "HANDSOFF_PASSPHRASE_FILE",
) -> bytes:
    """The passphrase from env[var], else from the file named by env[file_var].

    An empty variable counts as unset (compose files often define VAR= with no value).
    """
    # surrogateescape gives back the exact bytes os.environ decoded.
    if value := env.get(var):
        return value.encode("utf-8", "surrogateescape")
    if name := env.get(file_var):
        data = read_bytes(Path(name), f"passphrase file ({file_var})")
        data = data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")
        if not data:
            raise PassphraseMissing(f"passphrase file {name} (from {file_var}) is empty")
        return data
    raise PassphraseMissing(f"no passphrase: set {var} or {file_var}")
