"""Everything listeners and jobs need, built once at start-up and handed down (no globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy.engine import Engine

from bot.settings import Settings
from connectors.slack import Messenger
from dunning.calendar import local_date
from dunning.policy import Policy
from services.cards import Roles
from services.status import CustomerIndex
from store.engine import make_engine


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    settings: Settings
    engine: Engine
    policy: Policy
    messenger: Messenger
    roles: Roles
    clock: Callable[[], datetime] = utc_now
    customer_index: CustomerIndex = field(default_factory=CustomerIndex)

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        """The company's date now (DUNNING_TIMEZONE)."""
        return local_date(self.now(), self.settings.dunning_timezone)


def build_deps(settings: Settings, messenger: Messenger, *,
               clock: Callable[[], datetime] = utc_now, engine: Engine | None = None) -> Deps:
    return Deps(
        settings=settings,
        engine=engine or make_engine(settings.database_url),
        policy=settings.load_policy(),
        messenger=messenger,
        roles=Roles(finance=settings.finance_users(), managers=settings.manager_users()),
        clock=clock,
    )
