"""Rotating connector credentials (QuickBooks OAuth tokens) kept in the database.

QuickBooks rotates its refresh token on every refresh and the old one stops working soon
after, so the newest tokens must outlive the process and be shared by the web and worker
processes: the seed in settings is only the first one. Each load and save is its own short
transaction, so a token saved in the middle of a long sync is durable at once and never
rolled back with the sync's own work.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from store.engine import session_scope
from store.tables import ConnectorCredential, utcnow


class DbTokenStore:
    """A connector's TokenStore (`load() -> dict | None`, `save(dict)`) on one table row."""

    def __init__(self, engine: Engine, system: str) -> None:
        self.engine = engine
        self.system = system

    def load(self) -> dict[str, Any] | None:
        with session_scope(self.engine) as session:
            row = session.get(ConnectorCredential, self.system)
            if row is None or not row.value:
                return None
            value = json.loads(row.value)
        return value if isinstance(value, dict) else None

    def save(self, tokens: dict[str, Any]) -> None:
        text = json.dumps(tokens, sort_keys=True)
        try:
            self._write(text)
        except IntegrityError:
            # Another process inserted the row between our read and insert: update it.
            self._write(text)

    def _write(self, text: str) -> None:
        with session_scope(self.engine) as session:
            row = session.get(ConnectorCredential, self.system)
            if row is None:
                session.add(ConnectorCredential(system=self.system, value=text))
            else:
                row.value = text
                row.updated_at = utcnow()
                session.add(row)

    def clear(self) -> None:
        """Forget the stored tokens (after a disconnect): the seed is used again."""
        with session_scope(self.engine) as session:
            row = session.get(ConnectorCredential, self.system)
            if row is not None:
                session.delete(row)
