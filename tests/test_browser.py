"""The Slack playground in a real headless Chromium: a whole conversation as a person has it,
typed into the page and clicked on its buttons, against the real bot, worker and Temporal.

Needs Debian's chromium (``apt-get install -y chromium``) and the playwright package, whose
wheel carries its driver; the browser is never downloaded. Without Chromium the test skips,
except in CI (``CI`` set), where it fails. With ``THREADCHAT_SCREENSHOT`` set it saves
docs/playground.png, the README's picture, mid-conversation.
"""

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devtools.playground import Playground
from devtools.samples import TINY_PDF, tiny_png
from devtools.stack import ALICE, BOB, SIGNING_SECRET, Stack, eventually
from threadchat import actions, texts

CHROMIUM = Path("/usr/bin/chromium")
# Without an emoji font Chromium draws the reply buttons' 👍 and 👎 as empty boxes: CI (.ci/run)
# installs Debian's, and the test insists on it there, where the README's picture is taken.
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
# Without these, Chromium on a closed network keeps trying to reach Google's services and can
# hang; playwright gives each launch a fresh profile directory of its own.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "playground.png"
TIMEOUT_MS = 15_000


def require_browser() -> None:
    """Skip without a browser; in CI, where the browser test must run, fail instead."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -e '.[dev]')"
    if problem is None and os.environ.get("CI") and not EMOJI_FONT.exists():
        pytest.fail(f"{EMOJI_FONT} is missing (apt-get install -y fonts-noto-color-emoji)")
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run in CI: {problem}", pytrace=False)
    pytest.skip(f"no browser test: {problem}")


@contextlib.asynccontextmanager
async def playground_page(
    make_stack: Any, **stack_options: Any
) -> AsyncIterator[tuple[Stack, Any]]:
    """A fresh stack (`stack_options` as make_stack's) and a Chromium page on its playground;
    any script error fails the test."""
    require_browser()
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=TIMEOUT_MS)
    stack = await make_stack(**stack_options)
    playground = Playground(
        stack.slack,
        stack.bot_url,
        SIGNING_SECRET,
        temporal_ui_url="http://127.0.0.1:8233",
        offline_model=True,
    )
    url = await playground.start()
    page_errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, timeout=TIMEOUT_MS
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 720})
                page.set_default_timeout(TIMEOUT_MS)
                page.on("pageerror", lambda error: page_errors.append(str(error)))
                await page.goto(url)
                await expect(page.locator("#channel-title")).to_have_text("# general")
                yield stack, page
            finally:
                await browser.close()
    finally:
        await playground.stop()
    assert page_errors == []


async def test_a_conversation_in_the_playground(make_stack):
    require_browser()
    from playwright.async_api import expect

    async with playground_page(make_stack) as (stack, page):
        await expect(page.locator("#temporal-link")).to_be_visible()
        await expect(page.locator("#playground-note")).to_contain_text("offline model")

        # Alice mentions the bot in #general; its answer opens a thread.
        channel_box = page.locator("#channel-composer textarea")
        await channel_box.fill("@threadchat what is Temporal?")
        await channel_box.press("Enter")
        mention = page.locator("#channel-messages .message", has_text="what is Temporal?")
        await expect(mention.locator(".mention")).to_have_text("@threadchat")
        await mention.locator(".thread-summary", has_text="1 reply").click()
        thread = page.locator("#thread-messages")
        await expect(thread.locator(".message.bot")).to_contain_text("You said:")
        # The thread links to its conversation's workflow in the Temporal UI.
        workflow = await page.locator("#thread-workflow").get_attribute("href")
        prefix = "http://127.0.0.1:8233/namespaces/default/workflows/"
        assert workflow.startswith(prefix)
        described = await stack.client.get_workflow_handle(workflow.removeprefix(prefix)).describe()
        assert described.workflow_type == "ConversationWorkflow"

        # Bob follows up in the thread, no mention needed: the reply quotes the history.
        await page.select_option("#user-select", label="bob")
        thread_box = page.locator("#thread-composer textarea")
        await thread_box.fill("and what is a **workflow**?")
        await thread_box.press("Enter")
        await expect(thread.locator(".message.bot").nth(1)).to_contain_text(
            'Before that: "[alice] what is Temporal?"'
        )
        own = thread.locator(".message:not(.bot)", has_text="and what is a")
        await expect(own.locator(".author")).to_have_text("bob")
        await expect(own.locator("strong")).to_have_text("workflow")  # rendered mrkdwn
        # The finished reply carries its buttons (the picture shows them).
        await expect(
            thread.locator('.message.bot [data-action-id="threadchat_regenerate"]')
        ).to_have_count(2)
        if os.environ.get("THREADCHAT_SCREENSHOT"):
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.mouse.move(640, 620)  # no hover toolbar in the picture
            await page.screenshot(path=str(SCREENSHOT))

        # Alice ends it. Slash commands run in the channel: /endchat answers her
        # privately, and the summary lands in the thread.
        await page.select_option("#user-select", label="alice")
        await channel_box.fill("/endchat")
        await channel_box.press("Enter")
        private = page.locator("#channel-messages .message.ephemeral")
        answer = private.filter(has_text="Ending this conversation")
        await expect(answer).to_contain_text("Only visible to you")
        await expect(thread.locator(".message.bot").last).to_contain_text("Summary")
        # Once the summary is posted, a second private note links to it.
        notice = private.filter(has_text="Its summary is in the thread")
        await expect(notice).to_have_count(1)


async def test_the_buttons_under_a_reply_rate_it_and_regenerate_it(make_stack):
    require_browser()
    from playwright.async_api import expect

    async with playground_page(make_stack) as (stack, page):
        channel_box = page.locator("#channel-composer textarea")
        await channel_box.fill("@threadchat what is Temporal?")
        await channel_box.press("Enter")
        mention = page.locator("#channel-messages .message", has_text="what is Temporal?")
        await mention.locator(".thread-summary", has_text="1 reply").click()
        thread = page.locator("#thread-messages")
        # Private notes are drawn as the bot's too; only stored messages are its replies.
        replies = thread.locator(".message.bot:not(.ephemeral):not(.notice)")
        # The buttons come with the reply's last message, once it is complete.
        await expect(
            replies.last.locator('[data-action-id="threadchat_regenerate"]')
        ).to_be_visible()
        reply_ts = await replies.last.get_attribute("data-ts")
        reply = thread.locator(f'.message[data-ts="{reply_ts}"]')
        await expect(reply).not_to_have_class(re.compile(r"\bstreaming\b"))
        before = await reply.locator(".text").text_content()
        assert "You said:" in before
        count = await replies.count()
        channel = await page.evaluate("threadchatPlayground.state.channel")
        thread_ts = await mention.get_attribute("data-ts")
        stored = len(stack.slack.bot_replies(channel, thread_ts))

        # The session shows the answer is done.
        await expect(page.locator('#thread-status [data-session="active"]')).to_be_visible()
        # 👍 (one half of Slack's feedback buttons) is answered privately: a note only Alice
        # sees, in the thread or in the channel.
        await reply.locator('.context-actions [data-action-id="threadchat_feedback"]').first.click()
        private = page.locator("#thread-messages, #channel-messages").locator(".message.ephemeral")
        note = private.filter(has_text="feedback")
        await expect(note).to_have_count(1)
        await expect(note).to_contain_text("Only visible to you")

        # Regenerate replaces the reply in place: the same message, new words, no new reply.
        await reply.locator('[data-action-id="threadchat_regenerate"]').click()
        await expect(reply.locator(".text")).not_to_have_text(before)
        await expect(reply).to_be_visible()
        await expect(reply).not_to_have_class(re.compile(r"\bstreaming\b"))
        await expect(reply.locator('[data-action-id="threadchat_regenerate"]')).to_be_visible()
        await expect(replies).to_have_count(count)
        assert len(stack.slack.bot_replies(channel, thread_ts)) == stored


async def test_stop_mid_answer_keeps_what_showed_and_the_next_question_is_answered(make_stack):
    require_browser()
    from playwright.async_api import expect

    # The first answer is long and streamed slowly, so Stop lands in its middle; the next one
    # is short.
    long = " ".join(f"word{i:03d}" for i in range(150))
    asked: list[int] = []

    def responder(body: Any) -> str:
        asked.append(1)
        return long if len(asked) == 1 else "A short answer."

    slow = {"responder": responder, "stream_chunk_chars": 10, "stream_delay_s": 0.05}
    async with playground_page(make_stack, bedrock_options=slow) as (stack, page):
        channel_box = page.locator("#channel-composer textarea")
        await channel_box.fill("@threadchat tell me everything")
        await channel_box.press("Enter")
        mention = page.locator("#channel-messages .message", has_text="tell me everything")
        await mention.locator(".thread-summary", has_text="1 reply").click()
        thread = page.locator("#thread-messages")
        answer = thread.locator(".message.bot:not(.ephemeral):not(.notice)")
        await expect(answer.locator(".text")).to_contain_text("word010")
        # While the answer is being written, the session is processing and Slack offers Stop.
        status = page.locator("#thread-status")
        await expect(status.locator('[data-session="processing"]')).to_be_visible()
        stop = status.locator("button.stop-session")
        await stop.click()

        line = texts.stopped_line("alice")
        await expect(answer.locator(".text")).to_contain_text("Stopped by alice")
        await expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
        await expect(status.locator('[data-session="active"]')).to_be_visible()
        await expect(stop).to_have_count(0)
        await expect(answer).to_have_count(1)
        # What showed stays in the same message, cut where the stream stopped.
        channel = await page.evaluate("threadchatPlayground.state.channel")
        thread_ts = await mention.get_attribute("data-ts")
        [stored] = stack.slack.bot_replies(channel, thread_ts)
        assert stored["text"].endswith(line)
        shown = stored["text"].removesuffix(line).strip()
        assert shown and long.startswith(shown) and len(shown) < len(long)
        assert "word149" not in await answer.locator(".text").text_content()

        thread_box = page.locator("#thread-composer textarea")
        await thread_box.fill("a short one now, please")
        await thread_box.press("Enter")
        await expect(answer).to_have_count(2)
        await expect(answer.nth(1).locator(".text")).to_contain_text("A short answer.")
        await expect(status.locator('[data-session="active"]')).to_be_visible()
        await expect(answer.first.locator(".text")).to_contain_text("Stopped by alice")
        assert len(asked) == 2


async def test_an_image_and_a_pdf_attached_to_a_mention_reach_the_model(make_stack):
    require_browser()
    from playwright.async_api import expect

    async with playground_page(make_stack) as (stack, page):
        composer = page.locator("#channel-composer")
        await composer.locator("input[type=file]").set_input_files(
            [
                {"name": "chart.png", "mimeType": "image/png", "buffer": tiny_png(2, 2)},
                {"name": "plan.pdf", "mimeType": "application/pdf", "buffer": TINY_PDF},
            ]
        )
        chips = composer.locator(".attachment")
        await expect(chips).to_have_count(2)
        await expect(chips.nth(0)).to_contain_text("chart.png")
        await expect(chips.nth(1)).to_contain_text("plan.pdf")
        # A chip can be taken off again before sending.
        await composer.locator("input[type=file]").set_input_files(
            [{"name": "oops.txt", "mimeType": "text/plain", "buffer": b"not this one"}]
        )
        await expect(chips).to_have_count(3)
        await chips.filter(has_text="oops.txt").locator(".attachment-remove").click()
        await expect(chips).to_have_count(2)

        box = composer.locator("textarea")
        await box.fill("@threadchat what do these show?")
        await box.press("Enter")
        await expect(chips).to_have_count(0)
        mention = page.locator("#channel-messages .message", has_text="what do these show?")
        cards = mention.locator(".file-card")
        await expect(cards).to_have_count(2)
        await expect(cards.nth(0)).to_contain_text("chart.png")
        await expect(cards.nth(1)).to_contain_text("plan.pdf")
        # The image shows as itself: its thumbnail loaded and decoded in the page.
        await expect(cards.nth(0).locator("img.file-thumb")).to_have_js_property("naturalWidth", 2)
        assert sorted(f["name"] for f in stack.slack.files.values()) == ["chart.png", "plan.pdf"]

        await mention.locator(".thread-summary").click()
        replies = page.locator("#thread-messages .message.bot:not(.ephemeral):not(.notice)")
        # The bot downloaded both and the offline model names what it was given.
        await expect(
            replies.filter(has_text="chart.png").filter(has_text="plan.pdf").first
        ).to_be_visible()
        # It read their bytes, with its token, as from Slack.
        assert set(stack.slack.downloads) == set(stack.slack.files)


async def test_the_latest_message_stays_in_view_when_an_image_loads(make_stack):
    require_browser()
    from playwright.async_api import expect

    async with playground_page(make_stack) as (stack, page):
        channel = await page.evaluate("threadchatPlayground.state.channel")
        for n in range(25):  # enough to scroll
            stack.slack.add_message(channel, user=BOB, text=f"an earlier message, number {n}")
        messages = page.locator("#channel-messages")
        await expect(messages.locator(".message", has_text="number 24")).to_be_in_viewport()
        composer = page.locator("#channel-composer")
        await composer.locator("input[type=file]").set_input_files(
            [{"name": "photo.png", "mimeType": "image/png", "buffer": tiny_png(240, 240)}]
        )
        box = composer.locator("textarea")
        await box.fill("@threadchat what is in this picture?")
        await box.press("Enter")
        mention = messages.locator(".message", has_text="what is in this picture?")
        # The thumbnail loaded after the list was scrolled, and grew it: the bottom of the
        # list is still what shows.
        await expect(mention.locator("img.file-thumb")).to_have_js_property("naturalWidth", 240)
        summary = mention.locator(".thread-summary", has_text="1 reply")
        await expect(summary).to_be_in_viewport(ratio=1)
        # In the thread too: its root carries the image, and the answer below it shows.
        await summary.click()
        thread = page.locator("#thread-messages")
        await expect(thread.locator("img.file-thumb")).to_have_js_property("naturalWidth", 240)
        answer = thread.locator(".message.bot:not(.ephemeral):not(.notice)").last
        await expect(answer).to_contain_text("photo.png")
        await expect(answer.locator('[data-action-id="threadchat_regenerate"]')).to_be_in_viewport(
            ratio=1
        )


async def test_the_assistant_panel_and_the_home_tab(make_stack):
    require_browser()
    from playwright.async_api import expect

    async with playground_page(make_stack) as (stack, page):
        # Alice, in #general, opens the app's side panel next to it.
        await page.locator("#assistant-button").click()
        await expect(page.locator("#assistant-pane")).to_be_visible()
        await expect(page.locator("#assistant-context")).to_have_text("Viewing #general")
        await page.wait_for_function("threadchatPlayground.state.assistant.ts")
        panel_state = await page.evaluate("threadchatPlayground.state.assistant")
        dm, thread_ts = panel_state["channel"], panel_state["ts"]
        panel = page.locator("#assistant-messages")
        bot = panel.locator(".message.bot:not(.ephemeral):not(.notice)")
        # The app greets her in the new thread and suggests what to ask; the thread's root
        # is only its anchor and is not shown.
        await expect(bot.first).to_be_visible()
        await expect(panel.locator(f'.message[data-ts="{thread_ts}"]')).to_have_count(0)
        chips = page.locator("#assistant-prompts .suggested-prompt")
        await expect(chips.first).to_be_visible()
        first = stack.slack.suggested_prompts[(dm, thread_ts)]["prompts"][0]
        await expect(chips.first).to_have_text(first["title"])

        # A prompt clicked is her own message in the thread, answered there, streamed.
        await chips.first.click()
        own = panel.locator(".message:not(.bot)")
        await expect(own).to_have_count(1)
        await expect(own.locator(".author")).to_have_text("alice")
        [_root, asked] = [m for m in stack.slack.messages(dm, thread_ts) if m["user"] == ALICE]
        assert asked["text"] == first["message"]
        answer = panel.locator(".message:not(.bot) ~ .message.bot:not(.ephemeral):not(.notice)")
        await expect(answer.last).to_be_visible()
        await expect(answer.last).not_to_have_class(re.compile(r"\bstreaming\b"))
        await expect(answer.last.locator(".text")).to_contain_text(re.compile(r"\S"))
        # After the first answer the app names the thread, and the panel shows the name.
        title = await eventually(
            lambda: stack.slack.titles.get((dm, thread_ts)), 20, "the thread's title"
        )
        await expect(page.locator("#assistant-title")).to_have_text(title)

        # In her DM with the app the panel's thread is listed under that name; with a DM in
        # view the panel has no channel context.
        await page.locator(f'#dm-list [data-channel="{dm}"]').click()
        await expect(page.locator("#assistant-context")).to_have_text("")
        root = page.locator(f'#channel-messages .message[data-ts="{thread_ts}"]')
        await expect(root.locator(".text")).to_have_text(title)

        # The app's Home tab lists her open conversations, this one among them.
        await page.locator("#home-tab").click()
        home = page.locator("#home-view")
        await expect(home).to_be_visible()
        await expect(page.locator("#channel-messages")).to_be_hidden()
        end = home.locator(f'[data-action-id="threadchat_end_conversation"][data-value*="{dm}"]')
        await expect(end).to_have_count(1)
        # Ending it asks first, as Slack does for a button with a confirm: "Keep it" does
        # nothing, "End and summarize" ends it.
        dialog = page.locator("#confirm-dialog")
        await end.click()
        await expect(dialog).to_be_visible()
        await expect(dialog).to_contain_text(texts.HOME_END_CONFIRM)
        await dialog.get_by_role("button", name=texts.HOME_KEEP).click()
        await expect(dialog).to_be_hidden()
        assert (await stack.handle(dm, thread_ts).describe()).status.name == "RUNNING"
        await end.click()
        await dialog.get_by_role("button", name=texts.HOME_END).click()
        # Its summary is posted in the thread, in the panel, and the Home, published again
        # once the conversation has ended, no longer lists it.
        await expect(bot.last).to_contain_text("Summary")
        await expect(home.locator(f'a[href*="{dm}"]')).to_have_count(0)
        await expect(end).to_have_count(0)
        # One click reached the bot: the one confirmed (each is answered with an "ending" view).
        publishes = [str(c.params) for c in stack.slack.calls_to("views.publish")]
        assert sum(texts.HOME_ENDING in p for p in publishes) == 1


async def test_a_mention_in_the_middle_of_a_thread_sees_the_thread_and_the_alert(make_stack):
    require_browser()
    from playwright.async_api import expect

    async with playground_page(make_stack) as (stack, page):
        # Alice starts a thread with no mention; the monitoring app posts its alert there.
        channel_box = page.locator("#channel-composer textarea")
        await channel_box.fill("checkout feels slow")
        await channel_box.press("Enter")
        root = page.locator("#channel-messages .message", has_text="checkout feels slow")
        await root.hover()
        await root.locator("[data-menu]").click()
        await root.locator("[data-alert]").click()
        await root.locator(".thread-summary", has_text="1 reply").click()
        thread = page.locator("#thread-messages")
        alert = thread.locator(".message.bot", has_text="Checkout degraded")
        await expect(alert.locator(".author")).to_have_text("Monitoring")
        await expect(alert.locator(".attachment")).to_contain_text("p99 is 2.4s")

        # Bob adds to it, then asks the bot in the middle of the thread.
        await page.select_option("#user-select", label="bob")
        thread_box = page.locator("#thread-composer textarea")
        await thread_box.fill("restarting pods did nothing")
        await thread_box.press("Enter")
        await expect(thread.locator(".message", has_text="restarting pods")).to_have_count(1)
        await thread_box.fill("@threadchat what does the alert say?")
        await thread_box.press("Enter")
        answer = thread.locator(".message.bot:not(.ephemeral):not(.notice)", has_text="You said")
        await expect(answer).to_contain_text("what does the alert say?")
        # Its prompt opened with the thread so far: the alert, and what people said.
        prompt = str(stack.converse_requests()[-1]["messages"][0])
        assert 'kind="thread"' in prompt and "p99 is 2.4s" in prompt
        assert "checkout feels slow" in prompt and "restarting pods did nothing" in prompt


def tools_file(tmp_path: Path, directory_url: str) -> str:
    """As devtools/tools.yaml, with the directory where this test's server listens."""
    path = tmp_path / "tools.yaml"
    path.write_text(
        "servers:\n"
        "  directory:\n"
        f"    url: {directory_url}\n"
        "    approval: [file_ticket]\n"
        "channels:\n"
        "  default: [directory, knowledge, slack_search, memory]\n"
        "knowledge:\n"
        "  default: [KBSAMPLE01]\n"
    )
    return str(path)


async def ask_in_a_new_thread(page: Any, question: str) -> Any:
    """Alice mentions the bot in #general; the thread it answers in, opened."""
    from playwright.async_api import expect

    box = page.locator("#channel-composer textarea")
    await box.fill(f"@threadchat {question}")
    await box.press("Enter")
    mention = page.locator("#channel-messages .message", has_text=question)
    await expect(mention.locator(".thread-summary")).to_be_visible()
    await mention.locator(".thread-summary").click()
    return mention


async def test_tool_calls_show_as_task_cards_and_wait_for_approval_buttons(
    make_stack, directory, tmp_path
):
    require_browser()
    from playwright.async_api import expect

    options = {"tools_file": tools_file(tmp_path, directory.url)}
    async with playground_page(make_stack, **options) as (stack, page):
        thread = page.locator("#thread-messages")
        approve = thread.locator(f'[data-action-id="{actions.TOOL_APPROVE}"]')
        deny = thread.locator(f'[data-action-id="{actions.TOOL_DENY}"]')
        answers = thread.locator(".message.bot:not(.ephemeral):not(.notice)")
        first = await ask_in_a_new_thread(page, "file it: use file_ticket title=Printer body=jam")
        # The call waits for Alice: Approve and Deny under the bot's ask, the session
        # suspended, nothing run yet.
        await expect(approve).to_have_count(1)
        await expect(deny).to_have_count(1)
        await expect(page.locator('#thread-status [data-session="suspended"]')).to_be_visible()
        await expect(thread.locator(".task-card").first).to_have_attribute("data-status", "pending")
        assert not directory.calls("file_ticket")
        await approve.click()
        ask = thread.locator(".message.bot", has_text=texts.approval_decided(True, "alice"))
        await expect(ask).to_have_count(1)
        await expect(approve).to_have_count(0)
        # The answer shows its task card, done, above the text that names the ticket.
        card = thread.locator('.task-card[data-status="complete"]')
        await expect(card).to_have_count(1)
        await expect(card.locator(".task-title")).to_contain_text("directory / file_ticket")
        await expect(card.locator(".task-output")).to_contain_text("TICKET-0001")
        answer = answers.filter(has=page.locator('.task-card[data-status="complete"]'))
        await expect(answer.locator(".text")).to_contain_text("TICKET-0001")
        await expect(page.locator('#thread-status [data-session="active"]')).to_be_visible()
        [performed] = directory.calls("file_ticket")
        assert performed["arguments"] == {"title": "Printer", "body": "jam"}

        # The same ask in a second thread, denied: the model is told, nothing is filed.
        second = await ask_in_a_new_thread(page, "and: use file_ticket title=Chair body=wobbly")
        await expect(approve).to_have_count(1)
        await deny.click()
        denied = thread.locator(".message.bot", has_text=texts.approval_decided(False, "alice"))
        await expect(denied).to_have_count(1)
        await expect(approve).to_have_count(0)
        await expect(answers.locator(".text", has_text=texts.not_approved("alice"))).to_have_count(
            1
        )
        await expect(thread.locator(".task-card")).to_have_attribute("data-status", "error")
        await expect(page.locator('#thread-status [data-session="active"]')).to_be_visible()
        assert len(directory.calls("file_ticket")) == 1
        # Each thread kept its own: the first answer still shows its ticket.
        await first.locator(".thread-summary").click()
        await expect(thread.locator('.task-card[data-status="complete"]')).to_have_count(1)
        assert await second.get_attribute("data-ts") != await first.get_attribute("data-ts")


async def test_a_knowledge_base_answer_links_its_source(make_stack, directory, tmp_path):
    require_browser()
    from playwright.async_api import expect

    options = {"tools_file": tools_file(tmp_path, directory.url)}
    async with playground_page(make_stack, **options) as (stack, page):
        await ask_in_a_new_thread(page, "how many vacation days? use retrieve")
        thread = page.locator("#thread-messages")
        answer = thread.locator(".message.bot:not(.ephemeral):not(.notice)").last
        await expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
        # The citation under the answer is a link to the document the passage came from.
        link = answer.locator(".text a", has_text="Vacation policy")
        await expect(link).to_have_count(1)
        href = await link.get_attribute("href")
        assert href.startswith("https://") and href.endswith("/handbook/Vacation_policy.md")
        await expect(answer.locator(".text")).to_contain_text("Sources:")
        # The search's card lists the same document among its sources.
        card = answer.locator('.task-card[data-status="complete"]')
        await expect(card.locator(f'a.task-source[href="{href}"]')).to_have_count(1)
