"""Template drafts in four languages, the model's prompt, and the checker that guards facts."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.drafts import (
    LANGUAGES,
    TEMPLATE_STEPS,
    check_draft,
    draft_prompt,
    facts_for,
    format_amount,
    format_day,
    language_for,
    template_draft,
)
from dunning.model import (
    Action,
    Approval,
    Channel,
    CustomerContext,
    Dispute,
    InvoiceState,
    Kind,
    Lane,
    PaymentHistory,
    Promise,
    PromiseStatus,
    Tone,
    Touch,
)
from dunning.policy import DEFAULT_POLICY

NORTHWIND = CustomerContext("C-1002", "Northwind Traders GmbH", country="DE",
                            currency="EUR", arr=Decimal("48000"), health=55,
                            owner_email="sam.okafor@example.com", ap_contact_name="Jonas Weber",
                            ap_contact_email="rechnungen@northwind.example")
STATE = InvoiceState(
    invoice_id="INV-5002", number="2026-0312", customer=NORTHWIND, issue_date=date(2026, 10, 1),
    due_date=date(2026, 12, 4), currency="EUR", amount=Decimal("14900.50"),
    amount_paid=Decimal("2500.00"), payment_link="https://pay.example.com/i/INV-5002")


def action(step: str = "firm_notice", tone: Tone = Tone.FIRM, dpd: int = 24) -> Action:
    return Action(invoice_id=STATE.invoice_id, step=step, kind=Kind.CUSTOMER_MESSAGE, tone=tone,
                  approval=Approval.OWNER, channel=Channel.EMAIL, lane=Lane.LATE,
                  days_past_due=dpd, scheduled_on=date(2026, 11, 19), reasons=())


def in_language(lang: str, state: InvoiceState = STATE) -> InvoiceState:
    return replace(state, customer=replace(state.customer, language=lang))


# ---- formats ---------------------------------------------------------------------------

def test_amounts_are_written_as_each_language_writes_them() -> None:
    amount = Decimal("12400.50")
    assert format_amount(amount, "EUR", "de") == "12.400,50 €"
    assert format_amount(amount, "EUR", "fr") == "12\u202f400,50\u00a0€"  # "12 400,50 €"
    assert format_amount(amount, "EUR", "es") == "12.400,50 €"
    assert format_amount(amount, "USD", "en") == "12,400.50 USD"
    assert format_amount(Decimal("1234567"), "JPY", "de") == "1.234.567 JPY"
    assert format_amount(Decimal("999.5"), "GBP", "fr") == "999,50\u00a0£"


def test_dates_are_spelled_out_in_the_language() -> None:
    assert format_day(date(2026, 12, 4), "de") == "4. Dezember 2026"
    assert format_day(date(2026, 12, 1), "fr") == "1er décembre 2026"
    assert format_day(date(2026, 3, 4), "fr") == "4 mars 2026"
    assert format_day(date(2026, 12, 4), "es") == "4 de diciembre de 2026"
    assert format_day(date(2026, 12, 4), "en") == "4 December 2026"


@pytest.mark.parametrize(("language", "country", "expected"), [
    (None, "DE", "de"), (None, "AT", "de"), (None, "CH", "de"), (None, "FR", "fr"),
    (None, "BE", "fr"), (None, "LU", "fr"), (None, "ES", "es"), (None, "MX", "es"),
    (None, "AR", "es"), (None, "US", "en"), (None, "GB", "en"), (None, "JP", "en"),
    ("fr", "DE", "fr"), ("de-CH", "FR", "de"), ("ES", "US", "es"),
    ("it", "DE", "de"),  # a language without templates: the country's
    ("", "FR", "fr"),
])
def test_language_is_the_customers_own_else_from_the_country(
        language: str | None, country: str, expected: str) -> None:
    c = CustomerContext("C", "X", country=country, language=language)
    assert language_for(c) == expected


# ---- templates -------------------------------------------------------------------------

def test_every_language_has_a_template_for_every_message_step_of_the_default_policy() -> None:
    steps = {s.key for s in DEFAULT_POLICY.steps if s.kind is Kind.CUSTOMER_MESSAGE}
    assert steps <= set(TEMPLATE_STEPS)
    root = resources.files("dunning") / "templates"
    for lang in LANGUAGES:
        for step in (*TEMPLATE_STEPS, "generic"):
            assert (root / lang / f"{step}.txt.j2").is_file(), f"{lang}/{step}"


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("step", [*TEMPLATE_STEPS, "custom_step"])
@pytest.mark.parametrize("tone", list(Tone))
def test_templates_render_every_step_and_tone_with_the_ledger_facts(
        lang: str, step: str, tone: Tone) -> None:
    state = in_language(lang)
    d = template_draft(state, action(step, tone, -3 if step == "pre_due" else 24),
                       sender_name="Accounts Receivable")
    facts = facts_for(state, lang)
    assert facts.number in d.subject and facts.amount in d.subject
    for fact in (facts.amount, facts.number, facts.due, facts.link or "", facts.paid or ""):
        assert fact in d.body
    assert "Jonas Weber" in d.body and d.body.endswith("Accounts Receivable")
    assert "{" not in d.body and "\n\n\n" not in d.body and d.to == (NORTHWIND.ap_contact_email,)
    assert check_draft(d.subject, d.body, state, lang) == []


def test_tone_changes_the_words_and_the_language_changes_everything() -> None:
    bodies = {(lang, tone): template_draft(in_language(lang), action("nudge", tone),
                                           sender_name="AR").body
              for lang in LANGUAGES for tone in Tone}
    assert len(set(bodies.values())) == len(bodies)
    assert "Letzte Mahnung" in template_draft(in_language("de"), action("nudge", Tone.FINAL),
                                              sender_name="AR").subject
    assert "pause the service" in bodies[("en", Tone.FINAL)]
    assert "suspendre le service" in bodies[("fr", Tone.FINAL)]


def test_without_a_contact_name_link_or_payment_the_template_still_reads_well() -> None:
    bare = replace(STATE, amount_paid=Decimal(0), payment_link=None,
                   customer=replace(NORTHWIND, ap_contact_name=None, language="en"))
    d = template_draft(bare, action("nudge", Tone.FRIENDLY, 5), sender_name="AR")
    assert d.body.startswith("Hello,\n\n") and "http" not in d.body
    assert "already received" not in d.body
    assert check_draft(d.subject, d.body, bare, "en") == []


def test_a_broken_promise_is_mentioned_with_its_date() -> None:
    broken = replace(in_language("de"), promise=Promise(date(2026, 12, 1), None,
                                                        PromiseStatus.BROKEN))
    d = template_draft(broken, action(), sender_name="AR")
    assert "bis zum 1. Dezember 2026 vorgemerkt" in d.body
    assert check_draft(d.subject, d.body, broken, "de") == []


# ---- the checker -----------------------------------------------------------------------

def good(lang: str = "en") -> tuple[str, str]:
    d = template_draft(in_language(lang), action(), sender_name="AR")
    return d.subject, d.body


def problems_after(old: str, new: str, lang: str = "en") -> list[str]:
    subject, body = good(lang)
    assert old in body
    return check_draft(subject, body.replace(old, new), in_language(lang), lang)


def test_a_faithful_draft_passes_also_with_plain_spaces_for_french_separators() -> None:
    subject, body = good("fr")
    assert check_draft(subject, body, in_language("fr"), "fr") == []
    plain = body.replace("\u202f", " ").replace("\u00a0", " ")
    assert check_draft(subject, plain, in_language("fr"), "fr") == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("12,400.50 EUR", "12,400.00 EUR", "amount due"),  # wrong amount
    ("12,400.50 EUR", "12,400.50 USD", "amount due"),  # wrong currency
    ("12,400.50 EUR", "€12,400.50", "amount due"),  # not as the ledger writes it
    ("invoice 2026-0312 for", "invoice 2026-0321 for", "invoice number"),
    ("4 December 2026", "5 December 2026", "due date"),
    ("4 December 2026", "2026-12-04", "due date"),
    ("https://pay.example.com/i/INV-5002", "https://pay.example.net/i/INV-5002",
     "payment link"),
])
def test_each_misstated_fact_is_caught(old: str, new: str, expected: str) -> None:
    found = problems_after(old, new)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(("extra", "expected"), [
    ("Please pay by 2026-12-20.", "a date"),
    ("Please pay by 20 December 2026.", "a date"),
    ("Please pay by December 20.", "a date"),
    ("Please pay by 20.12.2026.", "a date"),
    ("A late fee of 250.00 EUR applies.", "an amount"),
    ("A late fee of €250 applies.", "an amount"),
    ("See also invoice 2026-0999.", "a number"),
    ("Details: https://evil.example/pay", "a link"),
    ("Details: www.example.org/x", "a link"),
])
def test_anything_extra_that_looks_like_a_fact_is_refused(extra: str, expected: str) -> None:
    subject, body = good()
    found = check_draft(subject, body + "\n" + extra, in_language("en"), "en")
    assert any(p.startswith(expected) for p in found), found


def test_extra_facts_in_the_subject_are_refused_too() -> None:
    subject, body = good()
    state = in_language("en")
    assert check_draft(subject, body, state, "en") == []
    assert check_draft(subject + " - pay by 2026-12-20", body, state, "en")
    assert check_draft(subject.replace("2026-0312", "2026-0313"), body, state, "en")


def test_a_fact_counts_only_as_a_whole() -> None:
    small = replace(in_language("en"), amount=Decimal("3700.00"),
                    amount_paid=Decimal("2500.00"))
    d = template_draft(small, action(), sender_name="AR")
    subject, body = d.subject, d.body
    assert check_draft(subject, body, small, "en") == []
    wrong = body.replace("1,200.00 EUR", "11,200.00 EUR")
    assert any("amount" in p for p in check_draft(subject, wrong, small, "en"))


def test_german_amounts_and_dates_must_be_in_german_format() -> None:
    found = problems_after("12.400,50 €", "12,400.50 EUR", "de")
    assert any("amount due" in p for p in found)
    found = problems_after("4. Dezember 2026", "04.12.2026", "de")
    assert any("due date" in p for p in found) and any(p.startswith("a date") for p in found)


def test_ordinary_words_and_small_numbers_are_not_mistaken_for_facts() -> None:
    subject, body = good()
    extra = ("You may reply within 5 business days; we have 3 options, and in December "
             "our office is open as usual.")
    assert check_draft(subject, body + "\n" + extra, in_language("en"), "en") == []


# ---- the prompt ------------------------------------------------------------------------

def test_the_prompt_holds_only_this_customers_facts() -> None:
    chronic = replace(STATE, history=PaymentHistory(invoices_paid=8, paid_late=6,
                                                    days_late_total=90, broken_promises=1,
                                                    kept_promises=2, disputes=1),
                      promise=Promise(date(2026, 11, 20), Decimal("1000"),
                                      PromiseStatus.BROKEN),
                      dispute=None)
    touches = [Touch(datetime(2026, 11, 10, 9, tzinfo=UTC), "email", "nudge sent", "sam")]
    messages = draft_prompt(chronic, action(), sender_name="AR", touches=touches,
                            language="de")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "German" in messages[0]["content"]
    data = json.loads(messages[1]["content"])
    assert data["accounts_payable_contact"] == "Jonas Weber"
    assert data["amount_due"] == "12.400,50 €" and data["due_date"] == "4. Dezember 2026"
    assert data["invoice_number"] == "2026-0312"
    assert "often pays late" in data["payment_pattern"]
    assert data["promises"] == {"kept": 2, "broken": 1}
    assert data["latest_promise_on_this_invoice"]["status"] == "broken"
    assert data["prior_touches"] == [{"when": "10. November 2026", "channel": "email",
                                      "summary": "nudge sent"}]
    text = messages[0]["content"] + messages[1]["content"]
    for internal in ("48000", "48.000", "sam.okafor@example.com", "rechnungen@", "health"):
        assert internal not in text


def test_a_first_time_late_customer_is_described_as_such() -> None:
    punctual = replace(STATE, history=PaymentHistory(invoices_paid=5))
    data = json.loads(draft_prompt(punctual, action(), sender_name="AR")[1]["content"])
    assert data["payment_pattern"] == "no late payment on record"
    disputed = replace(STATE, dispute=Dispute("wrong quantity"))
    data = json.loads(draft_prompt(disputed, action(), sender_name="AR")[1]["content"])
    assert data["open_dispute_on_this_invoice"] is True


# ---- the property ----------------------------------------------------------------------

CURRENCIES = ["EUR", "USD", "GBP", "JPY", "KWD", "CHF", "AUD"]


@st.composite
def states(draw: st.DrawFn) -> tuple[InvoiceState, Action]:
    currency = draw(st.sampled_from(CURRENCIES))
    places = {"JPY": 0, "KWD": 3}.get(currency, 2)
    minor = draw(st.integers(min_value=1, max_value=10**11))
    amount = Decimal(minor).scaleb(-places)
    paid = Decimal(draw(st.integers(min_value=0, max_value=minor - 1))).scaleb(-places)
    due = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
    number = draw(st.from_regex(r"[A-Z]{0,3}-?[0-9]{1,4}-?[0-9]{2,6}", fullmatch=True))
    link = draw(st.one_of(st.none(), st.from_regex(
        r"https://pay\.example\.com/[a-z]{1,8}/[A-Za-z0-9_-]{1,12}", fullmatch=True)))
    promise = draw(st.one_of(st.none(), st.builds(
        Promise, st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
        st.none(), st.sampled_from(list(PromiseStatus)))))
    customer = CustomerContext(
        "C", "Customer", country=draw(st.sampled_from(["US", "DE", "FR", "ES", "MX", "JP"])),
        language=draw(st.sampled_from([None, *LANGUAGES])),
        ap_contact_name=draw(st.sampled_from([None, "Ana García", "Jean-Luc Picard"])),
        ap_contact_email="ap@example.com")
    state = InvoiceState("INV", number, customer, due, due, currency, amount, paid,
                         payment_link=link, promise=promise)
    step = draw(st.sampled_from([*TEMPLATE_STEPS, "custom"]))
    tone = draw(st.sampled_from(list(Tone)))
    dpd = draw(st.integers(min_value=-10, max_value=200))
    act = Action("INV", step, Kind.CUSTOMER_MESSAGE, tone, Approval.OWNER, Channel.EMAIL,
                 Lane.EARLY, dpd, due, ())
    return state, act


@settings(max_examples=300, deadline=None)
@given(states())
def test_template_drafts_always_pass_the_checker(case: tuple[InvoiceState, Action]) -> None:
    state, act = case
    d = template_draft(state, act, sender_name="Accounts Receivable")
    assert check_draft(d.subject, d.body, state, language_for(state.customer)) == []
