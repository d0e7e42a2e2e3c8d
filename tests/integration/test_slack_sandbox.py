"""The Slack sandbox as the real slack-sdk and Bolt clients meet it over loopback HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.sandbox import RESPONSE_URL, UPLOAD, SlackSandbox

TOKEN = "xoxb-test"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def modal(title: str = "Log a promise", *, blocks: int = 1, **extra: object) -> dict[str, object]:
    return {"type": "modal", "callback_id": "promise", "title": {"type": "plain_text",
            "text": title}, "blocks": [section(f"b{i}") for i in range(blocks)], **extra}


@pytest.fixture
def sandbox() -> Iterator[SlackSandbox]:
    with SlackSandbox(token=TOKEN) as running:
        yield running


@pytest.fixture
def client(sandbox: SlackSandbox) -> WebClient:
    return WebClient(token=TOKEN, base_url=sandbox.base_url, timeout=5)


def test_serves_on_loopback_at_a_free_port_and_frees_it_on_stop() -> None:
    sandbox = SlackSandbox(token=TOKEN)
    with pytest.raises(RuntimeError):
        _ = sandbox.base_url
    sandbox.start()
    port = sandbox.port
    assert sandbox.url == f"http://127.0.0.1:{port}/"
    assert sandbox.base_url == f"http://127.0.0.1:{port}/api/"
    assert WebClient(token=TOKEN, base_url=sandbox.base_url).auth_test()["ok"]
    sandbox.stop()
    sandbox.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_auth_test_names_the_bot_and_the_call_log_keeps_the_bearer_token(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    answer = client.auth_test()
    assert answer["user_id"] == sandbox.bot_user_id and answer["bot_id"] == sandbox.bot_id
    assert answer["team_id"] == sandbox.team_id and answer["url"] == sandbox.url
    assert "chat:write" in answer.headers["x-oauth-scopes"]
    (call,) = sandbox.calls("auth.test")
    assert call.token == TOKEN and call.ok and call.status == 200


def test_a_wrong_token_is_invalid_auth_and_none_is_not_authed(sandbox: SlackSandbox) -> None:
    with pytest.raises(SlackApiError) as bad:
        WebClient(token="xoxb-wrong", base_url=sandbox.base_url).chat_postMessage(
            channel="general", text="hi")
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        WebClient(base_url=sandbox.base_url).auth_test()
    assert missing.value.response["error"] == "not_authed"
    assert [c.token for c in sandbox.calls()] == ["xoxb-wrong", None]
    assert sandbox.messages("general") == []


def test_unknown_methods_answer_unknown_method(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        client.api_call("chat.postMessag", json={"channel": "general", "text": "hi"})
    assert err.value.response["error"] == "unknown_method"


def test_post_update_and_delete_a_card_with_block_kit_kept_as_given(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    channel = sandbox.add_channel("ar-emea")
    blocks = [section("*INV-5001* is 40 days late"), {"type": "divider"}]
    posted = client.chat_postMessage(channel="#ar-emea", text="INV-5001", blocks=blocks)
    assert posted["channel"] == channel
    assert posted["message"]["blocks"] == blocks and posted["message"]["bot_id"] == sandbox.bot_id
    second = client.chat_postMessage(channel=channel, text="INV-5002")
    assert float(second["ts"]) > float(posted["ts"])
    assert sandbox.calls("chat.postMessage")[0].args["blocks"] == blocks

    updated = client.chat_update(channel=channel, ts=posted["ts"], text="Approved by @ana")
    assert updated["ts"] == posted["ts"] and updated["text"] == "Approved by @ana"
    card = sandbox.messages("ar-emea")[0]
    assert card.text == "Approved by @ana" and card.blocks == blocks and card.edited_ts
    history = client.conversations_history(channel=channel)["messages"]
    assert [m["text"] for m in history] == ["INV-5002", "Approved by @ana"]

    client.chat_delete(channel=channel, ts=second["ts"])
    assert sandbox.last_message(channel).ts == posted["ts"]
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel=channel, ts=second["ts"], text="gone")
    assert err.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="#nowhere", text="hi")
    assert err.value.response["error"] == "channel_not_found"


def test_thread_replies_stay_out_of_history_and_come_back_with_the_parent(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    parent = client.chat_postMessage(channel="general", text="INV-5003 nudge sent")["ts"]
    client.chat_postMessage(channel="general", thread_ts=parent, text="customer replied")
    history = client.conversations_history(channel=sandbox.general_id)["messages"]
    assert len(history) == 1 and history[0]["reply_count"] == 1
    replies = client.conversations_replies(channel=sandbox.general_id, ts=parent)["messages"]
    assert [m["text"] for m in replies] == ["INV-5003 nudge sent", "customer replied"]
    assert [m.text for m in sandbox.thread("general", parent)] == [m["text"] for m in replies]
    with pytest.raises(SlackApiError) as err:
        client.conversations_replies(channel=sandbox.general_id, ts="1.000001")
    assert err.value.response["error"] == "thread_not_found"


def test_ephemerals_reach_channel_members_only_and_cannot_be_updated(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    ana = sandbox.add_user("ana@example.com", "ana")
    bo = sandbox.add_user("bo@example.com", "bo")
    channel = sandbox.add_channel("ar-apac", members=[ana])
    sent = client.chat_postEphemeral(channel=channel, user=ana, text="Only you can see this",
                                     blocks=[section("Snoozed")])
    (ephemeral,) = sandbox.ephemerals(ana)
    assert ephemeral.ts == sent["message_ts"] and ephemeral.blocks == [section("Snoozed")]
    assert sandbox.messages(channel) == []
    with pytest.raises(SlackApiError) as err:
        client.chat_postEphemeral(channel=channel, user=bo, text="hi")
    assert err.value.response["error"] == "user_not_in_channel"
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel=channel, ts=sent["message_ts"], text="edited")
    assert err.value.response["error"] == "message_not_found"


def test_conversations_open_gives_each_user_one_stable_dm(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    ana = sandbox.add_user("ana@example.com", "ana")
    first = client.conversations_open(users=ana)
    again = client.conversations_open(users=[ana])
    assert first["channel"]["id"].startswith("D")
    assert again["channel"]["id"] == first["channel"]["id"] and again["already_open"]
    client.chat_postMessage(channel=first["channel"]["id"], text="Your daily digest")
    client.chat_postMessage(channel=ana, text="posted to the user id")
    assert [m.text for m in sandbox.messages(ana)] == ["Your daily digest",
                                                       "posted to the user id"]
    info = client.conversations_info(channel=first["channel"]["id"])["channel"]
    assert info["is_im"] and info["user"] == ana


def test_users_lookup_by_email_hit_and_miss_and_usergroup_members(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    ana = sandbox.add_user("Ana.Silva@example.com", "ana", real_name="Ana Silva")
    found = client.users_lookupByEmail(email="ana.silva@example.com")["user"]
    assert found["id"] == ana and found["profile"]["email"] == "Ana.Silva@example.com"
    assert client.users_info(user=ana)["user"]["real_name"] == "Ana Silva"
    with pytest.raises(SlackApiError) as err:
        client.users_lookupByEmail(email="nobody@example.com")
    assert err.value.response["error"] == "users_not_found"
    finance = sandbox.add_usergroup("finance", [ana])
    assert client.usergroups_users_list(usergroup=finance)["users"] == [ana]
    with pytest.raises(SlackApiError) as err:
        client.usergroups_users_list(usergroup="S404")
    assert err.value.response["error"] == "no_such_subteam"


def test_conversations_list_pages_with_cursors(sandbox: SlackSandbox, client: WebClient) -> None:
    for name in ("ar-emea", "ar-apac", "ar-amer"):
        sandbox.add_channel(name)
    sandbox.add_channel("finance-private", is_private=True)
    # A SlackResponse iterates by refilling itself with the next page: read each in turn.
    pages = [[c["name"] for c in page["channels"]] for page in client.conversations_list(limit=2)]
    assert len(pages) == 2
    names = [name for page in pages for name in page]
    assert names == ["general", "ar-emea", "ar-apac", "ar-amer"]
    private = client.conversations_list(types="private_channel")["channels"]
    assert [c["name"] for c in private] == ["finance-private"]


def test_modals_open_update_and_push_with_trigger_and_hash_rules(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    ana = sandbox.add_user("ana@example.com", "ana")
    trigger = sandbox.issue_trigger_id(ana)
    opened = client.views_open(trigger_id=trigger, view=modal(private_metadata="inv=5001"))
    view = opened["view"]
    assert view["id"].startswith("V") and view["hash"] and view["type"] == "modal"
    with pytest.raises(SlackApiError) as err:
        client.views_open(trigger_id=trigger, view=modal())
    assert err.value.response["error"] == "exchanged_trigger_id"

    updated = client.views_update(view_id=view["id"], hash=view["hash"],
                                  view=modal("Promise saved", blocks=2))
    assert updated["view"]["id"] == view["id"] and updated["view"]["hash"] != view["hash"]
    with pytest.raises(SlackApiError) as err:
        client.views_update(view_id=view["id"], hash=view["hash"], view=modal())
    assert err.value.response["error"] == "hash_conflict"
    stored = sandbox.view(view["id"])
    assert stored.title == "Promise saved" and len(stored.blocks) == 2
    assert stored.user_id == ana and stored.callback_id == "promise"

    pushed = client.views_push(trigger_id=sandbox.issue_trigger_id(ana, view_id=view["id"]),
                               view=modal("Confirm", external_id="confirm-5001"))["view"]
    assert pushed["previous_view_id"] == view["id"] and pushed["root_view_id"] == view["id"]
    client.views_update(external_id="confirm-5001", view=modal("Confirmed"))
    assert sandbox.view(pushed["id"]).title == "Confirmed"

    with pytest.raises(SlackApiError) as err:
        client.views_open(trigger_id="", view=modal())
    assert err.value.response["error"] == "invalid_arguments"
    with pytest.raises(SlackApiError) as err:
        client.views_open(trigger_id="12345.98765.abcd", view=modal(blocks=101))
    assert err.value.response["error"] == "invalid_arguments"
    assert "100" in err.value.response["response_metadata"]["messages"][0]
    with pytest.raises(SlackApiError) as err:
        client.views_open(trigger_id="12345.98765.abcd", view=modal("A title over 24 chars long"))
    assert err.value.response["error"] == "invalid_arguments"


def test_an_issued_trigger_expires(client: WebClient) -> None:
    now = [1_700_000_000.0]
    with SlackSandbox(token=TOKEN, clock=lambda: now[0]) as sandbox:
        trigger = sandbox.issue_trigger_id()
        now[0] += 3.5
        with pytest.raises(SlackApiError) as err:
            WebClient(token=TOKEN, base_url=sandbox.base_url).views_open(
                trigger_id=trigger, view=modal())
    assert err.value.response["error"] == "expired_trigger_id"


def test_app_home_is_published_per_user_under_one_view_id(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    ana = sandbox.add_user("ana@example.com", "ana")
    bo = sandbox.add_user("bo@example.com", "bo")
    home = {"type": "home", "blocks": [section("3 cards waiting")]}
    first = client.views_publish(user_id=ana, view=home)["view"]
    client.views_publish(user_id=bo, view=home)
    again = client.views_publish(user_id=ana, view={"type": "home", "blocks": []})["view"]
    assert again["id"] == first["id"] and again["type"] == "home"
    ana_home = sandbox.home_view(ana)
    assert ana_home is not None and ana_home.blocks == []
    assert len(sandbox.views("home")) == 2


def test_files_upload_v2_end_to_end(sandbox: SlackSandbox, client: WebClient) -> None:
    channel = sandbox.add_channel("ar-managers")
    done = client.files_upload_v2(content=PNG, filename="dso.png", title="DSO trend",
                                  channel=channel, initial_comment="Daily digest")
    assert [c.method for c in sandbox.calls()] == [
        "files.getUploadURLExternal", UPLOAD, "files.completeUploadExternal"]
    upload_url = sandbox.calls("files.getUploadURLExternal")[0].response["upload_url"]
    assert upload_url.startswith(sandbox.url)
    (stored,) = sandbox.files()
    assert stored.content == PNG and stored.title == "DSO trend" and stored.channels == (channel,)
    assert done["file"]["id"] == stored.id and done["file"]["mimetype"] == "image/png"
    message = sandbox.last_message(channel)
    assert message.text == "Daily digest" and message.files == (stored.id,)
    with urllib.request.urlopen(done["file"]["url_private"], timeout=5) as served:
        assert served.read() == PNG and served.headers["Content-Type"] == "image/png"


def test_response_url_posts_land_like_slack_lands_them(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    ana = sandbox.add_user("ana@example.com", "ana")
    card = client.chat_postMessage(channel="general", text="INV-5002 firm notice")["ts"]
    url = sandbox.response_url(channel="general", user=ana, message_ts=card)
    assert url.startswith(sandbox.url)
    hook = WebhookClient(url)
    assert hook.send(text="Working on it…").status_code == 200
    assert hook.send(text="Approved", blocks=[section("Approved by <@ana>")],
                     replace_original=True).body == "ok"
    assert hook.send(text="Ana approved INV-5002", response_type="in_channel").status_code == 200
    assert [r.response_type for r in sandbox.responses()] == ["ephemeral", "ephemeral",
                                                              "in_channel"]
    assert sandbox.ephemerals(ana)[0].text == "Working on it…"
    messages = sandbox.messages("general")
    assert [m.text for m in messages] == ["Approved", "Ana approved INV-5002"]
    assert messages[0].blocks == [section("Approved by <@ana>")]
    assert hook.send(delete_original=True).status_code == 200
    assert [m.text for m in sandbox.messages("general")] == ["Ana approved INV-5002"]
    assert hook.send(text="fifth use").status_code == 200
    sixth = hook.send(text="sixth use")
    assert sixth.status_code == 404 and sixth.body == "used_url"
    assert WebhookClient(f"{sandbox.url}actions/nope").send(text="x").status_code == 404
    assert len(sandbox.calls(RESPONSE_URL)) == 7 and len(sandbox.responses()) == 5


def test_rate_limit_surfaces_as_429_with_retry_after(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    sandbox.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="general", text="hi")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"
    (call,) = sandbox.calls("chat.postMessage")
    assert call.injected and call.status == 429 and call.error == "ratelimited"
    client.chat_postMessage(channel="general", text="hi")
    assert len(sandbox.messages("general")) == 1


def test_rate_limit_is_retried_by_the_sdk_retry_handler(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    sandbox.fail_next("chat.postMessage", retry_after=0)
    assert client.chat_postMessage(channel="general", text="hi")["ok"]
    assert [(c.status, c.injected) for c in sandbox.calls("chat.postMessage")] == [
        (429, True), (200, False)]
    assert len(sandbox.messages("general")) == 1


def test_injected_server_errors_and_ok_false_answers(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    sandbox.fail_next("users.lookupByEmail", status=503, times=2)
    sandbox.fail_next("conversations.open", status=200, error="channel_not_found")
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            client.users_lookupByEmail(email="ana@example.com")
        assert err.value.response.status_code == 503
    with pytest.raises(SlackApiError) as err:
        client.users_lookupByEmail(email="ana@example.com")
    assert err.value.response["error"] == "users_not_found"
    with pytest.raises(SlackApiError) as err:
        client.conversations_open(users=sandbox.add_user("ana@example.com", "ana"))
    assert err.value.response.status_code == 200
    assert err.value.response["error"] == "channel_not_found"
    with pytest.raises(ValueError):
        sandbox.fail_next("chat.postMessage", status=200)


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
def test_message_limits_surface_as_slack_errors(sandbox: SlackSandbox, client: WebClient) -> None:
    assert client.chat_postMessage(channel="general", text="50",
                                   blocks=[section(str(i)) for i in range(50)])["ok"]
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="general", text="51",
                                blocks=[section(str(i)) for i in range(51)])
    assert err.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="general", text="x" * 40_001)
    assert err.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="general", text="")
    assert err.value.response["error"] == "no_text"
    assert len(sandbox.messages("general")) == 1


def test_form_encoded_calls_decode_json_fields_and_accept_a_body_token(
    sandbox: SlackSandbox,
) -> None:
    bare = WebClient(base_url=sandbox.base_url)
    blocks = [section("form encoded")]
    bare.api_call("chat.postMessage", params={"token": TOKEN, "channel": "general",
                                              "text": "hi", "blocks": json.dumps(blocks)})
    (call,) = sandbox.calls("chat.postMessage")
    assert call.token == TOKEN and "token" not in call.args
    assert call.args["blocks"] == blocks and sandbox.last_message("general").blocks == blocks


def test_a_bolt_app_constructs_against_the_sandbox(sandbox: SlackSandbox) -> None:
    # Given a client, Bolt takes the token from it (a separate `token=` is ignored).
    app = App(signing_secret="test-signing-secret",
              client=WebClient(token=TOKEN, base_url=sandbox.base_url))
    assert app.client.base_url == sandbox.base_url
    (call,) = sandbox.calls("auth.test")
    assert call.ok and call.token == TOKEN


def test_concurrent_posts_get_unique_increasing_ts(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    def post(n: int) -> None:
        client.chat_postMessage(channel="general", text=f"card {n}")

    threads = [threading.Thread(target=post, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps = [m.ts for m in sandbox.messages("general")]
    assert len(set(stamps)) == 20 and stamps == sorted(stamps, key=float)


def test_snapshot_is_served_as_json_and_reset_keeps_the_directory(
    sandbox: SlackSandbox, client: WebClient
) -> None:
    ana = sandbox.add_user("ana@example.com", "ana")
    client.chat_postMessage(channel="general", text="card", blocks=[section("card")])
    client.files_upload_v2(content=PNG, filename="dso.png", channel=sandbox.general_id)
    with urllib.request.urlopen(f"{sandbox.url}sandbox/state.json", timeout=5) as served:
        state = json.load(served)
    assert state == json.loads(sandbox.to_json()) | {"calls": state["calls"]}
    general = next(c for c in state["channels"] if c["name"] == "general")
    assert general["messages"][0]["blocks"] == [section("card")]
    assert general["messages"][1]["files"][0]["name"] == "dso.png"
    assert state["files"][0]["size"] == len(PNG) and "content" not in state["files"][0]

    sandbox.fail_next("chat.postMessage")
    sandbox.reset()
    assert sandbox.calls() == [] and sandbox.messages("general") == [] and sandbox.files() == []
    assert sandbox.user("ana@example.com").id == ana
    assert client.chat_postMessage(channel="general", text="after reset")["ok"]
    sandbox.reset(keep_directory=False)
    with pytest.raises(KeyError):
        sandbox.user(ana)


def test_latency_holds_every_answer_back(sandbox: SlackSandbox, client: WebClient) -> None:
    sandbox.latency = 0.2
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started >= 0.2


def test_unknown_paths_are_404(sandbox: SlackSandbox) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{sandbox.url}nothing-here", timeout=5)
    assert err.value.code == 404
