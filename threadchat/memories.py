"""What a person asked the bot to remember, kept short and bounded: pure rules that the
MemoryWorkflow applies and the tools and App Home show.

A memory is at most MAX_CHARS long and a person keeps at most MAX_MEMORIES (the oldest go
first), so the whole list fits in every turn of theirs as a few hundred tokens.
"""

from datetime import UTC, datetime

from threadchat.model import Memory

MAX_CHARS = 300
MAX_MEMORIES = 50
# Idempotency keys kept: far more than the calls that can be retried at once.
MAX_KEYS = 200


def clipped(text: str) -> str:
    """`text` on one line, cut to MAX_CHARS with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_CHARS else flat[: MAX_CHARS - 1].rstrip() + "…"


def kept(memories: list[Memory]) -> list[Memory]:
    """The newest MAX_MEMORIES, oldest first."""
    return memories[-MAX_MEMORIES:]


def day(memory: Memory) -> str:
    """The UTC date a memory was made, as people read it: 2026-12-06."""
    return datetime.fromtimestamp(memory.at, UTC).date().isoformat()


def listed(memories: list[Memory]) -> str:
    """One memory a line, with its id and date: what recall answers and the context shows."""
    return "\n".join(f"[{m.id}] ({day(m)}) {m.text}" for m in memories)
