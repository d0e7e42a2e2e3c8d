"""Smoke test of the sync benchmark (bench/sync.py): small ledgers end to end on SQLite.

No timing asserts: it checks that the harness measures what it says (the fakes' bulk loads,
the change mix, the counted calls) and that an incremental run reads the changes only.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.sync import run_case, table


@pytest.mark.parametrize("system", ["stripe", "quickbooks"])
def test_incremental_calls_follow_the_changes_and_the_ledger_ends_equal(system: str) -> None:
    rows: list[dict[str, Any]] = []
    run_case(system, "sqlite", 600, [0.01, 0.05], 3, rows.append)
    full, idle, one, five = rows
    assert (full["run"], full["invoices_seen"]) == ("full", 600)
    assert full["totals"]["invoices_created"] == 600
    assert full["api_calls"] == full["served_calls"] > 1
    assert idle["changes"] == 0 and idle["invoices_seen"] == 0 and idle["api_calls"] <= 1
    assert (one["changes"], five["changes"]) == (6, 30)
    # Each change is read once, and at least the changed invoices come back.
    assert 6 <= one["invoices_seen"] < 600 and 30 <= five["invoices_seen"] < 600
    # Calls: the change feed, plus at most one customer read per change (Stripe events
    # carry no customer), never a page of the ledger.
    assert one["api_calls"] <= 2 + one["changes"] and five["api_calls"] <= 2 + five["changes"]
    # 36 changes: 10 paid, 10 voided, 8 amounts, 8 new (in that rotation, per run).
    assert five["open_in_ledger"] == five["open_in_vendor"] == 600 - 10 - 10 + 8
    assert "incremental" in table(rows)
