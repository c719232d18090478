"""Node keys: Ed25519 signing, encrypted key files, and verifiable public keyrings."""

from handsoff.keys.errors import (
    BadSignature,
    BrokenKeyChain,
    KeyFileError,
    KeyNotValid,
    KeysError,
    PassphraseMissing,
    UnknownKey,
    VerificationError,
)
from handsoff.keys.keyfile import (
    KdfStrength,
    NodeSecrets,
    passphrase_from_env,
    read_key_file,
    write_key_file,
)
from handsoff.keys.keyring import (
    KeyRecord,
    Keyring,
    RotationStatement,
    load_keyring,
    rotation_statement_bytes,
    save_keyring,
)
from handsoff.keys.signing import KEY_ID_LEN, SigningKey, key_id, kid_hex, verify_signature

__all__ = [
    "KEY_ID_LEN",
    "BadSignature",
    "BrokenKeyChain",
    "KdfStrength",
    "KeyFileError",
    "KeyNotValid",
    "KeyRecord",
    "Keyring",
    "KeysError",
    "NodeSecrets",
    "PassphraseMissing",
    "RotationStatement",
    "SigningKey",
    "UnknownKey",
    "VerificationError",
    "key_id",
    "kid_hex",
    "load_keyring",
    "passphrase_from_env",
    "read_key_file",
    "rotation_statement_bytes",
    "save_keyring",
    "verify_signature",
    "write_key_file",
]
