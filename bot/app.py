"""The Bolt app: signature verification always on, deps in every listener's context."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot.deps import Deps
from handlers import register_listeners

log = logging.getLogger(__name__)


def build_app(deps: Deps, client: WebClient, *, signing_secret: str,
              token_verification: bool = True) -> App:
    """`client` carries the bot token and base URL (SLACK_API_URL or a local sandbox)."""
    app = App(client=client, signing_secret=signing_secret,
              token_verification_enabled=token_verification,
              request_verification_enabled=True, process_before_response=True,
              raise_error_for_unhandled_request=False)

    @app.middleware
    def inject_deps(context: BoltContext, next: Callable[[], Any]) -> Any:
        context["deps"] = deps
        return next()

    @app.error
    def on_error(error: Exception, body: dict[str, Any], logger: logging.Logger) -> None:
        # One place for the unexpected: the log gets the traceback, the user a short line.
        logger.exception("listener failed: %s", error.__class__.__name__, exc_info=error)
        try:
            user = (body.get("user") or {}).get("id") or body.get("user_id")
            channel = (body.get("channel") or {}).get("id") or body.get("channel_id")
            if user and channel:
                client.chat_postEphemeral(channel=channel, user=user,
                                          text="Something went wrong on our side; nothing "
                                               "was changed. Please try again in a minute.")
        except Exception:  # the error path must not raise
            log.exception("could not tell the user about the failure")

    register_listeners(app)
    return app
