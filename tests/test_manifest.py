"""manifest.yml asks Slack for exactly what the bot listens to."""

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
