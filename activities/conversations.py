"""Activities that read Temporal itself: what a new conversation should know at its start."""

import dataclasses
import logging
from collections.abc import Callable

from temporalio import activity
from temporalio.client import Client

from threadchat import texts
from threadchat.channels import ChannelSettings, ChannelsFileError
from threadchat.channels import load as load_channels
from threadchat.channels import lookup as lookup_channel
from threadchat.config import Settings
from threadchat.ids import conversation_id
from threadchat.model import (
    ConversationResult,
    ConversationSettings,
    ConversationSetup,
    ThreadRef,
    TokenLimits,
)
from threadchat.reloading import ReloadingFile
from threadchat.tools_file import ToolsFile

log = logging.getLogger(__name__)


def _either(value: int | None, default: int) -> int:
    return default if value is None else value


class ChannelDirectory(ReloadingFile[dict[str, ChannelSettings]]):
    """THREADCHAT_CHANNELS_FILE as it is now (read again when it changes)."""

    def __init__(self, path: str | None, channels: dict[str, ChannelSettings]):
        super().__init__(
            "THREADCHAT_CHANNELS_FILE", path, channels, load_channels, ChannelsFileError
        )

    def lookup(self, channel: str) -> ChannelSettings | None:
        return lookup_channel(self.current(), channel)

    def prompts(self, channel: str) -> list[dict[str, str]]:
        """The assistant panel's suggested prompts while `channel` is in view: the channel's
        own (and a way to end), or the defaults."""
        own = self.lookup(channel) if channel else None
        if own is None or not own.suggested_prompts:
            return texts.suggested_prompts(channel)
        prompts = [{"title": p[:75], "message": p} for p in own.suggested_prompts]
        if len(prompts) < 4:
            prompts.append({"title": texts.END_PROMPT, "message": texts.END_PROMPT})
        return prompts


class ConversationActivities:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        channels: ChannelDirectory | None = None,
        tools: Callable[[], ToolsFile] | None = None,
    ):
        self.client = client
        self.settings = settings
        self.channels = channels or ChannelDirectory(settings.channels_file, settings.channels)
        # The tools file as it is now (the worker reads it again when it changes).
        self.tools = tools or (lambda: settings.tools)

    def conversation_settings(self, channel: str) -> ConversationSettings:
        """What a new conversation in `channel` runs with, for all of its life: the model,
        its parameters and prompt (the channel's own where it sets them) and where model
        calls go. A changed setting applies to the next conversation."""
        bedrock, per_channel = self.settings.bedrock, self.channels.lookup(channel)
        inference = bedrock.inference()
        summary_model = bedrock.summary_model_id
        limits = None  # the worker's own, read at each check
        if per_channel is not None:
            inference = dataclasses.replace(
                inference,
                model_id=per_channel.model_id or inference.model_id,
                system_prompt=per_channel.system_prompt or inference.system_prompt,
            )
            summary_model = per_channel.summary_model_id or per_channel.model_id or summary_model
            own = self.settings.token_limits
            if (per_channel.user_daily_tokens, per_channel.conversation_daily_tokens) != (
                None,
            ) * 2:
                limits = TokenLimits(
                    per_user=_either(per_channel.user_daily_tokens, own.per_user),
                    per_conversation=_either(
                        per_channel.conversation_daily_tokens, own.per_conversation
                    ),
                )
        return dataclasses.replace(
            self.settings.conversation,
            inference=inference,
            summary_model_id=summary_model,
            bedrock_task_queue=self.settings.temporal.bedrock_task_queue,
            tools_task_queue=self.settings.temporal.tools_task_queue,
            tool_servers=list(self.tools().servers_for(channel)),
            max_tool_rounds=self.settings.max_tool_rounds,
            approval_timeout_seconds=self.settings.approval_timeout_seconds,
            token_limits=limits,
            title_in_visibility=not self.settings.encryption_keys,
            reply_mode=(per_channel and per_channel.reply) or self.settings.conversation.reply_mode,
        )

    @activity.defn
    async def open_conversation(
        self, thread: ThreadRef, look_back: bool = True
    ) -> ConversationSetup:
        """Settings for a new conversation, and (with `look_back`) the summary of the
        thread's last one.

        A mention in a thread whose conversation ended starts a new run of the same workflow
        id; the earlier run's result holds the summary the new one should remember. Looking
        it up is a visibility query: skipped where no earlier conversation can exist.
        """
        settings = self.conversation_settings(thread.channel)
        if not look_back:
            return ConversationSetup(settings=settings)
        try:
            previous = await self._previous_summary(thread)
        except Exception as err:
            # Remembering the last conversation is a nicety; never block a new one on it.
            log.warning("could not read the thread's earlier conversation: %s", err)
            previous = ""
        return ConversationSetup(settings=settings, previous_summary=previous)

    async def _previous_summary(self, thread: ThreadRef) -> str:
        workflow_id = conversation_id(thread.team, thread.channel, thread.thread_ts)
        ended = [
            execution
            async for execution in self.client.list_workflows(
                f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'Completed'"
            )
        ]
        if not ended:
            return ""
        latest = max(ended, key=lambda execution: execution.close_time)
        handle = self.client.get_workflow_handle(
            workflow_id, run_id=latest.run_id, result_type=ConversationResult
        )
        return (await handle.result(follow_runs=False)).summary
