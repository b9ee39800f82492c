"""Every model call on the record: the request names the model and its parameters, the result
what came back, and `threadchat show --invocations` rebuilds the list from history alone."""

from devtools.bedrock import GUARDRAIL_MESSAGE
from devtools.stack import ALICE, eventually, is_title_request
from threadchat import actions, texts
from threadchat.commands import operator
from threadchat.config import DEFAULT_SYSTEM_PROMPT
from threadchat.ids import conversation_id
from threadchat.inference import prompt_hash
from threadchat.model import EndRequest, ReplyRequest
from workflows.conversation import ConversationWorkflow

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"  # BedrockSettings' default


async def test_show_invocations_lists_every_call_across_runs(make_stack):
    # A continue-as-new after every turn: the list must span the runs.
    stack = await make_stack(history_event_cap=20)
    thread = await stack.mention(stack.channel, "first question")
    [first] = await stack.replies(stack.channel, thread, 1)
    await stack.say(stack.channel, thread, "second question")
    replies = await stack.replies(stack.channel, thread, 2)
    assert await stack.click(stack.channel, replies[1]["ts"], actions.REGENERATE) == 200
    await eventually(
        lambda: (
            "Sampled at temperature" in stack.slack.message(stack.channel, replies[1]["ts"])["text"]
        ),
        what="the regenerated answer",
    )
    handle = stack.handle(stack.channel, thread)
    await handle.signal(ConversationWorkflow.end, EndRequest(ALICE, "command"))
    await handle.result()
    workflow_id = conversation_id("T0LOCAL", stack.channel, thread)
    runs = [r async for r in stack.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    assert len(runs) > 1  # the test means nothing without a continue-as-new

    rows = await operator.load_invocations(stack.client, workflow_id)
    assert [r.kind for r in rows] == ["reply", "reply", "regenerate", "final_summary"]
    assert len({r.run_id for r in rows}) > 1
    assert [r.temperature for r in rows] == [0.5, 0.5, 0.8, 0.5]
    assert {r.model_id for r in rows} == {MODEL}
    assert {r.outcome for r in rows} == {"ok"}
    assert [r.stop_reason for r in rows] == ["end_turn"] * 4
    assert rows[0].system_prompt_hash == prompt_hash(DEFAULT_SYSTEM_PROMPT)
    assert rows[3].system_prompt_hash != rows[0].system_prompt_hash  # the summariser's own
    # Tokens and request ids are the ones the model server answered, in order.
    served = [
        r
        for r in stack.bedrock.requests
        if r.operation.startswith("converse") and not is_title_request(r.body)
    ]
    assert [r.request_id for r in rows] == [s.request_id for s in served]
    assert all(r.input_tokens > 0 and r.output_tokens > 0 for r in rows)
    assert all(r.attempt == 1 and r.latency_ms >= 0 and r.at is not None for r in rows)
    table = operator.format_invocations(rows)
    assert table.splitlines()[0].startswith("TIME (UTC)")
    assert "regenerate" in table and "final_summary" in table


async def test_the_request_itself_names_model_parameters_and_prompt(make_stack):
    stack = await make_stack(bedrock_settings={"temperature": 0.2, "top_p": 0.9})
    thread = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, thread, 1)
    history = await stack.handle(stack.channel, thread).fetch_history()
    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "stream_reply"
    ]
    [request] = await stack.client.data_converter.decode(scheduled.input.payloads, [ReplyRequest])
    assert request.inference.model_id == MODEL
    assert (request.inference.temperature, request.inference.top_p) == (0.2, 0.9)
    assert request.inference.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert scheduled.task_queue.name == stack.settings.temporal.bedrock_task_queue
    [body] = stack.converse_requests()
    assert body["inferenceConfig"] == {"maxTokens": 2048, "temperature": 0.2, "topP": 0.9}


async def test_an_answer_cut_at_the_length_limit_says_so(make_stack):
    stack = await make_stack(max_tokens=8)
    thread = await stack.mention(stack.channel, "write me a long story about a lighthouse")
    [reply] = await stack.replies(stack.channel, thread, 1)
    assert reply["text"].endswith(texts.ANSWER_CUT)
    await stack.say(stack.channel, thread, "go on")
    await stack.replies(stack.channel, thread, 2)
    # The note is for people, not part of what the model said.
    prompt = stack.converse_requests()[-1]["messages"]
    assert texts.ANSWER_CUT not in prompt[1]["content"][0]["text"]
    rows = await operator.load_invocations(
        stack.client, conversation_id("T0LOCAL", stack.channel, thread)
    )
    assert [r.stop_reason for r in rows] == ["max_tokens", "max_tokens"]


async def test_a_guardrail_intervention_is_shown_and_kept_out_of_the_context(make_stack):
    stack = await make_stack(
        bedrock_options={"guardrail_words": ("forbidden",)},
        bedrock_settings={"guardrail_id": "gr-local", "guardrail_version": "1"},
    )
    thread = await stack.mention(stack.channel, "tell me the forbidden thing")
    [blocked] = await stack.replies(stack.channel, thread, 1)
    assert blocked["text"] == GUARDRAIL_MESSAGE
    [body] = stack.converse_requests()
    assert body["guardrailConfig"] == {
        "guardrailIdentifier": "gr-local",
        "guardrailVersion": "1",
        "trace": "disabled",
        "streamProcessingMode": "sync",
    }
    await stack.say(stack.channel, thread, "then something else")
    await stack.replies(stack.channel, thread, 2)
    prompt = stack.converse_requests()[-1]["messages"]
    # What people wrote is marked for the guardrail to check; the blocked turn is left out.
    [[asked]] = [m["content"] for m in prompt]
    assert "then something else" in asked["guardContent"]["text"]["text"]
    rows = await operator.load_invocations(
        stack.client, conversation_id("T0LOCAL", stack.channel, thread)
    )
    assert rows[0].stop_reason == "guardrail_intervened" and rows[0].guardrail == "gr-local:1"
