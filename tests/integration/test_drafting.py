"""Drafting with a model: the real LlmClient (openai SDK) against a loopback OpenAI fake,
over a real database; every failure falls back to the template with a note that says why.

The sample ledger's Northwind invoice (INV-5002, DE: German) has its firm_notice due on
2026-11-24: 4.000,00 € due on 31. Oktober 2026, no payment link.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func
from sqlmodel import col, select
from typer.testing import CliRunner

from bot.cli import app
from connectors.errors import AuthError, DataError, RateLimitedError
from connectors.llm import LlmClient, MalformedOutputError
from dunning.policy import DEFAULT_POLICY
from services.cards import ensure_draft, load_card
from services.common import Actor
from services.drafting import make_draft
from services.planning import run_cycle
from store import tables as t
from store.engine import session_scope
from tests.fakes.openai_fake import API_KEY, FakeOpenAI, Reply
from tests.integration.test_services import NOW, SAMPLES, TODAY, import_samples

P = DEFAULT_POLICY
MODEL = "gpt-4o-mini"


def rewrite_template(request: dict[str, Any]) -> Reply:
    """A faithful model: the template it was given, with a personal first line."""
    data = json.loads(request["messages"][1]["content"])
    version = data["template_version"]
    body = version["body"].replace("\n\n", "\n\nDanke für die gute Zusammenarbeit.\n\n", 1)
    return Reply.answer({"subject": version["subject"], "body": body},
                        prompt_tokens=1000, completion_tokens=500)


def edited(old: str, new: str) -> Reply:
    """A model that rewrites the template and gets one thing wrong."""
    def build(request: dict[str, Any]) -> Reply:
        version = json.loads(request["messages"][1]["content"])["template_version"]
        assert old in version["body"]
        return Reply.answer({"subject": version["subject"],
                             "body": version["body"].replace(old, new)})
    return Reply.from_request(build)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(Reply.from_request(rewrite_template)) as f:
        yield f


def client(fake: FakeOpenAI, *, timeout: float = 5.0) -> LlmClient:
    return LlmClient(fake.url, API_KEY, MODEL, timeout, "0.15", "0.60")


def cycled(db: Engine) -> dict[str, int]:
    """Import the sample and run the cycle: escalation id per invoice."""
    import_samples(db)
    with session_scope(db) as s:
        run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
        rows = s.exec(select(t.Escalation)).all()
        return {r.invoice_id: r.id for r in rows if r.id is not None}


def draft_row(db: Engine, eid: int) -> t.Draft:
    with session_scope(db) as s:
        row = s.exec(select(t.Draft).where(t.Draft.escalation_id == eid)).one()
        s.expunge(row)
        return row


def calls(db: Engine) -> list[t.LlmCall]:
    with session_scope(db) as s:
        rows = list(s.exec(select(t.LlmCall).order_by(t.LlmCall.id)).all())  # type: ignore[arg-type]
        for r in rows:
            s.expunge(r)
        return rows


def draft_with(db: Engine, eid: int, llm: LlmClient | None, *,
               budget: str | None = "5.00") -> None:
    with session_scope(db) as s:
        make_draft(s, eid, llm=llm, sender_name="Accounts Receivable", now=NOW,
                   budget_usd=budget)


def test_a_good_model_draft_is_used_with_its_tokens_and_cost(db: Engine,
                                                             fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    draft_with(db, eid, client(fake))
    row = draft_row(db, eid)
    assert row.source == "llm" and row.note is None
    assert "Danke für die gute Zusammenarbeit." in row.body and "4.000,00 €" in row.body
    # 1000 x 0.15 + 500 x 0.60 micro-USD
    assert (row.prompt_tokens, row.completion_tokens, row.cost_micros) == (1000, 500, 450)
    [call] = calls(db)
    assert (call.purpose, call.model, call.outcome, call.cost_micros, call.subject_id) == (
        "draft", MODEL, "ok", 450, str(eid))
    request = fake.requests[0]
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert request["json"]["model"] == MODEL
    schema = request["json"]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["subject", "body"]


def test_the_prompt_holds_only_this_customers_facts(db: Engine, fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    draft_with(db, eid, client(fake))
    text = fake.prompt_text()
    assert "Northwind Traders GmbH" in text and "Jonas Weber" in text and "2026-0312" in text
    others = ("Acme", "Tailspin", "Contoso", "Priya Shah", "Mia Nguyen", "2026-0311",
              "2026-0313", "2026-0314", "ap@acme.example", "48000", "sam.okafor@example.com")
    assert [o for o in others if o in text] == []


def test_the_same_context_never_calls_the_model_twice(db: Engine, fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    draft_with(db, eid, client(fake))
    draft_with(db, eid, client(fake))
    with session_scope(db) as s:  # the card is remade: its draft comes from the cache
        key = s.exec(select(t.Draft.cache_key).where(t.Draft.escalation_id == eid)).one()
        s.exec(delete(t.Draft).where(col(t.Draft.escalation_id) == eid))
        s.add(t.Draft(escalation_id=cycled_other(s), subject="s", body="b", source="llm",
                      cache_key=key))
    draft_with(db, eid, client(fake))
    assert fake.calls == 1
    row = draft_row(db, eid)
    assert row.source == "llm" and row.body == "b" and row.cost_micros == 0


def cycled_other(s: Any) -> int:
    """Another customer-message escalation of the sample, to hold a cached draft."""
    eid = s.exec(select(t.Escalation.id).where(t.Escalation.invoice_id == "INV-5003")).one()
    assert isinstance(eid, int)
    return eid


@pytest.mark.parametrize(("reply", "note", "outcome"), [
    (Reply.raw("Sehr geehrte Damen und Herren, ..."), "malformed", "malformed"),
    (Reply.answer({"subject": "Rechnung"}), "malformed", "malformed"),
    (edited("4.000,00 €", "4.500,00 €"), "misstated the ledger", "fact-mismatch"),
    (edited("31. Oktober 2026 fällig", "31. Oktober 2026 fällig (Frist: 30.11.2026)"),
     "misstated the ledger", "fact-mismatch"),
    (edited("Mit freundlichen", "Zahlen Sie hier: https://pay.evil.example/x\n\nMit freundlichen"),
     "misstated the ledger", "fact-mismatch"),
    (Reply.error(500), "unavailable", "error"),
])
def test_a_bad_answer_falls_back_to_the_template_with_a_note(
        db: Engine, fake: FakeOpenAI, reply: Reply, note: str, outcome: str) -> None:
    eid = cycled(db)["INV-5002"]
    fake.script(reply)
    draft_with(db, eid, client(fake, timeout=3.0))
    row = draft_row(db, eid)
    assert row.source == "template" and row.note is not None
    assert note in row.note and row.note.endswith("template used")
    assert row.body.startswith("Guten Tag Jonas Weber,") and "4.000,00 €" in row.body
    [call] = calls(db)
    assert call.outcome == outcome
    if outcome in ("malformed", "fact-mismatch"):
        assert call.prompt_tokens > 0 and call.cost_micros > 0  # paid for, though refused


def test_a_model_that_does_not_answer_in_time_gives_the_template(
        db: Engine, fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    fake.script(Reply(content="{}", delay=5.0))
    draft_with(db, eid, client(fake, timeout=0.5))
    row = draft_row(db, eid)
    assert row.source == "template" and row.note is not None
    assert "did not answer in time" in row.note
    assert [c.outcome for c in calls(db)] == ["timeout"]
    assert fake.calls == 1  # no time left for a retry within the budget


def test_a_rate_limit_is_retried_when_retry_after_fits_the_budget(
        db: Engine, fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    fake.script(Reply.error(429, retry_after="0"), Reply.from_request(rewrite_template))
    draft_with(db, eid, client(fake))
    assert fake.calls == 2 and draft_row(db, eid).source == "llm"


def test_a_rate_limit_longer_than_the_budget_gives_the_template_at_once(
        db: Engine, fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    fake.script(Reply.error(429, retry_after="60"))
    draft_with(db, eid, client(fake, timeout=2.0))
    row = draft_row(db, eid)
    assert row.source == "template" and row.note is not None and "rate limited" in row.note
    assert fake.calls == 1 and [c.outcome for c in calls(db)] == ["rate-limited"]


def test_over_the_daily_budget_the_model_is_not_called(db: Engine, fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    with session_scope(db) as s:
        s.add(t.LlmCall(at=NOW - timedelta(days=1), purpose="draft", model=MODEL,
                        cost_micros=9_000_000))  # yesterday's spend does not count
        s.add(t.LlmCall(at=NOW - timedelta(hours=1), purpose="classify", model=MODEL,
                        cost_micros=1_000_000))
    draft_with(db, eid, client(fake), budget="1.00")
    row = draft_row(db, eid)
    assert fake.calls == 0 and row.source == "template" and row.note is not None
    assert "daily model budget reached (1.00 of 1.00 USD spent today)" in row.note
    with session_scope(db) as s:
        assert s.exec(select(func.count()).select_from(t.LlmCall)).one() == 2


def test_without_a_model_the_template_has_no_fallback_note(db: Engine) -> None:
    eid = cycled(db)["INV-5002"]
    draft_with(db, eid, None)
    row = draft_row(db, eid)
    assert row.source == "template" and row.note is None and calls(db) == []


def test_ensure_draft_delegates_and_the_card_shows_the_note(db: Engine,
                                                            fake: FakeOpenAI) -> None:
    eid = cycled(db)["INV-5002"]
    fake.script(Reply.raw("not json"))
    with session_scope(db) as s:
        ensure_draft(s, eid, sender_name="AR", now=NOW, llm=client(fake), budget_usd="5")
        card = load_card(s, P, eid, TODAY)
    assert card.draft is not None and card.draft.source == "template"
    assert card.draft.note is not None and "malformed" in card.draft.note


def test_client_errors_are_translated(fake: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    fake.script(Reply.error(401))
    with pytest.raises(AuthError):
        LlmClient(fake.url, "sk-wrong", MODEL, 2, "1", "1").draft(messages)
    fake.script(Reply.error(400))
    with pytest.raises(DataError) as bad:
        client(fake).draft(messages)
    assert not isinstance(bad.value, MalformedOutputError)
    fake.script(Reply.answer({"subject": "s", "body": "b", "extra": 1}))
    with pytest.raises(MalformedOutputError, match="unexpected extra"):
        client(fake).draft(messages)
    fake.script(Reply.answer({"subject": "s", "body": 3}))
    with pytest.raises(MalformedOutputError, match="body is not string"):
        client(fake).draft(messages)
    fake.script(Reply.error(429, retry_after="30"))
    with pytest.raises(RateLimitedError) as limited:
        client(fake, timeout=1).draft(messages)
    assert limited.value.retry_after == 30.0


# ---- the CLI preview -------------------------------------------------------------------

runner = CliRunner()


def cli(db_file: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["--db", str(db_file), *args], env=env)
    return result.exit_code, result.stdout + result.stderr


def imported_db(tmp_path: Path) -> Path:
    db_file = tmp_path / "d.db"
    code, out = cli(db_file, "import-csv", "--customers", str(SAMPLES / "customers.csv"),
                    "--invoices", str(SAMPLES / "invoices.csv"))
    assert code == 0, out
    return db_file


def test_preview_prints_the_template_draft_in_the_customers_language(tmp_path: Path) -> None:
    db_file = imported_db(tmp_path)
    before = db_file.read_bytes()
    code, out = cli(db_file, "drafts", "preview", "2026-0312", "--date", "2026-11-24")
    assert code == 0, out
    assert "firm_notice is due today" in out and "language de, source template" in out
    assert "Subject: Überfällig: Rechnung 2026-0312 (4.000,00 €)" in out
    code, out = cli(db_file, "drafts", "preview", "INV-5003", "--date", "2026-11-24",
                    "--format", "json")
    data = json.loads(out)
    assert data["step"] == "nudge" and data["draft"]["language"] == "en"
    assert data["draft"]["source"] == "template" and "1,200.00 GBP" in data["draft"]["body"]
    assert db_file.read_bytes() == before  # a preview writes nothing


def test_preview_says_why_there_is_no_message(tmp_path: Path) -> None:
    db_file = imported_db(tmp_path)
    code, out = cli(db_file, "drafts", "preview", "INV-5004", "--date", "2026-11-24")
    assert code == 0 and "service_pause is due today: a finance decision" in out
    code, out = cli(db_file, "drafts", "preview", "INV-4990", "--date", "2026-11-24")
    assert code == 0 and "the invoice is paid" in out
    code, out = cli(db_file, "drafts", "preview", "INV-5003", "--date", "2026-11-21")
    assert code == 0 and "no step is due today" in out
    code, out = cli(db_file, "drafts", "preview", "NOPE")
    assert code == 1 and "no invoice" in out


def test_preview_with_the_model_shows_its_source_or_the_fallback_reason(
        tmp_path: Path, fake: FakeOpenAI) -> None:
    db_file = imported_db(tmp_path)
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.url, "OPENAI_MODEL": MODEL}
    code, out = cli(db_file, "drafts", "preview", "INV-5002", "--date", "2026-11-24",
                    "--model", "--format", "json", env=env)
    assert code == 0, out
    data = json.loads(out)["draft"]
    assert data["source"] == "model" and data["fallback_reason"] is None
    fake.script(edited("4.000,00 €", "4.100,00 €"))
    code, out = cli(db_file, "drafts", "preview", "INV-5002", "--date", "2026-11-24",
                    "--model", env=env)
    assert code == 0 and "source template" in out and "fallback: the model's draft" in out
    code, out = cli(db_file, "drafts", "preview", "INV-5002", "--model",
                    env={"OPENAI_API_KEY": ""})
    assert code == 1 and "OPENAI_API_KEY" in out
