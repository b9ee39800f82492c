"""The App Home tab: a person's open conversations, their tokens today, a way to end each.

Pure: the view is built from what the bot read from Temporal, and published by the listener.
"""

from bot.conversations import OpenConversation
from threadchat import memories as memory_rules
from threadchat import texts
from threadchat.ids import thread_permalink
from threadchat.model import Memory

END_ACTION = "threadchat_end_conversation"
FORGET_ACTION = "memory_forget"
FORGET_ALL_ACTION = "memory_forget_all"
MAX_LISTED = 20  # a view holds at most 100 blocks


def home_view(
    user: str,
    conversations: list[OpenConversation],
    tokens_today: int | None,
    allowance: int,
    team_domain: str,
    channel_names: dict[str, str] | None = None,
    ending: frozenset[str] = frozenset(),
    memories: list[Memory] | None = None,
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
        place = channel_names.get(thread.channel)
        name = conversation.title or texts.home_untitled(thread.channel, place)
        # Where it is goes under the title (a title says what, not where).
        started = f"{_escaped(texts.home_place(thread.channel, place))} · " * bool(
            conversation.title
        ) + texts.home_started(conversation.started)
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
    return {"type": "home", "blocks": blocks + memory_blocks(memories)}


def memory_blocks(memories: list[Memory] | None) -> list[dict]:
    """The person's memories, a Forget button each, and Forget everything. `None`: they
    could not be read (said so, no buttons). At most 50 memories: with the conversations'
    blocks, well inside a view's 100."""
    blocks: list[dict] = [
        {"type": "divider"},
        {"type": "header", "text": {"type": "plain_text", "text": texts.HOME_MEMORY_TITLE}},
    ]
    if memories is None or not memories:
        text = texts.HOME_MEMORY_UNKNOWN if memories is None else texts.HOME_MEMORY_NONE
        return [*blocks, {"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    for memory in memories:
        blocks.append(
            {
                "type": "section",
                "block_id": f"memory_{memory.id}",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{_escaped(memory.text)}\n_{memory_rules.day(memory)}_",
                },
                "accessory": {
                    "type": "button",
                    "action_id": FORGET_ACTION,
                    "text": {"type": "plain_text", "text": texts.HOME_FORGET},
                    "value": memory.id,
                },
            }
        )
    forget_all = {
        "type": "button",
        "action_id": FORGET_ALL_ACTION,
        "style": "danger",
        "text": {"type": "plain_text", "text": texts.HOME_FORGET_ALL},
        "value": "all",
        "confirm": {
            "title": {"type": "plain_text", "text": texts.HOME_FORGET_ALL},
            "text": {"type": "mrkdwn", "text": texts.HOME_FORGET_ALL_CONFIRM},
            "confirm": {"type": "plain_text", "text": texts.HOME_FORGET_ALL},
            "deny": {"type": "plain_text", "text": texts.HOME_KEEP_MEMORIES},
        },
    }
    return [*blocks, {"type": "actions", "elements": [forget_all]}]


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
