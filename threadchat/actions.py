"""The buttons under each reply: Slack's native 👍/👎 feedback buttons (a `context_actions`
block), Regenerate beside them, and what their values mean.

Each button's value names one version of one turn's reply. A click on an older version
(a double click, Slack showing a stale message, a retry) is recognisably stale, which is
what makes Regenerate idempotent.
"""

from threadchat.model import ReplyRef

BLOCK_ID = "threadchat_reply_actions"
FEEDBACK_BLOCK_ID = "threadchat_reply_feedback"
REGENERATE = "threadchat_regenerate"
# One feedback_buttons element: Slack sends its action_id with the clicked button's value,
# which carries the rating.
FEEDBACK = "threadchat_feedback"
# The two halves of that element, by the rating their value carries.
FEEDBACK_UP = "threadchat_feedback_up"
FEEDBACK_DOWN = "threadchat_feedback_down"
RATINGS = {FEEDBACK_UP: "up", FEEDBACK_DOWN: "down"}
# A tool call waiting for approval (contracts: keep the ids).
TOOL_APPROVE = "tool_approve"
TOOL_DENY = "tool_deny"
APPROVAL_BLOCK_ID = "threadchat_tool_approval"


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


def feedback_value(reply: ReplyRef, rating: str) -> str:
    return f"{rating}/{encode(reply)}"


def decode_feedback(value: object) -> tuple[str, ReplyRef] | None:
    """The rating and reply a feedback button's value names; None for anything else."""
    if not isinstance(value, str):
        return None
    rating, _, rest = value.partition("/")
    reply = decode(rest)
    if rating not in RATINGS.values() or reply is None:
        return None
    return rating, reply


def _feedback_button(reply: ReplyRef, rating: str, label: str, spoken: str) -> dict:
    return {
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": feedback_value(reply, rating),
        "accessibility_label": spoken,
    }


def reply_actions(reply: ReplyRef) -> list[dict]:
    """The blocks under a reply's last message: Slack's feedback buttons, and Regenerate
    (a `context_actions` block holds only feedback and icon buttons)."""
    return [
        {
            "type": "context_actions",
            "block_id": FEEDBACK_BLOCK_ID,
            "elements": [
                {
                    "type": "feedback_buttons",
                    "action_id": FEEDBACK,
                    "positive_button": _feedback_button(reply, "up", "👍", "Good answer"),
                    "negative_button": _feedback_button(reply, "down", "👎", "Bad answer"),
                }
            ],
        },
        {
            "type": "actions",
            "block_id": BLOCK_ID,
            "elements": [_button(REGENERATE, "Regenerate", encode(reply))],
        },
    ]


def message_body(text: str, reply: ReplyRef | None) -> dict:
    """chat.postMessage / chat.update arguments for a message of Markdown `text`, with the
    reply's buttons when given. Slack refuses `markdown_text` beside blocks, so a message
    with buttons carries its text as a markdown block (and as `text` for notifications)."""
    if reply is None:
        return {"markdown_text": text}
    return {"text": text, "blocks": [{"type": "markdown", "text": text}, *reply_actions(reply)]}


def approval_blocks(text: str, key: str) -> list[dict]:
    """A tool call's approval message: what it would do, Approve and Deny. The buttons
    carry the call's idempotency key, which the conversation knows it by."""
    approve = {**_button(TOOL_APPROVE, "Approve", key), "style": "primary"}
    deny = {**_button(TOOL_DENY, "Deny", key), "style": "danger"}
    return [
        {"type": "markdown", "text": text},
        {"type": "actions", "block_id": APPROVAL_BLOCK_ID, "elements": [approve, deny]},
    ]
