"""The worker process (`dunning worker`): APScheduler 3 with jobs persisted in the database.

Every trigger carries the company's time zone (daylight-saving safe); daily jobs have a
long misfire grace and coalesce, so a worker restarted after an outage runs a missed
cycle once, not once per missed day. A second worker stands by on the leader lock and
takes over when the first dies.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from bot.settings import Settings
from scheduler.leader import LeaderLock, leader_lock

log = logging.getLogger(__name__)
DAILY_GRACE = 6 * 3600  # a worker back within six hours still runs the morning's cycle
JOB_TABLE = "scheduler_job"


def add_jobs(scheduler: BaseScheduler, settings: Settings) -> None:
    tz = settings.dunning_timezone
    cycle_h, cycle_m = (int(x) for x in settings.dunning_cycle_time.split(":"))
    digest_h, digest_m = (int(x) for x in settings.dunning_digest_time.split(":"))
    common: dict[str, Any] = {"replace_existing": True, "coalesce": True, "max_instances": 1}
    scheduler.add_job("scheduler.jobs:daily_cycle", CronTrigger(
        day_of_week="mon-fri", hour=cycle_h, minute=cycle_m, timezone=tz),
        id="daily_cycle", misfire_grace_time=DAILY_GRACE, **common)
    scheduler.add_job("scheduler.jobs:digest", CronTrigger(
        day_of_week="mon-fri", hour=digest_h, minute=digest_m, timezone=tz),
        id="digest", misfire_grace_time=DAILY_GRACE, **common)
    # The outbox and the card reposts run at start as well: a worker restarted after a
    # crash reconciles the cards it left in `posting` and sends what waits at once, not
    # five minutes later.
    start = datetime.now(ZoneInfo(tz))
    scheduler.add_job("scheduler.jobs:deliver", IntervalTrigger(seconds=30, timezone=tz),
                      id="deliver", misfire_grace_time=60, next_run_time=start, **common)
    scheduler.add_job("scheduler.jobs:repost", IntervalTrigger(minutes=5, timezone=tz),
                      id="repost", misfire_grace_time=300, next_run_time=start, **common)
    # Connectors: incremental sync hourly; CRM tasks/notes each minute; the AR mailbox
    # every 5 minutes. A job whose system is not configured returns at once ("skipped").
    scheduler.add_job("scheduler.jobs:sync", IntervalTrigger(hours=1, timezone=tz),
                      id="sync", misfire_grace_time=1800, **common)
    scheduler.add_job("scheduler.jobs:crm_followups", IntervalTrigger(minutes=1, timezone=tz),
                      id="crm_followups", misfire_grace_time=60, **common)
    scheduler.add_job("scheduler.jobs:replies", IntervalTrigger(minutes=5, timezone=tz),
                      id="replies", misfire_grace_time=300, **common)


def build_scheduler(settings: Settings, engine: Engine,
                    scheduler_cls: type[BaseScheduler] = BlockingScheduler) -> BaseScheduler:
    scheduler = scheduler_cls(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOB_TABLE),
                   "process": MemoryJobStore()},
        timezone=settings.dunning_timezone)
    add_jobs(scheduler, settings)
    return scheduler


def run_worker(settings: Settings, engine: Engine, *, standby_seconds: float = 15.0,
               stop: threading.Event | None = None) -> None:
    """Stand by until this process holds the leader lock, then run the schedule."""
    stop = stop or threading.Event()
    lock: LeaderLock = leader_lock(engine)
    announced = False
    while not lock.acquire():
        if not announced:
            log.info("another worker is active: standing by")
            announced = True
        if stop.wait(standby_seconds):
            return
    log.info("this worker is the active scheduler")
    scheduler = build_scheduler(settings, engine)

    def heartbeat() -> None:
        if not lock.alive():
            log.error("lost the leader lock (database connection gone): stopping")
            scheduler.shutdown(wait=False)

    scheduler.add_job(heartbeat, IntervalTrigger(seconds=30), id="heartbeat",
                      jobstore="process", replace_existing=True)
    try:
        scheduler.start()
    finally:
        lock.release()
