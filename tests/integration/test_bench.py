"""Smoke test of the benchmark harness: one small SQLite case end to end, no timing asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.ledger import LedgerSpec, generate

SIZE = 2_000
QUERIES = 100


def test_ledger_is_deterministic_and_calibrated() -> None:
    spec = LedgerSpec(open_invoices=SIZE, seed=3, batch_invoices=700)
    first = list(generate(spec))
    again = list(generate(spec))
    assert [b.invoices for b in first] == [b.invoices for b in again]
    assert [b.escalations for b in first] == [b.escalations for b in again]
    assert len(first) > 1  # batches of whole customers
    assert sum(b.open_count for b in first) == SIZE
    assert sum(len(b.customers) for b in first) == SIZE // 10
    names = [c.name for b in first for c in b.customers]
    assert len(set(names)) == len(names)
    due = sum(b.due_count for b in first)
    assert 0.003 * SIZE <= due <= 0.03 * SIZE


def test_one_sqlite_case_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--sizes", str(SIZE), "--backends", "sqlite",
         "--queries", str(QUERIES), "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One JSON object per case on its own line, then the summary list.
    first_line = proc.stdout.splitlines()[0]
    assert json.loads(first_line)["case"]["backend"] == "sqlite"
    (case,) = json.loads(out.read_text())
    assert "error" not in case and "skipped" not in case, case

    assert case["case"] == {"size": SIZE, "backend": "sqlite", "seed": 7,
                            "plan_day": "2026-11-19", "queries": QUERIES}
    ledger = case["ledger"]
    assert ledger["open_invoices"] == SIZE
    assert ledger["customers"] == SIZE // 10
    assert ledger["escalations"] > 0 and ledger["touches"] > 0

    imp = case["import"]
    assert imp["complete"] is True
    assert imp["seconds"] > 0 and imp["invoices_per_second"] > 0
    assert imp["invoices"] == ledger["open_invoices"] + ledger["paid_invoices"]
    assert case["history"]["seconds"] > 0 and case["history"]["rows"] > 0
    assert case["analyze_seconds"] >= 0

    plan = case["plan"]
    assert len(plan["runs"]) == 3 and plan["seconds"] in plan["runs"]
    assert 0.003 * SIZE <= plan["selected_due"] <= 0.03 * SIZE
    assert plan["actions"] > 0
    assert plan["actions"] + plan["holds"] >= plan["selected_due"] * 0.8
    assert plan["tracemalloc_peak_mib"] > 0
    for key in ("held_candidates", "holds", "actions_by_step", "holds_by_reason"):
        assert key in plan

    scan = case["full_scan"]
    assert scan["sql"] == "SELECT * FROM invoice"
    assert scan["rows"] == imp["invoices"]
    assert len(scan["runs"]) == 3 and scan["seconds"] > 0 and scan["count_seconds"] >= 0
    assert case["plan_over_scan"] > 0

    memory = case["memory"]
    assert memory["peak_rss_mib"] > 0 and memory["plan_tracemalloc_peak_mib"] > 0

    status = case["status"]
    assert status["queries"] == QUERIES
    assert status["index_customers"] == ledger["customers"]
    assert status["index_build_seconds"] >= 0
    for key in ("p50", "p95", "p99", "max"):
        assert status["latency_ms"][key] > 0
    assert status["latency_ms"]["n"] == QUERIES
    assert sum(status["resolved"].values()) == QUERIES
    by_id = status["by_kind"]["id"]
    assert by_id["n"] > 0 and by_id["target"] >= 0.95 * by_id["n"]
    assert set(status["by_kind"]) == {"id", "name", "typo", "partial"}

    assert set(case["targets"]) == {"plan_over_scan_at_most_3", "peak_rss_under_1_gib",
                                    "status_p99_under_50_ms"}
    assert case["wall_seconds"] > 0
