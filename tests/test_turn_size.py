"""One turn's size is bounded: the newest messages within the limit are answered, and the
answer says what was left out (and the activity input stays far below Temporal's limit)."""

from devtools.stack import eventually
from threadchat import texts
from threadchat.model import FileRef, UserMessage
from threadchat.turn_size import MAX_TURN_CHARS, fit_turn


def message(i: int, chars: int, files: int = 0) -> UserMessage:
    return UserMessage(
        ts=f"1.{i}",
        user="U1",
        text=str(i) * chars,
        files=[FileRef(f"F{i}{n}", f"{i}-{n}.png", "image/png", 1) for n in range(files)],
    )


def test_a_turn_within_the_limits_is_kept_whole():
    messages = [message(1, 10, 1), message(2, 10)]
    assert fit_turn(messages, max_chars=100, max_files=5).messages == messages


def test_the_newest_messages_are_kept_and_the_older_counted():
    fitted = fit_turn([message(i, 30) for i in range(5)], max_chars=100)
    assert [m.ts for m in fitted.messages] == ["1.2", "1.3", "1.4"]
    assert fitted.messages_left_out == 2 and not fitted.cut_short


def test_a_single_message_over_the_limit_is_cut():
    fitted = fit_turn([message(1, 500)], max_chars=100)
    assert len(fitted.messages[0].text) == 100 and fitted.cut_short


def test_files_over_the_limit_are_left_out_oldest_first():
    fitted = fit_turn([message(1, 1, files=3), message(2, 1, files=3)], max_files=4)
    assert [len(m.files) for m in fitted.messages] == [1, 3]
    assert fitted.files_left_out == 2
    assert fitted.messages[0].files[0].name == "1-2.png"


def test_the_note_says_what_was_left_out():
    assert texts.turn_size_note(0, 0, False) == ""
    note = texts.turn_size_note(3, 1, False)
    assert "3 earlier messages" in note and "1 file" in note


async def test_a_burst_during_an_answer_is_answered_within_the_limit(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, ts, 1)
    stack.bedrock.set_model_latency(60)  # the next answer waits: a burst piles up
    calls = len(stack.converse_requests())
    await stack.say(stack.channel, ts, "first")
    await eventually(lambda: len(stack.bedrock.requests) > calls, what="the model called")
    burst = [f"{i:02d} " + "x" * 3_500 for i in range(15)]  # 52,500 characters
    for text in burst:  # in order, while the answer before is still being written
        await stack.say(stack.channel, ts, text)
    stack.bedrock.set_model_latency(0)
    replies = await stack.replies(stack.channel, ts, 3)
    assert "Too much at once" in replies[-1]["text"]
    # The answer's request (streamed; a rolling summary may follow it, not streamed).
    answer = [r.body for r in stack.bedrock.requests if r.operation == "converse-stream"][-1]
    sent = "".join(block.get("text", "") for block in answer["messages"][-1]["content"])
    assert burst[-1] in sent  # the newest is answered
    assert len(sent) < MAX_TURN_CHARS + 1_000  # labels aside, within the limit
