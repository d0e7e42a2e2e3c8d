"""What every `dunning` command shares: the context object, failure and parsing helpers.

Command modules (`bot/cli.py`, `bot/cli_connectors.py`, `bot/cli_replies.py`) import from
here, never from each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, NoReturn, TypeVar

import typer
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.settings import Settings, SettingsError
from connectors.csv_source import CsvImportError
from dunning.calendar import local_date
from dunning.policy import Policy
from services.common import Actor, ServiceError
from store.engine import make_engine, migrate, session_scope

T = TypeVar("T")
EXIT_NOT_FOUND = 1
EXIT_AMBIGUOUS = 3


class Format(StrEnum):
    table = "table"
    json = "json"


class TextFormat(StrEnum):
    text = "text"
    json = "json"


@dataclass
class Ctx:
    settings: Settings
    db_url: str
    actor: Actor
    _engine: Engine | None = None
    _policy: Policy | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return self._engine

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = self.settings.load_policy()
        return self._policy

    def now(self) -> datetime:
        return datetime.now(UTC)

    def today(self) -> date:
        return local_date(self.now(), self.settings.dunning_timezone)

    def ready(self) -> Engine:
        """The engine of an initialised database; SQLite files are created on first use."""
        engine = self.engine
        if engine.dialect.name == "sqlite":
            migrate(engine)
        elif "invoice" not in inspect(engine).get_table_names():
            fail(f"the database at {_safe_url(self.db_url)} is not initialised: run "
                 "`dunning init` first")
        return engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.ready()) as s:
            yield s


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable DATABASE_URL>"


def guarded(fn: Callable[[], T]) -> T:
    """Run a use case; turn expected refusals into one clear line and exit code 1."""
    try:
        return fn()
    except (ServiceError, CsvImportError, SettingsError) as exc:
        fail(str(exc))


def _ctx(ctx: typer.Context) -> Ctx:
    obj = ctx.find_root().obj
    assert isinstance(obj, Ctx)
    return obj


def _parse_date(value: str | None, what: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form",
                                 param_hint=what) from None


def _parse_amount(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a decimal amount",
                                 param_hint="--amount") from None
    if not d.is_finite() or d <= 0:
        raise typer.BadParameter("the amount must be greater than 0", param_hint="--amount")
    return d


DateOpt = Annotated[str | None, typer.Option("--date", help="Run date YYYY-MM-DD "
                                             "(default: today in DUNNING_TIMEZONE)")]
