"""Files and images people share in a thread reach the model: fetched from Slack by the reply,
never stored in Temporal, never sent with another thread's prompt, and a short note for any
file that cannot be read."""

import base64
import json

import pytest
from aiohttp import web

from devtools.samples import TINY_PDF, tiny_png
from devtools.slack_events import message_event
from devtools.stack import ALICE, Stack, eventually
from threadchat import attachments, texts

PNG = tiny_png()
PDF = TINY_PDF


def upload(stack: Stack, name: str, mimetype: str, content: bytes, **options) -> dict:
    return stack.slack.add_file(
        user=ALICE, name=name, mimetype=mimetype, content=content, **options
    )


def payload_bytes(node) -> list[bytes]:
    """Every payload's data in a history's JSON, decoded (the JSON carries it as base64)."""
    if isinstance(node, dict):
        if "metadata" in node and isinstance(node.get("data"), str):
            return [base64.b64decode(node["data"])]
        return [b for value in node.values() for b in payload_bytes(value)]
    if isinstance(node, list):
        return [b for value in node for b in payload_bytes(value)]
    return []


def blocks(stack: Stack, kind: str) -> list[list[dict]]:
    """The `kind` (image/document) blocks of each model call's last message."""
    return [
        [b[kind] for b in r.body["messages"][-1]["content"] if kind in b]
        for r in stack.bedrock.requests
        if r.operation == "converse-stream"
    ]


async def test_an_image_reaches_the_model_and_never_the_history(make_stack):
    stack = await make_stack()
    chart = upload(stack, "chart.png", "image/png", PNG)
    thread = await stack.mention(stack.channel, "what does this show?", files=[chart])
    [reply] = await stack.replies(stack.channel, thread, 1)
    assert "chart.png" in reply["text"]
    assert f"Files received: image (png, {len(PNG):,} bytes)" in reply["text"]
    [[image]] = blocks(stack, "image")
    assert base64.b64decode(image["source"]["bytes"]) == PNG
    assert stack.slack.downloads == [chart["id"]]
    history = await stack.handle(stack.channel, thread).fetch_history()
    stored = b"".join(payload_bytes(json.loads(history.to_json())))
    assert chart["id"].encode() in stored  # the reference...
    assert PNG not in stored and base64.b64encode(PNG) not in stored  # ...never the bytes


async def test_a_pdf_is_a_document_named_for_bedrock(make_stack):
    stack = await make_stack()
    plan = upload(stack, "plan v2.pdf", "application/pdf", PDF)
    chart = upload(stack, "chart.png", "image/png", PNG)
    thread = await stack.mention(stack.channel, "compare these", files=[plan, chart])
    [reply] = await stack.replies(stack.channel, thread, 1)
    assert f'document "plan v2" (pdf, {len(PDF):,} bytes)' in reply["text"]
    assert "image (png" in reply["text"]
    assert "plan v2.pdf" in reply["text"] and "chart.png" in reply["text"]


async def test_files_that_cannot_be_read_get_a_note_and_the_text_is_answered(make_stack):
    stack = await make_stack()
    big = upload(stack, "scan.pdf", "application/pdf", b"%PDF" + b"0" * 5_000_000)
    tool = upload(stack, "setup.exe", "application/x-msdownload", b"MZ\x90\x00")
    gone = upload(stack, "old.png", "image/png", PNG, served=False)
    thread = await stack.mention(stack.channel, "can you read these?", files=[big, tool, gone])
    [reply] = await stack.replies(stack.channel, thread, 1)
    text = reply["text"]
    assert 'You said: "[alice] can you read these?' in text  # the question is answered
    assert "I couldn't read scan.pdf: it is too large (5.0 MB; the limit is 4.5 MB)" in text
    assert "I couldn't read setup.exe: I can't read that kind of file" in text
    assert f"I couldn't read old.png: {texts.FILE_PROBLEMS['not_served']}" in text
    assert stack.slack.download_requests == [gone["id"]]  # the others were not even fetched
    assert blocks(stack, "image") == [[]] and blocks(stack, "document") == [[]]


async def test_a_file_alone_in_a_follow_up_is_answered(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "I will send you a chart")
    await stack.replies(stack.channel, thread, 1)
    chart = upload(stack, "chart.png", "image/png", PNG)
    await stack.say(stack.channel, thread, "", files=[chart])
    replies = await stack.replies(stack.channel, thread, 2)
    assert "[alice] (shared chart.png)" in replies[1]["text"]
    assert "Files received: image (png" in replies[1]["text"]


async def test_files_stay_in_context_until_the_budget_is_full_and_are_then_named(make_stack):
    stack = await make_stack(context_budget_tokens=2000)
    chart = upload(stack, "chart.png", "image/png", PNG)
    thread = await stack.mention(stack.channel, "look at this", files=[chart])
    await stack.replies(stack.channel, thread, 1)
    await stack.say(stack.channel, thread, "and the colours?")
    await stack.replies(stack.channel, thread, 2)
    await stack.say(stack.channel, thread, "now a long question: " + "why " * 450)
    await stack.replies(stack.channel, thread, 3)
    calls = [r.body for r in stack.bedrock.requests if r.operation == "converse-stream"]
    shown = [[b for m in body["messages"] for b in m["content"] if "image" in b] for body in calls]
    assert [len(images) for images in shown] == [1, 1, 0]  # kept, then out of the budget
    assert stack.slack.download_requests == [chart["id"]]  # downloaded once, kept a while
    # The file's name, in a note opening the first user message; never in the system prompt.
    opening = calls[2]["messages"][0]["content"][0]["text"]
    assert opening.startswith('<context kind="files_left_out"') and "\nchart.png\n" in opening
    assert all("files_left_out" not in json.dumps(c) for c in calls[:2])
    assert all("chart" not in json.dumps(c["system"]) for c in calls)


async def test_files_in_a_thread_without_a_conversation_are_ignored(make_stack):
    stack = await make_stack()
    root = stack.slack.add_message(stack.channel, user=ALICE, text="people talking")
    chart = upload(stack, "chart.png", "image/png", PNG)
    await stack.say(stack.channel, root["ts"], "a chart for you all", files=[chart])
    # A conversation elsewhere proves the bot is working; only then is silence meaningful.
    other = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, other, 1)
    assert stack.slack.bot_replies(stack.channel, root["ts"]) == []
    assert stack.slack.calls_to("files.info") == [] and stack.slack.download_requests == []


async def test_a_file_from_another_channel_is_never_read(make_stack):
    stack = await make_stack()
    secret = upload(stack, "salaries.xlsx", "application/vnd.ms-excel", b"PK\x03\x04")
    stack.slack.share_file(secret["id"], "C0PRIVATE")
    message = stack.slack.add_message(stack.channel, user=ALICE, text="<@U0BOT> read this")
    forged = message_event(
        channel=stack.channel,
        user=ALICE,
        text=message["text"],
        ts=message["ts"],
        files=[stack.slack.files[secret["id"]]],
    )
    status, _ = await stack.sender.send_event(forged)
    assert status == 200
    [reply] = await stack.replies(stack.channel, message["ts"], 1)
    assert f"I couldn't read salaries.xlsx: {texts.FILE_PROBLEMS['not_here']}" in reply["text"]
    assert stack.slack.download_requests == []


async def test_a_model_that_cannot_read_files_says_so(make_stack):
    stack = await make_stack(bedrock_settings={"model_id": "meta.llama3-70b-instruct-v1:0"})
    chart = upload(stack, "chart.png", "image/png", PNG)
    thread = await stack.mention(stack.channel, "what is this?", files=[chart])
    [reply] = await stack.replies(stack.channel, thread, 1)
    assert f"I couldn't read chart.png: {texts.FILE_PROBLEMS['no_vision']}" in reply["text"]
    await eventually(lambda: stack.slack.download_requests == [], what="no download")


# --- Where the bot token may go (issue 19, item 7) --------------------------------------

API = "https://slack.com/api/"
LOCAL_API = "http://127.0.0.1:8766/api/"


@pytest.mark.parametrize(
    ("url", "api_url", "sent"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.png", API, True),
        ("https://files.slack-gov.com/files-pri/T1-F1/a.png", API, True),
        ("https://FILES.SLACK.COM/files-pri/T1-F1/a.png", API, True),
        ("http://files.slack.com/files-pri/T1-F1/a.png", API, False),  # not over https
        ("https://files.slack.com:8443/files-pri/T1-F1/a.png", API, False),
        ("https://files.slack.com.evil.example/a.png", API, False),
        ("https://evil.example/files.slack.com/a.png", API, False),
        ("https://user@files.slack.com/a.png", API, False),
        ("https://slack.com/files/a.png", API, True),  # where the API calls go anyway
        ("https://slack.com.evil.example/files/a.png", API, False),
        ("https://drive.google.com/file/d/1/view", API, False),
        ("ftp://files.slack.com/a.png", API, False),
        ("https://files.slack.com:notaport/a.png", API, False),
        ("", API, False),
        ("http://127.0.0.1:8766/files/F1/a.png", LOCAL_API, True),  # the local servers
        ("http://127.0.0.1:9999/files/F1/a.png", LOCAL_API, False),  # another port
        ("https://127.0.0.1:8766/files/F1/a.png", LOCAL_API, False),  # another scheme
        ("http://localhost:8766/files/F1/a.png", LOCAL_API, False),  # another host name
    ],
)
def test_the_token_goes_only_to_slack_file_hosts(url, api_url, sent):
    info = {"mode": "hosted", "url_private_download": url}
    assert (attachments.token_url(info, api_url) == url) is sent


@pytest.mark.parametrize(
    "info", [{"mode": "external"}, {"is_external": True}, {"mode": "tombstone"}]
)
def test_files_stored_outside_slack_are_never_fetched(info):
    url = "https://files.slack.com/files-pri/T1-F1/download/a.pdf"
    assert attachments.token_url({**info, "url_private_download": url}, API) is None


@pytest.fixture
async def elsewhere():
    """A server that is not Slack, recording what it is sent."""
    seen: list[dict] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_the_bot_token_never_leaves_for_another_host(make_stack, elsewhere):
    base, seen = elsewhere
    stack = await make_stack()
    planted = upload(stack, "chart.png", "image/png", PNG, url=f"{base}/steal/chart.png")
    drive = upload(stack, "plan.pdf", "application/pdf", PDF, mode="external")
    real = upload(stack, "real.png", "image/png", PNG)
    thread = await stack.mention(stack.channel, "read these", files=[planted, drive, real])
    [reply] = await stack.replies(stack.channel, thread, 1)
    problem = texts.FILE_PROBLEMS["elsewhere"]
    assert f"I couldn't read chart.png: {problem}" in reply["text"]
    assert f"I couldn't read plan.pdf: {problem}" in reply["text"]
    assert "I couldn't read real.png" not in reply["text"]
    assert seen == []  # not a request, so not a token
    assert stack.slack.download_requests == [real["id"]]
    [last] = [m["content"] for m in stack.converse_requests()[0]["messages"][-1:]]
    texts_sent = [b["text"] for b in last if "text" in b]
    # Named to the model, not opened.
    assert '<file name="chart.png" opened="no"/>' in texts_sent
    assert '<file name="plan.pdf" opened="no"/>' in texts_sent
    assert [len(images) for images in blocks(stack, "image")] == [1]
