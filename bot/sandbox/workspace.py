"""The browser sandbox's engine room: the real bot, a loopback Slack, the demo ledger, a clock.

`Workspace` wires the product exactly as `dunning serve` does (Settings -> Deps -> Bolt app
-> Starlette web app on 127.0.0.1, a real `WebClient`), except that Slack is the loopback
`SlackSandbox` and time is the sandbox's own `SandboxClock`. It then plays Slack's part
towards the bot: a click, a modal submission or a slash command becomes the signed HTTP
request Slack would send to `/slack/events` (`v0=` HMAC-SHA256 of ``v0:{ts}:{body}`` with
the sandbox's random signing secret), and what the bot answers in the HTTP response (modal
errors, a modal update, a slash command's reply) lands in the sandbox as Slack would land
it. The page (`bot.sandbox.page`) only shows the sandbox and calls these methods; the
signing secret never leaves this object.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import uvicorn

from bot.app import build_app
from bot.deps import Deps, build_deps
from bot.sandbox.slack_api import Message, SlackSandbox, View
from bot.settings import Settings, SettingsError
from bot.web import build_web
from connectors.slack import SlackMessenger, make_client
from dunning.calendar import is_business_day, next_business_day, zone
from handlers.jobs import post_cards, post_digest
from services import demo
from services.common import Actor
from services.importing import ImportSummary
from services.planning import run_cycle
from store.engine import make_engine, migrate, session_scope

log = logging.getLogger(__name__)

JSONObject = dict[str, Any]
DIGEST_CHANNEL = "ar-managers"
WORKDAY_START = clock_time(9, 0)  # the sandbox day starts when the worker's cycle has run
REQUEST_TIMEOUT = 30.0  # seconds for the bot to answer one request (the digest draws a chart)


class SandboxError(RuntimeError):
    """A page request the sandbox cannot carry out; the message is for the person."""


# --------------------------------------------------------------------------------------
# Time


class SandboxClock:
    """The sandbox's time: starts at a chosen moment and runs on from there (or stands still
    with ``ticking=False``); "next business day" moves it forward, never back.

    The bot reads `now` through `Deps.clock`, so every decision gets the sandbox's date;
    only Slack's request signatures use the wall clock, because Bolt checks them against it.
    """

    def __init__(self, start: datetime, *, ticking: bool = True,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if start.tzinfo is None:
            raise ValueError("the sandbox clock needs an aware datetime")
        self._lock = threading.Lock()
        self._base = start.astimezone(UTC)
        self._ticking = ticking
        self._monotonic = monotonic
        self._set_at = monotonic()

    def now(self) -> datetime:
        with self._lock:
            if not self._ticking:
                return self._base
            return self._base + timedelta(seconds=self._monotonic() - self._set_at)

    def timestamp(self) -> float:
        """Seconds since the epoch, for the Slack sandbox's message ts."""
        return self.now().timestamp()

    def advance_to(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the sandbox clock needs an aware datetime")
        with self._lock:
            current = self._base if not self._ticking else \
                self._base + timedelta(seconds=self._monotonic() - self._set_at)
            if moment < current:
                raise ValueError("the sandbox clock only moves forward")
            self._base = moment.astimezone(UTC)
            self._set_at = self._monotonic()


# --------------------------------------------------------------------------------------
# People


@dataclass(frozen=True)
class Persona:
    """Someone the page can act as: a Slack member of the sandbox with a role in dunning."""

    key: str
    real_name: str
    email: str
    role: str  # AE, CSM, Finance, Manager, Outsider
    user_id: str = ""

    @property
    def handle(self) -> str:
        return self.email.split("@", 1)[0].replace(".", "")

    def to_json(self) -> JSONObject:
        return {"key": self.key, "name": self.real_name, "role": self.role,
                "user_id": self.user_id, "email": self.email}


def _from_email(email: str, role: str) -> Persona:
    first, _, last = email.split("@", 1)[0].partition(".")
    return Persona(key=first, real_name=f"{first.title()} {last.title()}".strip(), email=email,
                   role=role)


FINANCE = Persona("fatima", "Fatima Khan", "fatima.khan@example.com", "Finance")
MANAGER = Persona("morgan", "Morgan Blake", "morgan.blake@example.com", "Manager")
OUTSIDER = Persona("oscar", "Oscar Novak", "oscar.novak@example.com", "Outsider")


def demo_people() -> list[Persona]:
    """The demo ledger's owners (AEs) and CSMs, then finance, a manager and an outsider."""
    return ([_from_email(e, "AE") for e in demo.OWNERS]
            + [_from_email(e, "CSM") for e in demo.CSMS] + [FINANCE, MANAGER, OUTSIDER])


def owner_channel(persona: Persona) -> str:
    return f"ar-{persona.key}"


# --------------------------------------------------------------------------------------
# A uvicorn server on a socket we bound ourselves (the port is known before it serves)


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: a free one, picked by the kernel, no race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass
class BackgroundServer:
    """An ASGI app served by uvicorn from a daemon thread, on a socket bound beforehand."""

    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def serve_in_thread(app: Any, sock: socket.socket, *, name: str) -> BackgroundServer:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name,
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.01)
    return BackgroundServer(server, thread, sock)


# --------------------------------------------------------------------------------------
# Slack's requests


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Slack's request signature: ``v0=`` HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class BotAnswer:
    status: int
    body: bytes

    def json(self) -> JSONObject:
        text = self.body.decode("utf-8", "replace").strip()
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            return {"text": text}
        return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class DayResult:
    day: date
    created: int
    posted: int
    not_posted: int
    digest: bool


@dataclass
class _Modals:
    """Each user's open modal stack (Slack allows three) and the field errors shown."""

    stacks: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# The workspace


class Workspace:
    """The demo ledger, the real bot and a loopback Slack workspace, on one sandbox clock.

    `start()` seeds the ledger and starts Slack and the bot's web app; `run_day()` runs the
    day's cycle, posts the cards and the digest; `click`, `submit`, `close` and `command`
    are what people do in Slack; `next_business_day()` moves the clock and runs the next
    cycle. `stop()` ends it all.
    """

    def __init__(self, *, db_url: str, today: date, seed: int = 7, customers: int = 40,
                 timezone: str = "UTC", country: str = "US", currency: str = "USD",
                 policy_path: Path | None = None, ticking: bool = True) -> None:
        self.db_url = db_url
        self.seed_value = seed
        self.customers = customers
        self.clock = SandboxClock(datetime.combine(today, WORKDAY_START, zone(timezone)),
                                  ticking=ticking)
        self.people = demo_people()
        self._signing_secret = secrets.token_urlsafe(32)
        self._token = f"xoxb-sandbox-{secrets.token_hex(12)}"
        self._settings_args: JSONObject = {
            "dunning_timezone": timezone, "dunning_country": country,
            "dunning_currency": currency, "dunning_policy": policy_path,
        }
        self._lock = threading.RLock()
        self._modals = _Modals()
        self.slack = SlackSandbox(token=self._token, team_name="Example Corp (sandbox)",
                                  bot_name="dunning", clock=self.clock.timestamp)
        self._bot: BackgroundServer | None = None
        self._deps: Deps | None = None
        self.seeded: ImportSummary | None = None

    # ---- lifecycle ---------------------------------------------------------------

    @property
    def deps(self) -> Deps:
        if self._deps is None:
            raise RuntimeError("the sandbox workspace is not started")
        return self._deps

    @property
    def events_url(self) -> str:
        if self._bot is None:
            raise RuntimeError("the sandbox workspace is not started")
        return f"{self._bot.url}/slack/events"

    def today(self) -> date:
        return self.deps.today()

    def start(self) -> None:
        """Seed the ledger (once per database), start Slack, the bot and its web app."""
        engine = make_engine(self.db_url)
        migrate(engine)
        try:
            settings = self._settings(engine)
            policy = settings.load_policy()
            today = self.clock.now().astimezone(zone(settings.dunning_timezone)).date()
            with session_scope(engine) as s:
                self.seeded = demo.seed(s, policy, seed_value=self.seed_value,
                                        n_customers=self.customers, today=today,
                                        timezone=settings.dunning_timezone)
            self.slack.start()
            self._seed_people()
            settings = settings.model_copy(update={"slack_api_url": self.slack.base_url})
            client = make_client(self._token, self.slack.base_url)
            self._deps = build_deps(settings, SlackMessenger(client), clock=self.clock.now,
                                    engine=engine)
            bolt = build_app(self._deps, client, signing_secret=self._signing_secret)
            self._bot = serve_in_thread(build_web(bolt, self._deps), bind_loopback(),
                                        name="sandbox-bot")
        except BaseException:
            self.stop()
            engine.dispose()
            raise

    def stop(self) -> None:
        """Stop the bot's web app and the Slack sandbox; safe to call twice."""
        bot, self._bot = self._bot, None
        if bot is not None:
            bot.stop()
        self.slack.stop()
        if self._deps is not None:
            self._deps.engine.dispose()

    def __enter__(self) -> Workspace:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _settings(self, engine: Any) -> Settings:
        """The bot's settings, built here: never the user's .env or Slack credentials."""
        finance = ",".join(p.email for p in self.people if p.role == "Finance")
        managers = ",".join(p.email for p in self.people if p.role == "Manager")
        owners = ",".join(f"{p.email}=#{owner_channel(p)}" for p in self.people
                          if p.role == "AE")
        try:
            return Settings(
                _env_file=None,
                database_url=self.db_url, slack_bot_token=self._token,
                slack_signing_secret=self._signing_secret, slack_app_token=None,
                dunning_finance_users=finance, dunning_manager_users=managers,
                dunning_owner_channels=owners, dunning_digest_channel=f"#{DIGEST_CHANNEL}",
                smtp_from="ar@example.com", openai_api_key=None, **self._settings_args)
        except ValueError as exc:
            raise SettingsError(f"invalid sandbox settings: {exc}") from exc

    def _seed_people(self) -> None:
        people: list[Persona] = []
        for p in self.people:
            user_id = self.slack.add_user(p.email, p.handle, real_name=p.real_name)
            people.append(Persona(p.key, p.real_name, p.email, p.role, user_id))
        self.people = people
        everyone = [p.user_id for p in people]
        for p in people:
            if p.role == "AE":
                self.slack.add_channel(owner_channel(p), members=everyone)
        self.slack.add_channel(DIGEST_CHANNEL, members=[p.user_id for p in people
                                                        if p.role in ("Manager", "Finance")])

    def persona(self, key: str) -> Persona:
        for p in self.people:
            if p.key == key:
                return p
        raise SandboxError(f"nobody called {key!r} in this workspace")

    # ---- the day -----------------------------------------------------------------

    def run_day(self) -> DayResult:
        """Today's cycle on the sandbox date, the new cards, and the manager digest."""
        deps = self.deps
        today, now = deps.today(), deps.now()
        with self._lock:
            with session_scope(deps.engine) as s:
                result = run_cycle(s, deps.policy, today, actor=Actor("scheduler"), now=now)
            posted = post_cards(deps)
            digest = False
            if is_business_day(today, deps.settings.dunning_country):
                post_digest(deps, f"#{DIGEST_CHANNEL}")
                digest = True
        return DayResult(today, len(result.created), posted.posted, len(posted.failed), digest)

    def next_business_day(self) -> DayResult:
        """Move the clock to the next business day's morning and run that day."""
        deps = self.deps
        tz = deps.settings.dunning_timezone
        day = next_business_day(deps.today() + timedelta(days=1),
                                deps.settings.dunning_country)
        with self._lock:
            self.clock.advance_to(datetime.combine(day, WORKDAY_START, zone(tz)))
        return self.run_day()

    # ---- what people do in Slack -------------------------------------------------

    def _send(self, body: bytes, content_type: str) -> BotAnswer:
        """POST to the bot's /slack/events, signed the way Slack signs (wall-clock time)."""
        stamp = int(time.time())
        request = urllib.request.Request(self.events_url, data=body, method="POST")
        request.add_header("Content-Type", content_type)
        request.add_header("X-Slack-Request-Timestamp", str(stamp))
        request.add_header("X-Slack-Signature", sign(self._signing_secret, body, stamp))
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as resp:
                return BotAnswer(resp.status, resp.read())
        except urllib.error.HTTPError as err:
            return BotAnswer(err.code, err.read())
        except OSError as exc:
            raise SandboxError(f"the bot did not answer: {exc}") from exc

    def _interact(self, payload: JSONObject) -> BotAnswer:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        answer = self._send(body, "application/x-www-form-urlencoded")
        if answer.status != 200:
            raise SandboxError(f"the bot answered HTTP {answer.status}")
        return answer

    def _user_json(self, p: Persona) -> JSONObject:
        return {"id": p.user_id, "username": p.handle, "name": p.handle,
                "team_id": self.slack.team_id}

    def _team_json(self) -> JSONObject:
        return {"id": self.slack.team_id, "domain": "sandbox"}

    def _find(self, channel: str, ts: str, user_id: str) -> tuple[list[JSONObject], bool,
                                                                  Message | None]:
        """The blocks of a message (or of the user's ephemeral) at ts."""
        for m in self.slack.messages(channel):
            if m.ts == ts:
                return m.blocks, False, m
        for e in self.slack.ephemerals(user_id, channel=channel):
            if e.ts == ts:
                return e.blocks, True, None
        raise SandboxError("that message is gone")

    def click(self, key: str, *, channel: str, ts: str, block: int, element: int,
              selected: str | None = None) -> JSONObject:
        """Press a button (or pick from a menu / date picker) in a message, as `key`."""
        p = self.persona(key)
        blocks, ephemeral, message = self._find(channel, ts, p.user_id)
        if not 0 <= block < len(blocks):
            raise SandboxError("no such block in that message")
        holder = blocks[block]
        if holder.get("type") == "actions":
            elements = holder.get("elements") or []
            if not 0 <= element < len(elements):
                raise SandboxError("no such element in that block")
            el = elements[element]
        elif isinstance(holder.get("accessory"), dict):
            el = holder["accessory"]
        else:
            raise SandboxError("nothing to click in that block")
        action = _action(el, holder, block, selected=selected, users=self.people)
        trigger = self.slack.issue_trigger_id(p.user_id)
        container: JSONObject = {"type": "message", "message_ts": ts, "channel_id": channel,
                                 "is_ephemeral": ephemeral}
        payload: JSONObject = {
            "type": "block_actions", "user": self._user_json(p), "api_app_id": self.slack.app_id,
            "token": "", "container": container, "trigger_id": trigger,
            "team": self._team_json(), "enterprise": None, "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel},
            "response_url": self.slack.response_url(channel=channel, user=p.user_id,
                                                    message_ts=ts),
            "actions": [action], "state": {"values": {}},
        }
        if message is not None:
            payload["message"] = message.to_slack(self.slack.team_id)
        self._interact(payload)
        opened = [v for v in self.slack.views("modal") if v.trigger_id == trigger]
        with self._lock:
            stack = self._modals.stacks.setdefault(p.user_id, [])
            for v in opened:
                stack.append(v.id)
        return {"ok": True, "opened": [v.id for v in opened]}

    def open_modal(self, key: str) -> View | None:
        """The modal `key` sees on top, if any."""
        p = self.persona(key)
        with self._lock:
            stack = self._modals.stacks.get(p.user_id) or []
            return self.slack.view(stack[-1]) if stack else None

    def modal_errors(self, view_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._modals.errors.get(view_id, {}))

    def _check_top(self, p: Persona, view_id: str) -> View:
        with self._lock:
            stack = self._modals.stacks.get(p.user_id) or []
            if not stack or stack[-1] != view_id:
                raise SandboxError("that modal is not open")
        return self.slack.view(view_id)

    def submit(self, key: str, view_id: str, values: dict[str, dict[str, JSONObject]]
               ) -> JSONObject:
        """Submit `key`'s open modal with these input values (Slack's state.values shape)."""
        p = self.persona(key)
        view = self._check_top(p, view_id)
        shown = view.to_slack(team_id=self.slack.team_id, app_id=self.slack.app_id,
                              bot_id=self.slack.bot_id)
        shown["state"] = {"values": values}
        answer = self._interact({
            "type": "view_submission", "team": self._team_json(), "user": self._user_json(p),
            "api_app_id": self.slack.app_id, "token": "",
            "trigger_id": self.slack.issue_trigger_id(p.user_id, view_id=view_id),
            "view": shown, "response_urls": [], "is_enterprise_install": False,
        }).json()
        action = answer.get("response_action")
        # The bot answers first and updates the card right after: the page shows the card
        # as the person will see it a moment later.
        self.deps.card_updates.drain(timeout=REQUEST_TIMEOUT)
        with self._lock:
            self._modals.errors.pop(view_id, None)
            stack = self._modals.stacks.setdefault(p.user_id, [])
            if action == "errors":
                errors = answer.get("errors")
                self._modals.errors[view_id] = {str(k): str(v) for k, v in (
                    errors.items() if isinstance(errors, dict) else ())}
                return {"ok": False, "errors": self._modals.errors[view_id]}
            if action == "update" and isinstance(answer.get("view"), dict):
                try:
                    self.slack.replace_view(view_id, answer["view"])
                except ValueError as exc:
                    raise SandboxError(f"Slack would refuse the bot's modal: {exc}") from exc
                return {"ok": True, "updated": view_id}
            if action == "clear":
                stack.clear()
            elif view_id in stack:
                stack.remove(view_id)
        return {"ok": True, "closed": view_id}

    def close(self, key: str, view_id: str) -> JSONObject:
        """Cancel or x on a modal: it goes away (the bot hears of it only with
        notify_on_close, which this app does not ask for)."""
        p = self.persona(key)
        view = self._check_top(p, view_id)
        if view.payload.get("notify_on_close"):
            shown = view.to_slack(team_id=self.slack.team_id, app_id=self.slack.app_id,
                                  bot_id=self.slack.bot_id)
            self._interact({"type": "view_closed", "team": self._team_json(),
                            "user": self._user_json(p), "view": shown, "is_cleared": False})
        with self._lock:
            stack = self._modals.stacks.setdefault(p.user_id, [])
            if view_id in stack:
                stack.remove(view_id)
            self._modals.errors.pop(view_id, None)
        return {"ok": True, "closed": view_id}

    def command(self, key: str, *, channel: str, text: str) -> JSONObject:
        """Type `/dunning ...` in a channel, as `key`: the answer shows only to them."""
        p = self.persona(key)
        line = " ".join(text.split())
        name, _, rest = line.partition(" ")
        try:
            channel_name = next(c.name for c in self.slack.channels() if c.id == channel)
        except StopIteration:
            raise SandboxError("no such channel") from None
        if name != "/dunning":
            self.slack.add_ephemeral(channel, p.user_id, text=(
                f"{name or 'That'} is not a valid command. In the sandbox the app's command "
                "is /dunning (try `/dunning status acme`)."))
            return {"ok": False, "error": "unknown_command"}
        body = urllib.parse.urlencode({
            "token": "", "team_id": self.slack.team_id, "team_domain": "sandbox",
            "channel_id": channel, "channel_name": channel_name, "user_id": p.user_id,
            "user_name": p.handle, "command": name, "text": rest,
            "api_app_id": self.slack.app_id, "is_enterprise_install": "false",
            "response_url": self.slack.response_url(channel=channel, user=p.user_id),
            "trigger_id": self.slack.issue_trigger_id(p.user_id),
        }).encode()
        answer = self._send(body, "application/x-www-form-urlencoded")
        if answer.status != 200:
            raise SandboxError(f"the bot answered HTTP {answer.status}")
        reply = answer.json()
        blocks = reply.get("blocks") if isinstance(reply.get("blocks"), list) else []
        text_out = str(reply.get("text") or "")
        if text_out or blocks:
            if reply.get("response_type") == "in_channel":
                url = self.slack.response_url(channel=channel, user=p.user_id)
                request = urllib.request.Request(url, data=json.dumps(reply).encode(),
                                                 method="POST",
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT):
                    pass
            else:
                self.slack.add_ephemeral(channel, p.user_id, text=text_out, blocks=blocks)
        return {"ok": True}


def _action(el: JSONObject, holder: JSONObject, index: int, *, selected: str | None,
            users: list[Persona]) -> JSONObject:
    """The `actions[0]` of a block_actions payload for one element, as Slack builds it."""
    kind = str(el.get("type") or "")
    action: JSONObject = {"type": kind, "action_id": el.get("action_id") or f"a{index}",
                          "block_id": holder.get("block_id") or f"b{index}",
                          "action_ts": f"{time.time():.6f}"}
    if "text" in el:
        action["text"] = el["text"]
    if "value" in el:
        action["value"] = el["value"]
    if kind in ("static_select", "overflow", "radio_buttons"):
        options = [o for o in el.get("options") or [] if isinstance(o, dict)]
        for group in el.get("option_groups") or []:
            options += [o for o in group.get("options") or [] if isinstance(o, dict)]
        chosen = next((o for o in options if o.get("value") == selected), None)
        if chosen is None:
            raise SandboxError("pick one of the menu's options")
        action["selected_option"] = chosen
    elif kind == "datepicker":
        try:
            action["selected_date"] = date.fromisoformat(selected or "").isoformat()
        except ValueError:
            raise SandboxError("pick a date") from None
    elif kind == "users_select":
        if selected not in {p.user_id for p in users}:
            raise SandboxError("pick a person")
        action["selected_user"] = selected
    return action


__all__ = ["BackgroundServer", "DayResult", "Persona", "SandboxClock", "SandboxError",
           "Workspace", "bind_loopback", "demo_people", "serve_in_thread", "sign"]
