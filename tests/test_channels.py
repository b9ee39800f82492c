"""Per-channel settings: a file operators edit, checked with the line of each mistake, and
applied to each new conversation in its channel, without a restart."""

import os
from pathlib import Path

import pytest

from devtools.stack import ALICE, BOB, Stack
from threadchat.channels import ChannelSettings, ChannelsFileError, load, lookup

SUPPORT = "You are the ACME support desk's assistant. Answer in one short paragraph."
SONNET = "us.anthropic.claude-sonnet-4-20250514-v1:0"
OPUS = "us.anthropic.claude-opus-4-20250514-v1:0"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "channels.yml"
    path.write_text(text)
    return str(path)


def test_a_valid_file_is_read(tmp_path):
    path = write(
        tmp_path,
        f"""# who gets what
C0SUPPORT:
  system_prompt: {SUPPORT}
  model_id: {SONNET}
  user_daily_tokens: 5000
dm:
  conversation_daily_tokens: 0
default: {{}}
""",
    )
    channels = load(path)
    assert channels["C0SUPPORT"] == ChannelSettings(
        system_prompt=SUPPORT, model_id=SONNET, user_daily_tokens=5000
    )
    assert lookup(channels, "C0SUPPORT").model_id == SONNET
    assert lookup(channels, "D0ALICE") == ChannelSettings(conversation_daily_tokens=0)
    assert lookup(channels, "C0ELSEWHERE") == ChannelSettings()
    assert lookup({}, "C0ELSEWHERE") is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("C0SUPPORT:\n  modle_id: x\n", "line 2, C0SUPPORT.modle_id: is not a setting"),
        ("general:\n  model_id: x1\n", "line 1, general: is not a channel id"),
        ("C0A:\n  user_daily_tokens: lots\n", "line 2, C0A.user_daily_tokens: must be a whole"),
        ("C0A:\n  user_daily_tokens: -1\n", "line 2, C0A.user_daily_tokens: must be a whole"),
        ("C0A:\n  model_id: has spaces in it\n", "line 2, C0A.model_id: is not a model id"),
        ("C0A:\n  system_prompt: ''\n", "line 2, C0A.system_prompt: must be text"),
        ("C0A: {}\nC0A: {}\n", "line 2, C0A: is set twice"),
        ("C0A:\n  model_id: [unclosed\n", "line 3"),
        ("- C0A\n", "line 1: must map channel ids to settings"),
    ],
)
def test_each_mistake_names_the_file_the_line_and_the_key(tmp_path, text, where):
    with pytest.raises(ChannelsFileError) as raised:
        load(write(tmp_path, text))
    assert str(raised.value).startswith("channels.yml "), raised.value
    assert where in str(raised.value), raised.value


def model_calls(stack: Stack) -> list:
    return [r for r in stack.bedrock.requests if r.operation == "converse-stream"]


async def test_a_channel_gets_its_prompt_and_model_and_keeps_them_for_the_conversation(
    make_stack, tmp_path
):
    path = write(tmp_path, f"C0SUPPORT:\n  system_prompt: {SUPPORT}\n  model_id: {SONNET}\n")
    stack = await make_stack(channels_file=path)
    support = await stack.mention("C0SUPPORT", "my printer is on fire")
    await stack.replies("C0SUPPORT", support, 1)
    elsewhere = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, elsewhere, 1)
    first, second = model_calls(stack)
    assert first.model_id == SONNET and first.body["system"][0]["text"].startswith(SUPPORT)
    assert second.model_id == stack.settings.bedrock.model_id
    assert not second.body["system"][0]["text"].startswith(SUPPORT)

    # An operator changes the file: the running conversation keeps what it started with,
    # the next one in the channel takes the change, with no restart.
    Path(path).write_text(f"C0SUPPORT:\n  model_id: {OPUS}\n")
    os.utime(path, (1, 1))  # a different stamp, however fast the edit
    await stack.say("C0SUPPORT", support, "it is still burning")
    await stack.replies("C0SUPPORT", support, 2)
    assert model_calls(stack)[-1].model_id == SONNET
    newer = await stack.mention("C0SUPPORT", "a new problem")
    await stack.replies("C0SUPPORT", newer, 1)
    latest = model_calls(stack)[-1]
    assert latest.model_id == OPUS
    assert not latest.body["system"][0]["text"].startswith(SUPPORT)


async def test_a_channel_allowance_applies_to_its_conversations(make_stack, tmp_path):
    path = write(tmp_path, "C0TIGHT:\n  conversation_daily_tokens: 50\n")
    stack = await make_stack(channels_file=path)
    tight = await stack.mention("C0TIGHT", "a question " + "x" * 400)
    await stack.replies("C0TIGHT", tight, 1)
    await stack.say("C0TIGHT", tight, "another one", user=BOB)
    replies = await stack.replies("C0TIGHT", tight, 2)
    assert "this conversation has used today's allowance of 50 tokens" in replies[1]["text"]
    roomy = await stack.mention(stack.channel, "a question " + "x" * 400, user=ALICE)
    await stack.replies(stack.channel, roomy, 1)
    await stack.say(stack.channel, roomy, "another one")
    assert "allowance" not in (await stack.replies(stack.channel, roomy, 2))[1]["text"]
