"""Logs never carry secrets, and each line is one JSON object with the request id."""

from __future__ import annotations

import io
import json
import logging

from bot import logs


def capture(secrets: list[str]) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.Redactor(secrets))
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"test.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_known_secrets_and_token_shapes_are_redacted() -> None:
    logger, stream = capture(["hunter2-smtp-password"])
    logger.info("login with %s", "hunter2-smtp-password")
    logger.info("token xoxb-1234567890-abcdef and sk_live_abcdefghij and sk-proj-0123456789ab")
    logger.info("Authorization: Bearer abc.def.ghi123456")
    logger.info("db postgresql://ar:s3cr3t@db.internal/prod")
    out = stream.getvalue()
    for secret in ("hunter2-smtp-password", "xoxb-1234567890", "sk_live_abcdefghij",
                   "sk-proj-0123456789ab", "abc.def.ghi123456", "s3cr3t"):
        assert secret not in out
    assert "postgresql://ar:***@db.internal/prod" in out


def test_exceptions_are_redacted_too() -> None:
    logger, stream = capture([])
    try:
        raise RuntimeError("call failed with token xoxb-999999999-zzzz")
    except RuntimeError:
        logger.exception("boom")
    line = json.loads(stream.getvalue().splitlines()[0])
    assert "xoxb-999999999" not in line["exception"] and "***" in line["exception"]


def test_each_line_is_json_with_the_request_id() -> None:
    logger, stream = capture([])
    token = logs.request_id.set("req-42")
    try:
        logger.warning("card %s not updated", 7)
    finally:
        logs.request_id.reset(token)
    line = json.loads(stream.getvalue())
    assert line["msg"] == "card 7 not updated" and line["request_id"] == "req-42"
    assert line["level"] == "warning"
