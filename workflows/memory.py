"""What one person asked the bot to remember, kept by Temporal (the entity pattern, like the
token budget): one long-lived workflow per person, whose id comes from their team and user.

The `remember` and `forget` updates change it, the `memories` query reads it. Only the owner
may change it: each update carries who asks, and the validator refuses anyone else before the
update is even recorded. A retried `remember` (the same key) stores once. Memories are
payloads: encrypted with the rest of the history when a codec is configured.
"""

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from threadchat import memories as rules
    from threadchat.model import ForgetRequest, Memory, MemoryStart, MemoryState, RememberRequest

# Events before the memory carries itself into a fresh history: a remember is a few events,
# so this is hundreds of changes, and the state carried is at most ~20 KB.
HISTORY_CAP = 2000

NOT_YOURS = "NotYours"
EMPTY = "EmptyMemory"


@workflow.defn
class MemoryWorkflow:
    @workflow.init
    def __init__(self, start: MemoryStart) -> None:
        self.team = start.team
        self.user = start.user
        self.state = start.state or MemoryState()
        self.history_cap = start.history_cap or HISTORY_CAP

    @workflow.run
    async def run(self, start: MemoryStart) -> None:
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested()
                or workflow.info().get_current_history_length() > self.history_cap
            )
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(MemoryStart(self.team, self.user, self.state, start.history_cap))

    @workflow.update
    def remember(self, request: RememberRequest) -> Memory:
        """Store `text` (clipped), dated now; the oldest goes past the cap."""
        stored = self.state.keys.get(request.key)
        if stored is not None:
            for memory in self.state.memories:
                if memory.id == stored:
                    return memory
        text = rules.clipped(request.text)
        for memory in self.state.memories:
            if memory.text == text:  # said again: nothing new to keep
                self._note_key(request.key, memory.id)
                return memory
        memory = Memory(id=f"m{self.state.next_id}", text=text, at=workflow.now().timestamp())
        self.state.next_id += 1
        self.state.memories = rules.kept([*self.state.memories, memory])
        self._note_key(request.key, memory.id)
        return memory

    @remember.validator
    def _check_remember(self, request: RememberRequest) -> None:
        self._check_owner(request.user)
        if not request.text.strip():
            raise ApplicationError("nothing to remember", type=EMPTY, non_retryable=True)

    @workflow.update
    def forget(self, request: ForgetRequest) -> list[Memory]:
        """Drop one memory (by id) or all of them; returns what was dropped."""
        if request.memory_id:
            gone = [m for m in self.state.memories if m.id == request.memory_id]
        else:
            gone = list(self.state.memories)
        self.state.memories = [m for m in self.state.memories if m not in gone]
        return gone

    @forget.validator
    def _check_forget(self, request: ForgetRequest) -> None:
        self._check_owner(request.user)

    @workflow.query
    def memories(self) -> list[Memory]:
        return list(self.state.memories)

    def _check_owner(self, user: str) -> None:
        if user != self.user:
            raise ApplicationError("only its owner may change a memory", type=NOT_YOURS)

    def _note_key(self, key: str, memory_id: str) -> None:
        self.state.keys[key] = memory_id
        for old in list(self.state.keys)[: max(0, len(self.state.keys) - rules.MAX_KEYS)]:
            del self.state.keys[old]
