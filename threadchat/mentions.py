"""Mentions in model text, made harmless before the bot writes it to Slack.

Whoever can steer the model (a participant, a planted document, a channel message read into
the prompt) could otherwise ping a whole channel or a user group under the bot's name. So in
everything the bot writes from model text:

- `<!channel>`, `<!here>`, `<!everyone>`, `<!group>`, `<!subteam^…>` and any other `<!…>`
  special (with or without a `|label`) become the text `@channel` (or `@` + label), with a
  word joiner (U+2060) after the `@`: it reads the same and pings no one. Only `<!date^…>`,
  which formats a date, is left alone.
- `<@U…>` of anyone but the conversation's participants becomes `@` + label or id the same
  way; participants' mentions stay.
- The bare words `@channel`, `@here`, `@everyone` and `@group`, which Slack's mrkdwn `text`
  parsing can turn into pings, get the same word joiner.
- A `<!` or `<@` that does not close as Slack would read it is escaped as `&lt;`, so no later
  text can complete it; so is a `<` just before a mention, which would otherwise open one
  in front of the `@` that replaces it.

Entity-escaped forms (`&lt;!channel&gt;`) are Slack's own escaping: shown as text, never
parsed, so they are left as they are.

`MentionGuard` does the same to text that arrives in pieces (a streamed reply): it holds back
only what could still become a mention, and what it lets out, piece by piece, is exactly what
`neutralize` makes of the whole.
"""

import re
from collections.abc import Collection

WORD_JOINER = "\u2060"
_TARGET_MAX = 80
_LABEL_MAX = 300
# A `<` further back than this with no `>` after it can no longer close as a mention.
_TOKEN_SPAN = 2 + _TARGET_MAX + 1 + _LABEL_MAX + 1

_PATTERN = re.compile(
    rf"(?P<token><(?P<kind>[!@])(?P<target>[^<>|\n]{{0,{_TARGET_MAX}}})"
    rf"(?:\|(?P<label>[^<>\n]{{0,{_LABEL_MAX}}}))?>)"
    r"|(?P<opener><(?=<?[!@]))"
    r"|(?P<bare>(?<![\w.+\-@/])@(?=(?:channel|here|everyone|group)\b))",
    re.IGNORECASE,
)
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


def _quiet(name: str) -> str:
    """`@name` as text that pings no one."""
    # Every `@` in it is quieted too, or its last could make a bare `@here` of what follows.
    name = name.strip().lstrip("@").replace("@", "@" + WORD_JOINER).strip()
    return "@" + WORD_JOINER + (name or "someone")


def neutralize(text: str, participants: Collection[str] | None = None) -> str:
    """`text` with every broadcast mention, and every user mention of someone not in
    `participants`, turned into plain text. `participants` None: user mentions are kept
    (the caller does not know who takes part); broadcasts never are."""

    def replace(match: re.Match) -> str:
        if match.group("opener"):
            return "&lt;"
        if match.group("bare"):
            return "@" + WORD_JOINER
        kind, target, label = match.group("kind", "target", "label")
        if kind == "!":
            if target.startswith("date^"):
                return match.group(0)
            return _quiet(label or target.rsplit("^", 1)[-1])
        if participants is None or target in participants:
            return match.group(0)
        return _quiet(label or target)

    return _PATTERN.sub(replace, text)


def _safe_cut(text: str) -> int:
    """How much of `text` can be neutralised now, whatever follows: up to a `<` that may
    still become a mention, otherwise up to the last whitespace (no bare word or mention
    spans it) or the last `<` (none starts inside one); never just after a `<`, whose fate
    depends on what follows it."""
    cut = _cut(text)
    while cut and text[cut - 1] == "<":
        cut -= 1
    return cut


def _cut(text: str) -> int:
    space = _LAST_SPACE.search(text)
    after_space = space.end() if space else 0
    last = text.rfind("<")
    if last < 0:
        return after_space
    closes = [i for i in (text.find(">", last), text.find("\n", last)) if i >= 0]
    if not closes:
        opening = text[last + 1 : last + 2] in ("", "!", "@")
        if opening and len(text) - last <= _TOKEN_SPAN:
            return last
        return max(after_space, last)
    return after_space if after_space > min(closes) else last


class MentionGuard:
    """`neutralize` for text that arrives in pieces."""

    def __init__(self, participants: Collection[str] | None = None):
        self.participants = participants
        self.held = ""

    def feed(self, piece: str) -> str:
        """What of the text so far can be sent now, neutralised."""
        self.held += piece
        cut = _safe_cut(self.held)
        ready, self.held = self.held[:cut], self.held[cut:]
        return neutralize(ready, self.participants)

    def flush(self) -> str:
        """The rest: the text has ended."""
        rest, self.held = self.held, ""
        return neutralize(rest, self.participants)
