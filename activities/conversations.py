"""Activities that read Temporal itself: what a new conversation should know at its start."""

import dataclasses
import logging

from temporalio import activity
from temporalio.client import Client

from threadchat.config import BedrockSettings
from threadchat.ids import conversation_id
from threadchat.model import ConversationResult, ConversationSettings, ConversationSetup, ThreadRef

log = logging.getLogger(__name__)


class ConversationActivities:
    def __init__(
        self,
        client: Client,
        settings: ConversationSettings,
        bedrock: BedrockSettings,
        bedrock_task_queue: str,
    ):
        self.client = client
        # A conversation keeps the model, parameters and prompt it opened with: a changed
        # setting applies to the next conversation, and every call's request names them.
        self.settings = dataclasses.replace(
            settings,
            inference=bedrock.inference(),
            summary_model_id=bedrock.summary_model_id,
            bedrock_task_queue=bedrock_task_queue,
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
        if not look_back:
            return ConversationSetup(settings=self.settings)
        try:
            previous = await self._previous_summary(thread)
        except Exception as err:
            # Remembering the last conversation is a nicety; never block a new one on it.
            log.warning("could not read the thread's earlier conversation: %s", err)
            previous = ""
        return ConversationSetup(settings=self.settings, previous_summary=previous)

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
