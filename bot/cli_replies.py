"""`dunning replies ...`: understand a customer's reply and propose the next step."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

import typer

from bot.cli_common import TextFormat, _ctx, fail
from dunning.money import format_money
from dunning.replies import ReplyAnalysis, classify, to_json

replies_app = typer.Typer(help="Customer replies: understand them, propose the next step.",
                          no_args_is_help=True)

EXIT_USAGE = 2


def _text_lines(a: ReplyAnalysis) -> list[str]:
    def show(value: object) -> str:
        return "-" if value in (None, "") else str(value)

    amount = (format_money(a.amount, a.currency) if a.amount is not None and a.currency
              else show(a.amount))
    lines = [
        f"intent:       {a.intent.value} (confidence {a.confidence:.2f}, {a.classifier})",
        f"promise date: {show(a.promise_date)}",
        f"amount:       {amount}",
        f"reference:    {show(a.reference)}",
    ]
    if a.dispute_reason:
        lines.append(f"dispute:      {a.dispute_reason.replace('_', ' ')}")
    if a.return_date:
        lines.append(f"back on:      {a.return_date.isoformat()}")
    lines.append(f"language:     {show(a.language)}")
    lines.append(f"evidence:     {json.dumps(a.evidence, ensure_ascii=False)}")
    injection = ("SUSPECTED: " + "; ".join(a.injection_reasons) if a.injection_suspected
                 else "none found")
    lines.append(f"injection:    {injection}")
    return lines


@replies_app.command("classify")
def classify_cmd(
    ctx: typer.Context,
    received: Annotated[str | None, typer.Option(
        "--received", help="the day the reply arrived, YYYY-MM-DD (relative dates like "
        "'next Friday' count from it; default: today in DUNNING_TIMEZONE)")] = None,
    format_: Annotated[TextFormat, typer.Option("--format")] = TextFormat.text,
) -> None:
    """Classify a customer's reply read from stdin, by rules (no database, no model)."""
    if received is None:
        day = _ctx(ctx).today()
    else:
        try:
            day = date.fromisoformat(received)
        except ValueError:
            fail(f"--received {received!r} is not a date in YYYY-MM-DD form", EXIT_USAGE)
    text = typer.get_text_stream("stdin").read()
    if not text.strip():
        fail("no reply text on stdin: pipe the email body in, e.g. "
             "`dunning replies classify --received 2026-11-24 < reply.txt`", EXIT_USAGE)
    analysis = classify(text, received=day)
    if format_ is TextFormat.json:
        typer.echo(json.dumps(to_json(analysis), ensure_ascii=False, indent=2))
        return
    for line in _text_lines(analysis):
        typer.echo(line)


@replies_app.command("unmatched")
def unmatched(ctx: typer.Context,
              limit: Annotated[int, typer.Option(min=1, max=1000, help="rows at most")] = 50,
              format_: Annotated[TextFormat, typer.Option("--format")] = TextFormat.text
              ) -> None:
    """Customer replies from the AR mailbox that matched no invoice or customer (oldest
    first): finance's to-do list; nothing is dropped."""
    from services.replies import unmatched_replies

    c = _ctx(ctx)
    with c.session() as s:
        rows = unmatched_replies(s, limit=limit)
    if format_ is TextFormat.json:
        typer.echo(json.dumps([{
            "id": r.reply_id, "received_at": r.received_at.isoformat(), "sender": r.sender,
            "subject": r.subject, "intent": r.intent,
            "injection_suspected": r.injection_suspected} for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no unmatched replies")
        return
    for r in rows:
        flag = "  ⚠️ possible prompt injection" if r.injection_suspected else ""
        typer.echo(f"#{r.reply_id}  {r.received_at:%Y-%m-%d %H:%M}  {r.sender or '?'}  "
                   f"{r.subject!r}  ({r.intent}){flag}")
