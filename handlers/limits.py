"""Slack's Block Kit limits, checked by us before anything is posted or opened.

Slack answers an oversized or malformed payload with `invalid_blocks` and no detail, and
slack-sdk checks only some limits (and only at `to_dict()`). `check_message` and
`check_view` name every problem at once, then round-trip each block through slack-sdk's
models, which also catches unknown keys (a typo the SDK would drop silently) and shapes
its own validators refuse. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block as SdkBlock
from slack_sdk.models.views import View as SdkView

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255  # action_id, block_id, callback_id
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_HEADER_TEXT = 150
MAX_VIEW_TITLE = 24  # also submit and close
MAX_INPUT_VALUE = 3000  # plain_text_input initial_value and max_length
MAX_PRIVATE_METADATA = 3000
MAX_TEXT_OBJECT = 3000  # any text object: context elements, input labels ...
MAX_LABEL = 2000  # input label and hint
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_OPTIONS = 100  # static_select
MAX_RADIO_OPTIONS = 10
MAX_PLACEHOLDER = 150
MAX_FALLBACK_TEXT = 40_000  # Slack truncates longer message text
# Slack refuses large block payloads with `msg_blocks_too_long` at a size it does not
# document (reported near 13,000 characters of text, slackapi/bolt-js#2509): we keep the
# visible text of one message's blocks under this budget.
MESSAGE_TEXT_BUDGET = 12_000

_TEXT_TYPES = ("plain_text", "mrkdwn")


class BlockLimitError(ValueError):
    """A message or view Slack would refuse; `problems` names each one with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Block Kit limits exceeded:\n" + "\n".join(f"  - {p}" for p in problems))


def check_message(blocks: Sequence[Mapping[str, Any]], text: str) -> None:
    """Raise `BlockLimitError` unless `blocks` + fallback `text` make a postable message."""
    problems: list[str] = []
    if not text or not text.strip():
        problems.append("text: the fallback text must not be empty")
    elif len(text) > MAX_FALLBACK_TEXT:
        problems.append(f"text: {len(text)} characters, more than {MAX_FALLBACK_TEXT}")
    if not blocks:
        problems.append("blocks: a message needs at least one block")
    if len(blocks) > MAX_MESSAGE_BLOCKS:
        problems.append(f"blocks: {len(blocks)} blocks, more than {MAX_MESSAGE_BLOCKS} per message")
    _check_blocks(blocks, problems, surface="message")
    size = sum(_text_size(b) for b in blocks)
    if size > MESSAGE_TEXT_BUDGET:
        problems.append(f"blocks: {size} characters of text, more than the "
                        f"{MESSAGE_TEXT_BUDGET} a message may safely carry")
    if problems:
        raise BlockLimitError(problems)


def check_view(view: Mapping[str, Any]) -> None:
    """Raise `BlockLimitError` unless `view` is a valid modal or App Home view."""
    problems: list[str] = []
    kind = view.get("type")
    blocks: Sequence[Mapping[str, Any]] = view.get("blocks") or []
    if kind not in ("modal", "home"):
        problems.append(f"type: {kind!r} is not 'modal' or 'home'")
    if not blocks:
        problems.append("blocks: a view needs at least one block")
    if len(blocks) > MAX_VIEW_BLOCKS:
        problems.append(f"blocks: {len(blocks)} blocks, more than {MAX_VIEW_BLOCKS} per view")
    if kind == "modal":
        title = _text_of(view.get("title"))
        if title is None or not title.strip():
            problems.append("title: a modal needs a title")
        for key in ("title", "submit", "close"):
            value = _text_of(view.get(key))
            if value is not None and len(value) > MAX_VIEW_TITLE:
                problems.append(f"{key}: {len(value)} characters, more than {MAX_VIEW_TITLE}")
            if value is not None and view[key].get("type") != "plain_text":
                problems.append(f"{key}: must be plain_text")
        has_input = any(b.get("type") == "input" for b in blocks)
        if has_input and view.get("submit") is None:
            problems.append("submit: a modal with input blocks needs a submit button")
    if kind == "home" and (view.get("submit") is not None or view.get("close") is not None):
        problems.append("home: an App Home view has no submit or close")
    callback_id = view.get("callback_id")
    if callback_id is not None and len(callback_id) > MAX_ID:
        problems.append(f"callback_id: longer than {MAX_ID} characters")
    metadata = view.get("private_metadata")
    if metadata is not None and len(metadata) > MAX_PRIVATE_METADATA:
        problems.append(f"private_metadata: {len(metadata)} characters, more than "
                        f"{MAX_PRIVATE_METADATA}")
    _check_blocks(blocks, problems, surface=str(kind))
    if not problems:
        _round_trip_view(view, problems)
    if problems:
        raise BlockLimitError(problems)


def _check_blocks(blocks: Sequence[Mapping[str, Any]], problems: list[str], *,
                  surface: str) -> None:
    seen_block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_block_ids:
                problems.append(f"{where}.block_id: {block_id!r} is used twice")
            seen_block_ids.add(block_id)
        before = len(problems)
        _check_block(block, where, problems, surface=surface)
        if len(problems) == before:
            _round_trip_block(block, where, problems)


def _check_block(block: Mapping[str, Any], where: str, problems: list[str], *,
                 surface: str) -> None:
    kind = block.get("type")
    _check_id(block.get("block_id"), f"{where}.block_id", problems)
    if kind == "section":
        text = block.get("text")
        fields = block.get("fields") or []
        if text is None and not fields:
            problems.append(f"{where}: a section needs text or fields")
        if text is not None:
            _check_text(text, f"{where}.text", MAX_SECTION_TEXT, problems)
        if len(fields) > MAX_FIELDS:
            problems.append(f"{where}.fields: {len(fields)} fields, more than {MAX_FIELDS}")
        for j, f in enumerate(fields):
            _check_text(f, f"{where}.fields[{j}]", MAX_FIELD_TEXT, problems)
        if block.get("accessory") is not None:
            _check_element(block["accessory"], f"{where}.accessory", problems)
    elif kind == "header":
        _check_text(block.get("text"), f"{where}.text", MAX_HEADER_TEXT, problems,
                    plain_only=True)
    elif kind == "context":
        elements = block.get("elements") or []
        if not elements:
            problems.append(f"{where}.elements: a context block needs elements")
        if len(elements) > MAX_CONTEXT_ELEMENTS:
            problems.append(f"{where}.elements: {len(elements)} elements, more than "
                            f"{MAX_CONTEXT_ELEMENTS}")
        for j, e in enumerate(elements):
            if e.get("type") in _TEXT_TYPES:
                _check_text(e, f"{where}.elements[{j}]", MAX_TEXT_OBJECT, problems)
    elif kind == "actions":
        elements = block.get("elements") or []
        if not elements:
            problems.append(f"{where}.elements: an actions block needs elements")
        if len(elements) > MAX_ACTIONS_ELEMENTS:
            problems.append(f"{where}.elements: {len(elements)} elements, more than "
                            f"{MAX_ACTIONS_ELEMENTS}")
        action_ids = [e.get("action_id") for e in elements if e.get("action_id")]
        for dup in sorted({a for a in action_ids if action_ids.count(a) > 1}):
            problems.append(f"{where}.elements: action_id {dup!r} is used twice in one block")
        for j, e in enumerate(elements):
            _check_element(e, f"{where}.elements[{j}]", problems)
    elif kind == "input":
        if surface == "message":
            problems.append(f"{where}: input blocks belong in modals, not messages")
        _check_text(block.get("label"), f"{where}.label", MAX_LABEL, problems, plain_only=True)
        if block.get("hint") is not None:
            _check_text(block["hint"], f"{where}.hint", MAX_LABEL, problems, plain_only=True)
        element = block.get("element")
        if element is None:
            problems.append(f"{where}.element: an input block needs an element")
        else:
            _check_element(element, f"{where}.element", problems)
    elif kind == "image":
        if not block.get("alt_text"):
            problems.append(f"{where}.alt_text: an image needs alt text")
        if not block.get("image_url") and not block.get("slack_file"):
            problems.append(f"{where}: an image needs image_url or slack_file")
    elif kind == "divider":
        pass
    else:
        problems.append(f"{where}.type: {kind!r} is not a block type these builders use")


def _check_element(element: Mapping[str, Any], where: str, problems: list[str]) -> None:
    kind = element.get("type")
    _check_id(element.get("action_id"), f"{where}.action_id", problems)
    if element.get("placeholder") is not None:
        _check_text(element["placeholder"], f"{where}.placeholder", MAX_PLACEHOLDER, problems,
                    plain_only=True)
    if kind == "button":
        _check_text(element.get("text"), f"{where}.text", MAX_BUTTON_TEXT, problems,
                    plain_only=True)
        value = element.get("value")
        if value is not None and len(value) > MAX_BUTTON_VALUE:
            problems.append(f"{where}.value: {len(value)} characters, more than "
                            f"{MAX_BUTTON_VALUE}")
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(f"{where}.style: {element.get('style')!r} is not primary or danger")
    elif kind in ("static_select", "radio_buttons", "checkboxes", "overflow"):
        options = element.get("options") or []
        most = MAX_RADIO_OPTIONS if kind in ("radio_buttons", "checkboxes") else MAX_OPTIONS
        if not options:
            problems.append(f"{where}.options: a {kind} needs options")
        if len(options) > most:
            problems.append(f"{where}.options: {len(options)} options, more than {most}")
        values = [o.get("value") for o in options]
        for dup in sorted({v for v in values if v is not None and values.count(v) > 1}):
            problems.append(f"{where}.options: value {dup!r} is used twice")
        for j, o in enumerate(options):
            _check_option(o, f"{where}.options[{j}]", problems)
        initial = element.get("initial_option")
        if initial is not None and initial not in options:
            problems.append(f"{where}.initial_option: not one of the options")
    elif kind == "plain_text_input":
        initial = element.get("initial_value")
        max_length = element.get("max_length")
        if initial is not None and len(initial) > MAX_INPUT_VALUE:
            problems.append(f"{where}.initial_value: {len(initial)} characters, more than "
                            f"{MAX_INPUT_VALUE}")
        if max_length is not None and not 1 <= max_length <= MAX_INPUT_VALUE:
            problems.append(f"{where}.max_length: must be 1-{MAX_INPUT_VALUE}")
        if (initial is not None and max_length is not None
                and len(initial) > max_length):
            problems.append(f"{where}.initial_value: longer than its max_length {max_length}")
    elif kind in ("datepicker", "users_select", "conversations_select", "channels_select",
                  "external_select", "timepicker"):
        pass
    else:
        problems.append(f"{where}.type: {kind!r} is not an element type these builders use")


def _check_option(option: Mapping[str, Any], where: str, problems: list[str]) -> None:
    _check_text(option.get("text"), f"{where}.text", MAX_OPTION_TEXT, problems)
    value = option.get("value")
    if not value:
        problems.append(f"{where}.value: an option needs a value")
    elif len(value) > MAX_OPTION_VALUE:
        problems.append(f"{where}.value: {len(value)} characters, more than {MAX_OPTION_VALUE}")
    if option.get("description") is not None:
        _check_text(option["description"], f"{where}.description", MAX_OPTION_TEXT, problems)


def _check_text(obj: Any, where: str, limit: int, problems: list[str], *,
                plain_only: bool = False) -> None:
    if not isinstance(obj, Mapping) or obj.get("type") not in _TEXT_TYPES:
        problems.append(f"{where}: expected a text object")
        return
    if plain_only and obj.get("type") != "plain_text":
        problems.append(f"{where}: must be plain_text")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: text must not be empty")
    elif len(text) > limit:
        problems.append(f"{where}: {len(text)} characters, more than {limit}")


def _check_id(value: Any, where: str, problems: list[str]) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: must be a non-empty string")
    elif len(value) > MAX_ID:
        problems.append(f"{where}: {len(value)} characters, more than {MAX_ID}")


def _text_of(obj: Any) -> str | None:
    if isinstance(obj, Mapping):
        text = obj.get("text")
        return text if isinstance(text, str) else None
    return None


def _text_size(obj: Any) -> int:
    """Characters of text in every text object under `obj`."""
    if isinstance(obj, Mapping):
        if obj.get("type") in _TEXT_TYPES and isinstance(obj.get("text"), str):
            return len(obj["text"])
        return sum(_text_size(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_text_size(v) for v in obj)
    return 0


def _round_trip_block(block: Mapping[str, Any], where: str, problems: list[str]) -> None:
    try:
        parsed = SdkBlock.parse(dict(block))
        if parsed is None:
            problems.append(f"{where}: slack-sdk does not know this block")
            return
        again = parsed.to_dict()
    except (SlackObjectFormationError, TypeError, ValueError, KeyError) as exc:
        problems.append(f"{where}: slack-sdk refuses it: {exc}")
        return
    if again != block:
        lost = sorted(set(block) - set(again))
        detail = f" (unknown keys: {', '.join(lost)})" if lost else ""
        problems.append(f"{where}: changes when round-tripped through slack-sdk{detail}")


def _round_trip_view(view: Mapping[str, Any], problems: list[str]) -> None:
    try:
        again = SdkView(**dict(view)).to_dict()
    except (SlackObjectFormationError, TypeError, ValueError, KeyError) as exc:
        problems.append(f"view: slack-sdk refuses it: {exc}")
        return
    if again != view:
        lost = sorted(set(view) - set(again))
        detail = f" (unknown keys: {', '.join(lost)})" if lost else ""
        problems.append(f"view: changes when round-tripped through slack-sdk{detail}")
