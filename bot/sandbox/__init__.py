"""Local stand-ins for the outside world, run as real servers on 127.0.0.1.

`SlackSandbox` is a stateful Slack Web API workspace the real slack-sdk and Bolt clients
talk to through ``base_url``: the test suite's Slack, and later the browser sandbox.
"""

from bot.sandbox.slack_api import (
    RESPONSE_URL,
    UPLOAD,
    Call,
    Channel,
    Ephemeral,
    File,
    Message,
    ResponsePost,
    SlackSandbox,
    User,
    Usergroup,
    View,
)

__all__ = [
    "RESPONSE_URL",
    "UPLOAD",
    "Call",
    "Channel",
    "Ephemeral",
    "File",
    "Message",
    "ResponsePost",
    "SlackSandbox",
    "User",
    "Usergroup",
    "View",
]
