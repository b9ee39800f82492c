"""How much one turn may send the model: a burst of messages, or a pile of files, must not
make one prompt (or the activity input that carries it) unbounded.

The newest messages are kept, since the answer answers them; older ones of the same turn
are left out, and the answer says so.
"""

from dataclasses import dataclass, replace

from threadchat.model import UserMessage

# About 10,000 tokens of text, and the files of a message or two. The activity input that
# carries a turn stays far below Temporal's 2 MiB payload limit.
MAX_TURN_CHARS = 40_000
MAX_TURN_FILES = 10


@dataclass(frozen=True)
class FittedTurn:
    messages: list[UserMessage]
    messages_left_out: int = 0
    files_left_out: int = 0
    cut_short: bool = False  # the newest message alone was over the limit, and was cut


def fit_turn(
    messages: list[UserMessage], max_chars: int = MAX_TURN_CHARS, max_files: int = MAX_TURN_FILES
) -> FittedTurn:
    kept: list[UserMessage] = []
    chars = files = files_left_out = 0
    cut_short = False
    for message in reversed(messages):
        if kept and chars + len(message.text) > max_chars:
            break
        if len(message.text) > max_chars:  # only the newest can be: cut it to fit
            message, cut_short = replace(message, text=message.text[:max_chars]), True
        room = max(0, max_files - files)
        if len(message.files) > room:
            files_left_out += len(message.files) - room
            message = replace(message, files=message.files[len(message.files) - room :])
        chars += len(message.text)
        files += len(message.files)
        kept.append(message)
    left_out = messages[: len(messages) - len(kept)]
    return FittedTurn(
        messages=kept[::-1],
        messages_left_out=len(left_out),
        files_left_out=files_left_out + sum(len(m.files) for m in left_out),
        cut_short=cut_short,
    )
