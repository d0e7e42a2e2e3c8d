"""The worker: one active scheduler per database, jobs persisted with explicit time zones,
the daily cycle on company business days only."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, func
from sqlmodel import select

from bot.settings import load_settings
from scheduler import jobs
from scheduler.leader import leader_lock
from scheduler.worker import DAILY_GRACE, build_scheduler, run_worker
from store import tables as t
from store.engine import session_scope
from tests.integration.test_services import import_samples


def url_of(db: Engine) -> str:
    return db.url.render_as_string(hide_password=False)


def test_a_second_worker_stands_by_until_the_first_lets_go(db: Engine) -> None:
    first, second = leader_lock(db), leader_lock(db)
    assert first.acquire()
    try:
        assert not second.acquire()
        assert first.alive()
    finally:
        first.release()
    assert second.acquire()
    second.release()


def test_standby_worker_returns_when_asked_to_stop(db: Engine) -> None:
    holder = leader_lock(db)
    assert holder.acquire()
    stop = threading.Event()
    stop.set()
    try:
        run_worker(load_settings(database_url=url_of(db)), db, standby_seconds=0.01, stop=stop)
    finally:
        holder.release()


def test_jobs_are_persisted_with_explicit_time_zones_and_misfire_grace(db: Engine) -> None:
    settings = load_settings(database_url=url_of(db), dunning_timezone="Europe/Berlin",
                             dunning_cycle_time="7:30")
    scheduler = build_scheduler(settings, db, BackgroundScheduler)
    scheduler.start(paused=True)
    try:
        jobs_by_id = {j.id: j for j in scheduler.get_jobs()}
        assert set(jobs_by_id) == {"daily_cycle", "digest", "deliver", "repost", "sync",
                                   "crm_followups", "replies"}
        assert all(str(j.trigger.timezone) == "Europe/Berlin" for j in jobs_by_id.values())
        assert jobs_by_id["sync"].trigger.interval == timedelta(hours=1)
        daily = jobs_by_id["daily_cycle"]
        assert str(daily.trigger.timezone) == "Europe/Berlin"
        assert "hour='7', minute='30'" in str(daily.trigger)
        assert daily.misfire_grace_time == DAILY_GRACE and daily.coalesce
        assert jobs_by_id["deliver"].trigger.interval == timedelta(seconds=30)
    finally:
        scheduler.shutdown(wait=False)
    # A restarted worker finds the same jobs in the database (replaced, not duplicated).
    again = build_scheduler(settings, db, BackgroundScheduler)
    again.start(paused=True)
    try:
        assert sorted(j.id for j in again.get_jobs()) == [
            "crm_followups", "daily_cycle", "deliver", "digest", "replies", "repost", "sync"]
    finally:
        again.shutdown(wait=False)


@pytest.mark.parametrize(("moment", "expected"), [
    (datetime(2026, 11, 28, 13, 0, tzinfo=UTC), 0),  # Saturday: no cycle
    (datetime(2026, 11, 26, 13, 0, tzinfo=UTC), 0),  # Thanksgiving (US): no cycle
    (datetime(2026, 11, 24, 13, 0, tzinfo=UTC), 4),  # Tuesday: the sample's four steps
])
def test_daily_cycle_runs_on_company_business_days_only(
        db: Engine, monkeypatch: pytest.MonkeyPatch, moment: datetime, expected: int) -> None:
    import_samples(db)
    monkeypatch.setenv("DATABASE_URL", url_of(db))
    monkeypatch.setenv("DUNNING_TIMEZONE", "America/New_York")
    monkeypatch.setenv("DUNNING_COUNTRY", "US")
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(jobs, "utc_now", lambda: moment)
    jobs.daily_cycle()
    jobs.deliver()  # no SMTP configured: nothing to do, no error
    with session_scope(db) as s:
        assert s.exec(select(func.count()).select_from(t.Escalation)).one() == expected


def test_migrations_leave_the_job_store_table_alone(db: Engine) -> None:
    from store.engine import schema_diff

    scheduler = build_scheduler(load_settings(database_url=url_of(db)), db, BackgroundScheduler)
    scheduler.start(paused=True)
    scheduler.shutdown(wait=False)
    assert schema_diff(db) == []


def test_sync_and_crm_jobs_bring_crm_context_and_create_owner_tasks(
        db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hourly sync job against a loopback HubSpot: the company matched by name gives the
    customer a new owner; after the cycle, the crm_followups job creates the owner's task
    for the finance escalation once."""
    from tests.fakes.hubspot_fake import TOKEN, HubSpotFake

    import_samples(db)
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SMTP_HOST", "IMAP_HOST",
                 "STRIPE_API_KEY", "QUICKBOOKS_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", url_of(db))
    monkeypatch.setenv("DUNNING_TIMEZONE", "America/New_York")
    monkeypatch.setattr(jobs, "utc_now", lambda: datetime(2026, 11, 24, 13, 0, tzinfo=UTC))
    with HubSpotFake() as fake:
        owner = fake.add_owner("kim.lee@example.com", first="Kim", last="Lee")
        fake.add_company(name="Contoso Pty. Ltd.", hubspot_owner_id=owner, health_score="25")
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("HUBSPOT_API_HOST", fake.url)
        jobs.sync()
        with session_scope(db) as s:
            contoso = s.get(t.Customer, "C-1004")
            assert contoso is not None
            assert (contoso.owner_email, contoso.health) == ("kim.lee@example.com", 25)
        jobs.daily_cycle()
        jobs.crm_followups()
        jobs.crm_followups()
        assert len(fake.tasks) == 1  # Contoso's service-pause decision, once
        jobs.replies()  # no mailbox configured: skipped, no error
