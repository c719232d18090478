"""The node's HTTP API: a command per lifecycle step, case queries, audit, users and keys."""

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from handsoff.events import (
    CaseClosed,
    CaseRuleViolation,
    ConsentCorrected,
    ConsentGiven,
    ConsentWithdrawn,
    Country,
    CourtCaseOpened,
    CourtCaseWithdrawn,
    CourtJudgmentGiven,
    FirstResponseGiven,
    IncidentReported,
    PerpetratorCategory,
    PoliceReportFiled,
    PoliceResponded,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
    ViolenceType,
)
from handsoff.events.inbound import (
    InboundReferralAccepted,
    InboundReferralCompleted,
    InboundReferralDeclined,
)
from handsoff.federation.checkpoints import Checkpoint
from handsoff.keys import KeysError
from handsoff.services.api import views
from handsoff.services.api.auth import (
    ADMINISTRATION,
    AUDIT,
    EVERY_ROLE,
    KEY_READERS,
    PARALEGAL_WORK,
    SUPERVISION,
    AuthError,
    require,
)
from handsoff.services.api.bodies import (
    CaseCreated,
    InputError,
    IssuedToken,
    KeyView,
    NewUser,
    Problem,
    Update,
    UserView,
    body_of,
)
from handsoff.services.api.ops import Readiness, add_ops_routes
from handsoff.services.node.admin import Role, UnknownUser, User, UserExists
from handsoff.services.node.checkpointer import CheckpointError
from handsoff.services.node.errors import CaseNotFound, NodeError, StaleCase, TamperedEvent
from handsoff.services.node.inbound import InboundNotFound
from handsoff.services.node.link import LinkStatus, NodeLink
from handsoff.services.node.node import Node
from handsoff.services.node.verify import VerificationReport
from handsoff.services.ops import AccessLog

log = logging.getLogger("handsoff.api")


@dataclass(frozen=True)
class Step:
    """One lifecycle command: POST /cases/{case_id}/<path> with Update[change]."""

    path: str
    change: type[msgspec.Struct]
    roles: frozenset[Role]
    summary: str


STEPS = (
    Step("first-response", FirstResponseGiven, PARALEGAL_WORK, "Record the first response"),
    Step("referral-made", ReferralMade, PARALEGAL_WORK, "Record a referral to a service"),
    Step("referral-accepted", ReferralAccepted, PARALEGAL_WORK, "Record a referral accepted"),
    Step("referral-declined", ReferralDeclined, PARALEGAL_WORK, "Record a referral declined"),
    Step("referral-completed", ReferralCompleted, PARALEGAL_WORK, "Record a referral's outcome"),
    Step("police-report", PoliceReportFiled, PARALEGAL_WORK, "Record a police report filed"),
    Step("police-response", PoliceResponded, PARALEGAL_WORK, "Record the police response"),
    Step("court-case", CourtCaseOpened, PARALEGAL_WORK, "Record a court case opened"),
    Step("court-judgment", CourtJudgmentGiven, PARALEGAL_WORK, "Record a court judgment"),
    Step("court-withdrawal", CourtCaseWithdrawn, PARALEGAL_WORK, "Record a court case withdrawn"),
    Step("consent-given", ConsentGiven, PARALEGAL_WORK, "Record consent given for a purpose"),
    Step("consent-withdrawn", ConsentWithdrawn, PARALEGAL_WORK, "Record consent withdrawn"),
    Step("consent-correction", ConsentCorrected, SUPERVISION, "Correct a consent record"),
    Step("close", CaseClosed, SUPERVISION, "Close the case"),
)

ERRORS = {
    401: "Missing, invalid or revoked token",
    403: "The token's role may not do this",
    422: "Bad input; the field is named; nothing was written",
}


def _json(obj: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


def _problem(status: int, detail: str, field: str | None = None) -> Response:
    return _json(Problem(detail, field), status)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """msgspec schemas for the OpenAPI document, keyed by the type they describe."""

    def __init__(self, types: list[Any]) -> None:
        refs, self.components = msgspec.json.schema_components(
            types, ref_template="#/components/schemas/{name}"
        )
        self.refs = dict(zip(types, refs, strict=True))
        self._types = types

    def of(self, t: Any) -> dict[str, Any]:
        return dict(self.refs[t])

    def body(self, t: Any, description: str = "") -> dict[str, Any]:
        return {
            "requestBody": {
                "required": True,
                "description": description,
                "content": {"application/json": {"schema": self.of(t)}},
            }
        }

    def responses(
        self, status: int, t: Any, description: str, *errors: int
    ) -> dict[int | str, Any]:
        out: dict[int | str, Any] = {
            status: {
                "description": description,
                "content": {"application/json": {"schema": self.of(t)}},
            }
        }
        for code in (401, 403, 422, *errors):
            out[code] = {
                "description": ERRORS.get(code, _ERROR_TEXT.get(code, "Error")),
                "content": {"application/json": {"schema": _ref("Problem")}},
            }
        return out


def create_app(node: Node, link: NodeLink | None = None) -> FastAPI:
    """The node's API; `link` (the relay to the region) runs beside it when given."""
    limit = node.config.max_body_bytes
    updates = {s.path: Update[s.change] for s in STEPS}  # type: ignore[name-defined]
    response_types: list[Any] = [
        Problem,
        CaseCreated,
        views.CaseView,
        views.CaseDetail,
        views.CaseList,
        views.SealList,
        VerificationReport,
        list[KeyView],
        list[UserView],
        IssuedToken,
        UserView,
        LinkStatus,
        Checkpoint,
        views.InboundList,
        views.InboundDetail,
        views.InboundView,
        Readiness,
    ]
    inbound_updates = [Update[s.change] for s in INBOUND_STEPS]  # type: ignore[name-defined]
    schemas = _Schemas(
        [IncidentReported, NewUser, *updates.values(), *inbound_updates, *response_types]
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if link is not None:
            await link.start()
        try:
            yield
        finally:
            if link is not None:
                await link.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="handsoff node",
        version="1",
        description=(
            "A partner node's case records: every change signed, hash-chained and encrypted "
            "at rest. Personal-data fields carry `x-personal-data: true`."
        ),
    )
    app.state.node = node

    _install_error_handlers(app)

    app.add_middleware(AccessLog)
    add_ops_routes(app, node, link, schemas.of(Readiness))

    @app.post(
        "/cases",
        status_code=201,
        tags=["cases"],
        summary="Report an incident (opens a case)",
        openapi_extra=schemas.body(IncidentReported),
        responses=schemas.responses(201, CaseCreated, "The new case", 413),
    )
    async def report_incident(
        user: Annotated[User, Depends(require(PARALEGAL_WORK))],
        change: Annotated[IncidentReported, Depends(body_of(IncidentReported, limit))],
    ) -> Response:
        try:
            state = await run_in_threadpool(node.cases.report_incident, change, user.name)
        except CaseRuleViolation as e:  # about the report itself, not a case's state
            raise InputError(str(e)) from None
        return _json(CaseCreated(state.case_id, state.version), 201)

    case_updates = UpdateRoute(
        "cases",
        "case_id",
        "cases",
        "record",
        node.cases.record_change,
        lambda _, state: views.case_view(state),
        views.CaseView,
        "The case after the change",
    )
    for step in STEPS:
        _add_update(app, case_updates, step, updates[step.path], limit, schemas)

    @app.get(
        "/cases",
        tags=["cases"],
        summary="List cases (no personal data)",
        responses=schemas.responses(200, views.CaseList, "A page of case summaries"),
    )
    async def list_cases(
        user: Annotated[User, Depends(require(PARALEGAL_WORK))],
        status: Annotated[views.CaseStatusFilter | None, Query()] = None,
        country: Annotated[Country | None, Query()] = None,
        district: Annotated[str | None, Query(max_length=60)] = None,
        violence_type: Annotated[ViolenceType | None, Query()] = None,
        perpetrator: Annotated[PerpetratorCategory | None, Query()] = None,
        reported_from: Annotated[datetime | None, Query()] = None,
        reported_to: Annotated[datetime | None, Query()] = None,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Response:
        keep = views.case_filter(
            status, country, district, violence_type, perpetrator, reported_from, reported_to
        )
        total, page = await run_in_threadpool(node.cases.list_cases, keep, offset, limit)
        return _json(views.CaseList(total, offset, limit, [views.case_view(s) for s in page]))

    @app.get(
        "/cases/{case_id}",
        tags=["cases"],
        summary="One case with its full history",
        responses=schemas.responses(200, views.CaseDetail, "The case", 404),
    )
    async def get_case(
        case_id: UUID,
        user: Annotated[User, Depends(require(PARALEGAL_WORK))],
    ) -> Response:
        state, history = await run_in_threadpool(node.cases.history, case_id)
        return _json(views.detail(state, history))

    _add_inbound_routes(app, node, schemas, limit)
    _add_audit_and_admin_routes(app, node, link, schemas, limit)

    app.state.passphrase = None
    app.openapi = lambda: _openapi(app, schemas)  # type: ignore[method-assign]
    return app


_ERROR_TEXT = {
    404: "No such case or user",
    409: "Conflict: stale expected_version, or not allowed in the case's current state",
    413: "Request body too large",
    503: "Not available on this server",
}


INBOUND_STEPS = (
    Step("accepted", InboundReferralAccepted, PARALEGAL_WORK, "Accept a referral"),
    Step("declined", InboundReferralDeclined, PARALEGAL_WORK, "Decline a referral"),
    Step("completed", InboundReferralCompleted, PARALEGAL_WORK, "Record a referral's outcome"),
)


def _add_inbound_routes(app: FastAPI, node: Node, schemas: _Schemas, limit: int) -> None:
    @app.get(
        "/referrals",
        tags=["referrals"],
        summary="Referrals received from other partners (no personal data)",
        responses=schemas.responses(200, views.InboundList, "Inbound referrals"),
    )
    async def inbound(user: Annotated[User, Depends(require(PARALEGAL_WORK))]) -> Response:
        await run_in_threadpool(node.inbound.refresh)
        items = sorted(node.inbound.states.items(), key=lambda kv: kv[1].received_at)
        return _json(views.InboundList([views.inbound_view(k, v) for k, v in items]))

    @app.get(
        "/referrals/{referral_id}",
        tags=["referrals"],
        summary="One inbound referral with the details shared with us",
        responses=schemas.responses(200, views.InboundDetail, "The referral", 404),
    )
    async def inbound_one(
        referral_id: UUID, user: Annotated[User, Depends(require(PARALEGAL_WORK))]
    ) -> Response:
        state, history = await run_in_threadpool(node.inbound.history_of, referral_id)
        return _json(views.inbound_detail(referral_id, state, history))

    referral_updates = UpdateRoute(
        "referrals",
        "referral_id",
        "referrals",
        "referral",
        node.inbound.record_change,
        views.inbound_view,
        views.InboundView,
        "The referral after it",
    )
    for step in INBOUND_STEPS:
        _add_update(app, referral_updates, step, Update[step.change], limit, schemas)  # type: ignore[name-defined]


def _add_audit_and_admin_routes(
    app: FastAPI, node: Node, link: NodeLink | None, schemas: _Schemas, limit: int
) -> None:
    @app.get(
        "/cases/{case_id}/seals",
        tags=["audit"],
        summary="Signatures and chain links of one case, verified (no case data)",
        responses=schemas.responses(200, views.SealList, "Seals", 404),
    )
    async def get_seals(case_id: UUID, user: Annotated[User, Depends(require(AUDIT))]) -> Response:
        seals = await run_in_threadpool(node.cases.seals, case_id)
        return _json(views.SealList(case_id, seals))

    @app.get(
        "/verification",
        tags=["audit"],
        summary="Verify every log of the node now",
        responses=schemas.responses(200, VerificationReport, "The verification report"),
    )
    async def verification(user: Annotated[User, Depends(require(AUDIT))]) -> Response:
        report = await run_in_threadpool(node.verify)
        return _json(report)

    @app.get(
        "/status",
        tags=["operations"],
        summary="The node's link to its region",
        responses=schemas.responses(200, LinkStatus, "Relay position, lag and connection state"),
    )
    async def status(user: Annotated[User, Depends(require(EVERY_ROLE))]) -> Response:
        if link is None:
            return _json(LinkStatus(configured=False))
        return _json(await run_in_threadpool(link.status))

    @app.post(
        "/checkpoint",
        tags=["operations"],
        summary="Publish a signed checkpoint of what the node has shared, now",
        responses=schemas.responses(200, Checkpoint, "The checkpoint published", 409, 503),
    )
    async def checkpoint(user: Annotated[User, Depends(require(ADMINISTRATION))]) -> Response:
        if link is None:  # 503 is for "not now": NATS unreachable, nothing published yet
            return _problem(409, "this node has not joined a region")
        try:
            return _json(await link.checkpoint_now())
        except CheckpointError as e:
            return _problem(503, str(e))

    @app.get(
        "/keys",
        tags=["keys"],
        summary="The node's public keys, oldest first",
        responses=schemas.responses(200, list[KeyView], "Public keys"),
    )
    async def keys(user: Annotated[User, Depends(require(KEY_READERS))]) -> Response:
        return _json(views.key_views(node.keyring))

    @app.post(
        "/keys/rotate",
        tags=["keys"],
        summary="Rotate the node's signing key",
        responses=schemas.responses(200, list[KeyView], "Public keys after the rotation", 503),
    )
    async def rotate(
        request: Request, user: Annotated[User, Depends(require(ADMINISTRATION))]
    ) -> Response:
        passphrase = request.app.state.passphrase
        if passphrase is None:
            return _problem(503, "this server was started without its passphrase")
        await run_in_threadpool(node.rotate_key, passphrase, user.name)
        return _json(views.key_views(node.keyring))

    @app.get(
        "/users",
        tags=["users"],
        summary="The node's users (no tokens)",
        responses=schemas.responses(200, list[UserView], "Users"),
    )
    async def users(user: Annotated[User, Depends(require(ADMINISTRATION))]) -> Response:
        await run_in_threadpool(node.admin.refresh)
        return _json([UserView(u.name, u.role, u.active) for u in node.admin.users.values()])

    @app.post(
        "/users",
        status_code=201,
        tags=["users"],
        summary="Add a user; the token is shown once",
        openapi_extra=schemas.body(NewUser),
        responses=schemas.responses(201, IssuedToken, "The new user's token", 409, 413),
    )
    async def add_user(
        user: Annotated[User, Depends(require(ADMINISTRATION))],
        new: Annotated[NewUser, Depends(body_of(NewUser, limit))],
    ) -> Response:
        token = await run_in_threadpool(node.admin.add_user, new.name, new.role, user.name)
        return _json(IssuedToken(new.name, new.role, token), 201)

    @app.delete(
        "/users/{name}",
        tags=["users"],
        summary="Revoke a user's token",
        responses=schemas.responses(200, UserView, "The revoked user", 404),
    )
    async def revoke_user(
        name: Annotated[str, views.USER_NAME_PATH],
        user: Annotated[User, Depends(require(ADMINISTRATION))],
    ) -> Response:
        await run_in_threadpool(node.admin.revoke_user, name, user.name)
        revoked = node.admin.users[name]
        return _json(UserView(revoked.name, revoked.role, revoked.active))


@dataclass(frozen=True)
class UpdateRoute:
    """Where a kind of aggregate takes its updates: POST /<collection>/{<param>}/<step>."""

    collection: str
    param: str
    tag: str
    operation_prefix: str
    record: Callable[[UUID, int, Any, str], Any]  # (id, expected version, change, by) -> state
    view: Callable[[UUID, Any], Any]
    view_type: Any
    described: str


def _add_update(
    app: FastAPI,
    route: UpdateRoute,
    step: Step,
    update_type: Any,
    limit: int,
    schemas: _Schemas,
) -> None:
    async def update(
        aggregate_id: Annotated[UUID, PathParam(alias=route.param)],
        user: Annotated[User, Depends(require(step.roles))],
        body: Annotated[Any, Depends(body_of(update_type, limit))],
    ) -> Response:
        state = await run_in_threadpool(
            route.record, aggregate_id, body.expected_version, body.change, user.name
        )
        return _json(route.view(aggregate_id, state))

    app.post(
        f"/{route.collection}/{{{route.param}}}/{step.path}",
        tags=[route.tag],
        summary=step.summary,
        operation_id=f"{route.operation_prefix}_{step.path.replace('-', '_')}",
        openapi_extra=schemas.body(update_type),
        responses=schemas.responses(200, route.view_type, route.described, 404, 409, 413),
    )(update)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def auth_error(request: Request, e: AuthError) -> Response:
        r = _problem(e.status, e.detail)
        if e.status == 401:
            r.headers["WWW-Authenticate"] = "Bearer"
        return r

    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError) -> Response:
        return _problem(e.status, e.message, e.field)

    @app.exception_handler(RequestValidationError)
    async def parameter_error(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return _problem(422, f"{first.get('msg', 'invalid parameter')} - at {loc}", loc or None)

    # Expected refusals: (status, the field to name, if any). Their messages hold no data.
    refusals: dict[type[Exception], tuple[int, str | None]] = {
        CaseNotFound: (404, None),
        InboundNotFound: (404, None),
        UnknownUser: (404, None),
        StaleCase: (409, "expected_version"),
        CaseRuleViolation: (409, None),
        UserExists: (409, "name"),
    }

    async def refused(request: Request, e: Exception) -> Response:
        status, field = _refusal_of(refusals, e)
        return _problem(status, str(e), field)

    for kind in refusals:
        app.add_exception_handler(kind, refused)

    @app.exception_handler(TamperedEvent)
    async def tampered(request: Request, e: TamperedEvent) -> Response:
        log.error("integrity failure: %s", e)  # names the event, never its content
        return _problem(500, f"integrity failure: {e}")

    @app.exception_handler(NodeError)
    async def node_error(request: Request, e: NodeError) -> Response:
        log.error("node error: %s", type(e).__name__)
        return _problem(500, "node error; see the node's log")

    @app.exception_handler(KeysError)
    async def keys_error(request: Request, e: KeysError) -> Response:
        log.error("keys error: %s", type(e).__name__)
        return _problem(500, "key handling failed; see the node's log")


def _refusal_of(
    refusals: dict[type[Exception], tuple[int, str | None]], e: Exception
) -> tuple[int, str | None]:
    """The listed refusal `e` is (or descends from: InvalidChange is a CaseRuleViolation)."""
    return next(v for k, v in refusals.items() if isinstance(e, k))


def _openapi(app: FastAPI, schemas: _Schemas) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components.update(schemas.components)
    # Parameter errors are answered with Problem, not FastAPI's HTTPValidationError.
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            resp = operation.get("responses", {})
            if "422" in resp:
                resp["422"]["content"] = {"application/json": {"schema": _ref("Problem")}}
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    app.openapi_schema = doc
    return doc
