"""The worker's jobs. Each builds what it needs from settings and releases it after the
run: the job store persists only a reference to the function, never live objects.

Each named run is measured (duration, outcome ok/skipped/error, cards posted, connector
retries and Slack 429s since the last record) and added to the totals in `meta`, which the
web process serves on /metrics (`services.observability`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from bot.deps import Deps, build_deps, utc_now
from bot.settings import Settings, load_settings
from connectors.base import RETRIES, RetryStats
from connectors.email import SmtpSender
from connectors.errors import ConnectorError
from connectors.slack import RATE_LIMITED, SlackMessenger, make_client
from dunning.calendar import is_business_day, local_date
from handlers.jobs import post_cards, post_digest
from services.common import Actor, ServiceError
from services.delivery import deliver_outbox
from services.observability import JobRun, record_job_run
from services.planning import run_cycle
from services.posting import PostResult
from store.engine import make_engine, session_scope

log = logging.getLogger(__name__)


@dataclass
class Run:
    settings: Settings
    engine: Engine
    deps: Deps | None  # None when Slack is not configured
    outcome: str = "ok"  # a job sets "skipped" when there was nothing for it to do
    cards_posted: int = 0
    cards_reconciled: int = 0

    def posted(self, result: PostResult) -> None:
        self.cards_posted += result.posted
        self.cards_reconciled += result.reconciled
        if result.busy:  # another run was posting: this one did nothing
            self.outcome = "skipped"


@dataclass
class _Flushed:
    """The process counters as last recorded, so each record adds only what is new."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, dict[str, int]] = field(default_factory=dict)

    def delta(self, name: str, stats: RetryStats) -> dict[str, int]:
        with stats.lock:
            current = dict(stats.counts)
        with self.lock:
            before = self.seen.get(name, {})
            self.seen[name] = current
        return {k: n - before.get(k, 0) for k, n in current.items() if n != before.get(k, 0)}


_FLUSHED = _Flushed()
_RECORD = threading.Lock()  # jobs run in threads: one read-modify-write of the totals at once


def _record(run: Run, job: str, seconds: float) -> None:
    try:
        with _RECORD, session_scope(run.engine) as s:
            record_job_run(s, JobRun(
                job=job, outcome=run.outcome, seconds=seconds, finished_at=utc_now(),
                cards_posted=run.cards_posted, cards_reconciled=run.cards_reconciled,
                retries=_FLUSHED.delta("retries", RETRIES),
                rate_limited=_FLUSHED.delta("rate_limited", RATE_LIMITED)))
    except Exception:  # metrics must never fail the job (e.g. the database is down)
        log.warning("worker metrics for %s not recorded", job, exc_info=True)


@contextmanager
def job_run(name: str | None = None) -> Iterator[Run]:
    """Settings, engine and Slack deps for one run; with a `name`, the run is measured."""
    started = time.monotonic()
    settings = load_settings()
    engine = make_engine(settings.database_url)
    run = Run(settings, engine, None)
    try:
        if settings.slack_bot_token is not None and settings.slack_signing_secret is not None:
            client = make_client(settings.slack_bot_token.get_secret_value(),
                                 settings.slack_api_url)
            run.deps = build_deps(settings, SlackMessenger(client), engine=engine)
        yield run
    except BaseException:
        run.outcome = "error"
        raise
    finally:
        if name is not None:
            _record(run, name, time.monotonic() - started)
        engine.dispose()


def daily_cycle() -> None:
    """The day's escalations on company business days, then the cards to Slack."""
    with job_run("daily_cycle") as run:
        now = utc_now()
        today = local_date(now, run.settings.dunning_timezone)
        if not is_business_day(today, run.settings.dunning_country):
            log.info("daily cycle skipped: %s is not a business day in %s", today,
                     run.settings.dunning_country)
            run.outcome = "skipped"
            return
        with session_scope(run.engine) as s:
            result = run_cycle(s, run.settings.load_policy(), today, actor=Actor("scheduler"),
                               now=now, customer_dates=True)
        log.info("cycle %s: %d escalation(s), %d held", today, len(result.created),
                 len(result.holds))
        if run.deps is not None:
            posted = post_cards(run.deps)
            run.posted(posted)
            log.info("posted %d card(s), %d left for the next try", posted.posted,
                     len(posted.failed))


def repost() -> None:
    """Cards that could not be posted (Slack down, 429 storm) are tried again."""
    with job_run("repost") as run:
        if run.deps is None:
            run.outcome = "skipped"
        else:
            posted = post_cards(run.deps)
            run.posted(posted)
            if posted.posted or posted.failed:
                log.info("reposted %d card(s), %d still waiting", posted.posted,
                         len(posted.failed))


def deliver() -> None:
    """Approved emails out of the outbox, each exactly once."""
    with job_run("deliver") as run:
        s = run.settings
        if not s.smtp_host:
            run.outcome = "skipped"
            return
        sender = SmtpSender(s.smtp_host, s.smtp_port, s.smtp_username,
                            s.smtp_password.get_secret_value() if s.smtp_password else None)
        result = deliver_outbox(run.engine, sender, now=utc_now(),
                                quickbooks_send=s.quickbooks_send_invoices)
        if s.quickbooks_send_invoices:
            _quickbooks_sends(run)
        if result.sent or result.failed or result.needs_human or result.retried:
            log.info("outbox: sent %d, retry %d, failed %d, needs a person %d",
                     len(result.sent), len(result.retried), len(result.failed),
                     len(result.needs_human))


def digest() -> None:
    """The manager digest on company business days."""
    with job_run("digest") as run:
        today = local_date(utc_now(), run.settings.dunning_timezone)
        channel = run.settings.dunning_digest_channel
        if run.deps is None or not channel or not is_business_day(
                today, run.settings.dunning_country):
            run.outcome = "skipped"
            return
        try:
            post_digest(run.deps, channel)
        except ConnectorError:
            run.outcome = "error"
            log.exception("digest not posted")


def sync() -> None:
    """Incremental sync of every configured billing system, then the CRM (hourly)."""
    from bot.connectors import (
        BILLING_SYSTEMS,
        NotConfigured,
        billing_source,
        configured,
        crm_source,
    )
    from services.sync import sync_billing, sync_crm

    with job_run("sync") as run:
        systems = configured(run.settings)
        if not systems:
            run.outcome = "skipped"
            return
        policy = run.settings.load_policy()
        for name in systems:
            try:
                if name in BILLING_SYSTEMS:
                    source = billing_source(run.settings, name, run.engine)
                    assert not isinstance(source, NotConfigured)
                    report = sync_billing(run.engine, source, policy=policy, now=utc_now())
                else:
                    crm = crm_source(run.settings)
                    assert not isinstance(crm, NotConfigured)
                    report = sync_crm(run.engine, crm, policy=policy, now=utc_now())
                log.info("sync %s: %d page(s), %d call(s), %.1f s", name, report.pages,
                         report.api_calls, report.seconds)
            except (ConnectorError, ServiceError):
                # One system down must not stop the others; the next run resumes its cursor.
                run.outcome = "error"
                log.exception("sync %s failed; stored pages are kept", name)


def crm_followups() -> None:
    """CRM tasks for owner escalations and notes for sent reminders, each once."""
    from bot.connectors import NotConfigured, crm_source
    from services.sync import deliver_crm

    with job_run("crm_followups") as run:
        crm = crm_source(run.settings)
        if isinstance(crm, NotConfigured):
            run.outcome = "skipped"
            return
        counts = deliver_crm(run.engine, crm, now=utc_now())
        if any(counts.values()):
            log.info("crm follow-ups: %s", counts)


def replies() -> None:
    """Poll the AR mailbox for customer replies; proposals appear on the cards."""
    from connectors.imap import ImapPoller
    from handlers.common import poll_replies
    from services.replies import poll_mailbox

    with job_run("replies") as run:
        s = run.settings
        if not s.imap_host or s.imap_password is None:
            run.outcome = "skipped"
            return
        poller = ImapPoller(host=s.imap_host, port=s.imap_port,
                            username=s.imap_username or "",
                            password=s.imap_password.get_secret_value(), use_ssl=s.imap_ssl,
                            folder=s.imap_folder, timeout=s.connector_timeout_seconds)
        try:
            if run.deps is not None:
                result = poll_replies(run.deps, poller)
            else:
                result = poll_mailbox(run.engine, poller, now=utc_now(),
                                      default_timezone=s.dunning_timezone)
        except ConnectorError:
            run.outcome = "error"
            log.exception("mailbox not read; the next poll tries again")
            return
        if result.stored:
            log.info("replies: %d stored (%d unmatched, %d flagged)", len(result.stored),
                     len(result.unmatched), len(result.injection_suspected))


def _quickbooks_sends(run: Run) -> None:
    """`Invoice.send` for the reminders of QuickBooks invoices that went out."""
    from bot.connectors import NotConfigured, billing_source
    from connectors.quickbooks_billing import QuickBooksBilling
    from services.sync import deliver_quickbooks_sends

    qbo = billing_source(run.settings, "quickbooks", run.engine)
    if isinstance(qbo, NotConfigured) or not isinstance(qbo, QuickBooksBilling):
        log.warning("QUICKBOOKS_SEND_INVOICES is set but QuickBooks is not configured")
        return
    counts = deliver_quickbooks_sends(
        run.engine, lambda iid, to, key: qbo.send_invoice(iid, to, request_id=key),
        now=utc_now())
    if any(counts.values()):
        log.info("QuickBooks Invoice.send: %s", counts)
