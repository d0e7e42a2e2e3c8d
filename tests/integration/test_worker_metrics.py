"""What the worker measures reaches /metrics of the web process through the database:
job runs by outcome and their durations, cards posted, retries and 429s, model tokens and
cost. The scrape is the Prometheus text the web process serves (`bot.metrics.Metrics`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from bot.metrics import Metrics
from scheduler import jobs
from services.observability import JobRun, WorkerStats, record_job_run
from store import tables as t
from store.engine import session_scope
from store.repository import get_meta
from tests.integration.test_services import import_samples

SATURDAY = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
TUESDAY = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


def scrape(db: Engine) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the scrape by (name, sorted labels); parsed, not string-matched."""
    out = {}
    for family in text_string_to_metric_families(Metrics(db).render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def worker_env(db: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("DATABASE_URL", db.url.render_as_string(hide_password=False))
    monkeypatch.setenv("DUNNING_TIMEZONE", "America/New_York")
    monkeypatch.setenv("DUNNING_COUNTRY", "US")
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    return db


def test_job_runs_are_counted_by_outcome_with_their_durations(
        worker_env: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    db = worker_env
    import_samples(db)
    monkeypatch.setattr(jobs, "utc_now", lambda: SATURDAY)
    jobs.daily_cycle()  # not a business day: skipped
    monkeypatch.setattr(jobs, "utc_now", lambda: TUESDAY)
    jobs.daily_cycle()  # four escalations
    jobs.deliver()  # no SMTP configured: skipped
    jobs.deliver()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("planning failed")

    monkeypatch.setattr(jobs, "run_cycle", broken)
    with pytest.raises(RuntimeError):
        jobs.daily_cycle()
    m = scrape(db)
    runs = "dunning_worker_job_runs_total"
    assert m[(runs, (("job", "daily_cycle"), ("outcome", "ok")))] == 1
    assert m[(runs, (("job", "daily_cycle"), ("outcome", "skipped")))] == 1
    assert m[(runs, (("job", "daily_cycle"), ("outcome", "error")))] == 1
    assert m[(runs, (("job", "deliver"), ("outcome", "skipped")))] == 2
    assert m[("dunning_worker_job_last_outcome",
              (("job", "daily_cycle"), ("outcome", "error")))] == 1
    seconds = m[("dunning_worker_job_seconds_total", (("job", "daily_cycle"),))]
    last = m[("dunning_worker_job_last_duration_seconds", (("job", "daily_cycle"),))]
    assert seconds > 0 and 0 < last <= seconds
    assert m[("dunning_worker_job_last_finished_timestamp_seconds",
              (("job", "deliver"),))] == TUESDAY.timestamp()
    assert m[("dunning_escalations", (("state", "proposed"),))] == 4
    assert m[("dunning_worker_cards_posted_total", ())] == 0  # Slack is not configured


def test_model_tokens_and_cost_come_from_the_llm_call_table(db: Engine) -> None:
    with session_scope(db) as s:
        for purpose, prompt, completion, micros, outcome in (
                ("draft", 1200, 300, 360, "ok"), ("draft", 1000, 0, 150, "malformed"),
                ("classify", 400, 20, 72, "ok")):
            s.add(t.LlmCall(purpose=purpose, model="gpt-4o-mini", prompt_tokens=prompt,
                            completion_tokens=completion, cost_micros=micros,
                            outcome=outcome, at=TUESDAY))
    m = scrape(db)
    assert m[("dunning_llm_tokens_total", (("kind", "prompt"), ("purpose", "draft")))] == 2200
    assert m[("dunning_llm_tokens_total", (("kind", "completion"), ("purpose", "draft")))] == 300
    assert m[("dunning_llm_cost_usd_total", (("purpose", "draft"),))] == pytest.approx(0.00051)
    assert m[("dunning_llm_cost_usd_total", (("purpose", "classify"),))] == \
        pytest.approx(0.000072)
    assert m[("dunning_llm_calls_total", (("outcome", "malformed"), ("purpose", "draft")))] == 1


def test_totals_add_up_across_runs_and_survive_a_bad_document(db: Engine) -> None:
    at = TUESDAY
    with session_scope(db) as s:
        record_job_run(s, JobRun("repost", "ok", 1.5, at, cards_posted=3,
                                 retries={"slack": 2}, rate_limited={"slack": 1}))
        record_job_run(s, JobRun("repost", "ok", 0.5, at, cards_posted=2, cards_reconciled=1,
                                 retries={"slack": 1, "hubspot": 4}))
    with session_scope(db) as s:
        stats = WorkerStats.from_json(get_meta(s, "worker_metrics"))
    assert stats.cards_posted == 5 and stats.cards_reconciled == 1
    assert stats.retries == {"slack": 3, "hubspot": 4} and stats.rate_limited == {"slack": 1}
    assert stats.jobs["repost"].seconds_total == 2.0
    m = scrape(db)
    assert m[("dunning_connector_retries_total",
              (("process", "worker"), ("system", "hubspot")))] == 4
    assert m[("dunning_rate_limited_total", (("process", "worker"), ("system", "slack")))] == 1
    assert WorkerStats.from_json("not json").cards_posted == 0
