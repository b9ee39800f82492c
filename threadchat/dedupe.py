"""A bounded window of Slack message timestamps already seen in a conversation.

Slack retries deliveries and sends a mention twice (`app_mention` and `message`), always with
the same `ts`; remembering recent ones is what stops a second reply. The window is a plain
list so it travels in the state carried across continue-as-new.
"""

# Slack retries within minutes; 500 messages cover far more than that in one thread.
DEDUPE_WINDOW = 500


def remember(seen: list[str], ts: str, limit: int = DEDUPE_WINDOW) -> bool:
    """Record `ts`; return False if it was already in the window. Keeps at most `limit`."""
    if ts in seen:
        return False
    seen.append(ts)
    del seen[: max(0, len(seen) - limit)]
    return True
