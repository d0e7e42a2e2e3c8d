"""Slack as the services see it: post and update cards, find people, upload a chart.

The real `slack_sdk.WebClient` underneath (its base URL from SLACK_API_URL, so a proxy or
the local sandbox can stand in); rate limits are retried by slack_sdk's own handler
honouring Retry-After (each of its retries counted in `connectors.base.RETRIES` and each
429 in `RATE_LIMITED`, for the worker's metrics); every Slack error becomes a ConnectorError.

Cards carry message metadata (`dunning_card` with the escalation ids), so a worker that
died between Slack accepting a card and storing its ts finds the card in the channel's
history instead of posting it twice (`find_cards`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from connectors.base import RETRIES, RetryStats
from connectors.errors import (
    AuthError,
    ConnectorError,
    DataError,
    RateLimitedError,
    UnavailableError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SYSTEM = "slack"
CARD_EVENT = "dunning_card"  # message metadata event_type of escalation cards
HISTORY_PAGE = 200
HISTORY_PAGES = 10  # at most 2,000 recent messages read per channel when reconciling
RATE_LIMITED = RetryStats()  # HTTP 429 answers from Slack, by system ("slack")
_AUTH_ERRORS = {"not_authed", "invalid_auth", "account_inactive", "token_revoked",
                "token_expired", "missing_scope", "not_allowed_token_type"}


class Messenger(Protocol):
    """What services need from a chat system."""

    def post(self, channel: str, *, blocks: list[dict[str, Any]], text: str,
             thread_ts: str | None = None,
             metadata: dict[str, Any] | None = None) -> tuple[str, str]: ...

    def find_cards(self, channel: str, *, oldest: float) -> dict[int, tuple[str, str]]:
        """Escalation id -> (channel id, ts) of the bot's cards posted since `oldest`."""
        ...

    def update(self, channel: str, ts: str, *, blocks: list[dict[str, Any]],
               text: str) -> None: ...

    def user_id_for(self, email: str) -> str | None: ...

    def email_of(self, user_id: str) -> str | None: ...

    def dm_channel(self, user_id: str) -> str: ...

    def group_members(self, group_id: str) -> frozenset[str]: ...

    def upload_png(self, channel: str, *, content: bytes, filename: str, title: str,
                   comment: str | None = None) -> None: ...


def card_metadata(escalation_ids: list[int]) -> dict[str, Any]:
    """Slack message metadata naming the escalations a card shows."""
    return {"event_type": CARD_EVENT, "event_payload": {"escalation_ids": list(escalation_ids)}}


def card_ids(message: dict[str, Any]) -> list[int]:
    """The escalation ids in a message's `dunning_card` metadata ([] for any other message)."""
    meta = message.get("metadata") or {}
    if not isinstance(meta, dict) or meta.get("event_type") != CARD_EVENT:
        return []
    ids = (meta.get("event_payload") or {}).get("escalation_ids") or []
    return [int(i) for i in ids if isinstance(i, int | str) and str(i).isdigit()]


class CountingRateLimitHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (sleeps Retry-After), counting each retry for /metrics."""

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        RETRIES.add(SYSTEM)
        RATE_LIMITED.add(SYSTEM)
        super().prepare_for_next_attempt(state=state, request=request, response=response,
                                         error=error)


class CountingConnectionHandler(ConnectionErrorRetryHandler):
    """slack_sdk's connection-error handler, counting each retry for /metrics."""

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        RETRIES.add(SYSTEM)
        super().prepare_for_next_attempt(state=state, request=request, response=response,
                                         error=error)


def make_client(token: str, base_url: str | None, *, max_retries: int = 3) -> WebClient:
    client = WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=10)
    client.retry_handlers.append(CountingRateLimitHandler(max_retry_count=max_retries))
    client.retry_handlers.append(CountingConnectionHandler(max_retry_count=max_retries))
    return client


def translate(call: Callable[[], T]) -> T:
    """Run a Slack call; raise the project's ConnectorError kinds, never SlackApiError."""
    try:
        return call()
    except SlackApiError as exc:
        error = str(exc.response.get("error", "unknown_error"))
        status = exc.response.status_code
        if status == 429 or error == "ratelimited":
            RATE_LIMITED.add(SYSTEM)
            after = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                "retry-after")
            raise RateLimitedError(SYSTEM, "rate limited", float(after) if after else None) \
                from exc
        if error in _AUTH_ERRORS:
            raise AuthError(SYSTEM, f"{error}: check SLACK_BOT_TOKEN and the app's scopes") \
                from exc
        if status >= 500:
            raise UnavailableError(SYSTEM, f"HTTP {status} ({error})") from exc
        raise DataError(SYSTEM, error) from exc
    except SlackClientError as exc:
        raise UnavailableError(SYSTEM, exc.__class__.__name__) from exc
    except OSError as exc:  # connection refused, timeouts from urllib
        raise UnavailableError(SYSTEM, f"{exc.__class__.__name__}: {exc}") from exc


@dataclass
class SlackMessenger:
    """Messenger over a WebClient, caching email <-> user id lookups for the process."""

    client: WebClient
    _ids: dict[str, str | None] = field(default_factory=dict)
    _emails: dict[str, str | None] = field(default_factory=dict)
    _dms: dict[str, str] = field(default_factory=dict)
    _channel_ids: dict[str, str] = field(default_factory=dict)

    def post(self, channel: str, *, blocks: list[dict[str, Any]], text: str,
             thread_ts: str | None = None,
             metadata: dict[str, Any] | None = None) -> tuple[str, str]:
        resp = translate(lambda: self.client.chat_postMessage(
            channel=channel, blocks=blocks, text=text, thread_ts=thread_ts,
            unfurl_links=False, unfurl_media=False, metadata=metadata))
        return str(resp["channel"]), str(resp["ts"])

    def channel_id(self, channel: str) -> str:
        """A channel id from `#name` (conversations.list, cached); ids pass through."""
        if not channel.startswith("#"):
            return channel
        name = channel[1:]
        if name not in self._channel_ids:
            cursor: str | None = None
            while True:
                resp = translate(partial(
                    self.client.conversations_list, types="public_channel,private_channel",
                    exclude_archived=True, limit=HISTORY_PAGE, cursor=cursor))
                items: list[dict[str, Any]] = resp.get("channels", [])
                for item in items:
                    self._channel_ids[str(item["name"])] = str(item["id"])
                cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
                if name in self._channel_ids or not cursor:
                    break
        if name not in self._channel_ids:
            raise DataError(SYSTEM, f"channel_not_found: {channel}")
        return self._channel_ids[name]

    def find_cards(self, channel: str, *, oldest: float) -> dict[int, tuple[str, str]]:
        """Read the channel's history since `oldest` (a Unix time) for `dunning_card`
        metadata; needs the channels/groups/im:history scope of the channel's kind."""
        channel_id = self.channel_id(channel)
        found: dict[int, tuple[str, str]] = {}
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            resp = translate(partial(
                self.client.conversations_history, channel=channel_id, oldest=f"{oldest:.6f}",
                limit=HISTORY_PAGE, include_all_metadata=True, cursor=cursor))
            messages: list[dict[str, Any]] = resp.get("messages", [])
            for message in messages:
                for escalation_id in card_ids(message):
                    found.setdefault(escalation_id, (channel_id, str(message["ts"])))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return found

    def update(self, channel: str, ts: str, *, blocks: list[dict[str, Any]], text: str) -> None:
        translate(lambda: self.client.chat_update(channel=channel, ts=ts, blocks=blocks,
                                                  text=text))

    def user_id_for(self, email: str) -> str | None:
        key = email.lower()
        if key not in self._ids:
            try:
                resp = translate(lambda: self.client.users_lookupByEmail(email=key))
            except DataError:  # users_not_found: an owner without a Slack account
                self._ids[key] = None
            else:
                user_id = str(resp["user"]["id"])
                self._ids[key] = user_id
                self._emails[user_id] = key
        return self._ids[key]

    def email_of(self, user_id: str) -> str | None:
        if user_id not in self._emails:
            try:
                resp = translate(lambda: self.client.users_info(user=user_id))
            except DataError:
                self._emails[user_id] = None
            else:
                email = resp["user"].get("profile", {}).get("email")
                self._emails[user_id] = email.lower() if email else None
        return self._emails[user_id]

    def dm_channel(self, user_id: str) -> str:
        if user_id not in self._dms:
            resp = translate(lambda: self.client.conversations_open(users=user_id))
            self._dms[user_id] = str(resp["channel"]["id"])
        return self._dms[user_id]

    def group_members(self, group_id: str) -> frozenset[str]:
        """User ids in a Slack user group (S...), for roles given as groups."""
        resp = translate(lambda: self.client.usergroups_users_list(usergroup=group_id))
        users: list[str] = resp.get("users", [])
        return frozenset(str(u) for u in users)

    def upload_png(self, channel: str, *, content: bytes, filename: str, title: str,
                   comment: str | None = None) -> None:
        translate(lambda: self.client.files_upload_v2(
            channel=channel, content=content, filename=filename, title=title,
            initial_comment=comment))


__all__ = ["CARD_EVENT", "RATE_LIMITED", "ConnectorError", "Messenger", "SlackMessenger",
           "card_ids", "card_metadata", "make_client", "translate"]
