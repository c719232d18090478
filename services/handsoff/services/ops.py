"""Operations plumbing shared by the node's API and the aggregator's feeds: the Prometheus
exposition of a per-app registry, and an access log that names routes, not paths.

Why a registry per app (never prometheus_client's global default one): several nodes and an
aggregator run in one process in the tests and in `handsoff demo`, each with its own figures.
The figures are read when scraped (custom collectors over state the services keep anyway),
so recording an event or ingesting a message does no metrics work at all.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log: Final = logging.getLogger("handsoff.access")

# What GET /metrics answers, for the OpenAPI document.
METRICS_MEDIA_TYPES: Final = ("text/plain", "application/openmetrics-text")


def registry_of(*collectors: Collector) -> CollectorRegistry:
    """A fresh registry with `collectors` and the process's own figures (CPU, memory, open
    files, start time; read from /proc where there is one)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> Response:
    """The registry in the format the scraper asked for (Prometheus text or OpenMetrics)."""
    encode, media_type = choose_encoder(accept or "")
    return Response(encode(registry), media_type=media_type, headers={"Cache-Control": "no-store"})


class AccessLog:
    """ASGI middleware: one `handsoff.access` line per request with the method, the route's
    *template* (`/cases/{case_id}`, never the id), the status and the time taken. No client
    address, no query string, no user: uvicorn's own access log (which has all three) is off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            access_log.info(
                "request",
                extra={
                    "method": scope.get("method", ""),
                    "route": getattr(route, "path", None) or "unmatched",
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
