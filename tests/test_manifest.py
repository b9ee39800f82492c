"""manifest.yml asks Slack for exactly what the bot listens to."""

import re
from pathlib import Path

import yaml

MANIFEST = yaml.safe_load((Path(__file__).parent.parent / "manifest.yml").read_text())


def test_bot_events_cover_mentions_and_thread_messages():
    events = set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.channels", "message.im"} <= events


def test_endchat_and_the_end_chat_shortcut_are_declared():
    features = MANIFEST["features"]
    assert [c["command"] for c in features["slash_commands"]] == ["/endchat"]
    [shortcut] = features["shortcuts"]
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", "end_chat")
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True


def test_scopes_match_what_the_bot_calls():
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    # chat.postMessage, conversations.replies (idempotent retries), users.info, /endchat
    assert {
        "chat:write",
        "channels:history",
        "users:read",
        "commands",
        "app_mentions:read",
        "files:read",  # files.info and url_private_download
    } <= scopes


def test_socket_mode_is_on_for_paste_as_is():
    assert MANIFEST["settings"]["socket_mode_enabled"] is True


# The scopes each Web API method the code uses needs (docs.slack.dev). A method the code calls
# that is not listed fails the test below: add it, with its scopes.
METHOD_SCOPES = {
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_delete": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_startStream": {"chat:write"},
    "chat_appendStream": {"chat:write"},
    "chat_stopStream": {"chat:write"},
    "chat_getPermalink": set(),
    "users_info": {"users:read"},
    "users_conversations": {"channels:read", "groups:read"},
    "conversations_replies": {"channels:history", "groups:history", "im:history"},
    "conversations_history": {"channels:history", "groups:history"},
    "conversations_info": {"channels:read", "groups:read"},
    "files_info": {"files:read"},
    "assistant_threads_setStatus": {"assistant:write"},
    "assistant_threads_setSuggestedPrompts": {"assistant:write"},
    "assistant_threads_setTitle": {"assistant:write"},
    # Sessions need chat:write; only agents may create them, which adds assistant:write.
    "agents_sessions_setStatus": {"chat:write", "assistant:write"},
    "agents_sessions_rename": {"chat:write", "assistant:write"},
    # Real-time Search: one scope per channel type searched (activities/slack_search.py).
    "assistant_search_context": {
        "search:read.public",
        "search:read.private",
        "search:read.im",
        "search:read.mpim",
    },
    "views_publish": set(),
    "auth_test": set(),
    "apps_connections_open": set(),  # the app-level token's connections:write
}
CALLS = re.compile(
    r"\.(chat_\w+|users_\w+|conversations_\w+|files_\w+|assistant_(?:threads|search)_\w+"
    r"|views_\w+"
    r"|auth_test|apps_\w+|agents_\w+)\b"
)
ROOT = Path(__file__).parent.parent


def test_every_web_api_method_the_code_calls_has_its_scopes():
    called = {
        match
        for folder in ("bot", "activities", "threadchat")
        for path in (ROOT / folder).rglob("*.py")
        for match in CALLS.findall(path.read_text())
    }
    assert called, "the scan found no Web API calls"
    unknown = called - METHOD_SCOPES.keys()
    assert not unknown, f"add these methods and their scopes to METHOD_SCOPES: {unknown}"
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    for method in sorted(called):
        assert METHOD_SCOPES[method] <= scopes, (method, METHOD_SCOPES[method] - scopes)


# Still handled for apps on `assistant_view` (README), which subscribe them instead of the
# agent's events.
ASSISTANT_VIEW_EVENTS = {"assistant_thread_started", "assistant_thread_context_changed"}


def test_every_event_the_bot_listens_to_is_subscribed():
    listened = {
        name
        for path in (ROOT / "bot").rglob("*.py")
        for name in re.findall(r'@app\.event\("(\w+)"\)', path.read_text())
    }
    events = set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
    subscribed = {e.split(".")[0] for e in events}
    assert listened - ASSISTANT_VIEW_EVENTS <= subscribed, listened - subscribed
    assert listened >= ASSISTANT_VIEW_EVENTS  # the older panel keeps working
    assert {"app_context_changed", "agent_session_stopped", "app_home_opened"} <= events
    assert MANIFEST["features"]["app_home"]["home_tab_enabled"] is True
    assert MANIFEST["features"]["app_home"]["messages_tab_enabled"] is True


def test_the_app_is_an_agent():
    features = MANIFEST["features"]
    assert features["agent_view"]["agent_description"]
    assert "assistant_view" not in features  # one or the other, never both
