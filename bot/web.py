"""The web process: Slack events at /slack/events, /healthz, /readyz, /metrics (uvicorn).

Bolt's sync dispatch runs in a worker thread so one slow listener never blocks the event
loop for every other request.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import logs
from bot.deps import Deps
from bot.metrics import Metrics
from store.engine import current_revision, head_revision

log = logging.getLogger(__name__)
MAX_BODY = 1_000_000  # Slack payloads are far smaller; refuse anything bigger
SHUTDOWN_DRAIN = 5.0  # seconds a stopping web process gives the card updates still queued


def build_web(app: App, deps: Deps) -> Starlette:
    metrics = Metrics(deps.engine, deps.card_updates)
    limiters: list[anyio.CapacityLimiter] = []

    def slack_limiter() -> anyio.CapacityLimiter:
        """Slack requests run WEB_THREADS at a time (made in the event loop, on first use);
        health checks and /metrics keep threads of their own and answer under load."""
        if not limiters:
            limiters.append(anyio.CapacityLimiter(deps.settings.web_threads))
        return limiters[0]

    async def slack_events(request: Request) -> Response:
        logs.request_id.set(request.headers.get("x-request-id") or uuid.uuid4().hex[:16])
        body = await request.body()
        if len(body) > MAX_BODY:
            return Response("payload too large", status_code=413)
        bolt_request = to_bolt_request(request, body)
        with metrics.slack_seconds.time():  # the wait for a thread included
            bolt_response = await anyio.to_thread.run_sync(app.dispatch, bolt_request,
                                                            limiter=slack_limiter())
        metrics.slack_requests.labels(status=str(bolt_response.status)).inc()
        response = to_starlette_response(bolt_response)
        response.headers["x-request-id"] = logs.request_id.get() or ""
        return response

    async def healthz(request: Request) -> Response:
        def check() -> None:
            with deps.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        try:
            await anyio.to_thread.run_sync(check)
        except Exception as exc:  # report, do not raise: this is the health endpoint
            log.warning("health check failed: %s", exc.__class__.__name__)
            return JSONResponse({"status": "error", "database": "unreachable"},
                                status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def readyz(request: Request) -> Response:
        """Ready = the database answers and is migrated to this release's schema."""
        def check() -> str | None:
            return current_revision(deps.engine)
        try:
            revision = await anyio.to_thread.run_sync(check)
        except Exception as exc:
            log.warning("readiness check failed: %s", exc.__class__.__name__)
            return JSONResponse({"ready": False, "database": "unreachable"}, status_code=503)
        head = head_revision()
        if revision != head:
            return JSONResponse({"ready": False, "schema": revision, "expected": head,
                                 "hint": "run `dunning init`"}, status_code=503)
        return JSONResponse({"ready": True, "schema": revision})

    async def metrics_endpoint(request: Request) -> Response:
        body = await anyio.to_thread.run_sync(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if deps.settings.stripe_webhook_secret is not None:  # Stripe events only when configured
        from bot.stripe_webhook import stripe_webhook_route

        routes.append(stripe_webhook_route(
            deps, deps.settings.stripe_webhook_secret.get_secret_value()))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        # A graceful stop (SIGTERM) shows the cards already answered before exiting.
        if not await anyio.to_thread.run_sync(deps.card_updates.drain, SHUTDOWN_DRAIN):
            log.warning("stopped with %d card update(s) not shown", deps.card_updates.backlog)

    return Starlette(routes=routes, lifespan=lifespan)


def web_from_settings() -> Starlette:
    """The web app built from settings alone: the factory each uvicorn worker process calls
    when `dunning serve --workers N` (or WEB_CONCURRENCY) runs several."""
    from bot.app import build_app
    from bot.deps import build_deps
    from bot.settings import load_settings
    from connectors.slack import SlackMessenger, make_client
    from store.engine import make_engine

    settings = load_settings()
    logs.configure(json_lines=settings.dunning_log_format == "json",
                   secrets=settings.secret_values())
    token, secret = settings.require_slack()
    client = make_client(token.get_secret_value(), settings.slack_api_url)
    deps = build_deps(settings, SlackMessenger(client), engine=make_engine(settings.database_url))
    return build_web(build_app(deps, client, signing_secret=secret.get_secret_value()), deps)
