"""Exactly one active scheduler: the worker holds a database-wide lock while it runs.

PostgreSQL: a session advisory lock on a connection kept open for the worker's life (the
server drops it if the worker dies, so a standby takes over). SQLite: an exclusive file
lock next to the database file (the OS drops it with the process).
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

ADVISORY_KEY = 0x64756E6E  # "dunn": one key for the whole installation


class LeaderLock(Protocol):
    def acquire(self) -> bool: ...

    def alive(self) -> bool: ...

    def release(self) -> None: ...


class PostgresLeaderLock:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None

    def acquire(self) -> bool:
        if self.conn is None:
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = bool(self.conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                     {"k": ADVISORY_KEY}).scalar())
        if not got:
            self.conn.close()
            self.conn = None
        return got

    def alive(self) -> bool:
        """Still connected (the lock lives as long as the connection)."""
        if self.conn is None:
            return False
        try:
            self.conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            finally:
                self.conn.close()
                self.conn = None


class FileLeaderLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True

    def alive(self) -> bool:
        return self.handle is not None

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def leader_lock(engine: Engine) -> LeaderLock:
    if engine.dialect.name == "postgresql":
        return PostgresLeaderLock(engine)
    database = engine.url.database
    if not database or database == ":memory:":
        raise ValueError("the worker needs a database file (not :memory:) to elect a leader")
    return FileLeaderLock(Path(database).with_suffix(".worker.lock"))
