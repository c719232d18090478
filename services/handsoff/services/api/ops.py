"""The node's operations endpoints: `/healthz`, `/readyz` and Prometheus `/metrics`.

    GET /healthz   open     the process answers (nothing else is checked)
    GET /readyz    open     every store answers, and the link to the region runs (if joined);
                            200 or 503 with {"ready", "stores", "link"}: booleans and words.
                            Not NATS: a node records without it, so it is ready without it
    GET /metrics   a token  of any role (as GET /status, which shows the same figures)

Why /metrics needs a token while the probes do not: its counters move when a case is
recorded, so an open /metrics would let anyone who can reach the port date every recording
to the minute, which the relay's publishing schedule (`publish_interval`) exists to hide
from the region. Prometheus sends the token with `authorization: {credentials_file: ...}`;
give it an `auditor` user (no case data). Figures only: no case, referral or user id, no
name, no free text; the only labels are the partner id, log names and reason codes.

Every figure is read when scraped, from what the node keeps anyway: a log's highest
notification id (one indexed query per log, not a scan), the relay's in-memory status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.concurrency import run_in_threadpool

from handsoff.services.api.auth import EVERY_ROLE, require
from handsoff.services.node.admin import User
from handsoff.services.node.link import NodeLink
from handsoff.services.node.node import Node
from handsoff.services.node.store import SealedApplication
from handsoff.services.ops import METRICS_MEDIA_TYPES, exposition, registry_of


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    stores: dict[str, bool]  # log name -> answers
    link: str  # "not configured" | "running" | "not running" (not started, stopped, failed)


def _logs(node: Node) -> dict[str, SealedApplication]:
    return {"cases": node.cases, "admin": node.admin, "inbound": node.inbound}


def _log_heads(node: Node) -> dict[str, int]:
    """Events recorded per log: its highest notification id (one indexed query, no scan;
    equal to the count on SQLite, an upper bound on PostgreSQL, whose sequences can skip)."""
    return {name: int(app.recorder.max_notification_id() or 0) for name, app in _logs(node).items()}


def readiness(node: Node, link: NodeLink | None) -> Readiness:
    stores = {}
    for name, app in _logs(node).items():
        try:
            app.recorder.max_notification_id()
            stores[name] = True
        except Exception:  # any failure of the store means: not ready
            stores[name] = False
    link_state = "not configured"
    if link is not None:
        link_state = "running" if link.running else "not running"
    ready = all(stores.values()) and link_state != "not running"
    return Readiness(ready, stores, link_state)


class NodeCollector:
    """The node's figures, read at each scrape (prometheus_client's custom collector)."""

    def __init__(self, node: Node, link: NodeLink | None) -> None:
        self.node = node
        self.link = link

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "handsoff_node_info", "The node's partner id (value always 1)", labels=["partner"]
        )
        info.add_metric([self.node.config.partner], 1)
        yield info
        events = CounterMetricFamily(
            "handsoff_node_events_recorded",
            "Events recorded in each sealed log (its highest notification id)",
            labels=["log"],
        )
        for name, head in _log_heads(self.node).items():
            events.add_metric([name], head)
        yield events
        yield GaugeMetricFamily(
            "handsoff_node_link_configured",
            "1 if the node relays to a region (has joined one)",
            value=0 if self.link is None else 1,
        )
        if self.link is not None:
            yield from self._link_metrics(self.link)

    def _link_metrics(self, link: NodeLink) -> Iterator[Metric]:
        s = link.status()
        yield GaugeMetricFamily(
            "handsoff_node_relay_connected",
            "1 if connected to NATS and the last publishing round succeeded",
            value=1 if s.connected else 0,
        )
        yield GaugeMetricFamily(
            "handsoff_node_relay_position",
            "The cases log's notification id the relay has published up to",
            value=s.relay_position,
        )
        yield GaugeMetricFamily(
            "handsoff_node_relay_lag_events",
            "Events in the cases log after the relay's position (grows between publishing "
            "rounds, by design)",
            value=s.relay_lag,
        )
        yield GaugeMetricFamily(
            "handsoff_node_relay_blocked",
            "1 if the relay stopped sharing: the region's stream holds this partner's "
            "messages that this log does not make (restored from a backup?)",
            value=1 if s.relay_blocked else 0,
        )
        yield GaugeMetricFamily(
            "handsoff_node_region_version",
            "The region version this node holds (and the relay signs under)",
            value=s.region_version or 0,
        )
        yield GaugeMetricFamily(
            "handsoff_node_region_expires_timestamp_seconds",
            "Unix time at which the region version held expires (the coordinators renew it; "
            "a serving node takes the renewal when the aggregator announces it)",
            value=link.region.expires_at.timestamp(),
        )
        yield GaugeMetricFamily(
            "handsoff_node_region_error",
            "1 if the last look at the region versions the aggregator announces could not "
            "be made or left a newer version untaken (see region_error in /status)",
            value=1 if s.region_error else 0,
        )
        yield CounterMetricFamily(
            "handsoff_node_relay_published",
            "Shared messages published since this process started",
            value=s.published,
        )
        last = link.relay.status.last_success
        if last is not None:
            yield GaugeMetricFamily(
                "handsoff_node_relay_last_success_timestamp_seconds",
                "Unix time of the relay's last successful publishing round",
                value=last,
            )
        yield CounterMetricFamily(
            "handsoff_node_referrals_sent",
            "Referral packages sent since this process started",
            value=s.referrals_sent,
        )
        yield CounterMetricFamily(
            "handsoff_node_referrals_received",
            "Referral packages received since this process started",
            value=s.referrals_received,
        )
        rejected = CounterMetricFamily(
            "handsoff_node_referrals_rejected",
            "Referral messages refused since this process started, by reason code",
            labels=["reason"],
        )
        for reason, n in sorted(s.referrals_rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected


def add_ops_routes(
    app: FastAPI, node: Node, link: NodeLink | None, readiness_schema: dict[str, Any]
) -> None:
    """The three routes; `readiness_schema` is Readiness's schema in the app's OpenAPI."""
    registry = registry_of(NodeCollector(node, link))

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Liveness: the process answers (no token)",
        responses={200: {"description": "alive"}},
    )
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    readiness_content = {"application/json": {"schema": readiness_schema}}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: the stores answer and the region link runs (no token)",
        responses={
            200: {"description": "ready", "content": readiness_content},
            503: {"description": "not ready", "content": readiness_content},
        },
    )
    async def readyz() -> Response:
        state = await run_in_threadpool(readiness, node, link)
        return Response(
            msgspec.json.encode(state),
            status_code=200 if state.ready else 503,
            media_type="application/json",
        )

    problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (a token of any role; figures only, no identifiers)",
        responses={
            200: {
                "description": "Prometheus text format (or OpenMetrics, if asked for)",
                "content": {t: {"schema": {"type": "string"}} for t in METRICS_MEDIA_TYPES},
            },
            401: {"description": "Missing, invalid or revoked token", "content": problem},
        },
    )
    async def metrics(
        request: Request, user: Annotated[User, Depends(require(EVERY_ROLE))]
    ) -> Response:
        accept = request.headers.get("accept")
        return await run_in_threadpool(exposition, registry, accept)
