"""Per-channel settings: a channel's (or all DMs') own system prompt, model and allowances.

Operators write them in one YAML file, named by THREADCHAT_CHANNELS_FILE:

    C0123ABCD:                    # a channel, by id
      system_prompt: You are the support desk's assistant. ...
      model_id: us.anthropic.claude-sonnet-4-20250514-v1:0
      user_daily_tokens: 50000
    dm:                           # every direct message
      conversation_daily_tokens: 20000
    default:                      # every other channel
      model_id: us.anthropic.claude-haiku-4-5-20251001-v1:0
      suggested_prompts: [What changed this week?, Summarize this channel]
      reply: mentions             # auto, always or mentions (THREADCHAT_REPLY_MODE)

Every problem is reported with the file, the line and the key.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

_CHANNEL = re.compile(r"^[CDG][A-Z0-9]{2,31}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:/_-]{2,2047}$")
SPECIAL = ("dm", "default")
# Which messages of a channel thread are answered (see ConversationSettings.reply_mode).
REPLY_MODES = ("auto", "always", "mentions")


@dataclass(frozen=True)
class ChannelSettings:
    """What a channel sets; None keeps the worker's own setting."""

    system_prompt: str | None = None
    model_id: str | None = None
    summary_model_id: str | None = None
    user_daily_tokens: int | None = None
    conversation_daily_tokens: int | None = None
    # Under the assistant panel's greeting while the channel is in view: 1 to 4 prompts.
    suggested_prompts: tuple[str, ...] | None = None
    # Which messages of a thread are answered: auto, always or mentions.
    reply: str | None = None


KEYS = tuple(ChannelSettings.__dataclass_fields__)


class ChannelsFileError(ValueError):
    """A problem in the file: its message names the file, the line and the key."""

    def __init__(self, path: str, line: int | None, key: str, problem: str):
        where = f"{Path(path).name} line {line}" if line else Path(path).name
        super().__init__(f"{where}, {key}: {problem}" if key else f"{where}: {problem}")


def load(path: str) -> dict[str, ChannelSettings]:
    """The settings by channel id (and "dm", "default"), validated."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        problem = f"cannot be read ({err.__class__.__name__})"
        raise ChannelsFileError(path, None, "", problem) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "is not valid YAML"
        raise ChannelsFileError(path, mark.line + 1 if mark else None, "", problem) from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ChannelsFileError(
            path, root.start_mark.line + 1, "", "must map channel ids to settings"
        )
    channels: dict[str, ChannelSettings] = {}
    for key_node, value_node in root.value:
        channel = str(key_node.value)
        line = key_node.start_mark.line + 1
        if not (_CHANNEL.fullmatch(channel) or channel in SPECIAL):
            raise ChannelsFileError(
                path, line, channel, "is not a channel id (C…, G…, D…), dm or default"
            )
        if channel in channels:
            raise ChannelsFileError(path, line, channel, "is set twice")
        channels[channel] = _settings(path, channel, value_node)
    return channels


def _settings(path: str, channel: str, node: yaml.Node) -> ChannelSettings:
    if not isinstance(node, yaml.MappingNode):
        raise ChannelsFileError(
            path, node.start_mark.line + 1, channel, "must be a mapping of settings"
        )
    values: dict[str, object] = {}
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        name = f"{channel}.{key}"
        if key not in KEYS:
            raise ChannelsFileError(path, line, name, f"is not a setting (use {', '.join(KEYS)})")
        if key in values:
            raise ChannelsFileError(path, line, name, "is set twice")
        value = (
            yaml.safe_load(yaml.serialize(value_node))
            if isinstance(value_node, yaml.Node)
            else None
        )
        values[key] = _check(path, line, name, key, value)
    return ChannelSettings(**values)


def _value(node: yaml.Node) -> object:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _check(path: str, line: int, name: str, key: str, value: object) -> object:
    if key == "suggested_prompts":
        if not (
            isinstance(value, list)
            and 1 <= len(value) <= 4
            and all(isinstance(v, str) and v.strip() and len(v) <= 200 for v in value)
        ):
            raise ChannelsFileError(path, line, name, "must list 1 to 4 prompts (text)")
        return tuple(v.strip() for v in value)
    if key == "reply":
        if value not in REPLY_MODES:
            raise ChannelsFileError(
                path, line, name, f"must be one of {', '.join(REPLY_MODES)}, got {value!r}"
            )
        return value
    if key.endswith("_tokens"):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
            raise ChannelsFileError(
                path, line, name, f"must be a whole number of tokens, got {value!r}"
            )
        return value
    if not isinstance(value, str) or not value.strip():
        raise ChannelsFileError(path, line, name, "must be text")
    if key.endswith("model_id") and not _MODEL.fullmatch(value):
        raise ChannelsFileError(path, line, name, f"is not a model id, got {value!r}")
    return value.strip()


def lookup(channels: dict[str, ChannelSettings], channel: str) -> ChannelSettings | None:
    """A channel's settings: its own, else those of all DMs (for D…) or the default."""
    if channel in channels:
        return channels[channel]
    return channels.get("dm" if channel.startswith("D") else "default")
