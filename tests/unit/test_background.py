"""bot.background.AfterResponse: keyed, ordered, one thread, failures contained."""

from __future__ import annotations

import threading

from bot import logs
from bot.background import AfterResponse


def test_jobs_run_in_order_and_a_waiting_key_is_not_queued_twice() -> None:
    jobs = AfterResponse()
    gate, ran = threading.Event(), []
    jobs.submit("first", lambda: (gate.wait(5), ran.append("first")))
    for key in ("a", "b", "a", "c", "b"):
        jobs.submit(key, lambda key=key: ran.append(key))
    assert jobs.backlog == 4  # first (running or queued), a, b, c
    gate.set()
    assert jobs.drain(timeout=5)
    assert ran == ["first", "a", "b", "c"] and jobs.backlog == 0 and jobs.done == 4


def test_a_key_queued_again_while_it_runs_runs_again() -> None:
    """The running job may have read the state before the newer change: run it again."""
    jobs = AfterResponse()
    started, gate, ran = threading.Event(), threading.Event(), []

    def slow() -> None:
        started.set()
        gate.wait(5)
        ran.append("1st")

    jobs.submit(7, slow)
    assert started.wait(5)
    jobs.submit(7, lambda: ran.append("2nd"))
    gate.set()
    assert jobs.drain(timeout=5)
    assert ran == ["1st", "2nd"]


def test_drain_reports_a_timeout_and_a_failing_job_does_not_stop_the_others() -> None:
    jobs = AfterResponse()
    gate, ran = threading.Event(), []
    jobs.submit("slow", lambda: gate.wait(5))
    assert jobs.drain(timeout=0.05) is False
    jobs.submit("boom", lambda: 1 / 0)
    jobs.submit("after", lambda: ran.append("after"))
    gate.set()
    assert jobs.drain(timeout=5)
    assert ran == ["after"] and jobs.done == 3


def test_a_job_logs_with_the_request_id_of_the_request_that_queued_it() -> None:
    jobs, seen = AfterResponse(), []
    token = logs.request_id.set("req-42")
    try:
        jobs.submit("k", lambda: seen.append(logs.request_id.get()))
    finally:
        logs.request_id.reset(token)
    assert jobs.drain(timeout=5)
    assert seen == ["req-42"]
