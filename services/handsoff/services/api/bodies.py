"""Request and response bodies: msgspec Structs, decoded by hand so errors name the field.

FastAPI only sees raw bytes; the OpenAPI document gets these schemas from msgspec.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

import msgspec
from fastapi import Request

from handsoff.services.node.admin import Role, UserName

T = TypeVar("T")
_FIELD = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"(?:missing required|unknown) field `(?P<name>[^`]+)`")


class InputError(Exception):
    """Bad input: 422 naming the field; nothing was written."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


class Problem(msgspec.Struct, frozen=True):
    """Every error response."""

    detail: str
    field: str | None = None


class Update(msgspec.Struct, Generic[T], frozen=True, forbid_unknown_fields=True):
    """A change to an existing case; expected_version guards against lost updates."""

    expected_version: Annotated[int, msgspec.Meta(ge=1)]
    change: T


class NewUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: UserName
    role: Role


class IssuedToken(msgspec.Struct, frozen=True):
    name: str
    role: Role
    token: str  # shown once; only its hash is stored


class UserView(msgspec.Struct, frozen=True):
    name: str
    role: Role
    active: bool


class KeyView(msgspec.Struct, frozen=True):
    kid: str
    public_key: str
    activated_at: str
    retired_at: str | None
    predecessor: str | None


class CaseCreated(msgspec.Struct, frozen=True):
    case_id: UUID
    version: int


def field_of(error: msgspec.ValidationError) -> str | None:
    """The field an error is about: `change.responded_at`, `violence_types[0]`, ..."""
    text = str(error)
    m = _FIELD.search(text)
    path = m.group("path").lstrip(".") if m else ""
    named = _NAMED.search(text)  # a missing or unknown field is named in the message
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return path or None


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(f"request body larger than {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"request body larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def decode(raw: bytes, model: Any) -> Any:
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as e:
        raise InputError(str(e), field_of(e)) from None
    except msgspec.DecodeError as e:
        raise InputError(f"malformed JSON: {e}") from None


def body_of(model: type[T], limit: int) -> Callable[[Request], Awaitable[T]]:
    """A FastAPI dependency that reads, size-checks and decodes a body into `model`."""

    async def dependency(request: Request) -> T:
        result: T = decode(await read_body(request, limit), model)
        return result

    return dependency
