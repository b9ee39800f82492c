"""The Markdown cases of a model answer reach Slack in a form it accepts and renders: code
fences, lists, links, bold and italics unchanged in `markdown_text`, and a table (which Slack
does not render) as an aligned code block. Streamed and posted replies alike."""

import pytest

from devtools.stack import eventually

CODE = "```python\ndef pick(a, b):\n    return a | b  # | inside code stays\n```"
LIST = "- first, with **bold**\n- second, with a [link](https://example.com/docs_(v2))"
ANSWER = f"""Here is **the plan**, in *short* and _brief_:

{LIST}

1. Install with `pip install threadchat`
2. Run it

{CODE}

Sizes:
| Name | Size | Notes |
|------|-----:|-------|
| alpha | 1 | `a|b` |
| beta | 22 | **big** |

That's all."""
TABLE_BLOCK = (
    "```\nName  | Size | Notes\n------+------+------\nalpha |    1 | a|b\nbeta  |   22 | big\n```"
)


@pytest.mark.parametrize("streaming", [True, False])
async def test_markdown_answer_reaches_slack_in_a_form_it_accepts(make_stack, streaming):
    # Streamed slowly enough that the answer, table included, reaches Slack in several pieces.
    stack = await make_stack(
        streaming=streaming,
        bedrock_options={"responder": lambda body: ANSWER, "stream_delay_s": 0.02},
    )
    ts = await stack.mention(stack.channel, "format something for me")
    await stack.replies(stack.channel, ts, 1)
    # A streamed reply may be finished and then edited into its final form.
    [reply] = await eventually(
        lambda: [
            m for m in stack.slack.bot_replies(stack.channel, ts) if TABLE_BLOCK in body_of(m)
        ],
        timeout=10,
        what="the reply with its table as a code block",
    )
    assert not stack.slack.is_streaming(stack.channel, reply["ts"])
    assert len(stack.slack.bot_replies(stack.channel, ts)) == 1
    body = body_of(reply)
    assert reply["text"] == body  # what notifications and search see
    assert [b["type"] for b in reply.get("blocks") or []][-1:] == ["actions"]  # the buttons
    assert CODE in body
    assert LIST in body
    assert "1. Install with `pip install threadchat`\n2. Run it" in body
    assert "Here is **the plan**, in *short* and _brief_:" in body
    assert "| alpha |" not in body  # no raw table rows left
    assert body.endswith("That's all.")
    assert len(body) <= 12_000
    assert [c for c in stack.slack.calls if c.error] == []


def body_of(message: dict) -> str:
    """A message's Markdown: its `markdown_text`, or the markdown block that a message with
    buttons carries it in (Slack refuses `markdown_text` beside blocks)."""
    blocks = [b["text"] for b in message.get("blocks") or [] if b["type"] == "markdown"]
    return message.get("markdown_text") or "".join(blocks)
