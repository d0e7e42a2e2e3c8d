"""The command line as a user meets it: output contracts, exit codes, clear refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
runner = CliRunner()


def run(db: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def imported(db_url: str) -> str:
    code, out, err = run(db_url, "import-csv", "--customers", str(SAMPLES / "customers.csv"),
                         "--invoices", str(SAMPLES / "invoices.csv"))
    assert code == 0, err
    assert "customers created 4" in out and "invoices created 6" in out
    return db_url


def test_plan_json_contract_on_the_sample(db_url: str) -> None:
    if db_url.startswith("postgresql"):
        code, _, _ = run(db_url, "init")
        assert code == 0
    db = imported(db_url)
    code, out, _ = run(db, "plan", "--date", "2026-11-24", "--format", "json")
    assert code == 0
    plan = json.loads(out)
    assert set(plan) == {"date", "actions", "held"}
    assert len(plan["actions"]) == 4
    for a in plan["actions"]:
        assert set(a) == {"invoice_id", "invoice_number", "customer_id", "customer_name",
                          "days_past_due", "lane", "step", "kind", "tone", "approval", "owner",
                          "amount_due", "currency", "reasons"}
        assert isinstance(a["amount_due"], str) and isinstance(a["days_past_due"], int)
    code, table, _ = run(db, "plan", "--date", "2026-11-24")
    assert code == 0 and "plan for 2026-11-24: 4 action(s), 0 held" in table
    assert "18,250.50 AUD" in table


def test_cycle_then_plan_is_empty_and_audit_verifies(tmp_path: Path) -> None:
    db = imported(str(tmp_path / "d.db"))
    code, out, _ = run(db, "cycle", "--date", "2026-11-24", "--format", "json")
    assert code == 0 and len(json.loads(out)["actions"]) == 4
    code, out, _ = run(db, "cycle", "--date", "2026-11-24")
    assert code == 0 and "0 action(s)" in out
    code, out, err = run(db, "cycle", "--date", "2026-11-20")
    assert code == 1 and "forward only" in err
    code, out, _ = run(db, "audit", "verify")
    assert code == 0 and "audit log intact" in out


def test_status_exit_codes_and_json(tmp_path: Path) -> None:
    db = imported(str(tmp_path / "d.db"))
    code, out, _ = run(db, "status", "acme", "--format", "json", "--date", "2026-11-24")
    assert code == 0
    st = json.loads(out)
    assert st["customer"]["id"] == "C-1001" and st["open_totals"] == {"USD": "40000.00"}
    assert st["invoices"][0]["days_past_due"] == 40
    code, out, err = run(db, "status", "nobody-like-this-xyz")
    assert code == 1 and "no customer matches" in err
    code, out, err = run(db, "status", "   ")
    assert code == 1 and "give a customer" in err
    code, out, _ = run(db, "status", "C-1003")
    assert code == 0 and "Tailspin Toys Ltd (C-1003)" in out


def test_several_matches_are_listed_with_exit_code_3(tmp_path: Path) -> None:
    db = str(tmp_path / "demo.db")
    code, _, err = run(db, "demo", "--date", "2026-11-24", "--customers", "40")
    assert code == 0, err
    code, out, err = run(db, "status", "summit")
    assert code == 3 and "several customers match 'summit'" in err
    code, out, _ = run(db, "status", "summit", "--format", "json")
    assert code == 3 and len(json.loads(out)["matches"]) >= 2


def test_bad_csv_names_every_bad_row_and_imports_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "invoices.csv"
    bad.write_text((SAMPLES / "invoices.csv").read_text()
                   + "INV-9,9,C-1001,2026-13-01,2026-10-31,USD,5,0,open,,\n"
                   + "INV-10,10,C-9,2026-10-01,2026-10-31,USD,5,0,open,,\n")
    db = str(tmp_path / "d.db")
    code, _out, err = run(db, "import-csv", "--customers", str(SAMPLES / "customers.csv"),
                         "--invoices", str(bad))
    assert code == 1
    assert "invoices.csv:8: issue_date '2026-13-01' is not a date" in err
    assert "invoices.csv:9: unknown customer_id 'C-9'" in err
    code, _out, err = run(db, "status", "acme")
    assert code == 1  # nothing was imported, not even the good customers


def test_actions_from_the_command_line(tmp_path: Path) -> None:
    db = imported(str(tmp_path / "d.db"))
    code, out, err = run(db, "--as", "dana.reyes@example.com", "promise", "INV-5003",
                         "--date", "2099-01-01")
    assert code == 1 and "a promise more than a year out" in err
    code, out, err = run(db, "promise", "INV-5003", "--date", "not-a-date")
    assert code == 2 and "YYYY-MM-DD" in err
    code, out, err = run(db, "dispute", "INV-5002", "--reason", "wrong PO number",
                         "--amount", "100")
    assert code == 0 and "Dispute recorded" in out
    code, out, err = run(db, "dispute", "INV-404", "--reason", "x")
    assert code == 1 and "no invoice 'INV-404'" in err
    code, out, err = run(db, "snooze", "northwind", "--until", "2099-01-01", "--reason", "x")
    assert code == 1 and "longer than 180 days" in err
    code, out, err = run(db, "touch", "INV-5004", "--summary", "AP says cheque run Friday")
    assert code == 0 and "Logged a call" in out
    code, out, err = run(db, "touch", "INV-5004", "--summary", "x", "--channel", "pigeon")
    assert code == 1 and "must be one of" in err
    code, out, _ = run(db, "status", "contoso", "--format", "json", "--date", "2026-11-24")
    assert json.loads(out)["invoices"][0]["last_touch"]["summary"] == "AP says cheque run Friday"
    code, out, err = run(db, "pay", "INV-5003", "--amount", "1200")
    assert code == 0 and "paid in full" in out
    code, out, _ = run(db, "audit", "verify")
    assert code == 0


def test_invalid_policy_file_is_refused_with_the_key(tmp_path: Path) -> None:
    policy = tmp_path / "dunning.toml"
    policy.write_text('[steps.nudge]\ntone = "angry"\n')
    db = imported(str(tmp_path / "d.db"))
    code, _out, err = run(db, "plan", env={"DUNNING_POLICY": str(policy)})
    assert code == 1 and "steps.nudge.tone: 'angry' is not one of" in err


def test_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    code, _out, err = run(str(tmp_path / "d.db"), "plan", env={"DUNNING_TIMEZONE": "Mars/Base"})
    assert code == 1 and "DUNNING_TIMEZONE" in err


@pytest.mark.skipif(sys.platform == "win32", reason="console script path")
def test_console_script_runs_the_demo(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("dunning")
    if not exe.exists():
        pytest.skip("the dunning console script is not installed in this environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DUNNING_"))}
    proc = subprocess.run([str(exe), "demo", "--date", "2026-11-24"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "today's plan for 2026-11-24" in proc.stdout
    assert (tmp_path / "dunning.db").exists()


def test_cycle_posts_cards_to_slack_and_keeps_json_clean(tmp_path: Path) -> None:
    from bot.sandbox.slack_api import SlackSandbox

    db = imported(str(tmp_path / "d.db"))
    with SlackSandbox(token="xoxb-cli") as sandbox:
        sandbox.add_user("dana.reyes@example.com", "dana")
        sandbox.add_user("sam.okafor@example.com", "sam")
        env = {"SLACK_BOT_TOKEN": "xoxb-cli", "SLACK_SIGNING_SECRET": "s",
               "SLACK_API_URL": sandbox.base_url}
        code, out, err = run(db, "cycle", "--date", "2026-11-24", "--format", "json", env=env)
        assert code == 0, err
        assert len(json.loads(out)["actions"]) == 4
        assert "posted 4 card(s) to Slack" in err
        posts = sandbox.calls("chat.postMessage")
        assert len(posts) == 6  # a header per owner (2) and one card per escalation (4)


def test_deliver_without_smtp_says_what_is_missing(tmp_path: Path) -> None:
    db = imported(str(tmp_path / "d.db"))
    code, _out, err = run(db, "deliver")
    assert code == 1 and "SMTP_HOST is not set" in err


def test_digest_posts_to_the_configured_channel(tmp_path: Path) -> None:
    from bot.sandbox.slack_api import SlackSandbox

    db = imported(str(tmp_path / "d.db"))
    with SlackSandbox(token="xoxb-cli") as sandbox:
        channel = sandbox.add_channel("ar-managers")
        env = {"SLACK_BOT_TOKEN": "xoxb-cli", "SLACK_SIGNING_SECRET": "s",
               "SLACK_API_URL": sandbox.base_url, "DUNNING_DIGEST_CHANNEL": channel}
        code, out, err = run(db, "digest", env=env)
        assert code == 0, err
        assert "digest posted" in out
        assert len(sandbox.files()) == 1
        last = sandbox.last_message(channel)
        assert last is not None and "AR digest" in json.dumps(last.blocks)
        code, _out, err = run(db, "digest", env={**env, "DUNNING_DIGEST_CHANNEL": ""})
        assert code == 1 and "DUNNING_DIGEST_CHANNEL" in err


def test_doctor_reports_one_line_per_check(tmp_path: Path) -> None:
    from bot.sandbox.slack_api import SlackSandbox

    db = imported(str(tmp_path / "d.db"))
    code, out, _ = run(db, "doctor")
    assert code == 0
    assert "ok   settings" in out and "ok   database" in out and "--   slack" in out
    with SlackSandbox(token="xoxb-doc") as sandbox:
        env = {"SLACK_BOT_TOKEN": "xoxb-wrong", "SLACK_SIGNING_SECRET": "s",
               "SLACK_API_URL": sandbox.base_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9"}
        code, out, _ = run(db, "doctor", env=env)
    assert code == 1
    assert "FAIL slack" in out and "invalid_auth" in out and "FAIL smtp" in out


def test_export_round_trips_into_a_fresh_database(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("postgresql"):
        assert run(db_url, "init")[0] == 0
    db = imported(db_url)
    assert run(db, "cycle", "--date", "2026-11-24")[0] == 0
    code, out, err = run(db, "export", "--out", str(tmp_path / "x"))
    assert code == 0, err
    assert "6 rows" in out and "audit_event.csv" in out
    fresh = str(tmp_path / "fresh.db")
    code, _out, err = run(fresh, "import-csv", "--customers", str(tmp_path / "x/customers.csv"),
                          "--invoices", str(tmp_path / "x/invoices.csv"))
    assert code == 0, err
    a = json.loads(run(db, "plan", "--date", "2026-12-01", "--format", "json")[1])
    b = json.loads(run(fresh, "plan", "--date", "2026-12-01", "--format", "json")[1])
    assert {x["invoice_id"] for x in b["actions"]} >= {x["invoice_id"] for x in a["actions"]}
    status_a = json.loads(run(db, "status", "acme", "--format", "json", "--date",
                              "2026-12-01")[1])
    status_b = json.loads(run(fresh, "status", "acme", "--format", "json", "--date",
                              "2026-12-01")[1])
    assert status_a["open_totals"] == status_b["open_totals"]
    assert status_a["customer"]["risk_score"] == status_b["customer"]["risk_score"]


def test_replies_unmatched_lists_what_matched_nothing(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from connectors.imap import InboundEmail
    from services.replies import ingest_email
    from store.engine import make_engine, session_scope

    db = imported(str(tmp_path / "r.db"))
    assert run(db, "replies", "unmatched")[1].strip() == "no unmatched replies"
    engine = make_engine(f"sqlite:///{db}")
    mail = InboundEmail(uid=1, message_id="<x1@stranger.example>", in_reply_to=None,
                        references=(), sender="someone@stranger.example", sender_name=None,
                        subject="Question about your services", body="Who are you?",
                        date=datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    with session_scope(engine) as s:
        ingest_email(s, mail, now=datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    engine.dispose()
    code, out, _ = run(db, "replies", "unmatched")
    assert code == 0 and "someone@stranger.example" in out and "Question about" in out
    rows = json.loads(run(db, "replies", "unmatched", "--format", "json")[1])
    assert [r["sender"] for r in rows] == ["someone@stranger.example"]
