"""Classifying a customer's reply: the rules always, the model as a checked second reader.

gather: the rules' analysis and screen, this customer's open invoices, today's model spend;
decide: ask the model only when one is configured, the day's budget allows it and the
screen found no injection attempt (a flagged reply never reaches a model), then accept its
answer only when `dunning.replies.check_model_reply` can verify every claim against the
reply; apply: one LlmCall row per model call (purpose "classify", tokens, cost, outcome),
whatever the outcome, because the budget counts what was spent, not what was used.

Nothing else is written: the analysis only fills a proposal that a person confirms
(services.replies.confirm_reply), so no model output can change the ledger.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import Decimal

from sqlmodel import Session, col, select

from connectors.errors import ConnectorError
from connectors.llm import LlmClient, Usage
from dunning.model import InvoiceStatus
from dunning.money import from_minor
from dunning.replies import (
    OpenInvoiceFact,
    ReplyAnalysis,
    ReplyFacts,
    check_model_reply,
    classify,
    reply_prompt,
)
from services.drafting import budget_micros, call_outcome, record_llm_call, spent_today_micros
from store import tables as t

log = logging.getLogger(__name__)
PURPOSE = "classify"
MAX_FACT_INVOICES = 20  # the model needs the open invoices, not a customer's whole ledger


def reply_facts(session: Session, customer_id: str | None) -> ReplyFacts:
    """This customer's name and open invoices (number, amount still due), nothing else."""
    if customer_id is None:
        return ReplyFacts()
    customer = session.get(t.Customer, customer_id)
    if customer is None:
        return ReplyFacts()
    rows = session.exec(
        select(t.Invoice)
        .where(t.Invoice.customer_id == customer_id,
               t.Invoice.status == InvoiceStatus.OPEN.value)
        .order_by(col(t.Invoice.due_date), col(t.Invoice.id))
        .limit(MAX_FACT_INVOICES)).all()
    invoices = tuple(
        OpenInvoiceFact(r.number, from_minor(r.amount_minor - r.amount_paid_minor, r.currency),
                        r.currency) for r in rows)
    return ReplyFacts(customer.name, invoices)


def classify_reply(session: Session, text: str, *, received: date, customer_id: str | None,
                   llm: LlmClient | None, budget_usd: Decimal | str | None, now: datetime,
                   subject_id: str | None = None) -> ReplyAnalysis:
    """What the reply means: the model's checked reading (classifier "llm") or the rules'.

    `received` is the day the reply arrived in the customer's time zone; `budget_usd` caps
    the day's model spend across every purpose (None: no cap); `subject_id` is recorded on
    the LlmCall row (e.g. the CustomerReply id, when the caller has one). Every failure,
    refusal or skip gives the rules' analysis; this function never raises a ConnectorError.
    """
    rules = classify(text, received=received)
    if llm is None or rules.injection_suspected:
        return rules
    if budget_usd is not None and spent_today_micros(session, now) >= budget_micros(budget_usd):
        log.info("reply classification: daily model budget reached, rules used")
        return rules

    messages = reply_prompt(text, received=received, facts=reply_facts(session, customer_id))

    def record(outcome: str, usage: Usage) -> None:
        record_llm_call(session, purpose=PURPOSE, model=llm.model, usage=usage,
                        outcome=outcome, subject_id=subject_id, now=now)

    try:
        answer = llm.classify_reply(messages)
    except ConnectorError as exc:
        outcome, _ = call_outcome(exc)
        log.warning("reply classification: model call failed (%s): %s", outcome, exc)
        record(outcome, getattr(exc, "usage", None) or Usage())
        return rules
    checked = check_model_reply(answer.data, text=text, received=received, rules=rules)
    if isinstance(checked, list):
        # The problems name fields, not the reply's text: nothing the customer wrote is logged.
        log.warning("reply classification: model answer refused (%d problems; first: %s)",
                    len(checked), checked[0].split(":")[0])
        record("rejected", answer.usage)
        return rules
    record("ok", answer.usage)
    return checked
