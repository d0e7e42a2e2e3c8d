"""Slack listeners. `register_listeners(app)` wires every kind; modules never import the app."""

from __future__ import annotations

from slack_bolt import App

from handlers import actions, commands, home, views


def register_listeners(app: App) -> None:
    commands.register(app)
    actions.register(app)
    views.register(app)
    home.register(app)
