"""The language model, over the official `openai` client (any OpenAI-compatible server).

One call (`complete_json`) asks for structured output (a JSON schema) and returns the
parsed object, the token usage and its cost in micro-USD; `draft` and `classify_reply` are
that call with their schema. The SDK's own retries are off (`max_retries=0`):
`connectors.base.retrying` retries 429 and 5xx once or twice, honouring Retry-After, and
everything, retries and waits included, fits in one time budget (`timeout`), because a
draft that arrives late is worth less than the template it replaces.

Errors, translated with `raise ... from exc`:
    timeout                              -> LlmTimeoutError (an UnavailableError)
    connection failure, 5xx              -> UnavailableError
    429                                  -> RateLimitedError (retry_after from the header)
    401, 403                             -> AuthError
    other 4xx                            -> DataError
    not JSON, wrong shape, cut off       -> MalformedOutputError (a DataError, with usage)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any, cast

import httpx2
import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from connectors.base import retrying
from connectors.errors import (
    AuthError,
    ConnectorError,
    DataError,
    RateLimitedError,
    UnavailableError,
)
from dunning.replies import DISPUTE_REASONS, Intent

SYSTEM = "openai"

DRAFT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
    "required": ["subject", "body"],
    "additionalProperties": False,
}

_NULLABLE_TEXT: dict[str, Any] = {"type": ["string", "null"]}

# What a customer's reply means (dunning.replies.ReplyAnalysis, minus what only the rules
# may say: the injection flag). Strict structured output needs every field listed as
# required, "null" standing for "not stated"; bounds such as 0..1 for confidence are
# checked after the call (dunning.replies.check_model_reply), not by the server.
REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": [i.value for i in Intent]},
        "promise_date": {**_NULLABLE_TEXT, "description": "YYYY-MM-DD or null"},
        "amount": {**_NULLABLE_TEXT, "description": "plain decimal such as 1250.00, or null"},
        "currency": {**_NULLABLE_TEXT, "description": "ISO 4217 code or null"},
        "reference": _NULLABLE_TEXT,
        "dispute_reason": {"type": ["string", "null"], "enum": [*DISPUTE_REASONS, None]},
        "return_date": {**_NULLABLE_TEXT, "description": "YYYY-MM-DD or null"},
        "confidence": {"type": "number", "description": "from 0 to 1"},
        "evidence": {"type": "string",
                     "description": "the deciding sentence, copied exactly from the reply"},
    },
    "required": ["intent", "promise_date", "amount", "currency", "reference",
                 "dispute_reason", "return_date", "confidence", "evidence"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Usage:
    """Tokens of one call and what they cost, in millionths of a USD (rounded up)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0


@dataclass(frozen=True)
class ModelDraft:
    subject: str
    body: str
    usage: Usage
    model: str


@dataclass(frozen=True)
class JsonAnswer:
    data: dict[str, Any]
    usage: Usage
    model: str


class LlmTimeoutError(UnavailableError):
    """The model did not answer within the time budget."""


class MalformedOutputError(DataError):
    """The model answered, but not with the JSON asked for; the tokens were still spent."""

    def __init__(self, system: str, message: str, usage: Usage | None = None) -> None:
        self.usage = usage
        super().__init__(system, message)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(float(raw) / divisor, 0.0)
        except ValueError:
            continue
    return None


def translate(exc: openai.OpenAIError) -> ConnectorError:
    """The connector error for an `openai` exception (the caller raises it `from exc`)."""
    if isinstance(exc, openai.APITimeoutError):
        return LlmTimeoutError(SYSTEM, "the model did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return UnavailableError(SYSTEM, "cannot reach the model server")
    if isinstance(exc, openai.RateLimitError):
        return RateLimitedError(SYSTEM, "rate limited by the model server",
                                retry_after=_retry_after(exc.response.headers))
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return AuthError(SYSTEM, f"the model server refused the API key "
                                 f"(HTTP {exc.status_code}): check OPENAI_API_KEY")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return UnavailableError(SYSTEM, f"model server error (HTTP {exc.status_code})")
        return DataError(SYSTEM, f"the model server refused the request "
                                 f"(HTTP {exc.status_code})")
    if isinstance(exc, openai.APIResponseValidationError):
        return MalformedOutputError(SYSTEM, "the answer does not have the API's shape")
    if isinstance(exc, (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError)):
        return MalformedOutputError(SYSTEM, "the answer was cut off or filtered")
    return UnavailableError(SYSTEM, f"model call failed: {type(exc).__name__}")


class LlmClient:
    """A chat-completions client with structured output, cost accounting and one deadline."""

    system = SYSTEM

    def __init__(self, base_url: str | None, api_key: str, model: str, timeout: float,
                 input_usd_per_mtok: Decimal | str, output_usd_per_mtok: Decimal | str, *,
                 attempts: int = 3, http_client: httpx2.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.timeout = float(timeout)
        self.input_price = Decimal(str(input_usd_per_mtok))
        self.output_price = Decimal(str(output_usd_per_mtok))
        self.attempts = max(1, attempts)
        self._sleep = sleep
        self._clock = clock
        # base_url None means OpenAI's own; max_retries=0: retries are ours (one budget).
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=self.timeout,
                                     max_retries=0, http_client=http_client)

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Prices are USD per million tokens, so tokens x price is exactly micro-USD."""
        cost = (Decimal(prompt_tokens) * self.input_price
                + Decimal(completion_tokens) * self.output_price)
        return int(cost.to_integral_value(rounding=ROUND_CEILING))

    def _usage(self, completion: ChatCompletion) -> Usage:
        u = completion.usage
        if u is None:
            return Usage()
        return Usage(u.prompt_tokens, u.completion_tokens,
                     self.cost_micros(u.prompt_tokens, u.completion_tokens))

    def complete_json(self, messages: Sequence[Mapping[str, str]], *, name: str,
                      schema: dict[str, Any]) -> JsonAnswer:
        """One structured answer: the JSON object the schema describes, usage and cost.

        Retries (429, 5xx, connection errors) happen inside the time budget: a Retry-After
        longer than the time left ends the call with that error at once.
        """
        deadline = self._clock() + self.timeout
        last: list[ConnectorError] = []

        def call() -> ChatCompletion:
            left = deadline - self._clock()
            if left <= 0.05:
                raise last[-1] if last else LlmTimeoutError(SYSTEM, "no time left")
            try:
                return self._client.chat.completions.create(
                    model=self.model,
                    messages=cast(list[ChatCompletionMessageParam],
                                  [dict(m) for m in messages]),
                    response_format={"type": "json_schema", "json_schema": {
                        "name": name, "strict": True, "schema": schema}},
                    timeout=left,
                )
            except openai.OpenAIError as exc:
                err = translate(exc)
                last.append(err)
                raise err from exc

        def sleep(seconds: float) -> None:
            if self._clock() + seconds >= deadline - 0.05:
                raise last[-1]  # no time left to wait: the call ends with its last error
            self._sleep(seconds)

        completion = retrying(SYSTEM, call, attempts=self.attempts, initial_wait=0.2,
                              max_wait=self.timeout, sleep=sleep)
        usage = self._usage(completion)
        return JsonAnswer(self._parse(completion, schema, usage), usage,
                          completion.model or self.model)

    def _parse(self, completion: ChatCompletion, schema: dict[str, Any],
               usage: Usage) -> dict[str, Any]:
        if not completion.choices:
            raise MalformedOutputError(SYSTEM, "the answer has no choices", usage)
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            raise MalformedOutputError(SYSTEM, "the answer was cut off (length)", usage)
        message = choice.message
        if getattr(message, "refusal", None):
            raise MalformedOutputError(SYSTEM, "the model refused to answer", usage)
        content = message.content or ""
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise MalformedOutputError(SYSTEM, "the answer is not JSON", usage) from exc
        problem = _schema_problem(data, schema)
        if problem:
            raise MalformedOutputError(SYSTEM, f"the answer does not match the schema: "
                                               f"{problem}", usage)
        return cast(dict[str, Any], data)

    def draft(self, messages: Sequence[Mapping[str, str]]) -> ModelDraft:
        """A {subject, body} message drafted by the model."""
        answer = self.complete_json(messages, name="draft", schema=DRAFT_SCHEMA)
        subject, body = answer.data["subject"].strip(), answer.data["body"].strip()
        if not subject or not body:
            raise MalformedOutputError(SYSTEM, "the subject or the body is empty", answer.usage)
        return ModelDraft(subject, body, answer.usage, answer.model)

    def classify_reply(self, messages: Sequence[Mapping[str, str]]) -> JsonAnswer:
        """The model's reading of a customer reply: the REPLY_SCHEMA object, usage, cost.

        Shaped, not trusted: the caller checks every claim against the reply
        (dunning.replies.check_model_reply) before anything uses it.
        """
        return self.complete_json(messages, name="reply_analysis", schema=REPLY_SCHEMA)

    def close(self) -> None:
        self._client.close()


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}


def _schema_problem(data: Any, schema: Mapping[str, Any], where: str = "") -> str | None:
    """The first way `data` breaks the (small, strict) schema subset we send; None if fits.

    Covers what our schemas use: type (or a list of types), properties, required,
    additionalProperties false, enum, items.
    """
    types = schema.get("type")
    names = [types] if isinstance(types, str) else list(types or [])
    if names:
        ok = any(isinstance(data, _JSON_TYPES[n]) and not (
            n in ("integer", "number") and isinstance(data, bool)) for n in names)
        if not ok:
            return f"{where or 'the answer'} is not {' or '.join(names)}"
    if "enum" in schema and data not in schema["enum"]:
        return f"{where or 'the answer'} is not one of {schema['enum']}"
    prefix = f"{where}." if where else ""
    if isinstance(data, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in data:
                return f"{prefix}{key} is missing"
        if schema.get("additionalProperties") is False:
            extra = sorted(set(data) - set(props))
            if extra:
                return f"unexpected {', '.join(prefix + k for k in extra)}"
        for key, sub in props.items():
            if key in data:
                problem = _schema_problem(data[key], sub, f"{prefix}{key}")
                if problem:
                    return problem
    if isinstance(data, list) and "items" in schema:
        for i, item in enumerate(data):
            problem = _schema_problem(item, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
    return None
