"""The aggregator's HTTP feeds: signed JSON, CSV, a live Server-Sent Events stream and the
coordinator dashboard (static files shipped in the package; no CDN, works offline).

    GET /                                   the dashboard
    GET /assets/<file>                      its scripts and styles
    GET /api/releases/latest                {"release": n, "statements": [signed, ...]}
    GET /api/releases/latest.csv            every published figure, one per line
    GET /api/releases/latest/<indicator>    one signed statement
    GET /api/stream                         SSE: "event: release" with {"release": n}
    GET /healthz, /readyz                   liveness, readiness (a release exists)
    GET /metrics                            Prometheus figures (aggregator/metrics.py)

Every route is open: the feeds are public, and so is every figure /metrics shows (region
totals, published at each release anyway). Requests are logged by route, not path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client.registry import Collector
from starlette.requests import Request

from handsoff.services.aggregator.feed import ReleaseFeed
from handsoff.services.ops import AccessLog, exposition, registry_of

DASHBOARD: Final = Path(__file__).parent / "dashboard"
KEEPALIVE_S: Final = 15.0
_NO_RELEASE = {"error": "no_release", "detail": "no release has been published yet"}


def _sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def create_app(
    feed: ReleaseFeed,
    *,
    status: Callable[[], dict[str, object]] | None = None,
    metrics: Collector | None = None,
    keepalive: float = KEEPALIVE_S,
) -> FastAPI:
    app = FastAPI(title="handsoff aggregator", docs_url=None, redoc_url=None)
    app.add_middleware(AccessLog)
    registry = registry_of() if metrics is None else registry_of(metrics)
    app.mount("/assets", StaticFiles(directory=DASHBOARD), name="assets")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html", media_type="text/html")

    @app.get("/api/releases/latest")
    async def latest() -> Response:
        release = feed.latest
        if release is None:
            return JSONResponse(_NO_RELEASE, status_code=404)
        return Response(release.json(), media_type="application/json")

    @app.get("/api/releases/latest.csv")
    async def latest_csv() -> Response:
        release = feed.latest
        if release is None:
            return JSONResponse(_NO_RELEASE, status_code=404)
        name = f"handsoff-release-{release.number}.csv"
        return Response(
            release.csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/api/releases/latest/{indicator}")
    async def latest_indicator(indicator: str) -> Response:
        release = feed.latest
        if release is None:
            return JSONResponse(_NO_RELEASE, status_code=404)
        signed = release.signed_statement(indicator)
        if signed is None:
            return JSONResponse(
                {"error": "unknown_indicator", "detail": f"no indicator {indicator!r}"},
                status_code=404,
            )
        return Response(signed, media_type="application/json")

    @app.get("/api/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            seen = 0
            if feed.latest is not None:
                seen = feed.latest.number
                yield _sse("release", {"release": seen})
            while True:
                release = await feed.wait_newer(seen, keepalive)
                if release is None:
                    yield b": keepalive\n\n"
                    continue
                seen = release.number
                yield _sse("release", {"release": seen})

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = feed.latest is not None
        body: dict[str, object] = {"ready": ready, **(status() if status else {})}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        # On the event loop's thread, not a worker's: the collector reads the aggregator's
        # SQLite connection, which belongs to this thread (single-row reads only).
        return exposition(registry, request.headers.get("accept"))

    return app
