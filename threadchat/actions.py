"""The buttons under each reply: Regenerate, 👍 and 👎, and what their values mean.

Each button's value names one version of one turn's reply. A click on an older version
(a double click, Slack showing a stale message, a retry) is recognisably stale, which is
what makes Regenerate idempotent.
"""

from threadchat.model import ReplyRef

BLOCK_ID = "threadchat_reply_actions"
REGENERATE = "threadchat_regenerate"
FEEDBACK_UP = "threadchat_feedback_up"
FEEDBACK_DOWN = "threadchat_feedback_down"
RATINGS = {FEEDBACK_UP: "up", FEEDBACK_DOWN: "down"}


def encode(reply: ReplyRef) -> str:
    return f"{reply.conversation_key}:{reply.turn}:{reply.version}"


def decode(value: object) -> ReplyRef | None:
    """The reply a button names; None for anything we did not write."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    key, _, rest = value.partition(":")
    turn, _, version = rest.partition(":")
    if not (key and turn.isdigit() and version.isdigit()):
        return None
    return ReplyRef(conversation_key=key, turn=int(turn), version=int(version))


def _button(action_id: str, label: str, value: str) -> dict:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": value,
    }


def reply_actions(reply: ReplyRef) -> dict:
    """The actions block under a reply's last message."""
    value = encode(reply)
    return {
        "type": "actions",
        "block_id": BLOCK_ID,
        "elements": [
            _button(REGENERATE, "Regenerate", value),
            _button(FEEDBACK_UP, "👍", value),
            _button(FEEDBACK_DOWN, "👎", value),
        ],
    }


def message_body(text: str, reply: ReplyRef | None) -> dict:
    """chat.postMessage / chat.update arguments for a message of Markdown `text`, with the
    reply's buttons when given. Slack refuses `markdown_text` beside blocks, so a message
    with buttons carries its text as a markdown block (and as `text` for notifications)."""
    if reply is None:
        return {"markdown_text": text}
    return {"text": text, "blocks": [{"type": "markdown", "text": text}, reply_actions(reply)]}
