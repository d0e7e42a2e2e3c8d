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
        assert set(jobs_by_id) == {"daily_cycle", "digest", "deliver", "repost"}
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
            "daily_cycle", "deliver", "digest", "repost"]
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
