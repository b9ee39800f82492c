"""Fitting model Markdown into Slack messages.

Slack renders standard Markdown sent as `markdown_text`, up to 12,000 characters a message.
Longer answers are split at paragraph boundaries, and never inside a code fence: a fence that
is itself too long is closed at the cut and reopened in the next part.
"""

MARKDOWN_LIMIT = 12_000
# Room for a reopened fence header and closing fence on top of the text itself.
SAFE_LIMIT = MARKDOWN_LIMIT - 200


def _blocks(text: str) -> list[str]:
    """Paragraphs and whole code fences, in order, each ending with its separator."""
    blocks: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in text.splitlines(keepends=True):
        current.append(line)
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and not line.strip():
            blocks.append("".join(current))
            current = []
    if current:
        blocks.append("".join(current))
    return blocks


def _cut_long_block(block: str, limit: int) -> list[str]:
    """Cut one over-long paragraph or fence at line (or, failing that, character) ends."""
    lines = block.splitlines(keepends=True)
    fence = lines[0].strip() if lines and lines[0].lstrip().startswith("```") else None
    parts: list[str] = []
    current = ""
    for line in lines:
        while len(line) > limit:  # a single enormous line
            parts.append(current + line[: limit - len(current)])
            line = line[limit - len(current) :]
            current = ""
        if len(current) + len(line) > limit:
            parts.append(current)
            current = ""
        current += line
    parts.append(current)
    parts = [p for p in parts if p]
    if fence and len(parts) > 1:
        parts = [
            (p if i == 0 else fence + "\n" + p) + ("" if i == len(parts) - 1 else "```\n")
            for i, p in enumerate(parts)
        ]
    return parts


def split_markdown(text: str, limit: int = SAFE_LIMIT) -> list[str]:
    """Split `text` into parts of at most about `limit` characters, in order."""
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for block in _blocks(text):
        pieces = [block] if len(block) <= limit else _cut_long_block(block, limit)
        for piece in pieces:
            if current and len(current) + len(piece) > limit:
                parts.append(current)
                current = ""
            current += piece
    if current:
        parts.append(current)
    return [p.strip("\n") or p for p in parts if p.strip()]
