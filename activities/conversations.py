"""Activities that read Temporal itself: what a new conversation should know at its start."""

from temporalio import activity
from temporalio.client import Client

from threadchat.ids import conversation_id
from threadchat.model import ConversationResult, ConversationSettings, ConversationSetup, ThreadRef


class ConversationActivities:
    def __init__(self, client: Client, settings: ConversationSettings):
        self.client = client
        self.settings = settings

    @activity.defn
    async def open_conversation(self, thread: ThreadRef) -> ConversationSetup:
        """Settings for a new conversation, and the summary of the thread's last one.

        A mention in a thread whose conversation ended starts a new run of the same workflow
        id; the earlier run's result holds the summary the new one should remember.
        """
        workflow_id = conversation_id(thread.team, thread.channel, thread.thread_ts)
        ended = [
            execution
            async for execution in self.client.list_workflows(
                f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'Completed'"
            )
        ]
        previous = ""
        if ended:
            latest = max(ended, key=lambda execution: execution.close_time)
            handle = self.client.get_workflow_handle(
                workflow_id, run_id=latest.run_id, result_type=ConversationResult
            )
            previous = (await handle.result(follow_runs=False)).summary
        return ConversationSetup(settings=self.settings, previous_summary=previous)
