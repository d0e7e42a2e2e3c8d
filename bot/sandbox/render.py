"""Block Kit as HTML that looks like Slack: for looking at cards and modals without Slack.

Pure and stdlib only: blocks in, an HTML string out. It never raises, whatever the input
(missing keys, wrong types, unknown block types): a block that cannot be drawn becomes a
dashed box naming its type, so a picture always shows where something is off.

mrkdwn arrives escaped the way Slack expects (`&amp;`, `&lt;`, `&gt;`, with raw `<...>`
only around links, mentions and dates): those entities are decoded exactly once and the
result escaped for HTML, so a customer called `<script>` or `<@U1>` stays text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import date
from typing import Any

__all__ = ["mrkdwn_to_html", "page", "render_blocks_html", "render_message_html",
           "render_view_html"]

# Placeholders for pieces already turned into HTML (links, mentions, code) while the rest
# of a mrkdwn string is still being formatted. Private-use characters, stripped from input.
_OPEN, _CLOSE = "\ue000", "\ue001"
_HELD = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_TOKEN = re.compile(r"<([^<>\n]*)>")
_PRE = re.compile(r"```(.+?)```", re.S)
_CODE = re.compile(r"`([^`\n]+)`")
_URL = re.compile(r"(?i)^(?:https?|mailto|tel|slack):")
_IMAGE_URL = re.compile(r"(?i)^(?:https?:|data:image/)")


def _styled(mark: str, tag: str) -> tuple[re.Pattern[str], str]:
    """`*bold*`-style markup: opens after a non-word character, never on a space."""
    m = re.escape(mark)
    pattern = re.compile(
        rf"(?<![\w{m}]){m}([^{m}\s](?:[^{m}\n]*[^{m}\s])?){m}(?![\w{m}])")
    return pattern, rf"<{tag}>\1</{tag}>"


_STYLES = [_styled("*", "b"), _styled("_", "i"), _styled("~", "s")]

_PALETTE = ("#4a154b", "#1264a3", "#007a5a", "#e01e5a", "#ecb22e", "#36c5f0", "#2eb67d")


# --- small defensive readers -----------------------------------------------------------------


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return ""
    return str(value) if isinstance(value, int | float) else ""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _decode(text: str) -> str:
    """Slack's three entities, decoded once: `&amp;lt;` becomes the literal text `&lt;`."""
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def _attr(name: str, value: object) -> str:
    text = _str(value)
    return f' {name}="{_esc(text)}"' if text else ""


# --- mrkdwn ------------------------------------------------------------------------------------


def mrkdwn_to_html(text: object) -> str:
    """Slack mrkdwn as an HTML fragment: bold, italic, strike, code, pre, quotes, links,
    mentions, broadcasts and dates (shown as their fallback), newlines as `<br>`."""
    if not isinstance(text, str):
        return ""
    text = text.replace("\r\n", "\n").replace(_OPEN, "").replace(_CLOSE, "")
    held: list[str] = []

    def hold(fragment: str) -> str:
        held.append(fragment)
        return f"{_OPEN}{len(held) - 1}{_CLOSE}"

    out = _TOKEN.sub(lambda m: hold(_token_html(m.group(1))), text)
    out = _esc(_decode(out))
    out = _PRE.sub(lambda m: hold(f'<pre class="pre">{_pre_body(m.group(1))}</pre>'), out)
    out = _CODE.sub(lambda m: hold(f'<code class="code">{m.group(1)}</code>'), out)
    for pattern, repl in _STYLES:
        out = pattern.sub(repl, out)
    out = _quotes_and_lines(out)
    for _ in range(3):  # held pieces may hold others (a link inside code)
        if _OPEN not in out:
            break
        out = _HELD.sub(lambda m: held[int(m.group(1))], out)
    return out


def _pre_body(body: str) -> str:
    if body.startswith("\n"):
        body = body[1:]
    return body[:-1] if body.endswith("\n") else body


def _quotes_and_lines(text: str) -> str:
    """Lines starting with `>` (raw or `&gt;`, both are quotes in Slack) grouped into
    blockquotes; other newlines become `<br>`."""
    parts: list[str] = []
    quote: list[str] = []
    plain: list[str] = []

    def flush_quote() -> None:
        if quote:
            parts.append(f'<blockquote class="quote">{"<br>".join(quote)}</blockquote>')
            quote.clear()

    def flush_plain() -> None:
        if plain:
            parts.append("<br>".join(plain))
            plain.clear()

    for line in text.split("\n"):
        if line.startswith("&gt;"):
            flush_plain()
            rest = line[4:]
            quote.append(rest[1:] if rest.startswith(" ") else rest)
        else:
            flush_quote()
            plain.append(line)
    flush_quote()
    flush_plain()
    return "".join(parts)


def _token_html(body: str) -> str:
    """One `<...>` token: a user, channel, broadcast, date or link."""
    target, _, label = body.partition("|")
    if target.startswith("@"):
        return f'<span class="mention">@{_esc(_decode(label or target[1:]))}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{_esc(_decode(label or target[1:]))}</span>'
    if target.startswith("!"):
        command = target[1:]
        if command.startswith("date^"):
            return f'<span class="date">{_esc(_decode(label or "a date"))}</span>'
        if command in ("channel", "here", "everyone"):
            return f'<span class="mention broadcast">@{command}</span>'
        if command.startswith("subteam^"):
            name = _decode(label or command.partition("^")[2])
            name = name if name.startswith("@") else f"@{name}"
            return f'<span class="mention">{_esc(name)}</span>'
        return f'<span class="mention">@{_esc(_decode(label or command))}</span>'
    url = _decode(target)
    if _URL.match(url):
        return f'<a class="link" href="{_esc(url)}">{_esc(_decode(label or target))}</a>'
    return _esc(_decode(f"<{body}>"))


# --- text objects and elements --------------------------------------------------------------


def _text(obj: object) -> str:
    """A text object as HTML: mrkdwn formatted, plain_text (or a bare string) as is."""
    if isinstance(obj, str):
        return _esc(obj)
    data = _dict(obj)
    if data.get("type") == "mrkdwn":
        return mrkdwn_to_html(data.get("text"))
    return _esc(_str(data.get("text")))


def _ids(element: dict[str, Any]) -> str:
    """Hooks for the sandbox page to wire clicks and inputs back to Bolt."""
    return _attr("data-action-id", element.get("action_id")) + _attr(
        "data-value", element.get("value"))


def _button(el: dict[str, Any]) -> str:
    style = el.get("style")
    cls = "btn" + {"primary": " btn-primary", "danger": " btn-danger"}.get(_str(style), "")
    label = _text(el.get("text")) or "&nbsp;"
    url = _str(el.get("url"))
    if _URL.match(url):
        return f'<a class="{cls}" href="{_esc(url)}"{_ids(el)}>{label}</a>'
    return f'<button type="button" class="{cls}"{_ids(el)}>{label}</button>'


def _option_text(opt: object) -> str:
    return _text(_dict(opt).get("text"))


def _select(el: dict[str, Any]) -> str:
    kind = _str(el.get("type"))
    shown: list[str] = []
    if el.get("initial_option"):
        shown.append(_option_text(el.get("initial_option")))
    shown += [_option_text(o) for o in _list(el.get("initial_options"))]
    for key, sigil in (("initial_user", "@"), ("initial_conversation", "#"),
                       ("initial_channel", "#")):
        if _str(el.get(key)):
            shown.append(f'<span class="mention">{sigil}{_esc(_str(el[key]))}</span>')
    for key, sigil in (("initial_users", "@"), ("initial_conversations", "#"),
                       ("initial_channels", "#")):
        shown += [f'<span class="mention">{sigil}{_esc(_str(v))}</span>'
                  for v in _list(el.get(key)) if _str(v)]
    if shown:
        inner = f'<span class="select-value">{", ".join(shown)}</span>'
    else:
        default = "Select a person" if "user" in kind else "Select an item"
        inner = f'<span class="placeholder">{_text(el.get("placeholder")) or default}</span>'
    return (f'<div class="select" data-type="{_esc(kind)}"{_ids(el)}>{inner}'
            f'<span class="chevron">▾</span></div>')


def _picker(el: dict[str, Any], *, value: str, icon: str, fallback: str) -> str:
    if value:
        inner = f'<span class="select-value">{_esc(value)}</span>'
    else:
        inner = f'<span class="placeholder">{_text(el.get("placeholder")) or fallback}</span>'
    return f'<div class="select picker"{_ids(el)}><span class="icon">{icon}</span>{inner}</div>'


def _day_words(iso: str) -> str:
    try:
        day = date.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{day.strftime('%a')}, {day.strftime('%b')} {day.day}, {day.year}"


def _choices(el: dict[str, Any], *, kind: str) -> str:
    chosen = [_dict(el.get("initial_option"))] if el.get("initial_option") else []
    chosen += [_dict(o) for o in _list(el.get("initial_options"))]
    chosen_values = {_str(o.get("value")) for o in chosen}
    name = _esc(_str(el.get("action_id")) or kind)
    rows: list[str] = []
    for opt in _list(el.get("options")):
        o = _dict(opt)
        on = " checked" if o and _str(o.get("value")) in chosen_values else ""
        desc = o.get("description")
        more = f'<span class="choice-desc">{_text(desc)}</span>' if desc else ""
        rows.append(f'<label class="choice"><input type="{kind}" name="{name}"'
                    f'{_attr("value", o.get("value"))}{on}>'
                    f'<span class="choice-text">{_text(o.get("text"))}{more}</span></label>')
    return f'<div class="choices"{_ids(el)}>{"".join(rows)}</div>'


def _text_input(el: dict[str, Any]) -> str:
    kind = _str(el.get("type"))
    value = _str(el.get("initial_value"))
    placeholder = _attr("placeholder", _dict(el.get("placeholder")).get("text"))
    if el.get("multiline") is True or kind == "rich_text_input":
        rows = max(3, min(20, sum(1 + len(line) // 56 for line in value.split("\n"))))
        return (f'<textarea class="text-input" rows="{rows}"{placeholder}{_ids(el)}>'
                f"{_esc(value)}</textarea>")
    input_type = {"email_text_input": "email", "url_text_input": "url",
                  "number_input": "text"}.get(kind, "text")
    return (f'<input class="text-input" type="{input_type}"{_attr("value", value)}'
            f"{placeholder}{_ids(el)}>")


def _image_element(el: dict[str, Any], *, cls: str) -> str:
    url = _str(el.get("image_url"))
    alt = _str(el.get("alt_text"))
    if _IMAGE_URL.match(url):
        return f'<img class="{cls}" src="{_esc(url)}" alt="{_esc(alt)}">'
    return f'<span class="{cls} img-missing" title="{_esc(alt)}">🖼</span>'


def _element(obj: object) -> str:
    el = _dict(obj)
    kind = _str(el.get("type"))
    if kind in ("button", "workflow_button"):
        return _button(el)
    if kind.endswith("_select"):
        return _select(el)
    if kind == "overflow":
        return f'<button type="button" class="btn btn-overflow"{_ids(el)}>⋯</button>'
    if kind == "datepicker":
        return _picker(el, value=_day_words(_str(el.get("initial_date"))), icon="📅",
                       fallback="Select a date")
    if kind == "timepicker":
        return _picker(el, value=_str(el.get("initial_time")), icon="🕒",
                       fallback="Select a time")
    if kind == "datetimepicker":
        return _picker(el, value=_str(el.get("initial_date_time")), icon="📅",
                       fallback="Select a date and time")
    if kind == "radio_buttons":
        return _choices(el, kind="radio")
    if kind == "checkboxes":
        return _choices(el, kind="checkbox")
    if kind.endswith("_input"):
        return _text_input(el)
    if kind == "image":
        return _image_element(el, cls="el-image")
    return f'<span class="unknown unknown-el">{_esc(kind or "element")}</span>'


# --- blocks ------------------------------------------------------------------------------------


def _header(b: dict[str, Any]) -> str:
    return f'<div class="blk header">{_text(b.get("text"))}</div>'


def _section(b: dict[str, Any]) -> str:
    main = ""
    if b.get("text"):
        main += f'<div class="section-text">{_text(b.get("text"))}</div>'
    fields = [f'<div class="field">{_text(f)}</div>' for f in _list(b.get("fields"))]
    if fields:
        main += f'<div class="fields">{"".join(fields)}</div>'
    accessory = ""
    if b.get("accessory"):
        acc = _dict(b.get("accessory"))
        inner = (_image_element(acc, cls="acc-image") if acc.get("type") == "image"
                 else _element(acc))
        accessory = f'<div class="accessory">{inner}</div>'
    return f'<div class="blk section"><div class="section-main">{main}</div>{accessory}</div>'


def _context(b: dict[str, Any]) -> str:
    parts: list[str] = []
    for obj in _list(b.get("elements")):
        el = _dict(obj)
        if el.get("type") == "image":
            parts.append(_image_element(el, cls="ctx-image"))
        else:
            parts.append(f'<span class="ctx-text">{_text(el)}</span>')
    return f'<div class="blk context">{"".join(parts)}</div>'


def _actions(b: dict[str, Any]) -> str:
    elements = "".join(_element(e) for e in _list(b.get("elements")))
    return f'<div class="blk actions">{elements}</div>'


def _image_block(b: dict[str, Any]) -> str:
    title = f'<div class="image-title">{_text(b.get("title"))}</div>' if b.get("title") else ""
    url = _str(b.get("image_url"))
    alt = _str(b.get("alt_text"))
    if _IMAGE_URL.match(url):
        img = f'<img class="image" src="{_esc(url)}" alt="{_esc(alt)}">'
    else:
        file_id = _str(_dict(b.get("slack_file")).get("id"))
        where = f" · Slack file {_esc(file_id)}" if file_id else ""
        img = f'<div class="image img-missing">🖼 {_esc(alt) or "image"}{where}</div>'
    return f'<div class="blk image-block">{title}{img}</div>'


def _input(b: dict[str, Any]) -> str:
    optional = ' <span class="optional">(optional)</span>' if b.get("optional") is True else ""
    hint = f'<div class="hint">{_text(b.get("hint"))}</div>' if b.get("hint") else ""
    label = f'<label class="input-label">{_text(b.get("label"))}{optional}</label>'
    return (f'<div class="blk input"{_attr("data-block-id", b.get("block_id"))}>'
            f"{label}{_element(b.get('element'))}{hint}</div>")


def _rich_inline(obj: object) -> str:
    el = _dict(obj)
    kind = _str(el.get("type"))
    if kind == "text":
        out = _esc(_str(el.get("text"))).replace("\n", "<br>")
        style = _dict(el.get("style"))
        for key, tag in (("code", "code"), ("bold", "b"), ("italic", "i"), ("strike", "s")):
            if style.get(key) is True:
                out = (f'<code class="code">{out}</code>' if tag == "code"
                       else f"<{tag}>{out}</{tag}>")
        return out
    if kind == "link":
        url = _str(el.get("url"))
        label = _esc(_str(el.get("text")) or url)
        return f'<a class="link" href="{_esc(url)}">{label}</a>' if _URL.match(url) else label
    if kind == "user":
        return f'<span class="mention">@{_esc(_str(el.get("user_id")))}</span>'
    if kind == "usergroup":
        return f'<span class="mention">@{_esc(_str(el.get("usergroup_id")))}</span>'
    if kind == "channel":
        return f'<span class="mention">#{_esc(_str(el.get("channel_id")))}</span>'
    if kind == "broadcast":
        return f'<span class="mention broadcast">@{_esc(_str(el.get("range")))}</span>'
    if kind == "emoji":
        glyph = _emoji(_str(el.get("unicode")))
        return _esc(glyph or f":{_str(el.get('name'))}:")
    if kind == "date":
        return f'<span class="date">{_esc(_str(el.get("fallback")) or "a date")}</span>'
    return ""


def _emoji(codepoints: str) -> str:
    """`1f44d` or `1f1fa-1f1f8` as the characters; empty when it is not that."""
    try:
        return "".join(chr(int(cp, 16)) for cp in codepoints.split("-")) if codepoints else ""
    except (ValueError, OverflowError):
        return ""


def _rich_part(obj: object) -> str:
    part = _dict(obj)
    kind = _str(part.get("type"))
    inline = "".join(_rich_inline(e) for e in _list(part.get("elements")))
    if kind == "rich_text_preformatted":
        return f'<pre class="pre">{inline}</pre>'
    if kind == "rich_text_quote":
        return f'<blockquote class="quote">{inline}</blockquote>'
    if kind == "rich_text_list":
        tag = "ol" if part.get("style") == "ordered" else "ul"
        items = "".join(f"<li>{_rich_part(e)}</li>" for e in _list(part.get("elements")))
        return f'<{tag} class="rich-list">{items}</{tag}>'
    return f"<div>{inline}</div>"


def _rich_text(b: dict[str, Any]) -> str:
    parts = "".join(_rich_part(p) for p in _list(b.get("elements")))
    return f'<div class="blk rich-text">{parts}</div>'


def _markdown(b: dict[str, Any]) -> str:
    return f'<div class="blk markdown">{_esc(_str(b.get("text"))).replace(chr(10), "<br>")}</div>'


def _divider(_: dict[str, Any]) -> str:
    return '<hr class="blk divider">'


_BLOCKS: dict[str, Callable[[dict[str, Any]], str]] = {
    "header": _header,
    "section": _section,
    "context": _context,
    "divider": _divider,
    "actions": _actions,
    "image": _image_block,
    "input": _input,
    "rich_text": _rich_text,
    "markdown": _markdown,
}


def _unknown(kind: str, why: str = "") -> str:
    return (f'<div class="blk unknown">{_esc(kind or "block without a type")}'
            f"{f' · {_esc(why)}' if why else ''}</div>")


def render_blocks_html(blocks: object) -> str:
    """The blocks, one after another; never raises."""
    out: list[str] = []
    for obj in _list(blocks):
        block = _dict(obj)
        kind = _str(block.get("type"))
        draw = _BLOCKS.get(kind)
        if draw is None:
            out.append(_unknown(kind))
            continue
        try:
            out.append(draw(block))
        except Exception as exc:  # a picture must still come out; the box says what broke
            out.append(_unknown(kind, f"could not render: {type(exc).__name__}"))
    return "".join(out)


# --- a message, a view, a page ---------------------------------------------------------------


def render_message_html(blocks: list[dict[str, Any]], *, text: str, author: str = "dunning",
                        ts_label: str = "") -> str:
    """One Slack message: avatar, author (an app), time, then its blocks (or, without
    blocks, its fallback `text` as mrkdwn, which is what Slack shows then)."""
    name = _str(author) or "app"
    color = _PALETTE[sum(map(ord, name)) % len(_PALETTE)]
    body = render_blocks_html(blocks) if _list(blocks) else (
        f'<div class="blk section"><div class="section-main"><div class="section-text">'
        f"{mrkdwn_to_html(text)}</div></div></div>")
    time = f'<span class="ts">{_esc(_str(ts_label))}</span>' if _str(ts_label) else ""
    return (f'<article class="msg"{_attr("data-text", text)}>'
            f'<div class="avatar" style="background:{color}">{_esc(name[0].upper())}</div>'
            f'<div class="msg-body"><div class="msg-meta"><span class="author">{_esc(name)}'
            f'</span><span class="app-badge">APP</span>{time}</div>'
            f'<div class="blocks">{body}</div></div></article>')


def render_view_html(view: dict[str, Any]) -> str:
    """A modal (title bar, blocks, close and submit buttons) or, for `type: home`, an App
    Home tab."""
    v = _dict(view)
    blocks = render_blocks_html(v.get("blocks"))
    if v.get("type") == "home":
        return f'<section class="home"><div class="blocks">{blocks}</div></section>'
    title = _text(v.get("title")) or "Modal"
    close = _text(v.get("close")) or "Cancel"
    buttons = f'<button type="button" class="btn btn-large">{close}</button>'
    if v.get("submit"):
        buttons += (f'<button type="button" class="btn btn-large btn-primary">'
                    f'{_text(v.get("submit"))}</button>')
    return (f'<div class="view-stage"><section class="modal"'
            f'{_attr("data-callback-id", v.get("callback_id"))}>'
            f'<header class="modal-head"><span class="modal-icon">D</span>'
            f'<span class="modal-title">{title}</span><span class="modal-x">×</span></header>'
            f'<div class="modal-body blocks">{blocks}</div>'
            f'<footer class="modal-foot">{buttons}</footer></section></div>')


CSS = """
*{box-sizing:border-box}
html,body{margin:0;background:#fff}
body{font-family:Lato,"Slack-Lato","Helvetica Neue",Helvetica,"Segoe UI",Arial,sans-serif,
 "Noto Color Emoji";font-size:15px;line-height:1.46668;color:#1d1c1d;
 -webkit-font-smoothing:antialiased}
.page{padding:0}
.frag+.frag{margin-top:16px}
a,.link{color:#1264a3;text-decoration:none}
b{font-weight:700}
.msg{display:flex;gap:8px;padding:16px 20px 12px;background:#fff}
.avatar{flex:0 0 36px;height:36px;border-radius:6px;color:#fff;font-weight:900;
 font-size:18px;display:flex;align-items:center;justify-content:center;margin-top:2px}
.msg-body{flex:1;min-width:0}
.msg-meta{display:flex;align-items:baseline;gap:6px;line-height:22px}
.author{font-weight:900}
.app-badge{font-size:10px;font-weight:700;color:rgba(29,28,29,.7);
 background:rgba(29,28,29,.13);border-radius:2px;padding:0 3px;line-height:16px}
.ts{font-size:12px;color:#616061}
.blk{margin:8px 0}
.blk:first-child{margin-top:2px}
.blk:last-child{margin-bottom:0}
.header{font-size:18px;font-weight:900;line-height:1.33;margin:4px 0 8px}
.section{display:flex;gap:16px;align-items:flex-start}
.section-main{flex:1;min-width:0;overflow-wrap:anywhere}
.fields{display:grid;grid-template-columns:1fr 1fr;gap:8px 24px;margin-top:8px;max-width:640px}
.section-text+.fields{margin-top:10px}
.accessory{flex:0 0 auto}
.acc-image{width:88px;height:88px;object-fit:cover;border-radius:6px}
.context{display:flex;flex-wrap:wrap;align-items:center;gap:4px 8px;font-size:13px;
 line-height:1.38463;color:#616061}
.context b{color:#616061}
.ctx-image{width:20px;height:20px;border-radius:4px}
.divider{border:0;border-top:1px solid rgba(29,28,29,.13);margin:12px 0}
.actions{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0 4px}
.btn{font:inherit;font-size:13px;font-weight:700;line-height:1;height:28px;padding:0 12px;
 display:inline-flex;align-items:center;justify-content:center;white-space:nowrap;
 border:1px solid rgba(29,28,29,.3);border-radius:4px;background:#fff;color:#1d1c1d;
 cursor:pointer}
.btn-primary{background:#007a5a;border-color:#007a5a;color:#fff}
.btn-danger{background:#e01e5a;border-color:#e01e5a;color:#fff}
.btn-overflow{width:28px;padding:0;font-size:16px}
.btn-large{font-size:15px;height:36px;padding:0 16px;min-width:80px}
.select{display:inline-flex;align-items:center;gap:8px;min-width:200px;min-height:28px;
 padding:3px 10px;border:1px solid rgba(29,28,29,.3);border-radius:4px;background:#fff;
 font-size:15px;line-height:1.2}
.actions .select{font-size:13px;font-weight:700}
.input .select{display:flex;min-height:40px;padding:8px 12px}
.select-value{flex:1}
.placeholder{flex:1;color:#868686;font-weight:400}
.chevron{color:#616061;font-size:12px}
.icon{font-size:14px}
.code{font-family:Monaco,Menlo,Consolas,"Courier New",monospace;font-size:12px;
 color:#e01e5a;background:rgba(29,28,29,.04);border:1px solid rgba(29,28,29,.13);
 border-radius:3px;padding:2px 3px 1px}
.pre{font-family:Monaco,Menlo,Consolas,"Courier New",monospace;font-size:12px;line-height:1.5;
 margin:4px 0;padding:8px;white-space:pre-wrap;overflow-wrap:anywhere;
 background:rgba(29,28,29,.04);border:1px solid rgba(29,28,29,.13);border-radius:4px}
.quote{margin:4px 0;padding:0 0 0 12px;border-left:4px solid rgba(29,28,29,.2)}
.mention{color:#1264a3;background:rgba(29,155,209,.1);border-radius:3px;padding:0 2px}
.broadcast{color:#1d1c1d;background:rgba(242,199,68,.4)}
.image-title{font-size:13px;color:#616061;margin-bottom:4px}
.image{max-width:360px;max-height:360px;border-radius:8px;display:block}
.img-missing{display:flex;align-items:center;justify-content:center;gap:6px;
 background:rgba(29,28,29,.04);border:1px dashed rgba(29,28,29,.3);color:#616061;
 font-size:13px}
div.image.img-missing{width:360px;height:180px}
span.img-missing{display:inline-flex;width:20px;height:20px;font-size:11px}
.acc-image.img-missing{width:88px;height:88px}
.unknown{border:1px dashed #e01e5a;color:#e01e5a;border-radius:4px;padding:6px 10px;
 font-size:13px;font-family:Monaco,Menlo,Consolas,monospace}
.unknown-el{display:inline-block;padding:2px 8px}
.rich-list{margin:2px 0;padding-left:24px}
body:has(.view-stage){background:#e8e8e8}
.view-stage{padding:28px 0 36px;display:flex;justify-content:center}
.modal{width:520px;background:#fff;border-radius:8px;overflow:hidden;
 box-shadow:0 0 0 1px rgba(29,28,29,.13),0 8px 24px rgba(0,0,0,.18)}
.modal-head{display:flex;align-items:center;gap:12px;padding:0 20px 0 28px;height:70px;
 border-bottom:1px solid rgba(29,28,29,.13)}
.modal-icon{width:24px;height:24px;border-radius:4px;background:#4a154b;color:#fff;
 font-weight:900;font-size:13px;display:flex;align-items:center;justify-content:center}
.modal-title{flex:1;font-size:22px;font-weight:900;line-height:1.27}
.modal-x{font-size:26px;color:#616061;line-height:1}
.modal-body{padding:16px 28px 20px}
.modal-body .blk{margin:10px 0}
.modal-foot{display:flex;justify-content:flex-end;gap:12px;padding:20px 28px;
 border-top:1px solid rgba(29,28,29,.13)}
.input{margin:16px 0}
.input-label{display:block;font-weight:700;margin-bottom:8px}
.optional{font-weight:400;color:#616061}
.hint{font-size:13px;color:#616061;margin-top:6px}
.text-input{display:block;width:100%;font:inherit;font-size:15px;line-height:1.46668;
 color:#1d1c1d;padding:9px 12px;border:1px solid rgba(29,28,29,.3);border-radius:4px;
 background:#fff;resize:vertical}
textarea.text-input{field-sizing:content;min-height:84px;max-height:640px}
input.text-input{height:40px}
.choices{display:flex;flex-direction:column;gap:10px}
.choice{display:flex;gap:10px;align-items:flex-start}
.choice input{accent-color:#1264a3;margin:4px 0 0;width:16px;height:16px}
.choice-desc{display:block;font-size:13px;color:#616061}
.home{padding:12px 20px}
"""


def page(fragments: list[str], *, title: str) -> str:
    """A standalone HTML document holding the fragments, with Slack-like styling."""
    body = "".join(f'<div class="frag">{f}</div>' for f in _list(fragments) if isinstance(f, str))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(_str(title))}</title><style>{CSS}</style></head>"
            f'<body><main class="page">{body}</main></body></html>\n')
