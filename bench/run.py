"""The benchmark: import, daily plan, full-scan baseline, peak memory and status latency.

    python -m bench.run --sizes 10000,100000 --backends sqlite,postgresql [--out FILE]

Each (size, backend) case runs in its own child process (so peak memory is per case) on a
fresh database: a SQLite file in a temporary folder, or a PostgreSQL database
`dunning_bench_<size>` created next to BENCH_POSTGRES_URL's database (default
postgresql://postgres@127.0.0.1:5432/test) and dropped afterwards. One JSON object is
printed per case as it finishes, then the list of all of them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from bench.ledger import PLAN_DAY, LedgerSpec, generate
from dunning.policy import DEFAULT_POLICY
from services.common import POLICY_KEY, Actor, NotFoundError, refresh_next_actions
from services.importing import upsert_ledger
from services.planning import Plan, build_plan
from services.status import CustomerIndex, customer_status, find_customer
from store import tables as t
from store.engine import make_engine, migrate, session_scope
from store.repository import due_invoice_ids, held_candidate_ids, set_meta

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
QUERY_KINDS = (("id", 40), ("name", 30), ("typo", 15), ("partial", 15))
SCAN_SQL = "SELECT * FROM invoice"
SCAN_BATCH = 10_000
RUNS = 3
TARGETS = {"plan_over_scan_max": 3.0, "peak_rss_mib_max": 1024.0, "status_p99_ms_max": 50.0}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds (nearest rank), from seconds."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[k] * 1000, 2)

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99),
            "max": round(ordered[-1] * 1000, 2),
            "mean": round(statistics.fmean(ordered) * 1000, 2), "n": len(ordered)}


def code_version() -> dict[str, Any]:
    """The git commit measured, and the product files changed since it (best effort)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--", "dunning", "store", "services")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "uncommitted": []}
    return {"commit": commit, "uncommitted": [line[3:] for line in changed.splitlines()]}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# -- the phases (run inside the child) -------------------------------------------------

def load_ledger(engine: Engine, spec: LedgerSpec, *, import_budget: float | None,
                profile: cProfile.Profile | None) -> dict[str, Any]:
    """Generate the ledger batch by batch; import each through upsert_ledger (timed), then
    write its escalation history and holds directly (timed separately)."""
    policy = spec.policy
    now = datetime.combine(spec.plan_day - timedelta(days=1), dtime(6, 0), UTC)
    actor = Actor("bench")
    gen_s = import_s = history_s = 0.0
    counts: Counter[str] = Counter()
    stopped = False
    batches = generate(spec)
    n = 0
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        gen_s += time.perf_counter() - start
        if batch is None:
            break
        n += 1

        def do_import(b: Any = batch) -> None:
            with session_scope(engine) as session:
                upsert_ledger(session, customers=b.customers, invoices=b.invoices,
                              source="bench", actor=actor, now=now, policy=policy)

        if profile is not None:
            profile.enable()
        seconds, _ = timed(do_import)
        if profile is not None:
            profile.disable()
        import_s += seconds

        def do_history(b: Any = batch) -> None:
            with session_scope(engine) as session:
                conn = session.connection()
                for name, rows in (("escalation", b.escalations), ("touch", b.touches),
                                   ("dispute", b.disputes), ("promise", b.promises),
                                   ("snooze", b.snoozes)):
                    if rows:
                        conn.execute(insert(t.metadata.tables[name]), rows)
                refresh_next_actions(session, policy, b.refresh_ids)

        seconds_h, _ = timed(do_history)
        history_s += seconds_h
        paid = len(batch.invoices) - batch.open_count
        counts.update(customers=len(batch.customers), open_invoices=batch.open_count,
                      paid_invoices=paid, escalations=len(batch.escalations),
                      touches=len(batch.touches), disputes=len(batch.disputes),
                      promises=len(batch.promises), snoozes=len(batch.snoozes),
                      refreshed=len(batch.refresh_ids), due_generated=batch.due_count)
        done = counts["open_invoices"] + counts["paid_invoices"]
        log(f"batch {n}: {counts['open_invoices']:,}/{spec.open_invoices:,} open invoices; "
            f"import {import_s:.1f}s ({done / import_s:,.0f} invoices/s), history "
            f"{history_s:.1f}s, generate {gen_s:.1f}s, peak RSS {peak_rss_mib()} MiB")
        del batch
        if import_budget is not None and import_s > import_budget:
            stopped = True
            log(f"import budget of {import_budget:.0f}s spent: stopping the import here")
            break
    if not stopped:
        # The stored dates were computed by this policy (upsert_ledger and the refresh
        # above): record its fingerprint, as `dunning plan` would after its first run.
        with session_scope(engine) as session:
            set_meta(session, POLICY_KEY, policy.fingerprint())
    invoices = counts["open_invoices"] + counts["paid_invoices"]
    return {
        "ledger": {k: counts[k] for k in ("customers", "open_invoices", "paid_invoices",
                                          "escalations", "touches", "disputes", "promises",
                                          "snoozes", "due_generated")},
        "generate_seconds": round(gen_s, 2),
        "import": {"seconds": round(import_s, 2), "invoices": invoices,
                   "customers": counts["customers"], "batches": n,
                   "invoices_per_second": round(invoices / import_s, 1) if import_s else None,
                   "complete": not stopped},
        "history": {"seconds": round(history_s, 2),
                    "rows": counts["escalations"] + counts["touches"] + counts["disputes"]
                    + counts["promises"] + counts["snoozes"],
                    "next_action_refreshed": counts["refreshed"]},
    }


def analyze(engine: Engine) -> float:
    start = time.perf_counter()
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return round(time.perf_counter() - start, 3)


def measure_plan(engine: Engine, day: date, open_invoices: int) -> dict[str, Any]:
    policy = DEFAULT_POLICY
    runs: list[float] = []
    plan: Plan | None = None
    for _ in range(RUNS):
        with Session(engine) as session:
            start = time.perf_counter()
            plan = build_plan(session, policy, day)
            runs.append(time.perf_counter() - start)
            session.rollback()
    assert plan is not None
    with Session(engine) as session:
        selected = len(due_invoice_ids(session, day))
        held = len(held_candidate_ids(session, day))
    # A fourth run under tracemalloc (slower, so not timed): the plan's own peak memory.
    tracemalloc.start()
    with Session(engine) as session:
        build_plan(session, policy, day)
        session.rollback()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "seconds": round(statistics.median(runs), 4),
        "runs": [round(r, 4) for r in runs],
        "selected_due": selected,
        "selected_share": round(selected / open_invoices, 4) if open_invoices else None,
        "held_candidates": held,
        "actions": len(plan.actions),
        "holds": len(plan.holds),
        "actions_by_step": dict(Counter(p.action.step.split(":")[0] for p in plan.actions)),
        "holds_by_reason": dict(Counter(h.hold.reason.value for h in plan.holds)),
        "tracemalloc_peak_mib": round(traced_peak / 2**20, 2),
    }


def full_scan(engine: Engine) -> dict[str, Any]:
    """One plain read of every row and column of the invoice table, streamed."""

    def scan() -> int:
        rows = 0
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(text(SCAN_SQL))
            for part in result.partitions(SCAN_BATCH):
                rows += len(part)
        return rows

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM invoice")).scalar_one())

    scans = [timed(scan) for _ in range(RUNS)]
    counts = [timed(count) for _ in range(RUNS)]
    return {
        "sql": SCAN_SQL,
        "seconds": round(statistics.median(s for s, _ in scans), 4),
        "runs": [round(s, 4) for s, _ in scans],
        "rows": scans[0][1],
        "count_seconds": round(statistics.median(s for s, _ in counts), 4),
    }


def _typo(name: str, rng: random.Random) -> str:
    """One keyboard slip in the distinctive part of the name (not the legal form)."""
    words = name.split()
    head = " ".join(words[:-1]) if len(words) > 1 else name
    tail = name[len(head):]
    positions = [i for i, ch in enumerate(head) if ch.isalpha()]
    if len(positions) < 3:
        return name
    i = rng.choice(positions[1:])
    edit = rng.choice(("drop", "swap", "replace", "double"))
    if edit == "drop":
        head = head[:i] + head[i + 1:]
    elif edit == "swap" and i + 1 < len(head):
        head = head[:i] + head[i + 1] + head[i] + head[i + 2:]
    elif edit == "double":
        head = head[:i] + head[i] + head[i:]
    else:
        head = head[:i] + rng.choice("aeiorstnl") + head[i + 1:]
    return (head + tail).lower() if rng.random() < 0.5 else head + tail


def _partial(name: str, rng: random.Random) -> str:
    """What people type: the name without its legal form, or its first two words."""
    words = name.split()
    if len(words) > 3 and rng.random() < 0.5:
        return " ".join(words[:2])
    return " ".join(words[:-1]) if len(words) > 1 else name


def measure_status(engine: Engine, day: date, queries: int, seed: int) -> dict[str, Any]:
    policy = DEFAULT_POLICY
    index = CustomerIndex()
    with Session(engine) as session:
        build_s, _ = timed(lambda: index.refresh(session))
    rng = random.Random(seed + 1009)
    kinds = [k for k, _ in QUERY_KINDS]
    weights = [w for _, w in QUERY_KINDS]
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    outcomes: dict[str, Counter[str]] = {k: Counter() for k in kinds}
    for _ in range(queries):
        kind = rng.choices(kinds, weights)[0]
        j = rng.randrange(len(index.ids))
        target, name = index.ids[j], index.names[j]
        if kind == "id":
            query = target
        elif kind == "name":
            query = name.lower() if rng.random() < 0.5 else name
        elif kind == "typo":
            query = _typo(name, rng)
        else:
            query = _partial(name, rng)
        with Session(engine) as session:
            start = time.perf_counter()
            try:
                match = find_customer(session, query, index)
            except NotFoundError:
                match = None
            if match is not None and match.customer_id is not None:
                customer_status(session, policy, match.customer_id, day)
            latencies[kind].append(time.perf_counter() - start)
            session.rollback()
        if match is None:
            outcomes[kind]["none"] += 1
        elif match.customer_id is None:
            outcomes[kind]["several"] += 1
            if any(c.customer_id == target for c in match.candidates):
                outcomes[kind]["target_listed"] += 1
        else:
            outcomes[kind]["one"] += 1
            if match.customer_id == target:
                outcomes[kind]["target"] += 1
    every = [x for k in kinds for x in latencies[k]]
    total: Counter[str] = Counter()
    for c in outcomes.values():
        total.update(c)
    return {
        "queries": queries,
        "index_build_seconds": round(build_s, 4),
        "index_customers": len(index.ids),
        "latency_ms": percentiles(every),
        "by_kind": {k: {**percentiles(latencies[k]), **{o: outcomes[k][o] for o in
                        ("one", "target", "several", "target_listed", "none")}}
                    for k in kinds},
        "resolved": {o: total[o] for o in ("one", "several", "none")},
    }


def run_case(url: str, size: int, backend: str, *, seed: int, queries: int, plan_day: date,
             import_budget: float | None = None, profile_out: str | None = None,
             batch_invoices: int = 20_000) -> dict[str, Any]:
    """One (size, backend) case on an empty database at `url`, in this process."""
    wall = time.perf_counter()
    spec = LedgerSpec(open_invoices=size, seed=seed, plan_day=plan_day,
                      batch_invoices=batch_invoices)
    out: dict[str, Any] = {"case": {"size": size, "backend": backend, "seed": seed,
                                    "plan_day": plan_day.isoformat(), "queries": queries},
                           "code": code_version()}
    rss: dict[str, float] = {}
    engine = make_engine(url)
    try:
        out["migrate_seconds"] = round(timed(lambda: migrate(engine))[0], 3)
        log(f"{backend} {size:,}: generating and importing")
        profile = cProfile.Profile() if profile_out else None
        out.update(load_ledger(engine, spec, import_budget=import_budget, profile=profile))
        if profile is not None and profile_out:
            profile.dump_stats(profile_out)
            out["import"]["profile"] = profile_out
        rss["after_import"] = peak_rss_mib()
        if not out["import"]["complete"]:
            out["memory"] = {"peak_rss_mib": peak_rss_mib(), "peak_rss_mib_after": rss}
            out["wall_seconds"] = round(time.perf_counter() - wall, 1)
            return out
        out["analyze_seconds"] = analyze(engine)
        log(f"{backend} {size:,}: plan")
        out["plan"] = measure_plan(engine, plan_day, out["ledger"]["open_invoices"])
        rss["after_plan"] = peak_rss_mib()
        log(f"{backend} {size:,}: full scan")
        out["full_scan"] = full_scan(engine)
        rss["after_scan"] = peak_rss_mib()
        out["plan_over_scan"] = round(out["plan"]["seconds"] / out["full_scan"]["seconds"], 3)
        log(f"{backend} {size:,}: status x{queries}")
        out["status"] = measure_status(engine, plan_day, queries, seed)
        rss["after_status"] = peak_rss_mib()
    finally:
        engine.dispose()
    out["memory"] = {"peak_rss_mib": peak_rss_mib(), "peak_rss_mib_after": rss,
                     "plan_tracemalloc_peak_mib": out["plan"]["tracemalloc_peak_mib"]}
    out["targets"] = {
        "plan_over_scan_at_most_3": out["plan_over_scan"] <= TARGETS["plan_over_scan_max"],
        "peak_rss_under_1_gib": out["memory"]["peak_rss_mib"] < TARGETS["peak_rss_mib_max"],
        "status_p99_under_50_ms":
            out["status"]["latency_ms"]["p99"] < TARGETS["status_p99_ms_max"],
    }
    out["wall_seconds"] = round(time.perf_counter() - wall, 1)
    return out


# -- the parent: one child process per case ---------------------------------------------

def postgres_admin_url() -> URL:
    url = make_url(os.environ.get("BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def _admin_execute(admin: URL, sql: str) -> None:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def _child(url: str, size: int, backend: str, args: argparse.Namespace,
           timeout: float | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dunning-bench-out-") as folder:
        result_file = Path(folder) / "result.json"
        cmd = [sys.executable, "-m", "bench.run", "--child", json.dumps({
            "url": url, "size": size, "backend": backend, "seed": args.seed,
            "queries": args.queries, "plan_day": args.plan_day,
            "import_budget": args.import_budget, "profile_out": args.profile_import,
            "batch_invoices": args.batch, "result": str(result_file)})]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"case": {"size": size, "backend": backend}, "error":
                    f"timed out after {timeout:.0f}s"}
        if proc.returncode != 0 or not result_file.exists():
            return {"case": {"size": size, "backend": backend},
                    "error": f"child process exited with {proc.returncode} (see stderr)",
                    "wall_seconds": round(time.perf_counter() - start, 1)}
        result: dict[str, Any] = json.loads(result_file.read_text())
        return result


def run_one(size: int, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="dunning-bench-")
        try:
            return _child(f"sqlite:///{folder}/bench-{size}.db", size, backend, args,
                          args.timeout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    admin = postgres_admin_url()
    name = f"dunning_bench_{size}"
    try:
        _admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _admin_execute(admin, f'CREATE DATABASE "{name}"')
    except SQLAlchemyError as exc:
        shown = admin.set(drivername="postgresql").render_as_string(hide_password=True)
        return {"case": {"size": size, "backend": backend},
                "skipped": f"PostgreSQL not reachable at {shown}: {_first_line(exc)}"}
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        return _child(url, size, backend, args, args.timeout)
    finally:
        try:
            _admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except SQLAlchemyError as exc:
            log(f"could not drop {name}: {_first_line(exc)}")


def _child_main(payload: str) -> int:
    p = json.loads(payload)
    result = run_case(p["url"], p["size"], p["backend"], seed=p["seed"], queries=p["queries"],
                      plan_day=date.fromisoformat(p["plan_day"]),
                      import_budget=p["import_budget"], profile_out=p["profile_out"],
                      batch_invoices=p["batch_invoices"])
    Path(p["result"]).write_text(json.dumps(result))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000",
                        help="open invoices per case, comma-separated (default 10000,100000)")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="sqlite and/or postgresql (default both)")
    parser.add_argument("--out", help="also write the JSON list of cases to this file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--queries", type=int, default=1000, help="status queries per case")
    parser.add_argument("--plan-day", default=PLAN_DAY.isoformat(),
                        help=f"the plan's date (default {PLAN_DAY.isoformat()}, a Thursday)")
    parser.add_argument("--batch", type=int, default=20_000,
                        help="open invoices per upsert_ledger call (one transaction each)")
    parser.add_argument("--import-budget", type=float, default=None, metavar="SECONDS",
                        help="stop a case whose import takes longer (reports the rate)")
    parser.add_argument("--profile-import", default=None, metavar="FILE",
                        help="cProfile the upsert_ledger calls into FILE (pstats format)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="kill a case's child process after this long")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    date.fromisoformat(args.plan_day)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain `kill` ends the run like Ctrl-C: the child is killed, its database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.child:
        return _child_main(args.child)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            raise SystemExit(f"unknown backend {b!r}: use sqlite and/or postgresql")
    results: list[dict[str, Any]] = []
    for size in sizes:
        for backend in backends:
            start = time.perf_counter()
            result = run_one(size, backend, args)
            result.setdefault("wall_seconds", round(time.perf_counter() - start, 1))
            print(json.dumps(result), flush=True)
            results.append(result)
            if args.out:  # written after every case, so a long run keeps what it measured
                Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2), flush=True)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
