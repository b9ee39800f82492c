"""Names and links built from Slack ids: workflow ids and thread permalinks.

The workflow id format is defined here once; the bot, the worker and the operator tools all
derive it through `conversation_id`.
"""

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

from threadchat.model import ThreadRef

WORKFLOW_ID_PREFIX = "threadchat"


def conversation_id(team: str, channel: str, thread_ts: str) -> str:
    """The Temporal workflow id of the conversation in one Slack thread."""
    return f"{WORKFLOW_ID_PREFIX}-{team}-{channel}-{thread_ts}"


_CONVERSATION_ID = re.compile(
    rf"^{WORKFLOW_ID_PREFIX}-(?P<team>[A-Z0-9]+)-(?P<channel>[A-Z0-9]+)-(?P<ts>\d+\.\d+)$"
)


def thread_of(workflow_id: str) -> ThreadRef | None:
    """The thread a conversation's workflow id names; None for any other id."""
    match = _CONVERSATION_ID.match(workflow_id)
    return ThreadRef(match["team"], match["channel"], match["ts"]) if match else None


def budget_id(team: str, user: str, day: str) -> str:
    """The workflow id that keeps one person's token use on one UTC day."""
    return f"{WORKFLOW_ID_PREFIX}-budget-{team}-{user}-{day}"


@dataclass(frozen=True)
class ThreadLocation:
    """Channel and thread parsed from a Slack message link."""

    channel: str
    thread_ts: str


_ARCHIVES = re.compile(r"/archives/([A-Z0-9]+)/p(\d{10})(\d{6})")


def parse_thread_link(text: str) -> ThreadLocation | None:
    """Parse a Slack message link (as pasted, or as Slack escapes it: ``<https://...>``).

    A link to a reply carries its thread in ``thread_ts``; a link to a parent message is the
    thread itself.
    """
    candidate = text.strip().strip("<>").split("|", 1)[0]
    url = urlparse(candidate)
    match = _ARCHIVES.search(url.path)
    if not url.scheme.startswith("http") or not match:
        return None
    channel = match.group(1)
    ts = f"{match.group(2)}.{match.group(3)}"
    thread_ts = parse_qs(url.query).get("thread_ts", [ts])[0]
    return ThreadLocation(channel=channel, thread_ts=thread_ts)


def thread_permalink(team_domain: str, channel: str, thread_ts: str) -> str:
    """A link to a thread's parent message, in the form Slack's own permalinks take."""
    return f"https://{team_domain}.slack.com/archives/{channel}/p{thread_ts.replace('.', '')}"


def memory_id(team: str, user: str) -> str:
    """The workflow id that keeps what one person asked the bot to remember."""
    return f"{WORKFLOW_ID_PREFIX}-memory-{team}-{user}"
