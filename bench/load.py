"""Load benchmark of the web process: signed Slack requests at rising concurrency.

    python -m bench.load --invoices 1000000 --levels 1,10,25,50

What runs: the real web process (`dunning serve`, uvicorn, a subprocess) on a dedicated
PostgreSQL database (`dunning_bench` on the server of BENCH_POSTGRES_URL, never the tests'
database) holding the ledger of `bench.ledger` (the same generator as `bench.run`), after
the plan day's cycle; Slack is the loopback `SlackSandbox` (in this process), so every
`views.open`, `chat.update` and `users.info` the handlers make is a real HTTP call.

Each level sends `--requests` signed requests from that many client threads. Half the
tasks are `/dunning status <customer>` slash commands (a customer name, exact or
lower-cased), a quarter approve flows (click the card's Approve button -> the modal opens
through views.open -> submit the modal: approve_draft queues the email, the card is
updated in place), a quarter snooze flows (click Snooze -> submit "1 week": the card is set
aside and the customer snoozed). A flow's click and submission are two requests, timed
apart, so about a third of the requests are status commands. Every card is used once.
Per level: throughput (requests/s), p50/p99 (ms) overall and per kind,
and errors (any answer other than 200, or a modal answered with an error).

The load is made on the same 2 cores as the server (client threads, the sandbox, the
database), so the figures are a floor for a server with its own machine.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlmodel import col, select

from bench.ledger import PLAN_DAY, LedgerSpec
from bench.run import analyze, load_ledger, log, percentiles, postgres_admin_url
from bot.deps import build_deps
from bot.sandbox.slack_api import SlackSandbox, View
from bot.settings import load_settings
from connectors.slack import SlackMessenger, card_metadata, make_client
from dunning.model import Kind
from dunning.policy import DEFAULT_POLICY
from handlers.common import render_card
from services.cards import claim_for_posting, ensure_draft, load_card, mark_posted
from services.common import Actor
from services.planning import run_cycle
from store import tables as t
from store.engine import make_engine, migrate, session_scope
from store.repository import get_meta, set_meta

TOKEN = "xoxb-bench"
DATABASE = "dunning_bench"
LOADED_KEY = "bench_load_invoices"  # meta: the ledger size in this database (for --reuse)
FINANCE = "fin@bench.example"
CHANNEL = "ar-bench"
STARTUP_SECONDS = 60.0
REQUEST_TIMEOUT = 30.0
# `dunning` of this interpreter's environment (the console script calls bot.cli:main).
DUNNING = [sys.executable, "-c", "from bot.cli import main; main()"]


@dataclass
class Sample:
    kind: str  # status | approve_click | approve_submit | snooze_click | snooze_submit
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Target:
    """The running web process and the Slack sandbox it talks to."""

    url: str
    sandbox: SlackSandbox
    secret: str
    user_id: str
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, kind: str, body: bytes) -> tuple[Sample, bytes]:
        stamp = str(int(time.time()))
        sig = "v0=" + hmac.new(self.secret.encode(), f"v0:{stamp}:".encode() + body,
                               hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"{self.url}/slack/events", data=body, method="POST")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        req.add_header("X-Slack-Request-Timestamp", stamp)
        req.add_header("X-Slack-Signature", sig)
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        except OSError as exc:
            raw, status = str(exc).encode(), 0
        sample = Sample(kind, time.perf_counter() - start, status == 200,
                        "" if status == 200 else f"HTTP {status}: {raw[:120]!r}")
        with self.lock:
            self.samples.append(sample)
        return sample, raw

    def status(self, query: str) -> None:
        sb = self.sandbox
        self.post("status", urllib.parse.urlencode({
            "token": "x", "team_id": sb.team_id, "channel_id": sb.general_id,
            "user_id": self.user_id, "command": "/dunning", "text": f"status {query}",
            "response_url": sb.response_url(channel=sb.general_id, user=self.user_id),
            "trigger_id": sb.issue_trigger_id(self.user_id),
        }).encode())

    def _interact(self, kind: str, payload: dict[str, Any]) -> tuple[Sample, bytes]:
        return self.post(kind, urllib.parse.urlencode({"payload": json.dumps(payload)}).encode())

    def click(self, kind: str, card: Card, action_id: str) -> View | None:
        sb = self.sandbox
        trigger = sb.issue_trigger_id(self.user_id)
        sample, _ = self._interact(f"{kind}_click", {
            "type": "block_actions", "user": {"id": self.user_id}, "team": {"id": sb.team_id},
            "trigger_id": trigger,
            "container": {"type": "message", "message_ts": card.ts, "channel_id": card.channel},
            "channel": {"id": card.channel}, "message": {"ts": card.ts},
            "response_url": sb.response_url(channel=card.channel, user=self.user_id,
                                            message_ts=card.ts),
            "actions": [{"action_id": action_id, "block_id": f"actions:{card.escalation_id}",
                         "type": "button", "value": str(card.escalation_id),
                         "action_ts": "1"}],
        })
        # process_before_response: the modal is open (views.open) when the click returns.
        view = next((v for v in sb.views() if v.trigger_id == trigger), None)
        if sample.ok and view is None:
            self._fail(sample, "no modal opened")
        return view

    def submit(self, kind: str, view: View, values: dict[str, Any]) -> None:
        sample, raw = self._interact(f"{kind}_submit", {
            "type": "view_submission", "user": {"id": self.user_id},
            "team": {"id": self.sandbox.team_id},
            "view": {"id": view.id, "type": "modal", "callback_id": view.callback_id,
                     "private_metadata": view.private_metadata, "hash": view.hash,
                     "state": {"values": values}},
        })
        if sample.ok and raw.strip():  # an empty 200 is success; a body is an error view
            self._fail(sample, raw[:160].decode(errors="replace"))

    def _fail(self, sample: Sample, detail: str) -> None:
        with self.lock:
            sample.ok, sample.detail = False, detail


@dataclass(frozen=True)
class Card:
    escalation_id: int
    channel: str
    ts: str
    subject: str
    body: str


def _text_input(block: str, value: str) -> dict[str, Any]:
    return {block: {f"{block}_input": {"type": "plain_text_input", "value": value}}}


def approve_flow(target: Target, card: Card) -> None:
    view = target.click("approve", card, "esc_approve")
    if view is not None:
        target.submit("approve", view, {**_text_input("subject", card.subject),
                                        **_text_input("body", card.body)})


def snooze_flow(target: Target, card: Card) -> None:
    view = target.click("snooze", card, "esc_snooze")
    if view is not None:
        target.submit("snooze", view, {
            "preset": {"preset_input": {"type": "static_select",
                                        "selected_option": {"value": "1w"}}},
            **_text_input("reason", "quarter-end close"),
        })


# -- set-up ------------------------------------------------------------------------------

def prepare_database(admin: URL, name: str, invoices: int, seed: int, reuse: bool) -> str:
    """The ledger loaded and the plan day's cycle run; returns the database URL."""
    url = admin.set(database=name).render_as_string(hide_password=False)
    admin_engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with admin_engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": name}).first() is not None
            if exists and reuse:
                engine = make_engine(url)
                try:
                    with session_scope(engine) as s:
                        loaded = get_meta(s, LOADED_KEY)
                    if loaded == str(invoices):
                        migrate(engine)  # a database of an earlier release: upgrade it
                finally:
                    engine.dispose()
                if loaded == str(invoices):
                    log(f"reusing {name} ({invoices:,} open invoices)")
                    return url
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin_engine.dispose()
    engine = make_engine(url)
    try:
        migrate(engine)
        log(f"loading {invoices:,} open invoices into {name}")
        loaded_info = load_ledger(engine, LedgerSpec(open_invoices=invoices, seed=seed),
                                  import_budget=None, profile=None)
        log(f"ledger: {loaded_info['ledger']}; ANALYZE {analyze(engine)} s")
        now = datetime.combine(PLAN_DAY, dtime(14, 0), UTC)
        start = time.perf_counter()
        with session_scope(engine) as s:
            result = run_cycle(s, DEFAULT_POLICY, PLAN_DAY, actor=Actor("bench"), now=now)
        log(f"cycle {PLAN_DAY}: {len(result.created):,} escalations in "
            f"{time.perf_counter() - start:.1f} s")
        analyze(engine)
        with session_scope(engine) as s:
            set_meta(s, LOADED_KEY, str(invoices))
    finally:
        engine.dispose()
    return url


def post_cards(engine: Engine, sandbox: SlackSandbox, url: str, count: int,
               rng: random.Random) -> list[Card]:
    """`count` customer-message cards of the cycle, posted to the sandbox like the worker
    posts them (claimed, posted with metadata, marked posted)."""
    settings = load_settings(database_url=url, slack_bot_token=TOKEN,
                             slack_signing_secret="x", slack_api_url=sandbox.base_url,
                             dunning_finance_users=FINANCE)
    deps = build_deps(settings, SlackMessenger(make_client(TOKEN, sandbox.base_url)),
                      engine=engine)
    with session_scope(engine) as s:
        ids = [i for i in s.exec(select(t.Escalation.id).join(
            t.Invoice, col(t.Invoice.id) == t.Escalation.invoice_id).join(
            t.Customer, col(t.Customer.id) == t.Invoice.customer_id).where(
            t.Escalation.state == "proposed", t.Escalation.kind == Kind.CUSTOMER_MESSAGE.value,
            t.Escalation.approval == "owner", col(t.Customer.ap_contact_email).is_not(None))
            .order_by(col(t.Escalation.id))) if i is not None]
    if len(ids) < count:
        raise SystemExit(f"the cycle made {len(ids)} approvable cards; {count} are needed: "
                         "use more --invoices or fewer --requests")
    chosen = sorted(rng.sample(ids, count))
    channel = sandbox.add_channel(CHANNEL)
    cards = []
    for eid in chosen:
        with session_scope(engine) as s:
            ensure_draft(s, eid, sender_name="Accounts Receivable", now=deps.now())
        with session_scope(engine) as s:
            card = load_card(s, deps.policy, eid, PLAN_DAY)
            claim_for_posting(s, [eid], channel=channel)
        blocks, fallback = render_card(deps, card)
        posted_channel, ts = deps.messenger.post(channel, blocks=blocks, text=fallback,
                                                 metadata=card_metadata([eid]))
        with session_scope(engine) as s:
            mark_posted(s, eid, channel=posted_channel, ts=ts)
        assert card.draft is not None
        cards.append(Card(eid, posted_channel, ts, card.draft.subject, card.draft.body))
    return cards


def customer_queries(engine: Engine, count: int, rng: random.Random) -> list[str]:
    """Customer names to ask for (exact or lower-cased), drawn from the first ones."""
    with session_scope(engine) as s:
        names = list(s.exec(select(t.Customer.name).order_by(col(t.Customer.id))
                            .limit(count * 20)))
    picked = rng.sample(names, min(count, len(names)))
    return [n if rng.random() < 0.5 else n.lower() for n in picked]


def start_server(url: str, sandbox: SlackSandbox, secret: str, port: int, folder: Path, *,
                 processes: int = 1, threads: int = 8) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DUNNING_"))}
    env.update(DATABASE_URL=url, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=secret,
               SLACK_API_URL=sandbox.base_url, DUNNING_FINANCE_USERS=FINANCE,
               DUNNING_LOG_FORMAT="text", SMTP_FROM="ar@bench.example",
               WEB_THREADS=str(threads), WEB_CONCURRENCY=str(processes))
    logfile = (folder / "serve.log").open("wb")
    # cwd in a fresh folder: no .env of the caller's is read.
    proc = subprocess.Popen([*DUNNING, "serve", "--port", str(port)],
                            cwd=folder, env=env, stdout=logfile, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "serve.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"dunning serve exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("dunning serve did not answer /healthz in time")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the run -------------------------------------------------------------------------------

def run_level(target: Target, concurrency: int, requests: int, queries: list[str],
              cards: list[Card], *, status_share: float = 0.5) -> dict[str, Any]:
    """`requests` requests (a flow counts its two) from `concurrency` threads; a share
    `status_share` of the tasks are `/dunning status`, the rest approve and snooze flows."""
    tasks: list[tuple[str, Any]] = []
    sent = 0
    rng = random.Random(concurrency)
    while sent < requests:
        roll = rng.random()
        if roll < status_share or not cards:
            tasks.append(("status", rng.choice(queries)))
            sent += 1
        elif roll < status_share + (1 - status_share) / 2:
            tasks.append(("approve", cards.pop()))
            sent += 2
        else:
            tasks.append(("snooze", cards.pop()))
            sent += 2
    with target.lock:
        target.samples = []

    def one(task: tuple[str, Any]) -> None:
        kind, arg = task
        if kind == "status":
            target.status(arg)
        elif kind == "approve":
            approve_flow(target, arg)
        else:
            snooze_flow(target, arg)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, tasks))
    wall = time.perf_counter() - start
    samples = list(target.samples)
    errors = [s for s in samples if not s.ok]
    by_kind: dict[str, Any] = {}
    for kind in sorted({s.kind for s in samples}):
        by_kind[kind] = percentiles([s.seconds for s in samples if s.kind == kind])
    overall = percentiles([s.seconds for s in samples])
    return {"concurrency": concurrency, "requests": len(samples),
            "seconds": round(wall, 2), "throughput_rps": round(len(samples) / wall, 1),
            "p50_ms": overall["p50"], "p99_ms": overall["p99"], "max_ms": overall["max"],
            "errors": len(errors), "error_examples": sorted({e.detail for e in errors})[:3],
            # The machine's load when the level ends: other work on it shows here.
            "loadavg_1m": round(os.getloadavg()[0], 2), "by_kind": by_kind}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    p.add_argument("--invoices", type=int, default=1_000_000, help="open invoices (1M)")
    p.add_argument("--levels", default="1,10,25,50", help="concurrency levels")
    p.add_argument("--requests", type=int, default=300, help="requests per level")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--database", default=DATABASE, help="PostgreSQL database to (re)create")
    p.add_argument("--reuse", action="store_true",
                   help="keep the database when it already holds a ledger of this size")
    p.add_argument("--status-share", type=float, default=0.5,
                   help="share of tasks that are /dunning status (1 = slash commands only)")
    p.add_argument("--web-processes", type=int, default=1,
                   help="web processes (`dunning serve --workers`, WEB_CONCURRENCY)")
    p.add_argument("--web-threads", type=int, default=8,
                   help="request threads per web process (WEB_THREADS)")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.database in ("test", "postgres"):
        raise SystemExit("choose a database of its own (--database): this one is shared")
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    rng = random.Random(args.seed)
    admin = postgres_admin_url()
    url = prepare_database(admin, args.database, args.invoices, args.seed, args.reuse)
    # Every flow uses a card. With a share s of the tasks status commands (one request)
    # and the rest flows (two), N requests are N/(2-s) tasks and N(1-s)/(2-s) flows.
    share = min(max(args.status_share, 0.0), 1.0)
    need = len(levels) * (int(args.requests * (1 - share) / (2 - share)) + 20)
    folder = Path(tempfile.mkdtemp(prefix="dunning-load-"))
    secret = hashlib.sha256(os.urandom(16)).hexdigest()
    engine = make_engine(url)
    proc: subprocess.Popen[bytes] | None = None
    results: list[dict[str, Any]] = []
    try:
        with SlackSandbox(token=TOKEN, trigger_ttl=None) as sandbox:
            user_id = sandbox.add_user(FINANCE, "fin")
            start = time.perf_counter()
            cards = post_cards(engine, sandbox, url, need, rng)
            log(f"posted {len(cards)} cards in {time.perf_counter() - start:.1f} s")
            queries = customer_queries(engine, 500, rng)
            port = free_port()
            proc = start_server(url, sandbox, secret, port, folder,
                                processes=args.web_processes, threads=args.web_threads)
            target = Target(f"http://127.0.0.1:{port}", sandbox, secret, user_id)
            for q in queries[:5]:  # warm-up: the customer index is built on first use
                target.status(q)
            for level in levels:
                result = run_level(target, level, args.requests, queries, cards,
                                   status_share=args.status_share)
                result.update(invoices=args.invoices, web_processes=args.web_processes,
                              web_threads=args.web_threads)
                results.append(result)
                print(json.dumps(result), flush=True)
                if args.out:
                    args.out.write_text(json.dumps(results, indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    print_table(results)
    return 1 if any(r["errors"] for r in results) else 0


def print_table(results: list[dict[str, Any]]) -> None:
    print("| concurrency | requests | throughput req/s | p50 ms | p99 ms | max ms | errors "
          "| load avg |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['concurrency']} | {r['requests']} | {r['throughput_rps']} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['errors']} | "
              f"{r['loadavg_1m']} |")


if __name__ == "__main__":
    raise SystemExit(main())
