"""Engines, sessions and migrations: the only place that knows how to reach the database.

SQLite (the default, one file in WAL mode) and PostgreSQL (`DATABASE_URL`) are both
first-class. Nothing here is created at import time: the composition root calls
`make_engine` once and hands the engine around.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlmodel import Session

from store.tables import metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Set on every new SQLite connection (most are per-connection settings, not stored in the file).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers never block the writer (web + worker processes)
    "PRAGMA foreign_keys=ON",  # SQLite ignores foreign keys unless asked, per connection
    "PRAGMA busy_timeout=5000",  # wait up to 5 s for the write lock instead of failing at once
    "PRAGMA synchronous=NORMAL",  # safe with WAL; a power cut may lose the last commit only
)

# Any fixed 64-bit number: serializes concurrent `migrate` calls on one PostgreSQL database.
_MIGRATE_LOCK_ID = 0x64756E6E696E67  # "dunning"


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; bare `postgresql://` / `postgres://` get the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    """An engine for `sqlite:///path` or `postgresql://...`, configured for this app."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back if it raises.

    Objects stay readable after the block (`expire_on_commit=False`), so a service can
    return what it wrote without reloading it.
    """
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configured in code: works from an installed package and from any cwd."""
    config = Config()
    # ConfigParser interpolates '%': escape it in the path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped in store/migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions found in {MIGRATIONS_DIR}")
    return head


def migrate(engine: Engine) -> str:
    """Upgrade the schema to head (a no-op when already there); return the revision.

    Concurrent callers are serialized (PostgreSQL advisory lock; SQLite write lock taken
    up front), and on SQLite the whole upgrade is one transaction with foreign keys off,
    as batch migrations that rebuild a table require; they are checked before commit.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        try:
            if sqlite:
                # Only effective outside a transaction, hence before BEGIN.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATE_LOCK_ID}
                )
            command.upgrade(alembic_config(connection), "head")
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows with broken foreign keys: {broken}")
            revision = MigrationContext.configure(connection).get_current_revision()
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
    if revision is None:
        raise RuntimeError("migration finished without a recorded revision")
    return revision


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# Tables other libraries create in our database, which migrations must leave alone:
# APScheduler's job store (the worker).
FOREIGN_TABLES = frozenset({"scheduler_job"})


def _ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


def migration_options(dialect_name: str) -> dict[str, Any]:
    """Options shared by env.py and `schema_diff`, so both compare the same way."""
    return {
        "target_metadata": metadata,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",  # SQLite cannot ALTER most things
        "include_object": _ours,
    }


def schema_diff(engine: Engine) -> list[Any]:
    """What Alembic autogenerate would change: empty when the database matches the models."""
    with engine.connect() as connection:
        options = migration_options(connection.dialect.name)
        target = options.pop("target_metadata")
        context = MigrationContext.configure(connection, opts=options)
        diff: list[Any] = compare_metadata(context, target)
        return diff
