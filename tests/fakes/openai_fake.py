"""A loopback stand-in for OpenAI's chat completions API, scripted per test.

The real `openai` client is pointed at it with `base_url=fake.url` (".../v1"). It serves

    POST /v1/chat/completions     the documented `chat.completion` object, with `usage`

Each request takes the next scripted `Reply` (the last one repeats): a JSON answer
(`Reply.answer({...})`), raw content that is not what was asked (`Reply.content("...")`),
an HTTP error with OpenAI's error body (`Reply.error(429, retry_after="0")`, 500, 401), or
any of these after a delay (`delay=`, for timeouts). A reply may also be a function of the
request (`Reply.from_request(fn)`), e.g. a model that rewrites the template it was given.
Every request is kept in `requests` (path, lower-cased headers, JSON body) so tests can assert
what the prompt held. The server refuses a missing or wrong bearer token with 401.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

API_KEY = "sk-test-fake"
MODEL = "gpt-4o-mini-2024-07-18"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str | None = None  # the assistant message's content (200 only)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int = 120
    completion_tokens: int = 80
    finish_reason: str = "stop"
    build: Callable[[dict[str, Any]], Reply] | None = None

    @staticmethod
    def answer(data: dict[str, Any], **kw: Any) -> Reply:
        return Reply(content=json.dumps(data, ensure_ascii=False), **kw)

    @staticmethod
    def raw(content: str, **kw: Any) -> Reply:
        return Reply(content=content, **kw)

    @staticmethod
    def error(status: int, *, retry_after: str | None = None, delay: float = 0.0) -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return Reply(status=status, headers=headers, delay=delay)

    @staticmethod
    def from_request(build: Callable[[dict[str, Any]], Reply]) -> Reply:
        return Reply(build=build)


_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("invalid_request_error", "Incorrect API key provided."),
    429: ("rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", "The server had an error while processing your request."),
    503: ("server_error", "The engine is currently overloaded."),
}


def completion_body(reply: Reply, model: str, n: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake{n}", "object": "chat.completion", "created": 1_790_000_000,
        "model": model, "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "finish_reason": reply.finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": reply.content,
                                 "refusal": None}}],
        "usage": {"prompt_tokens": reply.prompt_tokens,
                  "completion_tokens": reply.completion_tokens,
                  "total_tokens": reply.prompt_tokens + reply.completion_tokens},
    }


class FakeOpenAI:
    """Start with `with FakeOpenAI() as fake:`; script with `fake.script(...)`."""

    def __init__(self, *replies: Reply, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.replies: list[Reply] = list(replies)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet tests
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                fake._handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _next(self) -> tuple[Reply, int]:
        with self._lock:
            n = len(self.requests)
            if not self.replies:
                raise RuntimeError("FakeOpenAI: no reply scripted")
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            return reply, n

    def _handle(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self._lock:
            headers = {k.lower(): v for k, v in h.headers.items()}
            self.requests.append({"path": h.path, "headers": headers, "json": body})
        reply, n = self._next()
        if reply.build is not None:
            reply = reply.build(body)
        if reply.delay:
            self._stop.wait(reply.delay)
        if h.path != "/v1/chat/completions":
            return self._send(h, 404, {"error": {"message": f"Unknown path {h.path}",
                                                 "type": "invalid_request_error"}})
        if h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(h, 401, _error_body(401))
        if reply.status != 200:
            return self._send(h, reply.status, _error_body(reply.status), reply.headers)
        model = str(body.get("model") or MODEL)
        self._send(h, 200, completion_body(reply, model, n), reply.headers)

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.send_header("x-request-id", f"req_fake{len(self.requests)}")
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def prompt_text(self, index: int = -1) -> str:
        """Every message content of one recorded request, joined."""
        messages = self.requests[index]["json"].get("messages", [])
        return "\n".join(str(m.get("content", "")) for m in messages)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def _error_body(status: int) -> dict[str, Any]:
    kind, message = _ERRORS.get(status, ("server_error", f"HTTP {status}"))
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
