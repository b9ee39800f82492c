"""What a Slack message says, as people see it: its text, and what apps put in `attachments`
and `blocks` (an alert's body often lives only there), with its files named.

Pure: the bot uses it on events, the thread read on `conversations.replies` messages.
"""

# One message's text is cut here: an app's post can carry pages of blocks.
MAX_MESSAGE_CHARS = 4_000

_ATTACHMENT_FIELDS = ("pretext", "author_name", "title", "text", "footer")


def _block_texts(node: object) -> list[str]:
    """Every piece of text in a block tree: section and header text, fields, context
    elements and rich text, in reading order."""
    if isinstance(node, list):
        return [text for item in node for text in _block_texts(item)]
    if not isinstance(node, dict):
        return []
    kind = node.get("type")
    if kind in ("actions", "image", "divider", "input", "file"):
        return []  # buttons, pictures and rules say nothing to read
    if kind in ("plain_text", "mrkdwn") and isinstance(node.get("text"), str):
        return [node["text"]]
    if kind == "rich_text_section" or kind == "rich_text_preformatted":
        return ["".join(_inline(e) for e in node.get("elements") or [])]
    found: list[str] = []
    for key in ("text", "fields", "elements"):
        found += _block_texts(node.get(key))
    return found


def _inline(element: object) -> str:
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "text":
        return str(element.get("text") or "")
    if kind == "link":
        return str(element.get("text") or element.get("url") or "")
    if kind == "user":
        return f"<@{element.get('user_id', '')}>"
    if kind == "emoji":
        return f":{element.get('name', '')}:"
    return ""


def _attachment_texts(attachments: object) -> list[str]:
    if not isinstance(attachments, list):
        return []
    found: list[str] = []
    for attachment in attachments:
        if not isinstance(attachment, dict):
            continue
        parts = [str(attachment[k]) for k in _ATTACHMENT_FIELDS if attachment.get(k)]
        for item in attachment.get("fields") or []:
            if isinstance(item, dict) and (item.get("title") or item.get("value")):
                parts.append(f"{item.get('title') or ''}: {item.get('value') or ''}".strip(": "))
        parts += _block_texts(attachment.get("blocks"))
        if not parts and attachment.get("fallback"):
            parts.append(str(attachment["fallback"]))
        found += parts
    return found


def message_text(message: dict) -> str:
    """The message's words: `text`, then its blocks and attachments where they say more, then
    the names of its files. People's messages carry their text again as rich-text blocks:
    those are left out when they say the same."""
    text = message.get("text") if isinstance(message.get("text"), str) else ""
    parts = [text.strip()] if text.strip() else []
    for extra in _block_texts(message.get("blocks")) + _attachment_texts(
        message.get("attachments")
    ):
        extra = extra.strip()
        if extra and all(extra not in part for part in parts):
            parts.append(extra)
    files = [
        f["name"]
        for f in message.get("files") or []
        if isinstance(f, dict) and isinstance(f.get("name"), str)
    ]
    if files:
        parts.append(f"(shared {', '.join(files)})")
    return "\n".join(parts)[:MAX_MESSAGE_CHARS]


def app_name(message: dict) -> str:
    """The name an app posted under: its profile's, or the username it chose, else its id."""
    profile = message.get("bot_profile") if isinstance(message.get("bot_profile"), dict) else {}
    name = profile.get("name") or message.get("username") or message.get("bot_id") or "app"
    return str(name)[:80]
