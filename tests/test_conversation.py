"""The conversation workflow on the real dev server, with real activities talking to the local
Slack and Bedrock servers: turns, failures, retries, continue-as-new and the context budget."""

import asyncio
import itertools

import pytest

from activities.bedrock import FOLD_PROMPT, SUMMARY_PROMPT
from devtools.bedrock import Fault, message_text, said_text
from devtools.stack import ALICE, BOB, eventually
from threadchat.ids import conversation_id
from threadchat.model import EndRequest
from workflows.conversation import ConversationWorkflow


def reply_requests(stack) -> list[dict]:
    """Converse requests that answered turns: not the closing summary (its own prompt), and
    not rolling summaries (asked after the conversation's turns)."""
    return [
        body
        for body in stack.converse_requests()
        if body["system"][0]["text"] != SUMMARY_PROMPT
        and not last_user_text(body).startswith(FOLD_PROMPT[:40])
    ]


def last_user_text(body: dict) -> str:
    """What people said in the request's last message, as "[name] text" lines."""
    return said_text(body["messages"][-1])


async def test_messages_during_a_reply_are_answered_together(make_stack):
    stack = await make_stack()
    stack.bedrock.set_model_latency(60)  # held until the messages below are in
    ts = await stack.mention(stack.channel, "first")
    await eventually(lambda: stack.converse_requests(), what="the first Bedrock call")
    await stack.say(stack.channel, ts, "second")
    await stack.say(stack.channel, ts, "third", user=BOB)
    stack.bedrock.set_model_latency(0)
    await stack.replies(stack.channel, ts, 2)
    requests = reply_requests(stack)
    assert len(requests) == 2
    merged = last_user_text(requests[1])
    assert "second" in merged and "[bob] third" in merged
    assert [m["role"] for m in requests[1]["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("streaming", "method"), [(False, "chat.postMessage"), (True, "chat.stopStream")]
)
async def test_lost_post_response_is_retried_without_a_second_message(
    make_stack, streaming, method
):
    """Slack accepts the post but the response is lost: the activity fails and Temporal
    retries it. The retry must find the message instead of posting it again."""
    stack = await make_stack(streaming=streaming)
    stack.slack.inject_lost_response(method)
    ts = await stack.mention(stack.channel, "exactly once please")
    await stack.replies(stack.channel, ts, 1)
    await eventually(
        lambda: stack.slack.calls_to("conversations.replies"), what="the retry's lookup"
    )
    await stack.say(stack.channel, ts, "and again")
    replies = await stack.replies(stack.channel, ts, 2)
    assert len(replies) == 2
    assert "exactly once please" in replies[0]["text"]
    assert len(stack.slack.calls_to(method)) == 2  # the lost one, and turn 2
    status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
    assert status.output_tokens > 0  # the recovered turn kept its usage


async def test_broken_model_stream_leaves_one_complete_reply(make_stack):
    """The model stream breaks after the reply started to appear in Slack: the retry
    replaces the unfinished message (its ts was heartbeated) instead of adding a second."""
    stack = await make_stack()
    stack.bedrock.inject(Fault(cut_stream_after_events=4, operation="converse-stream"))
    ts = await stack.mention(stack.channel, "a long story " + "z" * 300)
    [reply] = await stack.replies(stack.channel, ts, 1)
    await eventually(
        lambda: len([r for r in stack.bedrock.requests if r.status == 200]) >= 2,
        what="the retried stream",
    )
    await stack.say(stack.channel, ts, "next")
    replies = await stack.replies(stack.channel, ts, 2)
    assert len(replies) == 2
    assert replies[0]["ts"] == reply["ts"]  # the same message, now complete
    assert "a long story" in replies[0]["text"] and not stack.slack.is_streaming(
        stack.channel, reply["ts"]
    )
    assert stack.slack.calls_to("chat.update")  # replaced, not streamed twice


async def test_lost_stream_start_still_leaves_one_reply(make_stack):
    """Slack created the streaming message but its ts never came back: the retry finds the
    message by time and replaces it, instead of starting a second one."""
    stack = await make_stack()
    stack.slack.inject_lost_response("chat.startStream")
    ts = await stack.mention(stack.channel, "start me once " + "q" * 300)
    await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "next")
    replies = await stack.replies(stack.channel, ts, 2)
    assert len(replies) == 2
    assert "start me once" in replies[0]["text"]
    assert not any(stack.slack.is_streaming(stack.channel, r["ts"]) for r in replies)


async def test_a_lost_stream_start_never_takes_over_the_previous_reply(make_stack):
    """The retry looks for the lost message by time; the previous turn's reply, posted a
    moment earlier, is finished (it carries its own key) and must stay as it is."""
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "first question")
    [first] = await stack.replies(stack.channel, ts, 1)
    stack.slack.inject_lost_response("chat.startStream")
    await stack.say(stack.channel, ts, "second question")
    replies = await stack.replies(stack.channel, ts, 2)
    assert len(replies) == 2
    assert replies[0]["ts"] == first["ts"] and replies[0]["text"] == first["text"]
    assert "second question" in replies[1]["text"]


@pytest.mark.parametrize(
    ("code", "notice"), [("modelStreamErrorException", False), ("validationException", True)]
)
async def test_errors_inside_the_model_stream(make_stack, code, notice):
    """A transient error mid-stream is retried into the same message; a final one removes
    the unfinished message and leaves only the notice."""
    stack = await make_stack()
    stack.bedrock.inject(Fault(code, cut_stream_after_events=4, operation="converse-stream"))
    ts = await stack.mention(stack.channel, "careful now " + "r" * 300)
    [reply] = await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "next")
    replies = await stack.replies(stack.channel, ts, 2)
    assert len(replies) == 2
    if notice:
        assert replies[0]["text"].startswith(":warning:")
    else:
        assert "careful now" in replies[0]["text"]
    assert not any(stack.slack.is_streaming(stack.channel, r["ts"]) for r in replies)


@pytest.mark.parametrize(
    ("streaming", "method"), [(False, "chat.postMessage"), (True, "chat.startStream")]
)
async def test_slack_rate_limit_waits_for_retry_after(make_stack, streaming, method):
    stack = await make_stack(streaming=streaming)
    stack.slack.inject(method, error="ratelimited", status=429, retry_after=2)
    ts = await stack.mention(stack.channel, "busy channel")
    await stack.replies(stack.channel, ts, 1)
    first, second = stack.slack.calls_to(method)[:2]
    assert second.at - first.at >= 1.9
    assert len(stack.slack.bot_replies(stack.channel, ts)) == 1


async def without_slack_streaming(make_stack, answer: str):
    """A model that streams `answer` for a while, into a Slack that has no streaming API."""
    stack = await make_stack(
        bedrock_options={
            "responder": lambda body: answer,
            "stream_chunk_chars": 40,
            "stream_delay_s": 0.03,
        }
    )
    stack.slack.inject("chat.startStream", error="unknown_method", times=100)
    return stack


async def test_streaming_falls_back_to_editing_one_message(make_stack):
    answer = " ".join(f"step{i}" for i in range(400))
    stack = await without_slack_streaming(make_stack, answer)
    ts = await stack.mention(stack.channel, "no streams here")
    [reply] = await stack.replies(stack.channel, ts, 1)
    await stack.handle(stack.channel, ts).signal(
        ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command")
    )
    result = await stack.handle(stack.channel, ts).result()
    assert result.transcript[0].reply == answer  # the turn was recorded, whole
    final = stack.slack.message(stack.channel, reply["ts"])
    assert final["text"].strip() == answer
    updates = stack.slack.calls_to("chat.update")
    assert len(updates) >= 2  # the message grew in place, then got its final text
    assert len(stack.slack.bot_replies(stack.channel, ts)) == 2  # the reply and the summary


async def test_when_editing_fails_too_the_answer_is_posted_once(make_stack):
    answer = " ".join(f"part{i}" for i in range(400))
    stack = await without_slack_streaming(make_stack, answer)
    stack.slack.inject("chat.update", error="cant_update_message", times=100)
    ts = await stack.mention(stack.channel, "no edits either")
    await eventually(
        lambda: any(
            m["text"].strip() == answer for m in stack.slack.bot_replies(stack.channel, ts)
        ),
        what="the whole answer",
    )
    replies = stack.slack.bot_replies(stack.channel, ts)
    assert [m["text"].strip() for m in replies] == [answer]  # the partial one was removed


async def test_throttling_is_retried_with_backoff(make_stack):
    stack = await make_stack()
    stack.bedrock.inject(Fault("ThrottlingException", times=2))
    ts = await stack.mention(stack.channel, "are you busy?")
    [reply] = await stack.replies(stack.channel, ts, 1)
    assert "are you busy?" in reply["text"]
    attempts = stack.bedrock.requests
    assert [r.status for r in attempts] == [429, 429, 200]
    assert attempts[1].at - attempts[0].at >= 0.9  # initial interval 1 s
    assert attempts[2].at - attempts[1].at >= 1.9  # then doubled


async def test_a_throttling_storm_answers_every_thread_once_with_backoff(make_stack):
    """Bedrock refuses the first three waves of a burst across ten threads: every message is
    still answered once, and each thread's retries back off (1 s, then 2 s, then 4 s)."""
    stack = await make_stack()
    threads = 10
    stack.bedrock.inject(Fault("ThrottlingException", times=3 * threads))
    questions = [f"storm question {n:02d}" for n in range(threads)]
    tss = await asyncio.gather(*(stack.mention(stack.channel, q) for q in questions))
    for question, ts in zip(questions, tss, strict=True):
        [reply] = await stack.replies(stack.channel, ts, 1)
        assert question in reply["text"]
        attempts = [r for r in stack.bedrock.requests if question in str(r.body)]
        assert attempts[-1].status == 200 and all(r.status == 429 for r in attempts[:-1])
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
        assert all(gap >= 0.9 * 2**n for n, gap in enumerate(gaps)), gaps
    throttled = sum(r.status == 429 for r in stack.bedrock.requests)
    assert throttled == 3 * threads
    assert len(stack.slack.bot_replies(stack.channel, tss[0])) == 1


async def test_permanent_bedrock_error_posts_a_notice_and_the_conversation_goes_on(make_stack):
    stack = await make_stack()
    stack.bedrock.inject(Fault("AccessDeniedException"))
    ts = await stack.mention(stack.channel, "hello?")
    [notice] = await stack.replies(stack.channel, ts, 1)
    assert notice["text"].startswith(":warning:")
    assert len(stack.converse_requests()) == 1  # not retried
    await stack.say(stack.channel, ts, "how about now?")
    replies = await stack.replies(stack.channel, ts, 2)
    assert "how about now?" in replies[1]["text"]
    # The failed turn is left out of the prompt, so roles still alternate.
    assert [m["role"] for m in reply_requests(stack)[-1]["messages"]] == ["user"]


async def test_context_overflow_shrinks_the_window_and_tries_once_more(make_stack):
    stack = await make_stack(context_budget_tokens=2000)
    ts = await stack.mention(stack.channel, "one")
    await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "two")
    await stack.replies(stack.channel, ts, 2)
    stack.bedrock.inject(
        Fault("ValidationException", message="Input is too long for requested model.")
    )
    await stack.say(stack.channel, ts, "three " + "x" * 4000)
    replies = await stack.replies(stack.channel, ts, 3)
    assert "three" in replies[2]["text"]
    overflowed, retried = reply_requests(stack)[-2:]
    assert len(retried["messages"]) < len(overflowed["messages"])


async def test_continue_as_new_under_concurrent_messages_loses_nothing(make_stack):
    stack = await make_stack(history_event_cap=60)
    ts = await stack.mention(stack.channel, "m0")
    texts = [f"m{i}" for i in range(1, 41)]
    # Bursts of concurrent messages, so some arrive while a continue-as-new is due.
    for start in range(0, len(texts), 8):
        await asyncio.gather(*(stack.say(stack.channel, ts, t) for t in texts[start : start + 8]))
    expected = {"m0", *texts}

    def answered() -> list[str]:
        return [
            line.split("] ", 1)[1]
            for body in reply_requests(stack)
            for line in last_user_text(body).splitlines()
        ]

    await eventually(lambda: set(answered()) >= expected, timeout=60, what="all messages answered")
    assert sorted(answered()) == sorted(expected)  # each exactly once
    workflow_id = conversation_id("T0LOCAL", stack.channel, ts)

    async def continued() -> bool:
        query = f"WorkflowId = '{workflow_id}'"
        return len([w async for w in stack.client.list_workflows(query)]) > 1

    # Visibility indexes the new run a moment after the continue-as-new.
    await eventually(continued, what="a second run")
    status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
    assert status.turn_count == len(reply_requests(stack))


async def test_input_tokens_stay_bounded_as_the_conversation_grows(make_stack):
    stack = await make_stack(context_budget_tokens=400)
    ts = await stack.mention(stack.channel, "turn 0 " + "y" * 200)
    await stack.replies(stack.channel, ts, 1)
    for i in range(1, 30):
        await stack.say(stack.channel, ts, f"turn {i} " + "y" * 200)
        await stack.replies(stack.channel, ts, i + 1)
    usage = [sum(len(message_text(m)) for m in body["messages"]) for body in reply_requests(stack)]
    summaries = len(stack.converse_requests()) - len(usage)
    assert len(usage) == 30 and summaries >= 2  # rolling summaries were written
    early, late = max(usage[5:10]), max(usage[20:30])
    assert late <= early * 1.5, (early, late)
    # The rolling summary opens the first user message, framed as what it is.
    last = reply_requests(stack)[-1]
    system = [b for b in last["system"] if "cachePoint" not in b]
    assert system == [{"text": stack.settings.bedrock.system_prompt}]
    opening = last["messages"][0]["content"][0]["text"]
    assert opening.startswith('<context kind="rolling_summary"')
    assert "Summary (offline model)" in opening


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_30000_character_answer_lands_as_several_messages_in_order(make_stack, streaming):
    paragraphs = [f"Part {i:03d}. " + "lorem ipsum " * 40 for i in range(60)]  # ~30,000 chars
    answer = "\n\n".join(paragraphs)
    stack = await make_stack(
        streaming=streaming,
        max_tokens=10_000,
        bedrock_options={"responder": lambda body: answer, "stream_chunk_chars": 500},
    )
    ts = await stack.mention(stack.channel, "tell me everything")
    await eventually(
        lambda: (
            "Part 059" in "".join(m["text"] for m in stack.slack.bot_replies(stack.channel, ts))
        ),
        what="the whole answer",
    )
    replies = stack.slack.bot_replies(stack.channel, ts)
    assert len(replies) >= 3
    assert all(len(m["text"]) <= 12_000 for m in replies)
    text = "".join(m["text"] for m in replies)
    positions = [text.index(f"Part {i:03d}.") for i in range(60)]
    assert positions == sorted(positions)  # in order, nothing missing
    assert not [c for c in stack.slack.calls if c.error == "msg_too_long"]


async def test_a_long_answer_reaches_slack_in_several_appends(make_stack):
    answer = " ".join(f"word{i}" for i in range(300))  # ~2,400 characters
    stack = await make_stack(
        bedrock_options={
            "responder": lambda body: answer,
            "stream_chunk_chars": 20,
            "stream_delay_s": 0.01,
        }
    )
    ts = await stack.mention(stack.channel, "go on")
    [reply] = await stack.replies(stack.channel, ts, 1)
    [start] = stack.slack.calls_to("chat.startStream")
    appends = stack.slack.calls_to("chat.appendStream")
    assert len(appends) >= 3  # the text appeared as the model wrote it
    streamed = start.params["markdown_text"] + "".join(c.params["markdown_text"] for c in appends)
    assert streamed.strip() == answer == reply["text"].strip()
    assert stack.slack.calls_to("chat.stopStream")
    # The session was processing until the answer's last chat.stopStream made it active:
    # no call of its own to end it.
    [processing] = stack.slack.calls_to("agents.sessions.setStatus")
    assert processing.params["status"] == "processing"
    assert stack.slack.calls_to("chat.stopStream")[-1].params["session_status"] == "active"
    assert stack.slack.session(stack.channel, ts) == "active"


async def test_a_turn_throttled_for_over_10_seconds_says_so(make_stack):
    stack = await make_stack()
    # Retries start 1, 2, 4 and 8 s apart: the fifth attempt comes about 15 s in.
    stack.bedrock.inject(Fault("ThrottlingException", times=4))
    ts = await stack.mention(stack.channel, "patience")
    [reply] = await stack.replies(stack.channel, ts, 1)
    assert "patience" in reply["text"]
    # A session has no words of its own for it: the thread's status says so beside it.
    statuses = [c.params["status"] for c in stack.slack.calls_to("assistant.threads.setStatus")]
    assert any("busy" in status for status in statuses), statuses
    assert stack.slack.status(stack.channel, ts) == ""
    assert stack.slack.session(stack.channel, ts) == "active"
