"""Personal data is marked in the schema itself, so nothing downstream has to guess.

A field is personal when its type carries `PERSONAL_DATA_KEY` in its msgspec Meta: the mark
is readable at run time (`personal_fields`) and appears in the JSON schema / OpenAPI.
Personal data stays on the partner's node; auditors and logs see `WITHHELD` instead.
"""

import functools
from typing import Annotated

import msgspec
import msgspec.inspect as mi

PERSONAL_DATA_KEY = "x-personal-data"
WITHHELD = "[personal data withheld]"

_MARK = {PERSONAL_DATA_KEY: True}
_NOTE = " Personal data: stays on the partner's node, withheld from auditors and logs."


def _personal(description: str, max_length: int) -> msgspec.Meta:
    return msgspec.Meta(
        min_length=1,
        max_length=max_length,
        description=description + _NOTE,
        extra=_MARK,  # read at run time by personal_fields()
        extra_json_schema=_MARK,  # `extra` alone does not reach the JSON schema
    )


PersonalText = Annotated[str, _personal("Free text about the survivor or the case.", 4000)]
PersonalName = Annotated[str, _personal("A person's name or alias.", 200)]
PersonalContact = Annotated[str, _personal("A phone number or other way to reach a person.", 200)]
PersonalReference = Annotated[str, _personal("A reference that leads to a person's file.", 100)]


def _is_personal(t: mi.Type) -> bool:
    if isinstance(t, mi.Metadata):
        return bool((t.extra or {}).get(PERSONAL_DATA_KEY)) or _is_personal(t.type)
    if isinstance(t, mi.UnionType):  # `X | None`
        return any(_is_personal(m) for m in t.types)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _is_personal(t.item_type)
    return False


@functools.cache
def _personal_encode_names(struct_type: type[msgspec.Struct]) -> dict[str, str]:
    info = mi.type_info(struct_type)
    if not isinstance(info, mi.StructType):
        raise TypeError(f"{struct_type!r} is not a msgspec Struct")
    return {f.name: f.encode_name for f in info.fields if _is_personal(f.type)}


def personal_fields(struct_type: type[msgspec.Struct]) -> frozenset[str]:
    """Names of the fields of `struct_type` that hold personal data."""
    return frozenset(_personal_encode_names(struct_type))


def redact(payload: msgspec.Struct) -> dict[str, object]:
    """`payload` as builtins, every personal field (even an empty one) replaced by WITHHELD.

    Empty ones too, so what an auditor sees does not depend on what the survivor shared.
    """
    out = msgspec.to_builtins(payload)
    if not isinstance(out, dict):  # only an array_like Struct becomes a list
        raise TypeError(f"cannot redact {type(payload).__name__}: not encoded as an object")
    for key in _personal_encode_names(type(payload)).values():
        if key in out:
            out[key] = WITHHELD
    return out
