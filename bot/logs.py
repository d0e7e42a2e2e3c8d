"""Structured logs: one JSON object per line with the request id, secrets redacted.

Redaction runs on every record, whatever logged it (our code, slack_sdk, uvicorn): known
secret values from settings, and anything shaped like a Slack/Stripe/OpenAI token, a
bearer token or a password inside a URL.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                          default=None)
REDACTED = "***"
_PATTERNS = [
    re.compile(r"\b(xox[abposr]|xapp)-[A-Za-z0-9-]{6,}"),  # Slack tokens
    re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{6,}"),  # Stripe keys
    re.compile(r"\bwhsec_[A-Za-z0-9]{6,}"),  # Stripe webhook secrets
    re.compile(r"\bsk-[A-Za-z0-9_-]{10,}"),  # OpenAI keys
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
]
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


class Redactor(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(REDACTED, text)
        return _URL_PASSWORD.sub(rf"\1{REDACTED}\3", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            out["request_id"] = rid
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def configure(*, json_lines: bool, secrets: Iterable[str] = (), level: int = logging.INFO
              ) -> logging.Handler:
    """Route every logger through one handler that redacts, in JSON or plain text."""
    handler = logging.StreamHandler()
    handler.addFilter(Redactor(secrets))
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    return handler
