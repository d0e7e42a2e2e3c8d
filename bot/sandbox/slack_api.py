"""A loopback stand-in for the Slack Web API: a small, stateful Slack workspace.

slack-sdk talks to Slack through urllib, so the only faithful double is a real HTTP server.
`SlackSandbox` binds 127.0.0.1 on a free port and answers the part of the Web API this bot
uses, with Slack's response shapes and error codes, so the real `WebClient` and the real
Bolt `App` run unmodified against it (`WebClient(token=..., base_url=sandbox.base_url)`).

It keeps the workspace it serves (users, channels and DMs, messages and threads, ephemeral
messages, uploaded files, modal and App Home views, response_url posts) and a log of every
call, for tests to assert on and for the local sandbox page to show. Slack's limits that
hide bugs in a mock (50 blocks per message, 100 per view, 40,000 characters of text, single
use trigger ids, five uses of a response_url) are enforced; faults (429 with Retry-After,
5xx, ``ok: false``) can be injected per method.

Endpoints, all under ``http://127.0.0.1:PORT/``::

    POST|GET /api/<method>        Web API methods (form, JSON or multipart bodies)
    POST     /upload/v1/<key>     upload URLs handed out by files.getUploadURLExternal
    POST     /actions/<key>       response URLs made by SlackSandbox.response_url()
    GET      /files/<id>/<name>   an uploaded file's bytes (its url_private)
    GET      /sandbox/state.json  SlackSandbox.to_json(), for the browser page to poll

Every public record is a frozen dataclass; updates replace records, so what the query
helpers return is a consistent snapshot that later calls do not change under the caller.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import mimetypes
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

JSONObject = dict[str, Any]
Blocks = list[dict[str, Any]]

MAX_MESSAGE_BLOCKS: Final = 50
MAX_VIEW_BLOCKS: Final = 100
MAX_TEXT_CHARS: Final = 40_000
MAX_MODAL_TITLE_CHARS: Final = 24
MAX_PRIVATE_METADATA_CHARS: Final = 3_000
MAX_CALLBACK_ID_CHARS: Final = 255
MAX_RESPONSE_URL_USES: Final = 5
MAX_VIEW_STACK: Final = 3
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1_000

UPLOAD: Final = "upload"
"""Call-log name of raw uploads to an upload URL (no dot, so never a Slack method name)."""
RESPONSE_URL: Final = "response_url"
"""Call-log name of posts to a response URL (no dot, so never a Slack method name)."""

DEFAULT_SCOPES: Final = (
    "chat:write", "chat:write.public", "commands", "files:write", "im:write", "im:history",
    "channels:read", "channels:history", "groups:read", "users:read", "users:read.email",
    "usergroups:read",
)

# Form-encoded Web API arguments that carry JSON text; decoded before handlers and the log
# see them, so assertions compare Block Kit as lists of dicts whatever the encoding.
_JSON_FIELDS: Final = frozenset(
    {"blocks", "attachments", "view", "files", "metadata", "unfurls", "outputs"}
)
_SERVER_ERRORS: Final = {500: "internal_error", 502: "internal_error", 503: "service_unavailable"}


# --------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Call:
    """One request the sandbox answered: what arrived and what went back."""

    method: str
    """Web API method (``chat.postMessage``), or `UPLOAD` / `RESPONSE_URL`."""
    args: JSONObject
    """Form fields or JSON body, JSON-encoded fields (blocks, view, files...) decoded."""
    token: str | None
    """From ``Authorization: Bearer`` or a ``token`` field; never in `args`."""
    headers: Mapping[str, str]
    """Request headers, names in lower case."""
    time: float
    status: int
    """HTTP status of the answer."""
    response: JSONObject
    """The JSON answered (for uploads and response URLs, the outcome as ``ok``/``error``)."""
    injected: bool = False
    """True when `SlackSandbox.fail_next` decided the answer."""

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class User:
    """A workspace member (a person, or the bot user itself)."""

    id: str
    name: str
    real_name: str
    email: str | None = None
    is_bot: bool = False
    bot_id: str | None = None

    def to_slack(self, team_id: str) -> JSONObject:
        """The user object of users.info / users.lookupByEmail."""
        profile: JSONObject = {
            "real_name": self.real_name,
            "real_name_normalized": self.real_name,
            "display_name": self.name,
            "display_name_normalized": self.name,
            "team": team_id,
        }
        if self.email is not None:
            profile["email"] = self.email
        if self.bot_id is not None:
            profile["bot_id"] = self.bot_id
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": self.real_name,
            "deleted": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "tz": "UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "profile": profile,
        }


@dataclass(frozen=True)
class Channel:
    """A public or private channel, or a DM (``is_im``, id starting with D)."""

    id: str
    name: str
    created: int
    members: tuple[str, ...] = ()
    is_im: bool = False
    is_private: bool = False
    user: str | None = None
    """The other member of a DM."""

    def to_slack(self, *, bot_user_id: str, general_id: str) -> JSONObject:
        """The conversation object of conversations.info / conversations.list."""
        if self.is_im:
            return {
                "id": self.id,
                "created": self.created,
                "is_im": True,
                "is_org_shared": False,
                "user": self.user,
                "is_user_deleted": False,
                "priority": 0,
            }
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "created": self.created,
            "creator": bot_user_id,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": self.is_private,
            "is_archived": False,
            "is_general": self.id == general_id,
            "is_shared": False,
            "is_org_shared": False,
            "is_member": bot_user_id in self.members,
            "num_members": len(self.members),
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }


@dataclass(frozen=True)
class Usergroup:
    """A user group (``@finance``) whose members usergroups.users.list returns."""

    id: str
    handle: str
    name: str
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Message:
    """A message in a channel; a thread reply has ``thread_ts`` set to its parent's ts."""

    channel: str
    ts: str
    text: str
    user: str
    bot_id: str | None = None
    blocks: Blocks = field(default_factory=list)
    attachments: list[JSONObject] = field(default_factory=list)
    thread_ts: str | None = None
    reply_broadcast: bool = False
    files: tuple[str, ...] = ()
    metadata: JSONObject | None = None
    edited_ts: str | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_slack(self, team_id: str) -> JSONObject:
        """The message object as chat.* and conversations.* return it (no thread stats)."""
        out: JSONObject = {"type": "message", "user": self.user, "text": self.text,
                           "ts": self.ts, "team": team_id}
        if self.bot_id is not None:
            out["bot_id"] = self.bot_id
        if self.blocks:
            out["blocks"] = self.blocks
        if self.attachments:
            out["attachments"] = self.attachments
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
            if self.is_reply:
                out["parent_user_id"] = self.user
        if self.reply_broadcast:
            out["subtype"] = "thread_broadcast"
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.edited_ts is not None:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        return out


@dataclass(frozen=True)
class Ephemeral:
    """A message only ``user`` sees; it never enters history and chat.update cannot edit it."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: Blocks = field(default_factory=list)
    thread_ts: str | None = None
    via_response_url: bool = False


@dataclass(frozen=True)
class File:
    """A file from files.getUploadURLExternal; ``content`` arrives with the upload POST."""

    id: str
    filename: str
    length: int
    created: int
    user: str
    title: str | None = None
    alt_txt: str | None = None
    content: bytes | None = field(default=None, repr=False)
    completed: bool = False
    channels: tuple[str, ...] = ()
    initial_comment: str | None = None

    @property
    def mimetype(self) -> str:
        return mimetypes.guess_type(self.filename)[0] or "application/octet-stream"

    @property
    def filetype(self) -> str:
        _, dot, ext = self.filename.rpartition(".")
        return ext.lower() if dot else "binary"

    @property
    def size(self) -> int:
        return len(self.content) if self.content is not None else self.length

    def to_slack(self, root_url: str) -> JSONObject:
        """The file object of files.completeUploadExternal (metadata, never the bytes)."""
        url = f"{root_url}files/{self.id}/{quote(self.filename)}"
        out: JSONObject = {
            "id": self.id,
            "created": self.created,
            "timestamp": self.created,
            "name": self.filename,
            "title": self.title if self.title is not None else self.filename,
            "mimetype": self.mimetype,
            "filetype": self.filetype,
            "pretty_type": self.filetype.upper(),
            "user": self.user,
            "size": self.size,
            "mode": "hosted",
            "is_external": False,
            "is_public": bool(self.channels),
            "url_private": url,
            "url_private_download": url,
            "permalink": url,
            "channels": [c for c in self.channels if c.startswith("C")],
            "groups": [c for c in self.channels if c.startswith("G")],
            "ims": [c for c in self.channels if c.startswith("D")],
        }
        if self.alt_txt is not None:
            out["alt_txt"] = self.alt_txt
        return out


@dataclass(frozen=True)
class View:
    """A modal (views.open / views.push) or an App Home tab (views.publish)."""

    id: str
    type: str
    payload: JSONObject
    """The view as the app sent it (title, blocks, submit, private_metadata...)."""
    hash: str
    user_id: str | None = None
    trigger_id: str | None = None
    root_view_id: str | None = None
    previous_view_id: str | None = None
    state: JSONObject = field(default_factory=lambda: {"values": {}})

    @property
    def blocks(self) -> Blocks:
        blocks = self.payload.get("blocks")
        return blocks if isinstance(blocks, list) else []

    @property
    def callback_id(self) -> str:
        return str(self.payload.get("callback_id") or "")

    @property
    def private_metadata(self) -> str:
        return str(self.payload.get("private_metadata") or "")

    @property
    def external_id(self) -> str:
        return str(self.payload.get("external_id") or "")

    @property
    def title(self) -> str:
        title = self.payload.get("title")
        return str(title.get("text", "")) if isinstance(title, dict) else ""

    def to_slack(self, *, team_id: str, app_id: str, bot_id: str) -> JSONObject:
        """The view object views.* return and view_submission payloads carry."""
        out: JSONObject = {
            "id": self.id,
            "team_id": team_id,
            "type": self.type,
            "blocks": self.blocks,
            "private_metadata": self.private_metadata,
            "callback_id": self.callback_id,
            "state": self.state,
            "hash": self.hash,
            "clear_on_close": bool(self.payload.get("clear_on_close", False)),
            "notify_on_close": bool(self.payload.get("notify_on_close", False)),
            "root_view_id": self.root_view_id or self.id,
            "previous_view_id": self.previous_view_id,
            "app_id": app_id,
            "external_id": self.external_id,
            "app_installed_team_id": team_id,
            "bot_id": bot_id,
        }
        for key in ("title", "submit", "close"):
            if key in self.payload:
                out[key] = self.payload[key]
        return out


@dataclass(frozen=True)
class ResponsePost:
    """One JSON post to a response_url, with the context the URL was made for."""

    url: str
    payload: JSONObject
    channel: str | None
    user: str | None
    message_ts: str | None
    time: float

    @property
    def response_type(self) -> str:
        """Slack's default for response URLs is ephemeral."""
        return str(self.payload.get("response_type") or "ephemeral")

    @property
    def text(self) -> str:
        return str(self.payload.get("text") or "")

    @property
    def blocks(self) -> Blocks:
        blocks = self.payload.get("blocks")
        return blocks if isinstance(blocks, list) else []

    @property
    def replace_original(self) -> bool:
        return _truthy(self.payload.get("replace_original"))

    @property
    def delete_original(self) -> bool:
        return _truthy(self.payload.get("delete_original"))


# --------------------------------------------------------------------------------------
# Internals


class _MethodError(Exception):
    """A Slack error answer (``{"ok": false, "error": ...}``) raised inside a handler."""

    def __init__(self, error: str, *, message: str | None = None, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.message = message
        self.status = status

    def body(self) -> JSONObject:
        out: JSONObject = {"ok": False, "error": self.error}
        if self.message is not None:
            out["response_metadata"] = {"messages": [self.message]}
        return out


@dataclass
class _Fault:
    status: int
    error: str
    retry_after: int | None
    remaining: int


@dataclass
class _Trigger:
    user_id: str | None
    view_id: str | None
    issued_at: float
    used: bool = False


@dataclass
class _ResponseTarget:
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    record: JSONObject
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(payload: JSONObject, status: int = 200,
                headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status=status, body=json.dumps(payload).encode(), record=payload,
                  headers=headers)


def _text_reply(text: str, status: int) -> _Reply:
    record: JSONObject = {"ok": True} if status == 200 else {"ok": False, "error": text}
    return _Reply(status=status, body=text.encode(), record=record,
                  content_type="text/plain; charset=utf-8")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _parse_multipart(content_type: str, raw: bytes) -> list[EmailMessage]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise _MethodError("invalid_form_data")
    return list(cast(Iterable[EmailMessage], message.iter_parts()))


def _parse_args(content_type: str, raw: bytes, query: str) -> JSONObject:
    """Web API arguments from the query string and a form, JSON or multipart body."""
    args: JSONObject = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        args[key] = values[0] if len(values) == 1 else values
    kind = content_type.split(";", 1)[0].strip().lower()
    if raw and kind == "application/json":
        try:
            body = json.loads(raw)
        except ValueError:
            raise _MethodError("invalid_json") from None
        if not isinstance(body, dict):
            raise _MethodError("invalid_json")
        args.update(body)
    elif raw and kind == "multipart/form-data":
        for part in _parse_multipart(content_type, raw):
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str) and part.get_filename() is None:
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    args[name] = payload.decode("utf-8", "replace")
    elif raw:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _MethodError("invalid_form_data") from None
        for key, values in parse_qs(text, keep_blank_values=True).items():
            args[key] = values[0] if len(values) == 1 else values
    for key in _JSON_FIELDS & args.keys():
        value = args[key]
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            # Undecodable text is left as it is: the handler answers a *_format error.
            with contextlib.suppress(ValueError):
                args[key] = json.loads(value)
    return args


def _opt_str(args: Mapping[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise _MethodError("invalid_arguments", message=f"[ERROR] {name} must be a string")


def _req_str(args: Mapping[str, Any], name: str, error: str = "invalid_arguments") -> str:
    value = _opt_str(args, name)
    if value is None:
        raise _MethodError(error, message=f"[ERROR] missing required field: {name}")
    return value


def _opt_int(args: Mapping[str, Any], name: str, default: int) -> int:
    value = args.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _MethodError("invalid_arguments",
                           message=f"[ERROR] {name} must be an integer") from None


def _json_list(args: Mapping[str, Any], name: str, error: str) -> list[JSONObject] | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _MethodError(error)
    return cast(list[JSONObject], value)


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        kind, _, offset = base64.b64decode(cursor, validate=True).decode().partition(":")
        if kind == "offset" and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise _MethodError("invalid_cursor")


def _page(items: Sequence[_T], args: Mapping[str, Any]) -> tuple[list[_T], str]:
    """Slack cursor pagination: one page and the next_cursor ("" on the last page)."""
    limit = _opt_int(args, "limit", DEFAULT_PAGE_SIZE)
    limit = DEFAULT_PAGE_SIZE if limit <= 0 else min(limit, MAX_PAGE_SIZE)
    start = _decode_cursor(_opt_str(args, "cursor"))
    end = start + limit
    return list(items[start:end]), _encode_cursor(end) if end < len(items) else ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops bursts of parallel calls for a second

    def __init__(self, sandbox: SlackSandbox) -> None:
        # Port 0 on the listening socket itself: the kernel picks a free port, no race.
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sandbox = sandbox


class _Handler(BaseHTTPRequestHandler):
    server_version = "SlackSandbox/1.0"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        sandbox = cast(_Server, self.server).sandbox
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = sandbox._dispatch(self.command, self.path, headers, raw)
        except Exception:  # a sandbox bug must read as a server error, not a hang
            logger.exception("slack sandbox failed on %s %s", self.command, self.path)
            reply = _json_reply({"ok": False, "error": "internal_error"}, status=500)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


# --------------------------------------------------------------------------------------
# The sandbox


class SlackSandbox:
    """A Slack workspace served on 127.0.0.1 for the real slack-sdk and Bolt clients.

    Use as a context manager (or `start` / `stop`), point a client at `base_url`, seed
    people and channels with `add_user` / `add_channel`, and assert with `calls`,
    `messages`, `ephemerals`, `views`, `files` and `responses`. All methods are thread safe.
    """

    def __init__(
        self,
        *,
        token: str = "xoxb-sandbox",
        team_id: str = "T000000001",
        team_name: str = "Sandbox",
        bot_name: str = "dunning",
        scopes: Sequence[str] = DEFAULT_SCOPES,
        latency: float = 0.0,
        trigger_ttl: float | None = 3.0,
        strict_triggers: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        token: the one bot token the sandbox accepts (others get ``invalid_auth``).
        latency: seconds every HTTP answer is held back, to expose timing assumptions.
        trigger_ttl: seconds a trigger id from `issue_trigger_id` stays valid (Slack: ~3);
            None for no expiry.
        strict_triggers: refuse trigger ids the sandbox did not issue (else any non-empty
            string is accepted, as tests rarely route a real interaction first).
        clock: wall-clock source for message ts and call times (inject for determinism).
        """
        self.token = token
        self.team_id = team_id
        self.team_name = team_name
        self.scopes = tuple(scopes)
        self.latency = latency
        self.trigger_ttl = trigger_ttl
        self.strict_triggers = strict_triggers
        self._clock = clock
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counters: dict[str, int] = {}
        self._last_ts_micros = 0
        self._users: dict[str, User] = {}
        self._channels: dict[str, Channel] = {}
        self._dms: dict[str, str] = {}
        self._usergroups: dict[str, Usergroup] = {}
        self.app_id = self._new_id("A")
        self.bot_id = self._new_id("B")
        self.bot_user_id = self._new_id("U")
        self._users[self.bot_user_id] = User(
            id=self.bot_user_id, name=bot_name, real_name=bot_name, is_bot=True,
            bot_id=self.bot_id,
        )
        self.general_id = self._new_id("C")
        self._channels[self.general_id] = Channel(
            id=self.general_id, name="general", created=int(self._clock()),
            members=(self.bot_user_id,),
        )
        self._directory = self._save_directory()
        self._methods: dict[str, Callable[[JSONObject], JSONObject]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.open": self._conversations_open,
            "conversations.list": self._conversations_list,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "users.lookupByEmail": self._users_lookup_by_email,
            "usergroups.users.list": self._usergroups_users_list,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }
        self._clear_activity()

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the Slack sandbox is already running")
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"slack-sandbox:{server.server_address[1]}", daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Slack sandbox is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Root URL, ``http://127.0.0.1:PORT/``."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def base_url(self) -> str:
        """What `WebClient(base_url=...)` takes: ``http://127.0.0.1:PORT/api/``."""
        return f"{self.url}api/"

    # ---- seeding -----------------------------------------------------------------

    def add_user(self, email: str, name: str, *, real_name: str | None = None,
                 is_bot: bool = False) -> str:
        """Add a member (also to #general, as Slack does); an existing email returns its id."""
        with self._lock:
            existing = self._find_user_by_email(email)
            if existing is not None:
                return existing.id
            user = User(id=self._new_id("U"), name=name, real_name=real_name or name,
                        email=email, is_bot=is_bot)
            self._users[user.id] = user
            general = self._channels[self.general_id]
            self._channels[general.id] = replace(general, members=(*general.members, user.id))
            return user.id

    def add_channel(self, name: str, *, members: Iterable[str] = (),
                    is_private: bool = False) -> str:
        """Add a channel the bot is a member of; an existing name returns its id."""
        name = name.removeprefix("#")
        with self._lock:
            for channel in self._channels.values():
                if not channel.is_im and channel.name == name:
                    return channel.id
            for user_id in members:
                self._user(user_id)
            channel = Channel(
                id=self._new_id("G" if is_private else "C"), name=name,
                created=int(self._clock()),
                members=tuple(dict.fromkeys((self.bot_user_id, *members))),
                is_private=is_private,
            )
            self._channels[channel.id] = channel
            return channel.id

    def join(self, channel: str, *user_ids: str) -> None:
        """Make users members of a channel (by id or name)."""
        with self._lock:
            found = self._channel(channel)
            for user_id in user_ids:
                self._user(user_id)
            members = tuple(dict.fromkeys((*found.members, *user_ids)))
            self._channels[found.id] = replace(found, members=members)

    def add_usergroup(self, handle: str, user_ids: Iterable[str], *,
                      name: str | None = None) -> str:
        """Add a user group (``@finance``) for usergroups.users.list."""
        with self._lock:
            users = tuple(user_ids)
            for user_id in users:
                self._user(user_id)
            group = Usergroup(id=self._new_id("S"), handle=handle.removeprefix("@"),
                              name=name or handle, users=users)
            self._usergroups[group.id] = group
            return group.id

    def issue_trigger_id(self, user_id: str | None = None, *, view_id: str | None = None) -> str:
        """A trigger id as Slack puts in an interaction payload: one use, `trigger_ttl` s.

        ``view_id`` names the modal an interaction came from, which views.push stacks on.
        """
        with self._lock:
            trigger_id = (f"{int(self._clock())}.{self._next_count('trigger')}."
                          f"{secrets.token_hex(16)}")
            self._triggers[trigger_id] = _Trigger(user_id=user_id, view_id=view_id,
                                                  issued_at=self._clock())
            return trigger_id

    def response_url(self, *, channel: str | None = None, user: str | None = None,
                     message_ts: str | None = None) -> str:
        """A response URL as Slack puts in command and action payloads, on this server.

        ``channel``, ``user`` and ``message_ts`` are what Slack knows from the interaction:
        posts there then land like Slack's do (ephemeral to ``user``, in the channel, or
        replacing / deleting the message at ``message_ts``).
        """
        with self._lock:
            channel_id = self._channel(channel).id if channel is not None else None
            key = f"{self.team_id}/{self._next_count('response_url')}/{secrets.token_hex(12)}"
            self._response_targets[key] = _ResponseTarget(channel=channel_id, user=user,
                                                          message_ts=message_ts)
        return f"{self.url}actions/{key}"

    def add_ephemeral(self, channel: str, user: str, *, text: str,
                      blocks: Blocks | None = None) -> Ephemeral:
        """Show an app's message to one user, as Slack does with a slash command's ack body
        (the answer rides on the HTTP response, not on a Web API call)."""
        with self._lock:
            found = self._channel(channel)
            self._user(user)
            ephemeral = Ephemeral(channel=found.id, user=user, ts=self._next_ts(), text=text,
                                  blocks=list(blocks or []))
            self._ephemerals.append(ephemeral)
            return ephemeral

    def replace_view(self, view_id: str, payload: JSONObject) -> View:
        """Replace a modal's content, as Slack does with ``response_action: update`` in a
        view_submission's ack; checked like views.update (ValueError with Slack's words)."""
        with self._lock:
            current = self._views.get(view_id)
            if current is None:
                raise KeyError(f"no view {view_id!r} in the Slack sandbox")
            try:
                checked = self._view_payload({"view": payload}, kind=current.type)
            except _MethodError as exc:
                raise ValueError(f"{exc.error}: {exc.message or ''}".strip()) from None
            updated = replace(current, payload=checked, hash=self._new_hash())
            self._views[view_id] = updated
            return updated

    def fail_next(self, method: str, *, error: str | None = None, status: int = 429,
                  retry_after: int | None = 1, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail, in Slack's shapes.

        status 429: ``Retry-After: retry_after`` and ``{"ok": false, "error": "ratelimited"}``
        (slack-sdk raises, or retries with `RateLimitErrorRetryHandler`). status 5xx: that
        status with ``internal_error`` (or ``error``). status 200: ``{"ok": false, "error":
        error}``, e.g. ``channel_not_found``. ``method`` may be `UPLOAD` or `RESPONSE_URL`.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if status == 200:
            if not error:
                raise ValueError("an ok=false answer at HTTP 200 needs an error code")
            chosen = error
        elif status == 429:
            chosen = error or "ratelimited"
        elif 400 <= status <= 599:
            chosen = error or _SERVER_ERRORS.get(status, "request_failed")
        else:
            raise ValueError(f"cannot inject HTTP status {status}")
        fault = _Fault(status=status, error=chosen,
                       retry_after=retry_after if status == 429 else None, remaining=times)
        with self._lock:
            self._faults.setdefault(method, deque()).append(fault)

    def reset(self, *, keep_directory: bool = True) -> None:
        """Forget calls, messages, ephemerals, files, views, responses and pending faults.

        With ``keep_directory=False`` users, channels, DMs and groups go back to the state
        right after construction as well.
        """
        with self._lock:
            if not keep_directory:
                users, channels, dms, groups = self._directory
                self._users, self._channels = dict(users), dict(channels)
                self._dms, self._usergroups = dict(dms), dict(groups)
            self._clear_activity()

    # ---- queries -----------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Every call answered, oldest first; only ``method``'s when given."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def users(self) -> list[User]:
        with self._lock:
            return list(self._users.values())

    def user(self, ref: str) -> User:
        """A user by id or email (KeyError when unknown)."""
        with self._lock:
            found = self._users.get(ref) or self._find_user_by_email(ref)
            if found is None:
                raise KeyError(f"no user {ref!r} in the Slack sandbox")
            return found

    def channels(self) -> list[Channel]:
        with self._lock:
            return list(self._channels.values())

    def channel_id(self, name: str) -> str:
        """A channel's id from its name (``#ar-emea`` or ``ar-emea``), or a user's DM id."""
        with self._lock:
            return self._channel(name).id

    def messages(self, channel: str) -> list[Message]:
        """All messages of a channel (by id, name or DM user id), replies included, by ts."""
        with self._lock:
            return list(self._messages.get(self._channel(channel).id, []))

    def last_message(self, channel: str) -> Message:
        """The most recent message in a channel (LookupError when there is none)."""
        found = self.messages(channel)
        if not found:
            raise LookupError(f"no message in {channel!r}")
        return found[-1]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """A thread: its parent then its replies."""
        return [m for m in self.messages(channel) if m.ts == ts or m.thread_ts == ts]

    def ephemerals(self, user: str | None = None, *, channel: str | None = None) -> list[Ephemeral]:
        with self._lock:
            channel_id = self._channel(channel).id if channel is not None else None
            return [e for e in self._ephemerals
                    if (user is None or e.user == user)
                    and (channel_id is None or e.channel == channel_id)]

    def views(self, type: str | None = None) -> list[View]:
        """Current version of every view opened, pushed or published, oldest first."""
        with self._lock:
            return [v for v in self._views.values() if type is None or v.type == type]

    def view(self, view_id: str) -> View:
        with self._lock:
            return self._views[view_id]

    def home_view(self, user_id: str) -> View | None:
        """The App Home last published for a user."""
        with self._lock:
            view_id = self._home_views.get(user_id)
            return self._views[view_id] if view_id is not None else None

    def files(self) -> list[File]:
        with self._lock:
            return list(self._files.values())

    def responses(self) -> list[ResponsePost]:
        """Posts to response URLs that were accepted, oldest first."""
        with self._lock:
            return list(self._responses)

    def snapshot(self) -> JSONObject:
        """The whole workspace as JSON-ready data (file metadata only, never bytes)."""
        with self._lock:
            channels = []
            for channel in self._channels.values():
                item = channel.to_slack(bot_user_id=self.bot_user_id, general_id=self.general_id)
                item["name"] = channel.name
                item["members"] = list(channel.members)
                item["messages"] = [self._render(m) for m in self._messages.get(channel.id, [])]
                item["ephemerals"] = [
                    {"user": e.user, "ts": e.ts, "text": e.text, "blocks": e.blocks,
                     "thread_ts": e.thread_ts}
                    for e in self._ephemerals if e.channel == channel.id
                ]
                channels.append(item)
            return {
                "workspace": {"team_id": self.team_id, "team": self.team_name,
                              "bot_user_id": self.bot_user_id, "bot_id": self.bot_id,
                              "app_id": self.app_id},
                "users": [u.to_slack(self.team_id) for u in self._users.values()],
                "channels": channels,
                "usergroups": [{"id": g.id, "handle": g.handle, "name": g.name,
                                "users": list(g.users)} for g in self._usergroups.values()],
                "files": [f.to_slack(self._root()) for f in self._files.values()],
                "views": [self._render_view(v) for v in self._views.values()],
                "home_views": dict(self._home_views),
                "responses": [{"url": r.url, "channel": r.channel, "user": r.user,
                               "message_ts": r.message_ts, "payload": r.payload,
                               "time": r.time} for r in self._responses],
                "calls": [{"method": c.method, "time": c.time, "status": c.status,
                           "ok": c.ok, "error": c.error, "injected": c.injected}
                          for c in self._calls],
            }

    def to_json(self) -> str:
        """`snapshot` as JSON text, as served at ``/sandbox/state.json``."""
        return json.dumps(self.snapshot())

    # ---- state helpers (callers hold the lock) ----------------------------------

    def _clear_activity(self) -> None:
        self._calls: list[Call] = []
        self._messages: dict[str, list[Message]] = {}
        self._ephemerals: list[Ephemeral] = []
        self._files: dict[str, File] = {}
        self._uploads: dict[str, str] = {}
        self._views: dict[str, View] = {}
        self._home_views: dict[str, str] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._responses: list[ResponsePost] = []
        self._faults: dict[str, deque[_Fault]] = {}

    def _save_directory(self) -> tuple[dict[str, User], dict[str, Channel], dict[str, str],
                                       dict[str, Usergroup]]:
        return dict(self._users), dict(self._channels), dict(self._dms), dict(self._usergroups)

    def _root(self) -> str:
        return self.url if self._server is not None else "http://127.0.0.1/"

    def _next_count(self, kind: str) -> int:
        self._counters[kind] = self._counters.get(kind, 0) + 1
        return self._counters[kind]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{self._next_count(prefix):09d}"

    def _next_ts(self) -> str:
        """Slack ts from the clock, bumped by a microsecond when needed: unique, increasing."""
        micros = max(int(self._clock() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _new_hash(self) -> str:
        return f"{int(self._clock())}.{secrets.token_hex(4)}"

    def _find_user_by_email(self, email: str) -> User | None:
        wanted = email.strip().lower()
        for user in self._users.values():
            if user.email is not None and user.email.lower() == wanted:
                return user
        return None

    def _user(self, user_id: str) -> User:
        found = self._users.get(user_id)
        if found is None:
            raise KeyError(f"no user {user_id!r} in the Slack sandbox")
        return found

    def _channel(self, ref: str) -> Channel:
        """A channel by id, name or #name, or the existing DM with a user id; KeyError."""
        found = self._lookup_channel(ref)
        if found is None:
            raise KeyError(f"no channel {ref!r} in the Slack sandbox")
        return found

    def _lookup_channel(self, ref: str) -> Channel | None:
        if ref in self._channels:
            return self._channels[ref]
        if ref in self._dms:
            return self._channels[self._dms[ref]]
        name = ref.removeprefix("#")
        for channel in self._channels.values():
            if not channel.is_im and channel.name == name:
                return channel
        return None

    def _dm(self, user_id: str) -> tuple[Channel, bool]:
        """The bot's DM with a user, opened on first use; True when it already existed."""
        existing = self._dms.get(user_id)
        if existing is not None:
            return self._channels[existing], True
        channel = Channel(id=self._new_id("D"), name=user_id, created=int(self._clock()),
                          members=(user_id, self.bot_user_id), is_im=True, user=user_id)
        self._channels[channel.id] = channel
        self._dms[user_id] = channel.id
        return channel, False

    def _resolve_channel(self, args: Mapping[str, Any], name: str = "channel") -> Channel:
        """The channel argument of a method: id, name, or a user id (their DM with the app)."""
        ref = _opt_str(args, name)
        if ref is None:
            raise _MethodError("channel_not_found")
        found = self._lookup_channel(ref)
        if found is not None:
            return found
        if ref in self._users and ref != self.bot_user_id:
            return self._dm(ref)[0]
        raise _MethodError("channel_not_found")

    def _render(self, message: Message) -> JSONObject:
        """A message as Slack returns it, with thread stats on parents and file objects."""
        out = message.to_slack(self.team_id)
        if not message.is_reply:
            replies = [m for m in self._messages.get(message.channel, [])
                       if m.thread_ts == message.ts and m.ts != message.ts]
            if replies:
                out["thread_ts"] = message.ts
                out["reply_count"] = len(replies)
                out["reply_users"] = sorted({m.user for m in replies})
                out["reply_users_count"] = len(out["reply_users"])
                out["latest_reply"] = replies[-1].ts
        if message.files:
            out["files"] = [self._files[f].to_slack(self._root())
                            for f in message.files if f in self._files]
            out["upload"] = True
        return out

    def _render_view(self, view: View) -> JSONObject:
        return view.to_slack(team_id=self.team_id, app_id=self.app_id, bot_id=self.bot_id)

    def _find_message(self, channel_id: str, ts: str) -> tuple[int, Message] | None:
        for index, message in enumerate(self._messages.get(channel_id, [])):
            if message.ts == ts:
                return index, message
        return None

    def _post(self, channel: Channel, *, text: str, blocks: Blocks,
              attachments: list[JSONObject] | None = None, thread_ts: str | None = None,
              reply_broadcast: bool = False, files: tuple[str, ...] = (),
              metadata: JSONObject | None = None) -> Message:
        message = Message(
            channel=channel.id, ts=self._next_ts(), text=text, user=self.bot_user_id,
            bot_id=self.bot_id, blocks=blocks, attachments=attachments or [],
            thread_ts=thread_ts, reply_broadcast=reply_broadcast, files=files,
            metadata=metadata,
        )
        self._messages.setdefault(channel.id, []).append(message)
        return message

    # ---- HTTP dispatch -----------------------------------------------------------

    def _dispatch(self, verb: str, path: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        parts = urlsplit(path)
        route = unquote(parts.path)
        if route == "/sandbox/state.json" and verb == "GET":
            return _Reply(status=200, body=self.to_json().encode(), record={"ok": True})
        if self.latency > 0:
            time.sleep(self.latency)
        if route.startswith("/api/"):
            return self._serve_api(route.removeprefix("/api/"), parts.query, headers, raw)
        if route.startswith("/upload/v1/") and verb == "POST":
            return self._serve_upload(route.removeprefix("/upload/v1/"), headers, raw)
        if route.startswith("/actions/") and verb == "POST":
            return self._serve_response_url(route.removeprefix("/actions/"), headers, raw)
        if route.startswith("/files/") and verb == "GET":
            return self._serve_file(route.removeprefix("/files/"))
        return _text_reply("not_found", 404)

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
        return fault

    def _fault_reply(self, fault: _Fault) -> _Reply:
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            headers = (("Retry-After", str(fault.retry_after)),)
        return _json_reply({"ok": False, "error": fault.error}, status=fault.status,
                           headers=headers)

    def _record(self, method: str, args: JSONObject, token: str | None,
                headers: Mapping[str, str], reply: _Reply, injected: bool) -> None:
        self._calls.append(Call(method=method, args=args, token=token, headers=dict(headers),
                                time=self._clock(), status=reply.status, response=reply.record,
                                injected=injected))

    def _serve_api(self, method: str, query: str, headers: Mapping[str, str],
                   raw: bytes) -> _Reply:
        parse_error: _MethodError | None = None
        try:
            args = _parse_args(headers.get("content-type", ""), raw, query)
        except _MethodError as exc:
            args, parse_error = {}, exc
        token: str | None = None
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            token = authorization[7:].strip() or None
        body_token = args.pop("token", None)
        if token is None and isinstance(body_token, str) and body_token:
            token = body_token
        with self._lock:
            fault = self._take_fault(method)
            if fault is not None:
                reply = self._fault_reply(fault)
            else:
                reply = self._answer(method, args, token, parse_error)
            self._record(method, args, token, headers, reply, injected=fault is not None)
        return reply

    def _answer(self, method: str, args: JSONObject, token: str | None,
                parse_error: _MethodError | None) -> _Reply:
        handler = self._methods.get(method)
        if handler is None:
            return _json_reply({"ok": False, "error": "unknown_method", "req_method": method})
        if token is None:
            return _json_reply({"ok": False, "error": "not_authed"})
        if token != self.token:
            return _json_reply({"ok": False, "error": "invalid_auth"})
        scope_headers = (("x-oauth-scopes", ",".join(self.scopes)),
                         ("x-accepted-oauth-scopes", ""))
        if parse_error is not None:
            return _json_reply(parse_error.body(), headers=scope_headers)
        try:
            body = handler(args)
        except _MethodError as exc:
            return _json_reply(exc.body(), status=exc.status, headers=scope_headers)
        return _json_reply({"ok": True, **body}, headers=scope_headers)

    def _serve_upload(self, key: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        """The upload URL: raw bytes (slack-sdk) or a multipart ``file`` part (curl -F)."""
        content = raw
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            try:
                parts = _parse_multipart(content_type, raw)
            except _MethodError:
                parts = []
            for part in parts:
                payload = part.get_payload(decode=True)
                if part.get_filename() is not None and isinstance(payload, bytes):
                    content = payload
                    break
        with self._lock:
            file_id = self._uploads.get(key)
            fault = self._take_fault(UPLOAD)
            if fault is not None:
                reply = self._fault_reply(fault)
            elif file_id is None or file_id not in self._files:
                reply = _text_reply("invalid_upload_url", 404)
            else:
                self._files[file_id] = replace(self._files[file_id], content=content)
                reply = _text_reply(f"OK - {len(content)}", 200)
            self._record(UPLOAD, {"file_id": file_id, "size": len(content)}, None, headers,
                         reply, injected=fault is not None)
        return reply

    def _serve_file(self, rest: str) -> _Reply:
        file_id = rest.split("/", 1)[0]
        with self._lock:
            found = self._files.get(file_id)
        if found is None or found.content is None:
            return _text_reply("file_not_found", 404)
        return _Reply(status=200, body=found.content, record={"ok": True},
                      content_type=found.mimetype)

    def _serve_response_url(self, key: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        """A response URL: Slack answers ``ok`` as text, errors as text with 4xx."""
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = None
        args: JSONObject = payload if isinstance(payload, dict) else {}
        with self._lock:
            fault = self._take_fault(RESPONSE_URL)
            reply = self._fault_reply(fault) if fault is not None else self._respond(key, payload)
            self._record(RESPONSE_URL, args, None, headers, reply, injected=fault is not None)
        return reply

    def _respond(self, key: str, payload: Any) -> _Reply:
        target = self._response_targets.get(key)
        if target is None:
            return _text_reply("no_service", 404)
        if target.uses >= MAX_RESPONSE_URL_USES:
            return _text_reply("used_url", 404)
        if not isinstance(payload, dict):
            return _text_reply("invalid_payload", 400)
        post = ResponsePost(url=f"{self._root()}actions/{key}", payload=payload,
                            channel=target.channel, user=target.user,
                            message_ts=target.message_ts, time=self._clock())
        blocks = payload.get("blocks")
        if blocks is not None and (not isinstance(blocks, list)
                                   or len(blocks) > MAX_MESSAGE_BLOCKS):
            return _text_reply("invalid_blocks", 400)
        if not post.delete_original and not post.text and not post.blocks:
            return _text_reply("no_text", 400)
        target.uses += 1
        self._responses.append(post)
        self._apply_response(post)
        return _text_reply("ok", 200)

    def _apply_response(self, post: ResponsePost) -> None:
        """Land a response_url post as Slack would, when the URL knows where it points."""
        channel = self._channels.get(post.channel) if post.channel is not None else None
        if channel is None:
            return
        if post.delete_original or post.replace_original:
            ts = post.message_ts
            for index, ephemeral in enumerate(self._ephemerals):
                if ephemeral.ts == ts and ephemeral.channel == channel.id:
                    if post.delete_original:
                        del self._ephemerals[index]
                    else:
                        self._ephemerals[index] = replace(ephemeral, text=post.text,
                                                          blocks=post.blocks)
                    return
            found = self._find_message(channel.id, ts) if ts is not None else None
            if found is not None:
                index, message = found
                if post.delete_original:
                    del self._messages[channel.id][index]
                else:
                    self._messages[channel.id][index] = replace(
                        message, text=post.text, blocks=post.blocks, edited_ts=self._next_ts())
            return
        thread_ts = _opt_str(post.payload, "thread_ts")
        if post.response_type == "in_channel":
            self._post(channel, text=post.text, blocks=post.blocks, thread_ts=thread_ts)
        elif post.user is not None:
            self._ephemerals.append(Ephemeral(
                channel=channel.id, user=post.user, ts=self._next_ts(), text=post.text,
                blocks=post.blocks, thread_ts=thread_ts, via_response_url=True))

    # ---- message content checks --------------------------------------------------

    def _content(self, args: Mapping[str, Any], *, required: bool = True
                 ) -> tuple[str | None, Blocks | None, list[JSONObject] | None]:
        """Text, blocks, attachments, checked against Slack's limits."""
        text = _opt_str(args, "text")
        blocks = _json_list(args, "blocks", "invalid_blocks_format")
        attachments = _json_list(args, "attachments", "invalid_attachments")
        if blocks is not None:
            if len(blocks) > MAX_MESSAGE_BLOCKS:
                raise _MethodError(
                    "invalid_blocks",
                    message=f"[ERROR] no more than {MAX_MESSAGE_BLOCKS} items allowed "
                            "[json-pointer:/blocks]")
            for index, block in enumerate(blocks):
                if not isinstance(block.get("type"), str):
                    raise _MethodError(
                        "invalid_blocks",
                        message=f"[ERROR] missing required field: type "
                                f"[json-pointer:/blocks/{index}]")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise _MethodError("msg_too_long")
        if required and not text and not blocks and not attachments:
            raise _MethodError("no_text")
        return text, blocks, attachments

    # ---- auth, chat --------------------------------------------------------------

    def _auth_test(self, args: JSONObject) -> JSONObject:
        bot = self._users[self.bot_user_id]
        return {"url": self._root(), "team": self.team_name, "user": bot.name,
                "team_id": self.team_id, "user_id": bot.id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _chat_post_message(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        text, blocks, attachments = self._content(args)
        metadata = args.get("metadata")
        message = self._post(
            channel, text=text or "", blocks=blocks or [], attachments=attachments,
            thread_ts=_opt_str(args, "thread_ts"),
            reply_broadcast=_truthy(args.get("reply_broadcast")),
            metadata=metadata if isinstance(metadata, dict) else None,
        )
        return {"channel": channel.id, "ts": message.ts, "message": self._render(message)}

    def _chat_update(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        ts = _opt_str(args, "ts")
        # An ephemeral ts is not found either: chat.update cannot edit ephemeral messages.
        found = self._find_message(channel.id, ts) if ts is not None else None
        if found is None:
            raise _MethodError("message_not_found")
        index, message = found
        text, blocks, attachments = self._content(args, required=False)
        if text is None and blocks is None and attachments is None:
            raise _MethodError("no_text")
        # Omitted blocks / attachments are kept, as Slack does; [] removes them.
        updated = replace(
            message,
            text=text if text is not None else message.text,
            blocks=blocks if blocks is not None else message.blocks,
            attachments=attachments if attachments is not None else message.attachments,
            edited_ts=self._next_ts(),
        )
        self._messages[channel.id][index] = updated
        return {"channel": channel.id, "ts": updated.ts, "text": updated.text,
                "message": self._render(updated)}

    def _chat_post_ephemeral(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        user_id = _req_str(args, "user", "user_not_found")
        if user_id not in self._users:
            raise _MethodError("user_not_found")
        if user_id not in channel.members:
            raise _MethodError("user_not_in_channel")
        text, blocks, _ = self._content(args)
        ephemeral = Ephemeral(channel=channel.id, user=user_id, ts=self._next_ts(),
                              text=text or "", blocks=blocks or [],
                              thread_ts=_opt_str(args, "thread_ts"))
        self._ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.ts}

    def _chat_delete(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        ts = _opt_str(args, "ts")
        found = self._find_message(channel.id, ts) if ts is not None else None
        if found is None:
            raise _MethodError("message_not_found")
        del self._messages[channel.id][found[0]]
        return {"channel": channel.id, "ts": ts}

    def _chat_get_permalink(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        ts = _opt_str(args, "message_ts")
        if ts is None or self._find_message(channel.id, ts) is None:
            raise _MethodError("message_not_found")
        return {"channel": channel.id,
                "permalink": f"{self._root()}archives/{channel.id}/p{ts.replace('.', '')}"}

    # ---- conversations -----------------------------------------------------------

    def _conversations_open(self, args: JSONObject) -> JSONObject:
        existing = _opt_str(args, "channel")
        if existing is not None:
            channel = self._resolve_channel(args)
            return {"no_op": True, "already_open": True, "channel": {"id": channel.id}}
        users = [u.strip() for u in (_opt_str(args, "users") or "").split(",") if u.strip()]
        if not users:
            raise _MethodError("users_list_not_supplied")
        if len(users) > 1:
            raise _MethodError("invalid_arguments",
                               message="[ERROR] the sandbox opens DMs with one user only")
        user_id = users[0]
        if user_id == self.bot_user_id:
            raise _MethodError("cannot_dm_bot")
        if user_id not in self._users:
            raise _MethodError("user_not_found")
        channel, already_open = self._dm(user_id)
        shown: JSONObject = (
            channel.to_slack(bot_user_id=self.bot_user_id, general_id=self.general_id)
            if _truthy(args.get("return_im")) else {"id": channel.id}
        )
        out: JSONObject = {"channel": shown}
        if already_open:
            out = {"no_op": True, "already_open": True, **out}
        return out

    def _conversations_list(self, args: JSONObject) -> JSONObject:
        types = {t.strip() for t in (_opt_str(args, "types") or "public_channel").split(",")}

        def kind(channel: Channel) -> str:
            if channel.is_im:
                return "im"
            return "private_channel" if channel.is_private else "public_channel"

        chosen = [c for c in self._channels.values() if kind(c) in types]
        page, cursor = _page(chosen, args)
        return {
            "channels": [c.to_slack(bot_user_id=self.bot_user_id, general_id=self.general_id)
                         for c in page],
            "response_metadata": {"next_cursor": cursor},
        }

    def _conversations_info(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        return {"channel": channel.to_slack(bot_user_id=self.bot_user_id,
                                            general_id=self.general_id)}

    def _conversations_members(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        page, cursor = _page(channel.members, args)
        return {"members": page, "response_metadata": {"next_cursor": cursor}}

    def _conversations_history(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        oldest = float(_opt_str(args, "oldest") or 0)
        latest = float(_opt_str(args, "latest") or "inf")
        inclusive = _truthy(args.get("inclusive"))

        def in_window(ts: str) -> bool:
            value = float(ts)
            if inclusive:
                return oldest <= value <= latest
            return oldest < value < latest

        top_level = [m for m in reversed(self._messages.get(channel.id, []))
                     if (not m.is_reply or m.reply_broadcast) and in_window(m.ts)]
        page, cursor = _page(top_level, args)
        return {"messages": [self._render(m) for m in page], "has_more": bool(cursor),
                "pin_count": 0, "response_metadata": {"next_cursor": cursor}}

    def _conversations_replies(self, args: JSONObject) -> JSONObject:
        channel = self._resolve_channel(args)
        ts = _opt_str(args, "ts")
        if ts is None or self._find_message(channel.id, ts) is None:
            raise _MethodError("thread_not_found")
        thread = [m for m in self._messages.get(channel.id, [])
                  if m.ts == ts or m.thread_ts == ts]
        page, cursor = _page(thread, args)
        return {"messages": [self._render(m) for m in page], "has_more": bool(cursor),
                "response_metadata": {"next_cursor": cursor}}

    # ---- users -------------------------------------------------------------------

    def _users_info(self, args: JSONObject) -> JSONObject:
        user = self._users.get(_req_str(args, "user", "user_not_found"))
        if user is None:
            raise _MethodError("user_not_found")
        return {"user": user.to_slack(self.team_id)}

    def _users_list(self, args: JSONObject) -> JSONObject:
        page, cursor = _page(list(self._users.values()), args)
        return {"members": [u.to_slack(self.team_id) for u in page],
                "cache_ts": int(self._clock()), "response_metadata": {"next_cursor": cursor}}

    def _users_lookup_by_email(self, args: JSONObject) -> JSONObject:
        user = self._find_user_by_email(_req_str(args, "email", "users_not_found"))
        if user is None:
            raise _MethodError("users_not_found")
        return {"user": user.to_slack(self.team_id)}

    def _usergroups_users_list(self, args: JSONObject) -> JSONObject:
        group = self._usergroups.get(_req_str(args, "usergroup", "no_such_subteam"))
        if group is None:
            raise _MethodError("no_such_subteam")
        return {"users": list(group.users)}

    # ---- views -------------------------------------------------------------------

    def _view_payload(self, args: JSONObject, *, kind: str) -> JSONObject:
        view = args.get("view")
        if not isinstance(view, dict):
            raise _MethodError("invalid_arguments",
                               message="[ERROR] missing required field: view")
        payload = cast(JSONObject, view)
        if payload.get("type") != kind:
            raise _MethodError("invalid_arguments",
                               message=f"[ERROR] view.type must be {kind} "
                                       "[json-pointer:/view/type]")
        blocks = payload.get("blocks", [])
        if not isinstance(blocks, list):
            raise _MethodError("invalid_arguments",
                               message="[ERROR] blocks must be an array "
                                       "[json-pointer:/view/blocks]")
        if len(blocks) > MAX_VIEW_BLOCKS:
            raise _MethodError("invalid_arguments",
                               message=f"[ERROR] no more than {MAX_VIEW_BLOCKS} items allowed "
                                       "[json-pointer:/view/blocks]")
        if kind == "modal":
            title = payload.get("title")
            text = title.get("text") if isinstance(title, dict) else None
            if not isinstance(text, str) or not text:
                raise _MethodError("invalid_arguments",
                                   message="[ERROR] missing required field: title "
                                           "[json-pointer:/view/title]")
            if len(text) > MAX_MODAL_TITLE_CHARS:
                raise _MethodError("invalid_arguments",
                                   message=f"[ERROR] must be less than "
                                           f"{MAX_MODAL_TITLE_CHARS + 1} characters "
                                           "[json-pointer:/view/title/text]")
        if len(str(payload.get("private_metadata") or "")) > MAX_PRIVATE_METADATA_CHARS:
            raise _MethodError("invalid_arguments",
                               message=f"[ERROR] must be less than "
                                       f"{MAX_PRIVATE_METADATA_CHARS + 1} characters "
                                       "[json-pointer:/view/private_metadata]")
        if len(str(payload.get("callback_id") or "")) > MAX_CALLBACK_ID_CHARS:
            raise _MethodError("invalid_arguments",
                               message=f"[ERROR] must be less than "
                                       f"{MAX_CALLBACK_ID_CHARS + 1} characters "
                                       "[json-pointer:/view/callback_id]")
        return payload

    def _exchange_trigger(self, args: JSONObject) -> tuple[str, _Trigger | None]:
        trigger_id = _opt_str(args, "trigger_id") or _opt_str(args, "interactivity_pointer")
        if trigger_id is None:
            raise _MethodError("invalid_arguments",
                               message="[ERROR] missing required field: trigger_id")
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            if self.strict_triggers:
                raise _MethodError("invalid_trigger_id")
            return trigger_id, None
        if trigger.used:
            raise _MethodError("exchanged_trigger_id")
        if self.trigger_ttl is not None and self._clock() - trigger.issued_at > self.trigger_ttl:
            raise _MethodError("expired_trigger_id")
        trigger.used = True
        return trigger_id, trigger

    def _check_external_id(self, payload: JSONObject, *, own_id: str | None = None) -> None:
        external_id = str(payload.get("external_id") or "")
        if external_id and any(v.external_id == external_id and v.id != own_id
                               for v in self._views.values()):
            raise _MethodError("duplicate_external_id")

    def _views_open(self, args: JSONObject) -> JSONObject:
        payload = self._view_payload(args, kind="modal")
        trigger_id, trigger = self._exchange_trigger(args)
        self._check_external_id(payload)
        view_id = self._new_id("V")
        view = View(id=view_id, type="modal", payload=payload, hash=self._new_hash(),
                    user_id=trigger.user_id if trigger else None, trigger_id=trigger_id,
                    root_view_id=view_id)
        self._views[view.id] = view
        return {"view": self._render_view(view)}

    def _views_push(self, args: JSONObject) -> JSONObject:
        payload = self._view_payload(args, kind="modal")
        trigger_id, trigger = self._exchange_trigger(args)
        self._check_external_id(payload)
        below = self._views.get(trigger.view_id or "") if trigger else None
        if below is None:
            modals = [v for v in self._views.values() if v.type == "modal"
                      and (trigger is None or trigger.user_id is None
                           or v.user_id == trigger.user_id)]
            below = modals[-1] if modals else None
        depth = 1
        cursor = below
        while cursor is not None:
            depth += 1
            cursor = self._views.get(cursor.previous_view_id or "")
        if depth > MAX_VIEW_STACK:
            raise _MethodError("push_limit_reached")
        view_id = self._new_id("V")
        view = View(id=view_id, type="modal", payload=payload, hash=self._new_hash(),
                    user_id=trigger.user_id if trigger else (below.user_id if below else None),
                    trigger_id=trigger_id,
                    root_view_id=(below.root_view_id or below.id) if below else view_id,
                    previous_view_id=below.id if below else None)
        self._views[view.id] = view
        return {"view": self._render_view(view)}

    def _views_update(self, args: JSONObject) -> JSONObject:
        view_id = _opt_str(args, "view_id")
        external_id = _opt_str(args, "external_id")
        if view_id is None and external_id is None:
            raise _MethodError("invalid_arguments",
                               message="[ERROR] either view_id or external_id is required")
        current = self._views.get(view_id or "")
        if current is None and external_id is not None:
            current = next((v for v in self._views.values() if v.external_id == external_id),
                           None)
        if current is None:
            raise _MethodError("not_found")
        payload = self._view_payload(args, kind=current.type)
        expected = _opt_str(args, "hash")
        if expected is not None and expected != current.hash:
            raise _MethodError("hash_conflict")
        self._check_external_id(payload, own_id=current.id)
        updated = replace(current, payload=payload, hash=self._new_hash())
        self._views[updated.id] = updated
        return {"view": self._render_view(updated)}

    def _views_publish(self, args: JSONObject) -> JSONObject:
        user_id = _req_str(args, "user_id")
        payload = self._view_payload(args, kind="home")
        current_id = self._home_views.get(user_id)
        current = self._views.get(current_id) if current_id is not None else None
        expected = _opt_str(args, "hash")
        if expected is not None and current is not None and expected != current.hash:
            raise _MethodError("hash_conflict")
        if current is None:
            view = View(id=self._new_id("V"), type="home", payload=payload,
                        hash=self._new_hash(), user_id=user_id)
        else:
            view = replace(current, payload=payload, hash=self._new_hash())
        self._views[view.id] = view
        self._home_views[user_id] = view.id
        return {"view": self._render_view(view)}

    # ---- files -------------------------------------------------------------------

    def _files_get_upload_url_external(self, args: JSONObject) -> JSONObject:
        filename = _req_str(args, "filename")
        length = _opt_int(args, "length", -1)
        if length < 0:
            raise _MethodError("invalid_arguments",
                               message="[ERROR] missing required field: length")
        file = File(id=self._new_id("F"), filename=filename, length=length,
                    created=int(self._clock()), user=self.bot_user_id,
                    alt_txt=_opt_str(args, "alt_txt"))
        self._files[file.id] = file
        key = secrets.token_urlsafe(18)
        self._uploads[key] = file.id
        return {"upload_url": f"{self._root()}upload/v1/{key}", "file_id": file.id}

    def _files_complete_upload_external(self, args: JSONObject) -> JSONObject:
        entries = _json_list(args, "files", "invalid_arguments")
        if not entries:
            raise _MethodError("invalid_arguments",
                               message="[ERROR] missing required field: files")
        wanted: list[tuple[File, str | None]] = []
        for entry in entries:
            found = self._files.get(str(entry.get("id") or ""))
            if found is None or found.content is None or found.completed:
                raise _MethodError("file_not_found")
            title = entry.get("title")
            wanted.append((found, str(title) if title is not None else None))
        refs = [c for c in (_opt_str(args, "channels") or "").split(",") if c.strip()]
        channel_id = _opt_str(args, "channel_id")
        if channel_id is not None:
            refs.insert(0, channel_id)
        targets = [self._resolve_channel({"channel": ref.strip()}) for ref in refs]
        thread_ts = _opt_str(args, "thread_ts")
        comment = _opt_str(args, "initial_comment")
        completed = [
            replace(file, title=title if title is not None else file.filename, completed=True,
                    channels=tuple(c.id for c in targets), initial_comment=comment)
            for file, title in wanted
        ]
        for file in completed:
            self._files[file.id] = file
        file_ids = tuple(f.id for f in completed)
        for channel in targets:
            self._post(channel, text=comment or "", blocks=[], thread_ts=thread_ts,
                       files=file_ids)
        return {"files": [f.to_slack(self._root()) for f in completed]}
