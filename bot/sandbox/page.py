"""The sandbox page: a local web app that plays Slack's client for the real bot.

It shows the `Workspace`'s loopback Slack (channels, DMs, messages, the acting person's
ephemerals and open modal), rendered from the Block Kit the bot posted by
`bot.sandbox.render`, and turns clicks, modal submissions and `/dunning` lines into the
workspace's signed requests to the bot. The page never sees the signing secret.

Only for the person at this machine: it binds 127.0.0.1, every request must name this
server by a loopback Host (so a web page elsewhere cannot reach it through DNS rebinding),
and every `/api/` call must carry the per-session token printed into the page plus, when
the browser sends one, a loopback Origin (so another site cannot post on your behalf).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bot.sandbox.render import CSS, render_message_html, render_view_html
from bot.sandbox.slack_api import Ephemeral, Message
from bot.sandbox.workspace import SandboxError, Workspace
from dunning.calendar import zone

log = logging.getLogger(__name__)

JSONObject = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]
TOKEN_HEADER = "x-sandbox-token"
MAX_BODY = 200_000
STATIC = ("app.js", "app.css")


def _static(name: str) -> str:
    return resources.files("bot.sandbox").joinpath("static", name).read_text(encoding="utf-8")


class PageGuard:
    """Who may use the page: a loopback Host naming this port, a loopback Origin when
    sent, and the session token on every API call."""

    def __init__(self, port: int, token: str) -> None:
        self.token = token
        self.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        self.origins = frozenset(f"http://{h}" for h in self.hosts)

    def refusal(self, request: Request, *, api: bool) -> Response | None:
        if request.headers.get("host", "") not in self.hosts:
            return JSONResponse({"ok": False, "error": "this page answers on 127.0.0.1 only"},
                                status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.origins:
            return JSONResponse({"ok": False, "error": "cross-site request refused"},
                                status_code=403)
        if api:
            given = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return JSONResponse({"ok": False, "error": "missing or wrong session token"},
                                    status_code=403)
            if request.method == "POST" and not request.headers.get(
                    "content-type", "").startswith("application/json"):
                return JSONResponse({"ok": False, "error": "JSON only"}, status_code=415)
        return None


def _time_label(ts: str, tz: str) -> tuple[str, str]:
    moment = datetime.fromtimestamp(float(ts), zone(tz))
    return moment.strftime("%H:%M"), moment.strftime("%A, %B %-d")


def _file_blocks(ws: Workspace, message: Message, base: str) -> list[JSONObject]:
    """Uploaded files shown as Slack shows them: images inline, anything else as a link."""
    out: list[JSONObject] = []
    files = {f.id: f for f in ws.slack.files()}
    for file_id in message.files:
        f = files.get(file_id)
        if f is None:
            continue
        url = f"{base}files/{quote(f.id)}"
        if f.mimetype.startswith("image/"):
            out.append({"type": "image", "image_url": url, "alt_text": f.alt_txt or f.filename,
                        "title": {"type": "plain_text", "text": f.title or f.filename}})
        else:
            out.append({"type": "section", "text": {"type": "mrkdwn",
                                                     "text": f"<{url}|{f.filename}>"}})
    return out


_MENTION = re.compile(r"<@([UW][A-Z0-9]+)>")


def _named(value: Any, names: dict[str, str]) -> Any:
    """User mentions labelled with the person's name, as Slack's client shows them."""
    if isinstance(value, str):
        return _MENTION.sub(lambda m: f"<@{m.group(1)}|{names.get(m.group(1), m.group(1))}>",
                            value)
    if isinstance(value, list):
        return [_named(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _named(v, names) for k, v in value.items()}
    return value


def _message_json(ws: Workspace, m: Message | Ephemeral, *, base: str, tz: str,
                  author: str, names: dict[str, str]) -> JSONObject:
    blocks = _named(list(m.blocks), names)
    text = _named(m.text, names)
    if isinstance(m, Message) and m.files:
        lead = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}] if (
            text and not blocks) else []
        blocks = lead + blocks + _file_blocks(ws, m, base)
    when, day = _time_label(m.ts, tz)
    edited = isinstance(m, Message) and m.edited_ts is not None
    return {
        "ts": m.ts, "day": day, "blocks": m.blocks, "text": m.text,
        "ephemeral": isinstance(m, Ephemeral), "edited": edited,
        "html": render_message_html(blocks, text=text, author=author, ts_label=when),
    }


def workspace_state(ws: Workspace, key: str, *, base: str) -> JSONObject:
    """Everything the page draws for one person, as JSON (no secrets, no tokens)."""
    person = ws.persona(key)
    tz = ws.deps.settings.dunning_timezone
    names = {u.id: u.real_name for u in ws.slack.users()}

    def show(m: Message | Ephemeral) -> JSONObject:
        return _message_json(ws, m, base=base, tz=tz, author="dunning", names=names)

    channels: list[JSONObject] = []
    for c in ws.slack.channels():
        if c.is_im and c.user is not None:
            label, kind = names.get(c.user, c.user), "dm"
        else:
            label, kind = c.name, "channel"
        items: list[tuple[str, JSONObject]] = []
        for m in ws.slack.messages(c.id):
            if m.is_reply:
                continue
            item = show(m)
            item["replies"] = [show(r) for r in ws.slack.thread(c.id, m.ts) if r.is_reply]
            items.append((m.ts, item))
        for e in ws.slack.ephemerals(person.user_id, channel=c.id):
            items.append((e.ts, show(e)))
        items.sort(key=lambda pair: float(pair[0]))
        channels.append({"id": c.id, "name": label, "kind": kind,
                         "mine": c.is_im and c.user == person.user_id,
                         "member": person.user_id in c.members,
                         "messages": [item for _, item in items]})
    modal = ws.open_modal(key)
    today = ws.today()
    state: JSONObject = {
        "as": person.key,
        "today": today.isoformat(),
        "today_label": today.strftime("%a %-d %b %Y"),
        "timezone": tz,
        "workspace": ws.slack.team_name,
        "personas": [p.to_json() for p in ws.people],
        "users": [{"id": u.id, "name": u.real_name} for u in ws.slack.users() if not u.is_bot],
        "channels": channels,
        "modal": None if modal is None else {
            "id": modal.id, "view": modal.payload, "errors": ws.modal_errors(modal.id),
            "html": render_view_html(_named({**modal.payload, "type": "modal"}, names))},
    }
    state["version"] = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
    return state


def _index(token: str) -> str:
    return _static("index.html").replace("{{TOKEN}}", token)


def build_page(ws: Workspace, *, port: int, token: str | None = None) -> Starlette:
    """The page app for a server listening on 127.0.0.1:`port`."""
    guard = PageGuard(port, token or secrets.token_urlsafe(24))
    index = _index(guard.token)
    css = {"app.css": _static("app.css"), "blocks.css": CSS}
    scripts = {"app.js": _static("app.js")}

    def guarded(handler: Handler, *, api: bool = True) -> Handler:
        async def run(request: Request) -> Response:
            refused = guard.refusal(request, api=api)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except SandboxError as exc:
                return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return run

    async def body_of(request: Request) -> JSONObject:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise SandboxError("request too large")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise SandboxError("not JSON") from None
        if not isinstance(data, dict):
            raise SandboxError("not a JSON object")
        return data

    def text(data: JSONObject, name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise SandboxError(f"{name} is missing")
        return value

    def number(data: JSONObject, name: str) -> int:
        value = data.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SandboxError(f"{name} must be a number")
        return value

    async def page(request: Request) -> Response:
        return HTMLResponse(index, headers={"Cache-Control": "no-store",
                                            "X-Frame-Options": "DENY",
                                            "Referrer-Policy": "no-referrer"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name in css:
            return Response(css[name], media_type="text/css")
        if name in scripts:
            return Response(scripts[name], media_type="text/javascript")
        return Response("not found", status_code=404)

    async def state(request: Request) -> Response:
        key = request.query_params.get("as") or ws.people[0].key
        base = str(request.base_url)
        data = await anyio.to_thread.run_sync(lambda: workspace_state(ws, key, base=base))
        if request.query_params.get("since") == data["version"]:
            return JSONResponse({"version": data["version"], "unchanged": True})
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    async def file(request: Request) -> Response:
        wanted = request.path_params["file_id"]
        found = next((f for f in ws.slack.files() if f.id == wanted), None)
        if found is None or found.content is None:
            return Response("not found", status_code=404)
        return Response(found.content, media_type=found.mimetype)

    async def click(request: Request) -> Response:
        data = await body_of(request)
        selected = data.get("selected")
        result = await anyio.to_thread.run_sync(lambda: ws.click(
            text(data, "as"), channel=text(data, "channel"), ts=text(data, "ts"),
            block=number(data, "block"), element=number(data, "element"),
            selected=selected if isinstance(selected, str) else None))
        return JSONResponse(result)

    async def submit(request: Request) -> Response:
        data = await body_of(request)
        values = data.get("values")
        if not isinstance(values, dict):
            raise SandboxError("values are missing")
        result = await anyio.to_thread.run_sync(
            lambda: ws.submit(text(data, "as"), text(data, "view_id"), values))
        return JSONResponse(result)

    async def close(request: Request) -> Response:
        data = await body_of(request)
        result = await anyio.to_thread.run_sync(
            lambda: ws.close(text(data, "as"), text(data, "view_id")))
        return JSONResponse(result)

    async def command(request: Request) -> Response:
        data = await body_of(request)
        result = await anyio.to_thread.run_sync(lambda: ws.command(
            text(data, "as"), channel=text(data, "channel"), text=text(data, "text")))
        return JSONResponse(result)

    async def next_day(request: Request) -> Response:
        await body_of(request)
        day = await anyio.to_thread.run_sync(ws.next_business_day)
        return JSONResponse({"ok": True, "day": day.day.isoformat(), "created": day.created,
                             "posted": day.posted})

    return Starlette(routes=[
        Route("/", guarded(page, api=False), methods=["GET"]),
        Route("/static/{name}", guarded(static, api=False), methods=["GET"]),
        Route("/files/{file_id}", guarded(file, api=False), methods=["GET"]),
        Route("/api/state", guarded(state), methods=["GET"]),
        Route("/api/click", guarded(click), methods=["POST"]),
        Route("/api/submit", guarded(submit), methods=["POST"]),
        Route("/api/close", guarded(close), methods=["POST"]),
        Route("/api/command", guarded(command), methods=["POST"]),
        Route("/api/next-day", guarded(next_day), methods=["POST"]),
    ])


__all__ = ["PageGuard", "build_page", "workspace_state"]
