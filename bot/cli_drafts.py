"""`dunning drafts ...`: preview the customer message a card would carry today."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from bot.cli_common import DateOpt, TextFormat, _ctx, _parse_date, fail, guarded
from bot.deps import build_llm
from services.drafting import Preview, preview_draft
from store import tables as t

drafts_app = typer.Typer(help="Customer message drafts (model or templates).",
                         no_args_is_help=True)


def _source(source: str) -> str:
    """How people call the two sources: the store says "llm", the preview says "model"."""
    return "model" if source == t.DraftSource.LLM.value else "template"


def preview_json(p: Preview) -> dict[str, Any]:
    out: dict[str, Any] = {
        "invoice_id": p.invoice_id, "invoice_number": p.number, "customer": p.customer,
        "date": p.date.isoformat(), "step": p.step, "kind": p.kind, "tone": p.tone,
        "message": p.message, "escalation_id": p.escalation_id, "draft": None,
    }
    if p.result is not None:
        d = p.result.draft
        out["draft"] = {"subject": d.subject, "body": d.body, "to": list(d.to),
                        "source": _source(d.source), "language": p.result.language or None,
                        "fallback_reason": p.result.fallback, "note": d.note}
    return out


@drafts_app.command("preview")
def preview(ctx: typer.Context,
            invoice: Annotated[str, typer.Argument(help="invoice id or number")],
            date_: DateOpt = None,
            format_: Annotated[TextFormat, typer.Option("--format")] = TextFormat.text,
            model: Annotated[bool, typer.Option(
                "--model/--no-model",
                help="ask the model (OPENAI_API_KEY) instead of showing the template; the "
                     "call is not cached or logged")] = False) -> None:
    """The draft the invoice's due customer-message step would carry today.

    Shows its source (model or template), language and why a fallback was used; or which
    step is due and why there is no message. Writes nothing.
    """
    c = _ctx(ctx)
    given = _parse_date(date_, "--date")
    llm = None
    if model:
        llm = guarded(lambda: build_llm(c.settings))
        if llm is None:
            fail("--model needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)")
    with c.session() as session:
        p = guarded(lambda: preview_draft(
            session, c.policy, invoice, given, llm=llm,
            sender_name=c.settings.dunning_sender_name, now=c.now(),
            budget_usd=c.settings.llm_daily_budget_usd))
        session.rollback()  # a preview writes nothing
    if format_ is TextFormat.json:
        typer.echo(json.dumps(preview_json(p), indent=2, ensure_ascii=False))
        return
    typer.echo(f"Invoice {p.number} ({p.invoice_id}), {p.customer}, on {p.date.isoformat()}")
    typer.echo(p.message)
    if p.result is None:
        return
    d = p.result.draft
    tone = f", tone {p.tone}" if p.tone else ""
    lang = f"language {p.result.language}, " if p.result.language else ""
    typer.echo(f"{lang}source {_source(d.source)}{tone}")
    if p.result.fallback:
        typer.echo(f"fallback: {p.result.fallback}")
    if d.note:
        typer.echo(f"note: {d.note}")
    typer.echo(f"To: {', '.join(d.to) or '(no accounts-payable email on file)'}")
    typer.echo(f"Subject: {d.subject}")
    typer.echo("")
    typer.echo(d.body)
