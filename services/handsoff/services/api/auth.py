"""Bearer tokens and roles. 401 when the token is missing or wrong, 403 for the wrong role."""

from collections.abc import Callable

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from handsoff.services.node.admin import Role, User
from handsoff.services.node.node import Node

PARALEGAL_WORK = frozenset({Role.PARALEGAL, Role.SUPERVISOR})
SUPERVISION = frozenset({Role.SUPERVISOR})
AUDIT = frozenset({Role.AUDITOR, Role.SUPERVISOR})
ADMINISTRATION = frozenset({Role.ADMIN})
KEY_READERS = frozenset({Role.ADMIN, Role.AUDITOR})
EVERY_ROLE = frozenset(Role)

bearer = HTTPBearer(auto_error=False, description="A node API token (`handsoff node users add`)")


class AuthError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def require(roles: frozenset[Role]) -> Callable[..., object]:
    """A dependency admitting only users holding one of `roles`."""
    names = ", ".join(sorted(r.value for r in roles))

    async def dependency(request: Request) -> User:
        credentials: HTTPAuthorizationCredentials | None = await bearer(request)
        if credentials is None:
            raise AuthError(401, "missing bearer token")
        node: Node = request.app.state.node
        user = await run_in_threadpool(node.admin.authenticate, credentials.credentials)
        if user is None:
            raise AuthError(401, "invalid or revoked token")
        if user.role not in roles:
            raise AuthError(403, f"role {user.role.value} may not do this (needs: {names})")
        return user

    return dependency
