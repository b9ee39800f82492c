"""The tools file: which MCP servers the bot may call, and from which channels.

Operators write it in YAML, named by THREADCHAT_TOOLS_FILE:

    servers:
      tickets:
        url: https://tickets.internal.example/mcp        # MCP Streamable HTTP
        headers: {Authorization: "Bearer ${TICKETS_TOKEN}"}  # ${VAR}: the worker's environment
        tools: [search_tickets, create_ticket]           # optional: only these
        approval: [create_ticket]                        # wait for the asker's approval; "*" = all
        timeout: 60s                                     # one call (default 60s)
      repo:
        command: [python, -m, repo_mcp_server]           # stdio, started by the worker
        env: {REPO_TOKEN: "${REPO_TOKEN}"}               # its environment, beside PATH, HOME…
    channels:                                            # which servers a conversation may use
      default: [tickets]
      C0123ABCD: [tickets, repo, knowledge]
      dm: []
    knowledge:                                           # the built-in `knowledge` tool's bases
      C0123ABCD: [KB12345678]
      default: {ids: [KB12345678], results: 8, filter: {...}}   # threadchat/knowledge.py

`knowledge`, `slack_search` and `memory` are built-in tools: a `channels:` list may name them
without a `servers:` entry. Every problem is reported with the file, the line and the key, and
a header's value (a secret) is never part of a message.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from threadchat.channels import SPECIAL
from threadchat.durations import parse_duration
from threadchat.knowledge import KnowledgeSetting, KnowledgeSettingError, knowledge_setting

BUILTINS = ("knowledge", "slack_search", "memory")
DEFAULT_TIMEOUT_SECONDS = 60.0
MAX_TIMEOUT_SECONDS = 3600.0
# No double underscore: the model sees `server__tool` (threadchat/tools.py) and it must split.
_SERVER = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")
_CHANNEL = re.compile(r"^[CDG][A-Z0-9]{2,31}$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SERVER_KEYS = ("url", "command", "env", "headers", "tools", "approval", "timeout")
TOP_KEYS = ("servers", "channels", "knowledge")


@dataclass(frozen=True)
class ServerConfig:
    """One MCP server: reached at `url` (Streamable HTTP) or started as `command` (stdio)."""

    name: str
    url: str = ""
    command: tuple[str, ...] = ()
    # Sent with every HTTP request; values may hold secrets, so they stay out of repr.
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    # A stdio server's environment on top of the SDK's minimal one (PATH, HOME, …): the
    # worker's own variables are not passed on unless named here.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    tools: tuple[str, ...] | None = None  # None: every tool the server lists
    approval: tuple[str, ...] = ()
    approval_all: bool = False  # `approval: "*"`
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    def allows(self, tool: str) -> bool:
        """Whether the model may see and call `tool` of this server."""
        return self.tools is None or tool in self.tools

    def needs_approval(self, tool: str) -> bool:
        return self.approval_all or tool in self.approval


@dataclass(frozen=True)
class ToolsFile:
    """The tools file, validated. Channel lookups fall back like the channels file's."""

    servers: dict[str, ServerConfig] = field(default_factory=dict)
    channels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    knowledge: dict[str, KnowledgeSetting] = field(default_factory=dict)

    def servers_for(self, channel: str) -> tuple[str, ...]:
        """The server (and built-in) names a conversation in `channel` may use: the channel's
        own list, else the `dm` list for D… channels, else `default`, else none."""
        return _lookup(self.channels, channel) or ()

    def knowledge_for(self, channel: str) -> KnowledgeSetting | None:
        """The knowledge bases `channel` searches, looked up the same way; None: none."""
        return _lookup(self.knowledge, channel)


def _lookup(table: dict[str, Any], channel: str) -> Any:
    if channel in table:
        return table[channel]
    return table.get("dm" if channel.startswith("D") else "default")


class ToolsFileError(ValueError):
    """A problem in the file: its message names the file, the line and the key."""

    def __init__(self, path: str, line: int | None, key: str, problem: str):
        where = f"{Path(path).name} line {line}" if line else Path(path).name
        super().__init__(f"{where}, {key}: {problem}" if key else f"{where}: {problem}")


def load(path: str, env: Mapping[str, str]) -> ToolsFile:
    """Read and validate the tools file; `${VAR}` in headers is taken from `env`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ToolsFileError(path, None, "", f"cannot be read ({err.__class__.__name__})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "is not valid YAML"
        raise ToolsFileError(path, mark.line + 1 if mark else None, "", problem) from None
    if root is None:
        return ToolsFile()
    reader = _Reader(path, env)
    sections = reader.mapping(root, "", "must map servers, channels and knowledge")
    for key, (key_line, _) in sections.items():
        if key not in TOP_KEYS:
            reader.fail(key_line, key, f"is not a section (use {', '.join(TOP_KEYS)})")
    servers = {}
    if "servers" in sections:
        node = sections["servers"][1]
        for name, (line, value) in reader.mapping(
            node, "servers", "must map names to servers"
        ).items():
            servers[name] = reader.server(name, line, value)
    channels: dict[str, tuple[str, ...]] = {}
    if "channels" in sections:
        node = sections["channels"][1]
        for channel, (_line, value) in reader.channel_map(node, "channels").items():
            names = reader.names(value, f"channels.{channel}", "must list server names")
            for name in names:
                if name not in servers and name not in BUILTINS:
                    reader.fail(
                        value.start_mark.line + 1,
                        f"channels.{channel}",
                        f"names {name!r}, which is neither under servers nor a built-in tool "
                        f"({', '.join(BUILTINS)})",
                    )
            channels[channel] = names
    knowledge: dict[str, KnowledgeSetting] = {}
    if "knowledge" in sections:
        node = sections["knowledge"][1]
        for channel, (_line, value) in reader.channel_map(node, "knowledge").items():
            try:
                knowledge[channel] = knowledge_setting(reader.value(value))
            except KnowledgeSettingError as err:
                reader.fail(value.start_mark.line + 1, f"knowledge.{channel}", str(err))
    return ToolsFile(servers=servers, channels=channels, knowledge=knowledge)


class _Reader:
    def __init__(self, path: str, env: Mapping[str, str]):
        self.path = path
        self.env = env

    def fail(self, line: int | None, key: str, problem: str) -> None:
        raise ToolsFileError(self.path, line, key, problem)

    def mapping(self, node: yaml.Node, key: str, problem: str) -> dict[str, tuple[int, yaml.Node]]:
        """A mapping node's entries by key, with each key's line; keys set twice are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node.start_mark.line + 1, key, problem)
        entries: dict[str, tuple[int, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name, line = str(key_node.value), key_node.start_mark.line + 1
            full = f"{key}.{name}" if key else name
            if name in entries:
                self.fail(line, full, "is set twice")
            entries[name] = (line, value_node)
        return entries

    def channel_map(self, node: yaml.Node, key: str) -> dict[str, tuple[int, yaml.Node]]:
        entries = self.mapping(node, key, "must map channel ids (or dm, default) to lists")
        for channel, (line, _) in entries.items():
            if not (_CHANNEL.fullmatch(channel) or channel in SPECIAL):
                self.fail(
                    line, f"{key}.{channel}", "is not a channel id (C…, G…, D…), dm or default"
                )
        return entries

    def value(self, node: yaml.Node) -> object:
        return yaml.safe_load(yaml.serialize(node))

    def text(self, node: yaml.Node, key: str, problem: str = "must be text") -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            self.fail(node.start_mark.line + 1, key, problem)
        return value.strip()

    def names(self, node: yaml.Node, key: str, problem: str) -> tuple[str, ...]:
        value = self.value(node)
        if value is None:
            return ()
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            self.fail(node.start_mark.line + 1, key, f"{problem} ([a, b])")
        if len(set(value)) != len(value):
            self.fail(node.start_mark.line + 1, key, "lists a name twice")
        return tuple(value)

    def server(self, name: str, line: int, node: yaml.Node) -> ServerConfig:
        key = f"servers.{name}"
        if name in BUILTINS:
            self.fail(line, key, "is the name of a built-in tool; choose another")
        if len(name) > 32 or not _SERVER.fullmatch(name):
            self.fail(line, key, "must be at most 32 letters, digits, - or single _")
        entries = self.mapping(node, key, "must be a mapping (url or command, ...)")
        for setting, (setting_line, _) in entries.items():
            if setting not in SERVER_KEYS:
                self.fail(
                    setting_line,
                    f"{key}.{setting}",
                    f"is not a server setting (use {', '.join(SERVER_KEYS)})",
                )
        if ("url" in entries) == ("command" in entries):
            self.fail(line, key, "needs either url (Streamable HTTP) or command (stdio)")
        values: dict[str, object] = {"name": name}
        if "url" in entries:
            node = entries["url"][1]
            url = self.text(node, f"{key}.url")
            if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
                self.fail(
                    node.start_mark.line + 1, f"{key}.url", f"must be an http(s) URL, got {url!r}"
                )
            values["url"] = url
        if "command" in entries:
            node = entries["command"][1]
            command = self.value(node)
            if not (
                isinstance(command, list)
                and command
                and all(isinstance(part, str) and part for part in command)
            ):
                self.fail(
                    node.start_mark.line + 1,
                    f"{key}.command",
                    "must list the program and its arguments ([python, -m, server])",
                )
            values["command"] = tuple(command)
        if "headers" in entries:
            node = entries["headers"][1]
            if "url" not in entries:
                self.fail(node.start_mark.line + 1, f"{key}.headers", "are for url servers only")
            values["headers"] = self.expanded(f"{key}.headers", node, _HEADER, "HTTP header")
        if "env" in entries:
            node = entries["env"][1]
            if "command" not in entries:
                self.fail(node.start_mark.line + 1, f"{key}.env", "is for command servers only")
            values["env"] = self.expanded(f"{key}.env", node, _ENV_NAME, "environment variable")
        if "tools" in entries:
            values["tools"] = self.names(
                entries["tools"][1], f"{key}.tools", "must list tool names"
            )
        if "approval" in entries:
            node = entries["approval"][1]
            if self.value(node) == "*":
                values["approval_all"] = True
            else:
                approval = self.names(node, f"{key}.approval", 'must list tool names, or be "*"')
                allowed = values.get("tools")
                for tool in approval:
                    if allowed is not None and tool not in allowed:  # type: ignore[operator]
                        self.fail(
                            node.start_mark.line + 1,
                            f"{key}.approval",
                            f"names {tool!r}, which its tools list leaves out",
                        )
                values["approval"] = approval
        if "timeout" in entries:
            node = entries["timeout"][1]
            raw = self.value(node)
            try:
                seconds = parse_duration(str(raw)) if isinstance(raw, (str, int, float)) else 0.0
            except ValueError:
                seconds = 0.0
            if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
                self.fail(
                    node.start_mark.line + 1,
                    f"{key}.timeout",
                    f"must be a duration up to 1h (e.g. 60s, 2m), got {raw!r}",
                )
            values["timeout_seconds"] = seconds
        return ServerConfig(**values)  # type: ignore[arg-type]

    def expanded(
        self, key: str, node: yaml.Node, pattern: re.Pattern[str], kind: str
    ) -> dict[str, str]:
        """A mapping of names to text values, `${VAR}` taken from the environment."""
        entries = self.mapping(node, key, f"must map {kind} names to values")
        headers = {}
        for header, (line, value_node) in entries.items():
            name = f"{key}.{header}"
            if not pattern.fullmatch(header):
                self.fail(line, name, f"is not an {kind} name")
            value = self.value(value_node)
            if not isinstance(value, str):
                self.fail(line, name, "must be text")
            for variable in _VARIABLE.findall(value):
                if not self.env.get(variable):
                    self.fail(line, name, f"${{{variable}}} is not set in the worker's environment")
            expanded = _VARIABLE.sub(lambda m: self.env[m.group(1)], value)
            if "\n" in expanded or "\r" in expanded:
                self.fail(line, name, "must be one line")
            headers[header] = expanded
        return headers
