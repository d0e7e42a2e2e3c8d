"""Faults against the real processes: the worker killed with SIGKILL mid-post and mid-send,
Slack answering 429 and 500, PostgreSQL restarted under the web process.

"Mid" is made deterministic by the stand-ins: the Slack sandbox accepts a card (stores the
message) and then holds its answer; the SMTP sink accepts an email (stores it) and holds
its 250. The test kills the worker while it waits for that answer, the worst moment: the
outside world has the card or the email, the database does not know. Then it restarts the
worker and counts what the outside world received, per escalation and per email.

Every subprocess runs bounded (timeouts on every wait) and is killed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from glob import glob
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, func
from sqlmodel import col, select

from bench.ledger import PLAN_DAY, LedgerSpec, generate
from bot.metrics import Metrics
from bot.sandbox.slack_api import SlackSandbox, _Reply
from connectors.base import RETRIES
from connectors.email import SmtpSender
from connectors.slack import RATE_LIMITED, card_ids
from dunning.model import Kind
from dunning.policy import DEFAULT_POLICY
from scheduler import jobs
from services.cards import Person, Roles, approve_draft, ensure_draft, load_card
from services.common import Actor
from services.delivery import STALE_SENDING, deliver_outbox
from services.importing import upsert_ledger
from services.planning import run_cycle
from store import tables as t
from store.engine import make_engine, migrate, session_scope
from tests.integration.test_delivery import free_port

TOKEN = "xoxb-faults"
SECRET = "faults-signing-secret"
CHANNEL = "ar-all"
NOW = datetime(2026, 11, 19, 14, 0, tzinfo=UTC)
FINANCE = Person("U_FIN", "fin@example.com")
ROLES = Roles(finance=frozenset({"U_FIN"}))
WAIT = 60.0  # the longest any single wait may take
DUNNING = [sys.executable, "-c", "from bot.cli import main; main()"]


# -- stand-ins that hold their answer -------------------------------------------------------

class HoldingSandbox(SlackSandbox):
    """Stores the `hold_at`-th card (a chat.postMessage with card metadata), then holds the
    answer until `release` is set: the poster is killed while Slack has its card."""

    def __init__(self, *, hold_at: int | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.hold_at = hold_at
        self.cards_seen = 0
        self.accepted = threading.Event()
        self.release = threading.Event()

    def _dispatch(self, verb: str, path: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        reply = super()._dispatch(verb, path, headers, raw)
        if path.startswith("/api/chat.postMessage") and b"dunning_card" in raw \
                and reply.status == 200:
            with self._lock:
                self.cards_seen += 1
                hold = self.cards_seen == self.hold_at
            if hold:
                self.accepted.set()
                self.release.wait(WAIT)
        return reply


class HoldingSink:
    """An SMTP sink that stores every message; the `hold_at`-th is stored, then its 250 is
    held until `release` is set."""

    def __init__(self, hold_at: int | None) -> None:
        self.messages: list[Any] = []
        self.hold_at = hold_at
        self.accepted = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        if len(self.messages) == self.hold_at:
            self.accepted.set()
            deadline = time.monotonic() + WAIT
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        return "250 Message accepted for delivery"


# -- helpers ----------------------------------------------------------------------------------

def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def seed(db: Engine, invoices: int = 150) -> list[int]:
    """A generated ledger (bench.ledger) and the plan day's cycle: escalations proposed."""
    now = NOW - timedelta(days=1)
    for batch in generate(LedgerSpec(open_invoices=invoices, seed=11)):
        with session_scope(db) as s:
            upsert_ledger(s, customers=batch.customers, invoices=batch.invoices,
                          source="faults", actor=Actor("test"), now=now,
                          policy=DEFAULT_POLICY)
    with session_scope(db) as s:
        run_cycle(s, DEFAULT_POLICY, PLAN_DAY, actor=Actor("test"), now=NOW)
        return [i for i in s.exec(select(t.Escalation.id).where(
            t.Escalation.state == "proposed").order_by(col(t.Escalation.id))) if i is not None]


def worker_env(db: Engine, folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "DUNNING_", "SMTP_", "DATABASE_URL"))}
    # The daily cycle 12 hours away: only the outbox and card jobs run during the test.
    cycle = (datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M")
    env.update(DATABASE_URL=db.url.render_as_string(hide_password=False),
               DUNNING_TIMEZONE="UTC", DUNNING_CYCLE_TIME=cycle, DUNNING_DIGEST_TIME=cycle,
               DUNNING_LOG_FORMAT="text", **extra)
    return env


def start_worker(env: dict[str, str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("wb")
    return subprocess.Popen([*DUNNING, "worker"], cwd=folder, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def states(db: Engine) -> Counter[str]:
    with session_scope(db) as s:
        return Counter({state: int(n) for state, n in s.exec(
            select(t.Escalation.state, func.count()).group_by(col(t.Escalation.state)))})


def card_posts(sandbox: SlackSandbox) -> Counter[int]:
    """How many messages Slack stored for each escalation (by the cards' metadata)."""
    out: Counter[int] = Counter()
    for call in sandbox.calls("chat.postMessage"):
        if call.ok and not call.injected:
            out.update(card_ids({"metadata": call.args.get("metadata")}))
    return out


def log_tail(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-1500:] for p in folder.glob("*.log"))


# -- kill -9 mid-post ------------------------------------------------------------------------

def test_worker_killed_after_slack_took_a_card_posts_each_card_once(
        db: Engine, tmp_path: Path) -> None:
    ids = seed(db)
    assert len(ids) >= 10, "the seed must give the worker several cards to post"
    with HoldingSandbox(token=TOKEN, hold_at=3, trigger_ttl=None) as sandbox:
        sandbox.add_channel(CHANNEL)
        env = worker_env(db, tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                         SLACK_API_URL=sandbox.base_url, DUNNING_DIGEST_CHANNEL=f"#{CHANNEL}")
        first = start_worker(env, tmp_path, "worker-1")
        try:
            assert sandbox.accepted.wait(WAIT), log_tail(tmp_path)
            kill9(first)  # Slack has the 3rd card; its ts never reached the database
        finally:
            sandbox.release.set()
            stop(first)
        before = states(db)
        assert before["posting"] >= 1, f"not killed inside the window: {before}"
        assert before["posted"] >= 2
        sandbox.hold_at = None
        second = start_worker(env, tmp_path, "worker-2")
        try:
            wait_for(lambda: states(db)["proposed"] + states(db)["posting"] == 0,
                     "every card posted")
        finally:
            stop(second)
        posts = card_posts(sandbox)
        assert set(posts) == set(ids), "every due card is on Slack"
        assert [i for i, n in posts.items() if n != 1] == [], "no card posted twice"
        with session_scope(db) as s:
            rows = list(s.exec(select(t.Escalation)))
        on_slack = {(m.channel, m.ts): card_ids(m.to_slack(sandbox.team_id))
                    for m in sandbox.messages(CHANNEL)}
        for row in rows:
            assert row.state == "posted" and row.slack_ts is not None
            # The stored ts is the message holding that card, also for the reconciled one.
            assert row.id in on_slack[(str(row.slack_channel), row.slack_ts)]
        assert "reconciled" in (tmp_path / "worker-2.log").read_text()


# -- kill -9 mid-send ------------------------------------------------------------------------

def approve_all(db: Engine, ids: list[int], most: int) -> list[str]:
    keys = []
    with session_scope(db) as s:
        for eid in ids:
            row = s.get(t.Escalation, eid)
            assert row is not None
            if row.kind != Kind.CUSTOMER_MESSAGE.value or row.approval != "owner":
                continue
            ensure_draft(s, eid, sender_name="AR", now=NOW)
            card = load_card(s, DEFAULT_POLICY, eid, PLAN_DAY)
            if card.draft is None or not card.invoice.customer.ap_contact_email:
                continue
            keys.append(approve_draft(s, card, roles=ROLES, person=FINANCE,
                                      subject=card.draft.subject, body=card.draft.body,
                                      sender="ar@vendor.example", now=NOW))
            if len(keys) == most:
                break
    return keys


def outbox(db: Engine) -> dict[str, str]:
    with session_scope(db) as s:
        return {o.key: o.status for o in s.exec(select(t.Outbox))}


def test_worker_killed_while_the_mail_server_took_an_email_sends_none_twice(
        db: Engine, tmp_path: Path) -> None:
    keys = approve_all(db, seed(db), most=8)
    assert len(keys) >= 5
    sink = HoldingSink(hold_at=3)
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        env = worker_env(db, tmp_path, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port),
                         SMTP_FROM="ar@vendor.example")
        first = start_worker(env, tmp_path, "worker-1")
        try:
            assert sink.accepted.wait(WAIT), log_tail(tmp_path)
            kill9(first)  # the 3rd email is at the mail server; the outbox says `sending`
        finally:
            sink.release.set()
            stop(first)
        assert Counter(outbox(db).values()) == {"sent": 2, "sending": 1, "pending": len(keys) - 3}
        second = start_worker(env, tmp_path, "worker-2")
        try:
            # Drained: every other email sent, only the interrupted one still `sending`
            # (stopping the worker while it sends a later one would leave two).
            wait_for(lambda: Counter(outbox(db).values()) == {"sent": len(keys) - 1,
                                                               "sending": 1},
                     "the outbox drained")
        finally:
            stop(second)
        # The interrupted one is never sent again: after the stale window it waits for a
        # person (its message may have left, as it did here).
        later = datetime.now(UTC) + STALE_SENDING + timedelta(minutes=1)
        result = deliver_outbox(db, SmtpSender("127.0.0.1", port, None, None), now=later)
        assert len(result.needs_human) == 1 and result.sent == []
    finally:
        controller.stop()
    final = outbox(db)
    assert Counter(final.values()) == {"sent": len(keys) - 1, "needs_human": 1}
    ids = Counter(str(m["Message-ID"]) for m in sink.messages)
    assert len(ids) == len(keys), "every approved email reached the mail server"
    assert [m for m, n in ids.items() if n > 1] == [], "no email sent twice"


# -- Slack 429 storms and 500s ------------------------------------------------------------------

def test_429_storms_and_500s_delay_cards_but_never_double_them(
        db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(db)
    with SlackSandbox(token=TOKEN, trigger_ttl=None) as sandbox:
        sandbox.add_channel(CHANNEL)
        for name, value in (("DATABASE_URL", db.url.render_as_string(hide_password=False)),
                            ("SLACK_BOT_TOKEN", TOKEN), ("SLACK_SIGNING_SECRET", SECRET),
                            ("SLACK_API_URL", sandbox.base_url),
                            ("DUNNING_DIGEST_CHANNEL", f"#{CHANNEL}")):
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("SMTP_HOST", raising=False)
        monkeypatch.setattr(jobs, "utc_now", lambda: NOW)
        jobs._FLUSHED.delta("retries", RETRIES)  # what earlier tests counted is not ours
        jobs._FLUSHED.delta("rate_limited", RATE_LIMITED)
        # A storm: more 429s in a row than slack_sdk retries (3), then two 500s.
        sandbox.fail_next("chat.postMessage", status=429, retry_after=0, times=6)
        sandbox.fail_next("chat.postMessage", status=500, times=2)
        runs = 0
        while states(db)["proposed"] + states(db)["posting"] and runs < 10:
            jobs.repost()  # the worker's job, as the scheduler runs it every 5 minutes
            runs += 1
        assert runs > 1, "the faults must have left cards for a later run"
        assert states(db) == {"posted": len(ids)}
        posts = card_posts(sandbox)
        assert set(posts) == set(ids) and set(posts.values()) == {1}
        injected = [c for c in sandbox.calls("chat.postMessage") if c.injected]
        assert [c.status for c in injected] == [429] * 6 + [500] * 2
    # What the worker measured reaches /metrics of the web process (through the database):
    # slack_sdk retried 3 + 2 of the 429s (honouring Retry-After), one reached the poster.
    scrape = Metrics(db).render().decode()
    assert 'dunning_rate_limited_total{process="worker",system="slack"} 6.0' in scrape
    assert 'dunning_connector_retries_total{process="worker",system="slack"} 5.0' in scrape
    assert f"dunning_worker_cards_posted_total {float(len(ids))}" in scrape
    assert f'dunning_worker_job_runs_total{{job="repost",outcome="ok"}} {float(runs)}' in scrape
    assert f"dunning_escalations{{state=\"posted\"}} {float(len(ids))}" in scrape


# -- PostgreSQL restarted under the web process -----------------------------------------------

def _pg_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temp folder, on its own port and socket dir."""

    def __init__(self, folder: Path) -> None:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        self.bin = bin_dir
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(folder, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_user, str(self.bin / tool), *args], check=False,
                              capture_output=True, timeout=WAIT)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, tool, done.stdout,
                                                done.stderr.decode(errors="replace")[-800:])

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "pg.log"), "-w",
                  "-t", "30", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def signed_command(url: str, sandbox: SlackSandbox, user: str, text_: str
                   ) -> tuple[int, bytes]:
    body = urllib.parse.urlencode({
        "token": "x", "team_id": sandbox.team_id, "channel_id": sandbox.general_id,
        "user_id": user, "command": "/dunning", "text": text_,
        "response_url": sandbox.response_url(channel=sandbox.general_id, user=user),
        "trigger_id": sandbox.issue_trigger_id(user)}).encode()
    stamp = str(int(time.time()))
    sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body,
                           hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"{url}/slack/events", data=body, method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    req.add_header("X-Slack-Request-Timestamp", stamp)
    req.add_header("X-Slack-Signature", sig)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.skipif(_pg_bin() is None, reason="PostgreSQL server binaries (initdb under "
                    "/usr/lib/postgresql/*/bin) are not installed")
@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("runuser") is None,
                    reason="running as root without runuser: cannot start PostgreSQL")
def test_web_process_fails_cleanly_while_postgres_restarts_and_recovers(
        tmp_path: Path) -> None:
    # Not under pytest's tmp dir: the postgres user must be able to reach the folder.
    pg_dir = Path(tempfile.mkdtemp(prefix="dunning-pg-"))
    pg = PrivatePostgres(pg_dir)
    try:
        pg.start()
        _restart_under_load(pg, tmp_path)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            pg.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)


def _restart_under_load(pg: PrivatePostgres, tmp_path: Path) -> None:
    engine = make_engine(pg.url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        migrate(engine)
        seed(engine, invoices=300)
        with session_scope(engine) as s:
            name = s.exec(select(t.Customer.name).order_by(col(t.Customer.id))).first()
        assert name is not None
        with SlackSandbox(token=TOKEN, trigger_ttl=None) as sandbox:
            user = sandbox.add_user("fin@example.com", "fin")
            port = free_port()
            env = worker_env(engine, tmp_path, SLACK_BOT_TOKEN=TOKEN,
                             SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=sandbox.base_url)
            log = (tmp_path / "serve.log").open("wb")
            proc = subprocess.Popen([*DUNNING, "serve", "--port", str(port)], cwd=tmp_path,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                        return int(r.status) == 200
                except OSError:
                    return False

            wait_for(healthy, "the web process to start")
            status, body = signed_command(url, sandbox, user, f"status {name}")
            assert status == 200 and name.encode() in body

            pg.stop()
            down = [signed_command(url, sandbox, user, f"status {name}") for _ in range(3)]
            for status, body in down:
                assert 500 <= status < 600, (status, body[:200])
                assert b"Traceback" not in body and b"psycopg" not in body
                assert len(body) < 300
            with pytest.raises(urllib.error.HTTPError) as health:
                urllib.request.urlopen(f"{url}/healthz", timeout=5)
            assert health.value.code == 503
            # The person who asked is told, in Slack's words, that it failed.
            told = [e.text for e in sandbox.ephemerals(user)]
            assert told and all("Something went wrong" in x for x in told)
            assert all("Traceback" not in x and "psycopg" not in x for x in told)

            pg.start()
            wait_for(healthy, "recovery after the restart")
            status, body = signed_command(url, sandbox, user, f"status {name}")
            assert status == 200 and name.encode() in body
    finally:
        if proc is not None:
            stop(proc)
        engine.dispose()
