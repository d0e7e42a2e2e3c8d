"""The worker's jobs. Each builds what it needs from settings and releases it after the
run: the job store persists only a reference to the function, never live objects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from bot.deps import Deps, build_deps, utc_now
from bot.settings import Settings, load_settings
from connectors.email import SmtpSender
from connectors.errors import ConnectorError
from connectors.slack import SlackMessenger, make_client
from dunning.calendar import is_business_day, local_date
from handlers.jobs import post_cards, post_digest
from services.common import Actor
from services.delivery import deliver_outbox
from services.planning import run_cycle
from store.engine import make_engine, session_scope

log = logging.getLogger(__name__)


@dataclass
class Run:
    settings: Settings
    engine: Engine
    deps: Deps | None  # None when Slack is not configured


@contextmanager
def job_run() -> Iterator[Run]:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        deps = None
        if settings.slack_bot_token is not None and settings.slack_signing_secret is not None:
            client = make_client(settings.slack_bot_token.get_secret_value(),
                                 settings.slack_api_url)
            deps = build_deps(settings, SlackMessenger(client), engine=engine)
        yield Run(settings, engine, deps)
    finally:
        engine.dispose()


def daily_cycle() -> None:
    """The day's escalations on company business days, then the cards to Slack."""
    with job_run() as run:
        now = utc_now()
        today = local_date(now, run.settings.dunning_timezone)
        if not is_business_day(today, run.settings.dunning_country):
            log.info("daily cycle skipped: %s is not a business day in %s", today,
                     run.settings.dunning_country)
            return
        with session_scope(run.engine) as s:
            result = run_cycle(s, run.settings.load_policy(), today, actor=Actor("scheduler"),
                               now=now, customer_dates=True)
        log.info("cycle %s: %d escalation(s), %d held", today, len(result.created),
                 len(result.holds))
        if run.deps is not None:
            posted = post_cards(run.deps)
            log.info("posted %d card(s), %d left for the next try", posted.posted,
                     len(posted.failed))


def repost() -> None:
    """Cards that could not be posted (Slack down, 429 storm) are tried again."""
    with job_run() as run:
        if run.deps is not None:
            posted = post_cards(run.deps)
            if posted.posted or posted.failed:
                log.info("reposted %d card(s), %d still waiting", posted.posted,
                         len(posted.failed))


def deliver() -> None:
    """Approved emails out of the outbox, each exactly once."""
    with job_run() as run:
        s = run.settings
        if not s.smtp_host:
            return
        sender = SmtpSender(s.smtp_host, s.smtp_port, s.smtp_username,
                            s.smtp_password.get_secret_value() if s.smtp_password else None)
        result = deliver_outbox(run.engine, sender, now=utc_now())
        if result.sent or result.failed or result.needs_human or result.retried:
            log.info("outbox: sent %d, retry %d, failed %d, needs a person %d",
                     len(result.sent), len(result.retried), len(result.failed),
                     len(result.needs_human))


def digest() -> None:
    """The manager digest on company business days."""
    with job_run() as run:
        today = local_date(utc_now(), run.settings.dunning_timezone)
        channel = run.settings.dunning_digest_channel
        if run.deps is None or not channel or not is_business_day(
                today, run.settings.dunning_country):
            return
        try:
            post_digest(run.deps, channel)
        except ConnectorError:
            log.exception("digest not posted")
