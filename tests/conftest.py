"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL.

`db_url` runs each test that uses it twice: once on a SQLite file in tmp_path, once on a
throwaway PostgreSQL database created for the test and dropped after it (so tests never
see each other's rows). PostgreSQL comes from DUNNING_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test). When it cannot be reached the PostgreSQL runs
are skipped with the reason, and the end of the run says so in one line; with
DUNNING_REQUIRE_POSTGRES=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from store.engine import make_engine, migrate

if TYPE_CHECKING:
    from _pytest.terminal import TerminalReporter

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
_SKIP_PREFIX = "PostgreSQL not reachable at "


def _admin_url() -> URL:
    url = make_url(os.environ.get("DUNNING_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _shown(url: URL) -> str:
    """The URL as it may appear in a log: no password, no driver suffix."""
    bare = URL.create("postgresql", username=url.username, host=url.host, port=url.port,
                      database=url.database)
    return bare.render_as_string(hide_password=False)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


_admin_engine: Engine | None = None
_unreachable: str | None = None


def _postgres_admin() -> Engine:
    """One AUTOCOMMIT engine on the admin database (CREATE/DROP DATABASE cannot run in a
    transaction); the first failure to connect is remembered so later tests skip at once."""
    global _admin_engine, _unreachable
    url = _admin_url()
    if _unreachable is None and _admin_engine is None:
        engine = create_engine(
            url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            engine.dispose()
            _unreachable = _first_line(exc)
        else:
            _admin_engine = engine
    if _admin_engine is None:
        message = (
            f"{_SKIP_PREFIX}{_shown(url)}: {_unreachable} — start it or set "
            "DUNNING_TEST_POSTGRES_URL"
        )
        if os.environ.get("DUNNING_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"DUNNING_REQUIRE_POSTGRES=1 but {message}", pytrace=False)
        pytest.skip(message)
    return _admin_engine


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A URL to an empty database of the parametrized backend, private to this test."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("db")
        # A subfolder that does not exist yet: make_engine must create it.
        yield f"sqlite:///{folder / 'data' / 'dunning.db'}"
        return
    admin = _postgres_admin()
    name = f"dunning_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = _admin_url().set(database=name, drivername="postgresql")
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the test database, not yet migrated."""
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def db(engine: Engine) -> Engine:
    """An engine on the test database, migrated to head."""
    migrate(engine)
    return engine


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _admin_engine is not None:
        _admin_engine.dispose()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: TerminalReporter) -> Generator[None]:
    """Say in one line when PostgreSQL tests were skipped, and why: easy to miss otherwise.

    A wrapper, so the line comes after pytest's own short summary, right above the totals.
    """
    try:
        return (yield)
    finally:
        _report_postgres_skips(terminalreporter)


def _report_postgres_skips(terminalreporter: TerminalReporter) -> None:
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        if "postgres" not in getattr(report, "keywords", {}):
            continue
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if not reasons:
        return
    total = sum(reasons.values())
    detail = "; ".join(reasons)
    terminalreporter.write_line(
        f"NOTE: {total} PostgreSQL test(s) skipped — {detail}", yellow=True, bold=True
    )
