"""Everything listeners and jobs need, built once at start-up and handed down (no globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy.engine import Engine

from bot.background import AfterResponse
from bot.settings import Settings, SettingsError
from connectors.errors import ConnectorError
from connectors.llm import LlmClient
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
    llm: LlmClient | None = None  # drafts from the model when OPENAI_API_KEY is set
    # Cards re-rendered after a modal submission has been answered (bot.background).
    card_updates: AfterResponse = field(default_factory=lambda: AfterResponse("card-updates"))

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        """The company's date now (DUNNING_TIMEZONE)."""
        return local_date(self.now(), self.settings.dunning_timezone)


def expand_groups(people: frozenset[str], messenger: Messenger) -> frozenset[str]:
    """Slack user groups (ids starting with S) replaced by their members' user ids.

    Read once at start-up: restart the web process after changing a group's members.
    """
    out: set[str] = set()
    for who in people:
        if who.startswith("S") and "@" not in who:
            try:
                out |= messenger.group_members(who)
            except ConnectorError as exc:
                raise SettingsError(f"cannot read Slack user group {who}: {exc} (the app "
                                    "needs the usergroups:read scope)") from exc
        else:
            out.add(who)
    return frozenset(out)


def build_llm(settings: Settings) -> LlmClient | None:
    """The model client when OPENAI_API_KEY is set; without it drafts come from templates."""
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if not key:
        return None
    return LlmClient(settings.openai_base_url, key, settings.openai_model,
                     settings.openai_timeout_seconds, settings.openai_input_usd_per_mtok,
                     settings.openai_output_usd_per_mtok)


def build_deps(settings: Settings, messenger: Messenger, *,
               clock: Callable[[], datetime] = utc_now, engine: Engine | None = None) -> Deps:
    return Deps(
        settings=settings,
        engine=engine or make_engine(settings.database_url),
        policy=settings.load_policy(),
        messenger=messenger,
        roles=Roles(finance=expand_groups(settings.finance_users(), messenger),
                    managers=expand_groups(settings.manager_users(), messenger)),
        clock=clock,
        llm=build_llm(settings),
    )
