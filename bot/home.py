"""The App Home tab: a person's open conversations, their tokens today, a way to end each.

Pure: the view is built from what the bot read from Temporal, and published by the listener.
"""

from bot.conversations import OpenConversation
from threadchat import texts
from threadchat.ids import thread_permalink

END_ACTION = "threadchat_end_conversation"
MAX_LISTED = 20  # a view holds at most 100 blocks


def home_view(
    user: str,
    conversations: list[OpenConversation],
    tokens_today: int | None,
    allowance: int,
    team_domain: str,
    channel_names: dict[str, str] | None = None,
    ending: frozenset[str] = frozenset(),
) -> dict:
    """The Home view. Conversations in `ending` (workflow ids) were asked to end and have not
    finished yet: they are listed without their button."""
    channel_names = channel_names or {}
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": texts.HOME_TITLE}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": texts.home_tokens(tokens_today, allowance)}],
        },
        {"type": "divider"},
    ]
    if not conversations:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": texts.HOME_NONE}})
    for conversation in conversations[:MAX_LISTED]:
        thread = conversation.thread
        link = thread_permalink(team_domain, thread.channel, thread.thread_ts)
        name = conversation.title or texts.home_untitled(
            thread.channel, channel_names.get(thread.channel)
        )
        started = texts.home_started(conversation.started)
        if conversation.workflow_id in ending:
            text = f"*<{link}|{_escaped(name)}>*\n{started}\n_{texts.HOME_ENDING}_"
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
            continue
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*<{link}|{_escaped(name)}>*\n{started}"},
                "accessory": {
                    "type": "button",
                    "action_id": END_ACTION,
                    "text": {"type": "plain_text", "text": texts.HOME_END},
                    "value": conversation.workflow_id,
                    "confirm": {
                        "title": {"type": "plain_text", "text": texts.HOME_END},
                        "text": {"type": "mrkdwn", "text": texts.HOME_END_CONFIRM},
                        "confirm": {"type": "plain_text", "text": texts.HOME_END},
                        "deny": {"type": "plain_text", "text": texts.HOME_KEEP},
                    },
                },
            }
        )
    if len(conversations) > MAX_LISTED:
        more = len(conversations) - MAX_LISTED
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": texts.home_more(more)}]}
        )
    return {"type": "home", "blocks": blocks}


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
