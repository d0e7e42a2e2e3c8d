"""Template drafts of customer messages: the fallback when no model is configured.

Every fact (amount, currency, invoice number, due date, payment link) comes from the
ledger, never from a model. The wording follows the step's tone; English for now.
"""

from __future__ import annotations

from dunning.model import Action, Draft, InvoiceState, Tone
from dunning.money import format_money

_OPENERS = {
    Tone.FRIENDLY: "I hope all is well. This is a quick reminder about the invoice below.",
    Tone.FIRM: "Our records show the invoice below is now overdue, and we have not yet received "
               "payment despite earlier reminders.",
    Tone.FINAL: "This is a final notice: the invoice below remains unpaid despite our earlier "
                "reminders.",
}
_ASKS = {
    Tone.FRIENDLY: "If it has already been paid, thank you, and please ignore this message. If "
                   "anything is holding it up, just reply and we will sort it out.",
    Tone.FIRM: "Please arrange payment within the next 5 business days, or reply with the date "
               "we can expect it. If something is wrong with the invoice, tell us and we will "
               "look into it right away.",
    Tone.FINAL: "Unless we receive payment or hear from you within 5 business days, we will "
                "have to pause the service on your account. Please contact us today if there "
                "is an issue we should know about.",
}
_SUBJECTS = {
    Tone.FRIENDLY: "Friendly reminder: invoice {number} ({amount})",
    Tone.FIRM: "Overdue: invoice {number} ({amount})",
    Tone.FINAL: "Final notice: invoice {number} ({amount})",
}


def template_draft(state: InvoiceState, action: Action, *, sender_name: str,
                   note: str | None = None) -> Draft:
    """The message for a customer-message action, in its tone, from ledger facts only."""
    tone = action.tone or Tone.FRIENDLY
    c = state.customer
    amount = format_money(state.amount_due, state.currency)
    greeting = f"Hello {c.ap_contact_name}," if c.ap_contact_name else "Hello,"
    if action.days_past_due < 0:
        when = f"is due on {state.due_date.isoformat()}"
    elif action.days_past_due == 0:
        when = f"is due today ({state.due_date.isoformat()})"
    else:
        when = (f"was due on {state.due_date.isoformat()} "
                f"({action.days_past_due} days ago)")
    lines = [
        greeting,
        "",
        _OPENERS[tone] if action.days_past_due > 0 else
        "I hope all is well. This is a courtesy reminder of an upcoming payment.",
        "",
        f"Invoice {state.number} for {amount} {when}.",
    ]
    if state.amount_paid > 0:
        lines.append(f"Thank you for the {format_money(state.amount_paid, state.currency)} "
                     "already received; the amount above is the balance.")
    if state.promise is not None and state.promise.status.value == "broken":
        lines.append(f"We had noted a payment expected by "
                     f"{state.promise.promised_date.isoformat()}, which has not arrived.")
    if state.payment_link:
        lines += ["", f"You can pay online here: {state.payment_link}"]
    lines += ["", _ASKS[tone] if action.days_past_due > 0 else _ASKS[Tone.FRIENDLY], "",
              "Kind regards,", sender_name]
    cc: tuple[str, ...] = ()
    return Draft(
        subject=_SUBJECTS[tone].format(number=state.number, amount=amount),
        body="\n".join(lines),
        to=(c.ap_contact_email,) if c.ap_contact_email else (),
        cc=cc,
        source="template",
        note=note,
    )
