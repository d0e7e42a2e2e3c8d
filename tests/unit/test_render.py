"""Block Kit -> HTML: mrkdwn formatting, escaping, every block type, real cards and modals.

The renderer draws what people will look at in the sandbox and in screenshots, so the
tests check what a person reads (visible text) and that nothing a customer typed becomes
markup, and that no input, however odd, makes it raise.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.cards import build_escalation_card, card_text
from blocks.modals import (
    build_approve_modal,
    build_dispute_modal,
    build_promise_modal,
    build_reassign_modal,
    build_result_view,
    build_snooze_modal,
)
from bot.sandbox.render import (
    mrkdwn_to_html,
    page,
    render_blocks_html,
    render_message_html,
    render_view_html,
)
from dunning.model import EscalationState, Kind
from tests.unit.test_blocks import TODAY, card, customer, escalation, invoice

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class _Reader(HTMLParser):
    """Visible text, tags seen, and whether every opened tag was closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.balanced = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read(fragment: str) -> _Reader:
    reader = _Reader()
    reader.feed(fragment)
    reader.close()
    return reader


def text_of(fragment: str) -> str:
    return "".join(read(fragment).text)


def tags_of(fragment: str) -> list[str]:
    return [t for t, _ in read(fragment).tags]


def classes_of(fragment: str) -> list[str]:
    return [c for _, attrs in read(fragment).tags for c in (attrs.get("class") or "").split()]


def button_labels(fragment: str) -> list[str]:
    return [text_of(inner) for inner in re.findall(r"<button[^>]*>(.*?)</button>", fragment)]


def mrkdwn_block(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# --- mrkdwn -------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("*bold*", "<b>bold</b>"),
    ("_italic_", "<i>italic</i>"),
    ("~gone~", "<s>gone</s>"),
    ("a `x = 1` b", 'a <code class="code">x = 1</code> b'),
    ("```line 1\n  line 2```", '<pre class="pre">line 1\n  line 2</pre>'),
    ("one\ntwo", "one<br>two"),
    ("*Why*\n• late", "<b>Why</b><br>• late"),
    ("> quoted\n> more\nafter", '<blockquote class="quote">quoted<br>more</blockquote>after'),
    ("&gt; typed quote", '<blockquote class="quote">typed quote</blockquote>'),
    ("<https://example.com/a?b=1&amp;c=2|the invoice>",
     '<a class="link" href="https://example.com/a?b=1&amp;c=2">the invoice</a>'),
    ("<https://example.com>", '<a class="link" href="https://example.com">https://example.com</a>'),
    ("<mailto:ap@acme.example|ap@acme.example>",
     '<a class="link" href="mailto:ap@acme.example">ap@acme.example</a>'),
    ("<@U123ABC>", '<span class="mention">@U123ABC</span>'),
    ("<#C42|finance>", '<span class="mention">#finance</span>'),
    ("<!channel>", '<span class="mention broadcast">@channel</span>'),
    ("<!here>", '<span class="mention broadcast">@here</span>'),
    ("<!subteam^S1|@finance>", '<span class="mention">@finance</span>'),
    ("at <!date^1715677920^{time}|09:12 UTC>", 'at <span class="date">09:12 UTC</span>'),
    ("*<@U1>* approved", '<b><span class="mention">@U1</span></b> approved'),
    ("_and 12 more_", "<i>and 12 more</i>"),
])
def test_mrkdwn_formats_like_slack(source: str, expected: str) -> None:
    assert mrkdwn_to_html(source) == expected


@pytest.mark.parametrize("source", [
    "snake_case_name", "2*3*4", "file_v2_final.pdf", "a * b * c", "~ not strike ~",
    "ap_team@acme.example",
])
def test_markers_inside_words_or_next_to_spaces_stay_text(source: str) -> None:
    assert mrkdwn_to_html(source) == source


def test_nothing_is_formatted_inside_code() -> None:
    assert mrkdwn_to_html("`*x* _y_`") == '<code class="code">*x* _y_</code>'
    assert mrkdwn_to_html("```*x*\n> not a quote```") == \
        '<pre class="pre">*x*\n&gt; not a quote</pre>'


def test_slack_entities_are_decoded_once_then_escaped_for_html() -> None:
    assert mrkdwn_to_html("&lt;script&gt;alert(1)&lt;/script&gt;") == \
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert text_of(mrkdwn_to_html("&lt;script&gt;")) == "<script>"
    assert text_of(mrkdwn_to_html("Smith &amp; Sons")) == "Smith & Sons"
    assert text_of(mrkdwn_to_html("&amp;lt;")) == "&lt;"  # escaped twice: shown once-escaped
    assert text_of(mrkdwn_to_html('say "hi" & \'bye\'')) == 'say "hi" & \'bye\''


def test_escaped_mentions_and_links_stay_text() -> None:
    html = mrkdwn_to_html("&lt;@U1&gt; &lt;!channel&gt; &lt;https://evil.example|x&gt;")
    assert "mention" not in html and "<a" not in html
    assert text_of(html) == "<@U1> <!channel> <https://evil.example|x>"


def test_links_only_for_safe_schemes() -> None:
    html = mrkdwn_to_html("<javascript:alert(1)|click> <data:text/html,x|y>")
    assert "<a" not in html and "href" not in html
    assert text_of(html) == "<javascript:alert(1)|click> <data:text/html,x|y>"


def test_link_labels_and_urls_cannot_break_out_of_attributes() -> None:
    html = mrkdwn_to_html('<https://x.example/"onmouseover="alert(1)|a "label">')
    assert tags_of(html) == ["a"]
    assert read(html).tags[0][1]["href"] == 'https://x.example/"onmouseover="alert(1)'


def test_placeholder_characters_in_the_input_cannot_pull_in_other_markup() -> None:
    assert mrkdwn_to_html("\ue0000\ue001 <@U1>") == '0 <span class="mention">@U1</span>'


def test_a_date_without_fallback_still_reads() -> None:
    assert text_of(mrkdwn_to_html("<!date^1715677920^{date}>")) == "a date"


# --- blocks -------------------------------------------------------------------------------


def a_button(text: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": text},
                         "action_id": "act", "value": "7"}
    if style:
        b["style"] = style
    return b


BLOCKS: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (block, a class it must produce, visible text it must show)
    "header": ({"type": "header", "text": {"type": "plain_text", "text": "A & B <Ltd>"}},
               "header", "A & B <Ltd>"),
    "section": (mrkdwn_block("*hello*"), "section-text", "hello"),
    "fields": ({"type": "section", "fields": [{"type": "mrkdwn", "text": "*Amount*\n1 USD"},
                                              {"type": "mrkdwn", "text": "*Lane*\nlate"}]},
               "fields", "Amount1 USDLanelate"),
    "accessory": ({**mrkdwn_block("x"), "accessory": a_button("Open")}, "accessory", "xOpen"),
    "context": ({"type": "context", "elements": [{"type": "mrkdwn", "text": "_grey_"},
                                                 {"type": "plain_text", "text": "note"}]},
                "context", "greynote"),
    "divider": ({"type": "divider"}, "divider", ""),
    "actions": ({"type": "actions", "elements": [a_button("Go", "primary"),
                                                 a_button("Stop", "danger"), a_button("Wait")]},
                "actions", "GoStopWait"),
    "image": ({"type": "image", "image_url": "https://example.com/c.png", "alt_text": "chart",
               "title": {"type": "plain_text", "text": "DSO"}}, "image", "DSO"),
    "slack_file image": ({"type": "image", "slack_file": {"id": "F1"}, "alt_text": "chart"},
                         "img-missing", "🖼 chart · Slack file F1"),
    "input": ({"type": "input", "label": {"type": "plain_text", "text": "Note"}, "optional": True,
               "hint": {"type": "plain_text", "text": "Say why"},
               "element": {"type": "plain_text_input", "action_id": "n"}},
              "input-label", "Note (optional)Say why"),
    "rich_text": ({"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
        {"type": "text", "text": "hi ", "style": {"bold": True}},
        {"type": "user", "user_id": "U1"}, {"type": "emoji", "name": "x", "unicode": "1f44d"}]}]},
        "rich-text", "hi @U1👍"),
    "markdown": ({"type": "markdown", "text": "**as is** <b>"}, "markdown", "**as is** <b>"),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_every_block_type_renders(name: str) -> None:
    block, cls, visible = BLOCKS[name]
    html = render_blocks_html([block])
    assert cls in classes_of(html)
    assert text_of(html) == visible
    assert "unknown" not in classes_of(html)
    assert read(html).balanced


def test_buttons_carry_their_style_action_and_value() -> None:
    html = render_blocks_html([BLOCKS["actions"][0]])
    buttons = [attrs for tag, attrs in read(html).tags if tag == "button"]
    assert [b["class"] for b in buttons] == ["btn btn-primary", "btn btn-danger", "btn"]
    assert all(b["data-action-id"] == "act" and b["data-value"] == "7" for b in buttons)


def test_an_unknown_block_type_is_a_dashed_box_naming_it() -> None:
    html = render_blocks_html([{"type": "video", "title": "x"}, {"no": "type"}, "not a block"])
    assert classes_of(html).count("unknown") == 3
    assert text_of(html) == "videoblock without a typeblock without a type"


@pytest.mark.parametrize("element", [
    {"type": "static_select", "placeholder": {"type": "plain_text", "text": "Choose…"},
     "options": [{"text": {"type": "plain_text", "text": "A"}, "value": "a"}]},
    {"type": "static_select", "initial_option": {"text": {"type": "plain_text", "text": "A"},
                                                  "value": "a"}},
    {"type": "users_select", "initial_user": "U9"},
    {"type": "multi_users_select", "initial_users": ["U1", "U2"]},
    {"type": "conversations_select"},
    {"type": "overflow", "options": []},
    {"type": "datepicker", "initial_date": "2026-05-21"},
    {"type": "datepicker", "initial_date": "not a date"},
    {"type": "timepicker", "initial_time": "09:30"},
    {"type": "radio_buttons", "options": [{"text": {"type": "plain_text", "text": "A"},
                                           "value": "a"}]},
    {"type": "checkboxes", "options": [{"text": {"type": "mrkdwn", "text": "*A*"},
                                        "value": "a"}]},
    {"type": "plain_text_input", "multiline": True, "initial_value": "x\ny"},
    {"type": "email_text_input"},
    {"type": "number_input", "is_decimal_allowed": True},
    {"type": "image", "image_url": "https://example.com/i.png", "alt_text": "i"},
])
def test_every_element_renders_in_an_actions_block(element: dict[str, Any]) -> None:
    html = render_blocks_html([{"type": "actions", "elements": [element]}])
    assert "unknown" not in classes_of(html)
    assert read(html).balanced


def test_select_shows_its_choice_or_placeholder() -> None:
    choose = {"type": "static_select", "placeholder": {"type": "plain_text", "text": "Pick…"}}
    assert text_of(render_blocks_html([{"type": "actions", "elements": [choose]}])) == "Pick…▾"
    user = {"type": "users_select", "initial_user": "U9"}
    assert text_of(render_blocks_html([{"type": "actions", "elements": [user]}])) == "@U9▾"
    day = {"type": "datepicker", "initial_date": "2026-05-21"}
    assert "Thu, May 21, 2026" in text_of(render_blocks_html([{"type": "actions",
                                                                "elements": [day]}]))


# --- real cards ---------------------------------------------------------------------------


def test_a_real_card_shows_customer_amount_fields_and_buttons() -> None:
    c = card(others=12)
    html = render_message_html(build_escalation_card(c, today=TODAY), text=card_text(c),
                               ts_label="9:02 AM")
    shown = text_of(html)
    for words in ("dunning", "APP", "9:02 AM", "Acme Corp · INV-1042", "12,000.00 USD",
                  "Amount due", "Due date", "Owner", "@U123ABC", "Risk 62/100",
                  "Invoice INV-1042 is 43 days overdue", "12 other open invoices",
                  "and 7 more"):
        assert words in shown, words
    assert button_labels(html) == [
        "Log customer reply", "Approve & send…", "Reject", "Snooze", "Dispute",
        "Promise to pay", "Reassign", "Log call"]
    cls = classes_of(html)
    assert {"avatar", "header", "fields", "context", "quote", "divider", "actions",
            "btn-primary"} <= set(cls)
    assert cls.count("field") == 4
    assert "unknown" not in cls
    assert read(html).balanced


def test_a_finance_card_shows_the_decision_select() -> None:
    c = card(Kind.FINANCE_DECISION, esc=escalation(Kind.FINANCE_DECISION, step="service_pause"))
    html = render_message_html(build_escalation_card(c, today=TODAY), text=card_text(c))
    assert "select" in classes_of(html)
    assert "Finance decision…" in text_of(html)


def test_a_handled_card_shows_who_handled_it_with_the_date_fallback() -> None:
    c = card(esc=escalation(state=EscalationState.APPROVED, handled_by="<@U9>",
                            handled_at=datetime(2026, 5, 14, 9, 12, tzinfo=UTC)))
    html = render_message_html(build_escalation_card(c, today=TODAY), text=card_text(c))
    assert "✅ Approved by @U9 at 09:12 UTC" in text_of(html)
    assert "<button" not in html


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "<@U1>", "<!channel>",
                                  "Smith & Sons <https://evil.example|pay here>"])
def test_customer_names_stay_text_in_the_picture(name: str) -> None:
    c = card(inv=invoice(who=customer(name=name)))
    html = render_message_html(build_escalation_card(c, today=TODAY), text=card_text(c))
    assert name in text_of(html)  # in the header (plain text) and the draft, as typed
    assert "script" not in tags_of(html)
    assert "a" not in tags_of(html)
    assert "broadcast" not in classes_of(html)
    assert classes_of(html).count("mention") == 2  # only the owner, twice: not the name


def test_a_message_without_blocks_shows_its_fallback_text() -> None:
    html = render_message_html([], text="Nothing today for <@U1>, *well done*",
                               author="<b>bot</b>")
    assert text_of(html) == "<<b>bot</b>APPNothing today for @U1, well done"  # "<" avatar
    assert "mention" in classes_of(html)


# --- modals -------------------------------------------------------------------------------


def test_the_approve_modal_renders_title_inputs_and_buttons() -> None:
    html = render_view_html(build_approve_modal(card()))
    r = read(html)
    assert r.balanced
    shown = text_of(html)
    assert "Approve & send" in shown and "Subject" in shown and "Message" in shown
    inputs = [a for t, a in r.tags if t == "input"]
    assert inputs[0]["value"] == "Invoice INV-1042 is 43 days overdue"
    assert "Could you let us know when it will be paid?" in shown  # in the textarea
    assert "textarea" in tags_of(html)
    assert [a["class"] for t, a in r.tags if t == "button"] == [
        "btn btn-large", "btn btn-large btn-primary"]
    assert button_labels(html) == ["Cancel", "Approve & send"]


def test_modal_inputs_of_every_kind_render() -> None:
    snooze = render_view_html(build_snooze_modal(42, today=TODAY,
                                                 quarter_end=date(2026, 6, 30)))
    radios = [a for t, a in read(snooze).tags if t == "input" and a.get("type") == "radio"]
    assert len(radios) == 4
    assert ["checked" in r for r in radios] == [True, False, False, False]
    assert "Pick a date" in text_of(snooze) and "(optional)" in text_of(snooze)

    dispute = render_view_html(build_dispute_modal(42, amount_due=Decimal("12000"),
                                                   currency="USD"))
    assert "Choose…" in text_of(dispute)
    assert "The amount due is 12,000.00 USD." in text_of(dispute)

    promise = render_view_html(build_promise_modal(42, today=TODAY,
                                                   amount_due=Decimal("12000"), currency="USD"))
    assert "Thu, May 21, 2026" in text_of(promise)

    reassign = render_view_html(build_reassign_modal(42, current_owner_label="<@U123>"))
    assert "Pick a person" in text_of(reassign) and "@U123" in text_of(reassign)
    for html in (snooze, dispute, promise, reassign):
        assert read(html).balanced
        assert "unknown" not in classes_of(html)


def test_a_view_without_submit_has_only_its_close_button() -> None:
    html = render_view_html(build_result_view("Already handled", "By <@U1> & co"))
    assert button_labels(html) == ["Close"]
    assert "By @U1 & co" in text_of(html)


def test_a_home_view_has_no_title_bar() -> None:
    html = render_view_html({"type": "home", "blocks": [mrkdwn_block("hi")]})
    assert "modal-head" not in classes_of(html) and text_of(html) == "hi"


# --- the page -----------------------------------------------------------------------------


def test_a_page_is_a_standalone_document_with_slack_like_styles() -> None:
    doc = page([render_message_html([mrkdwn_block("hi")], text="hi")], title="Card <1>")
    assert doc.startswith("<!doctype html>")
    assert "<title>Card &lt;1&gt;</title>" in doc
    for rule in ("Lato", "#1d1c1d", "#1264a3", "#007a5a", "#e01e5a",
                 "grid-template-columns:1fr 1fr", "font-size:13px", "font-size:18px"):
        assert rule in doc, rule
    assert read(doc).balanced


# --- never raises -------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
    | st.sampled_from(["mrkdwn", "plain_text", "section", "header", "context", "actions",
                       "input", "image", "rich_text", "button", "static_select", "*x*",
                       "<@U1>", "<https://x|y>", "```", "&gt; q"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "text", "elements", "fields", "accessory", "element", "label",
                         "options", "initial_option", "style", "title", "submit", "close",
                         "blocks", "placeholder", "hint", "optional", "image_url",
                         "initial_value", "multiline", "value", "action_id", "url",
                         "initial_date", "slack_file", "unicode"]), kids, max_size=5),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(blocks=st.lists(JSON, max_size=5), view=JSON, text=JSON)
def test_odd_input_never_raises_and_stays_balanced(blocks: list[Any], view: Any,
                                                    text: Any) -> None:
    for html in (render_message_html(blocks, text=text, author=text, ts_label=text),
                 render_view_html(view), render_blocks_html(view)):
        assert isinstance(html, str)
        assert read(html).balanced


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_mrkdwn_yields_balanced_html_of_inline_tags_only(source: str) -> None:
    html = mrkdwn_to_html(source)
    r = read(html)
    assert r.balanced
    assert set(tags_of(html)) <= {"b", "i", "s", "code", "pre", "br", "blockquote", "span", "a"}
