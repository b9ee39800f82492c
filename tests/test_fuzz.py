"""Bad input at the bot's HTTP endpoint: a deterministic fuzz over real HTTP.

Several hundred requests, generated from a seeded `random.Random`, go to `POST /slack/events`
(and a few to other methods): bad, missing and stale signatures; wrong content types; bodies
over the 1 MiB limit (413, whether signed or not, announced or chunked); invalid JSON and
form data; unknown event types; missing and mistyped fields; 40,000-character messages;
unicode and control characters; channels the bot is not in; url_verification challenges;
GET, PUT and friends.

Each case is its own test item, so a case that fails is named in the report. Every case must
get a 2xx or a 4xx over an intact connection, never a 5xx. Cases known to hit a product bug
are marked `xfail(strict=True)` with the bug's location: they still assert the right
behaviour, and the mark must go when the bug is fixed (strict: an XPASS fails). The last test
checks that the bot still serves afterwards and prints the number of cases run.

Each request uses a fresh connection, so a server that closes or resets one is seen as a
dropped connection of that case and not of the next.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp.helpers import parse_content_type
from slack_bolt.request.async_request import AsyncBoltRequest

from devtools.slack_events import event_callback, message_shortcut, slash_command
from devtools.stack import ALICE, SIGNING_SECRET, Stack, start_stack
from threadchat.temporal import SLACK_CHANNEL

SEED = 20240605
MIB = 1024 * 1024
TEAM = "T0LOCAL"
BOT = "U0BOT"
# Every request with a bad signature names this channel: none of them may start anything.
SIGNATURE_CHANNEL = "C0SIGNATUREFUZZ"
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass
class Case:
    """One request. `signature` says how to sign it at send time (timestamps must be fresh):
    one of "valid" or SIGNATURE_KINDS (see `request_headers`).
    `expect`: "2xx" (must be accepted), "401", "413", "4xx" (must be refused) or "any" (2xx
    or 4xx). `chunked`: sent without a Content-Length, so the size is only known by reading.
    """

    name: str
    body: bytes
    content_type: str | None = JSON_TYPE
    signature: str = "valid"
    method: str = "POST"
    expect: str = "any"
    path: str = "/slack/events"
    headers: dict[str, str] = field(default_factory=dict)
    challenge: str | None = None  # url_verification: the body must echo it
    bug: str | None = None  # a KNOWN_BUGS key this case is known to hit (besides `known_bug`)
    chunked: bool = False


# Product bugs that make some cases answer 500, as key -> (where, what). A case hitting one is
# marked xfail(strict=True) and still asserts the right behaviour; delete an entry once its bug
# is fixed (its cases then pass, and an XPASS would fail). `known_bug` (and the cases' `bug`)
# say which cases hit which. Empty: the bugs this fuzz found are fixed; they were
# "unparsed-body" and "timestamp" (bot/app.py: unauthenticated 500s on bodies Bolt could not
# parse and on a non-integer X-Slack-Request-Timestamp), "command-fields" and
# "shortcut-fields" (bot/listeners/ending.py), "event-fields" (bot/parsing.py) and
# "bolt-shape" (payload shapes Bolt's own dispatch trips over).
KNOWN_BUGS: dict[str, tuple[str, str]] = {}


def _sign(body: bytes, secret: str, timestamp: str) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def request_headers(case: Case) -> dict[str, str]:
    """Content type, signature headers as `case.signature` says, then the case's own."""
    headers: dict[str, str] = {}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    now = int(time.time())
    timestamp = str(now)
    signature = _sign(case.body, SIGNING_SECRET, timestamp)
    kind = case.signature
    if kind == "none":
        return {**headers, **case.headers}
    if kind == "bad":
        signature = "v0=" + hashlib.sha256(case.body + b"x").hexdigest()
    elif kind == "stale":
        timestamp = str(now - 6 * 60)
        signature = _sign(case.body, SIGNING_SECRET, timestamp)
    elif kind == "future":
        timestamp = str(now + 6 * 60)
        signature = _sign(case.body, SIGNING_SECRET, timestamp)
    elif kind == "garbage-ts":
        timestamp = "not-a-number"
        signature = _sign(case.body, SIGNING_SECRET, timestamp)
    elif kind == "v1":
        signature = "v1=" + signature[3:]
    elif kind == "wrong-secret":
        signature = _sign(case.body, "not-the-signing-secret", timestamp)
    elif kind == "other-body":
        signature = _sign(case.body + b" ", SIGNING_SECRET, timestamp)
    elif kind == "empty-sig":
        signature = ""
    elif kind == "upper":
        signature = "v0=" + signature[3:].upper()
    if kind != "no-ts":
        headers["X-Slack-Request-Timestamp"] = timestamp
    if kind != "no-sig":
        headers["X-Slack-Signature"] = signature
    return {**headers, **case.headers}


def known_bug(case: Case) -> str | None:
    """The KNOWN_BUGS entry a case hits. The bot turns the body into a Bolt request first
    (unparsed-body), then Bolt checks the signature (timestamp), then the listeners run."""
    if case.method != "POST" or case.path != "/slack/events" or len(case.body) > MIB:
        return None
    charset = parse_content_type(case.content_type or "")[1].get("charset") or "utf-8"
    try:
        AsyncBoltRequest(body=case.body.decode(charset), headers=request_headers(case))
    except Exception:
        return "unparsed-body"
    timestamp = request_headers(case).get("X-Slack-Request-Timestamp")
    if timestamp is not None and "X-Slack-Signature" in request_headers(case):
        try:
            int(timestamp)
        except ValueError:
            return "timestamp"
    return case.bug


# -- Payload builders (deterministic: ids and times come from the generator's random) --------


class Gen:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.ts_counter = 1_700_000_000_000_000

    def ts(self) -> str:
        self.ts_counter += self.rng.randint(1, 10_000)
        return f"{self.ts_counter // 1_000_000}.{self.ts_counter % 1_000_000:06d}"

    def ident(self, prefix: str, length: int = 10) -> str:
        return prefix + "".join(
            self.rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(length)
        )

    def words(self, n: int) -> str:
        vocab = ["alpha", "bravo", "charlie", "delta", "echo", "fuzz", "thread", "slack", "bot"]
        return " ".join(self.rng.choice(vocab) for _ in range(n))

    def envelope(self, event: dict | None, **overrides) -> dict:
        body = event_callback(
            event or {}, event_id=self.ident("Ev"), event_time=1_700_000_000, bot_user_id=BOT
        )
        if event is None:
            del body["event"]
        body.update(overrides)
        return body

    def mention(self, channel: str, text: str, *, thread_ts: str | None = None, **extra) -> dict:
        ts = self.ts()
        event = {
            "type": "app_mention",
            "client_msg_id": self.ident("m", 16),
            "user": ALICE,
            "text": f"<@{BOT}> {text}",
            "ts": ts,
            "team": TEAM,
            "channel": channel,
            "event_ts": ts,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        event.update(extra)
        return event

    def message(self, channel: str, text: str, **extra) -> dict:
        ts = self.ts()
        event = {
            "type": "message",
            "user": ALICE,
            "text": text,
            "ts": ts,
            "team": TEAM,
            "client_msg_id": self.ident("m", 16),
            "channel": channel,
            "event_ts": ts,
            "channel_type": "channel",
        }
        event.update(extra)
        return event

    def command(self, text: str = "", **overrides) -> dict[str, str]:
        fields = dict(
            urllib_fields(
                slash_command(
                    command="/endchat",
                    text=text,
                    channel_id=self.ident("C"),
                    user_id=ALICE,
                    trigger_id=self.ident("trig", 20),
                    response_url="http://127.0.0.1:9/response",
                )
            )
        )
        fields.update(overrides)
        return {k: v for k, v in fields.items() if v is not None}

    def shortcut(self, **overrides) -> dict:
        body = message_shortcut(
            callback_id="end_chat",
            channel_id=self.ident("C"),
            user_id=ALICE,
            message_ts=self.ts(),
            thread_ts=self.ts(),
            trigger_id=self.ident("trig", 20),
            response_url="http://127.0.0.1:9/response",
        )
        payload = json.loads(urllib_fields(body)["payload"])
        payload["action_ts"] = "1700000000.000001"
        payload.update(overrides)
        return {k: v for k, v in payload.items() if v is not None}


def urllib_fields(body: str) -> dict[str, str]:
    return dict(parse_qsl(body, keep_blank_values=True))


def as_json(value) -> bytes:
    return json.dumps(value).encode()


class Form(bytes):
    """A form-encoded body: sent as application/x-www-form-urlencoded unless a case says not."""


def as_form(fields: dict) -> Form:
    return Form(urlencode(fields, encoding="utf-8", errors="surrogatepass").encode())


def as_payload(payload) -> Form:
    return Form(urlencode({"payload": json.dumps(payload)}).encode())


# -- The cases ----------------------------------------------------------------------------------

SIGNATURE_KINDS = [
    "none",
    "bad",
    "stale",
    "future",
    "garbage-ts",
    "no-ts",
    "no-sig",
    "v1",
    "wrong-secret",
    "other-body",
    "empty-sig",
    "upper",
]

UNICODE_TEXTS = {
    "nul": "before\x00after",
    "controls": "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "rtl": "\u202eevil\u202c \u200f\u200e mixed \u2067isolate\u2069",
    "zero-width": "a\u200bb\u200cc\u200dd\ufeffe\u2060f",
    "emoji": "\U0001f600\U0001f469\u200d\U0001f4bb\U0001f1fa\U0001f1f8 \U0001faf6\U0001f3fd",
    "combining": "Z\u0351\u0352\u0353\u0354A\u0300\u0301\u0302\u0303L\u0489G\u0336O",
    "cjk": "\u4f60\u597d\uff0c\u4e16\u754c \u3053\u3093\u306b\u3061\u306f \ud55c\uad6d\uc5b4",
    "lone-high-surrogate": "half \ud800 pair",
    "lone-low-surrogate": "half \udfff pair",
    "reversed-surrogates": "\udc00\ud800",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "line-separators": "a\u2028b\u2029c\x85d",
    "bidi-override-mention": f"\u202e<@{BOT}>\u202c hi",
    "fake-mention": "<@U0ALICE|bot> <!channel> <!here> <#C123|general>",
    "html": "<script>alert(1)</script> &amp; &lt;",
    "format-strings": "%s %d %(x)s {0} {x} ${x} \\N{BULLET}",
}


def generate_cases(seed: int = SEED) -> list[Case]:
    g = Gen(seed)
    cases: list[Case] = []

    def add(name: str, body: bytes, **kw) -> None:
        if isinstance(body, Form):
            kw.setdefault("content_type", FORM_TYPE)
            body = bytes(body)
        safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:60]
        cases.append(Case(f"{len(cases):03d}-{safe}", body, **kw))

    # 1. Signatures: bad, missing, stale... on every kind of request. Never accepted.
    sig_bodies = {
        "mention": (as_json(g.envelope(g.mention(SIGNATURE_CHANNEL, "signed wrong"))), JSON_TYPE),
        "command": (as_form(g.command(channel_id=SIGNATURE_CHANNEL)), FORM_TYPE),
        "shortcut": (as_payload(g.shortcut(channel={"id": SIGNATURE_CHANNEL})), FORM_TYPE),
        "url-verification": (
            as_json({"type": "url_verification", "token": "x", "challenge": "c" * 20}),
            JSON_TYPE,
        ),
    }
    for kind in SIGNATURE_KINDS:
        for label, (body, ctype) in sig_bodies.items():
            add(f"sig-{kind}-{label}", body, content_type=ctype, signature=kind, expect="401")
    for i in range(6):  # random headers that look like signatures
        body = as_json(g.envelope(g.mention(SIGNATURE_CHANNEL, g.words(3))))
        junk = "".join(g.rng.choice("v0=abcdef0123456789") for _ in range(g.rng.randint(0, 80)))
        ts = g.rng.choice(["", "0", "-1", "1e3", "99999999999999999999", " 1", str(2**63)])
        add(
            f"sig-random-{i}",
            body,
            signature="none",
            headers={"X-Slack-Signature": junk, "X-Slack-Request-Timestamp": ts},
            expect="401",
        )

    # 2. Content types that do not match the body (validly signed).
    mention_body = as_json(g.envelope(g.mention(g.ident("C"), "content type")))
    command_body = as_form(g.command())
    for ctype in [
        None,
        "text/plain",
        FORM_TYPE,
        "multipart/form-data; boundary=xyz",
        "application/xml",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/json; charset=bogus-charset",
        "application/octet-stream",
        "image/png",
        "",
    ]:
        add(f"ctype-json-as-{ctype}", mention_body, content_type=ctype)
    for ctype in [None, JSON_TYPE, "text/plain", "multipart/form-data", "application/x-www-form"]:
        add(f"ctype-form-as-{ctype}", command_body, content_type=ctype)

    # 3. Bodies over the 1 MiB limit: a 413 before the signature is even looked at, and
    # before the body is read when its length is announced.
    big_text = "x" * (MIB + 1)
    huge = {
        "json-1mib": as_json(g.envelope(g.mention(g.ident("C"), big_text))),
        "json-3mib": as_json(g.envelope(g.mention(g.ident("C"), "y" * (3 * MIB)))),
        "form-1mib": as_form(g.command(text="z" * (MIB + 10))),
        "payload-2mib": as_payload(g.shortcut(padding="p" * (2 * MIB))),
        "raw-bytes-1mib": bytes(g.rng.randrange(256) for _ in range(1024)) * 1100,
    }
    for label, body in huge.items():
        add(f"huge-{label}-signed", body, expect="413")
        add(f"huge-{label}-unsigned", body, signature="none", expect="413")
        add(f"huge-{label}-chunked", body, expect="413", chunked=True)
    add("huge-exactly-1mib", b"{" + b" " * (MIB - 2) + b"}", expect="any")
    add("huge-exactly-1mib-chunked", b"{" + b" " * (MIB - 2) + b"}", expect="any", chunked=True)
    # At the limit but signed wrong: read, hashed, refused; and never parsed.
    add("huge-exactly-1mib-bad-sig", b"{" + b" " * (MIB - 2) + b"}", signature="bad", expect="401")

    # 4. Invalid JSON, signed (so it reaches the parser) and unsigned.
    invalid_json = [
        b"{",
        b'{"type": "event_callback", "event": ',
        b"{'type': 'event_callback'}",
        b'{"type": "event_callback",}',
        b'{"a": NaN, "b": Infinity}',
        b'{"type": "event_callback"} trailing',
        b"[]",
        b"[1, 2, 3]",
        b"null",
        b"true",
        b"42",
        b'"just a string"',
        b"",
        b" ",
        b"\xef\xbb\xbf{}",  # a UTF-8 BOM
        b"{" + b'"a":' * 2000 + b"1" + b"}" * 2000,
        b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe\x00{",  # not UTF-8
        b'{"text": "\xc3\x28"}',  # an invalid UTF-8 sequence inside a string
        b'{"type": "event_callback", "event": {"text": "\\ud800"}}',
    ]
    for i, body in enumerate(invalid_json):
        add(f"json-invalid-{i}-signed", body, content_type=JSON_TYPE)
        # The signature is checked before the body is parsed: unsigned junk is a 401.
        add(
            f"json-invalid-{i}-unsigned",
            body,
            content_type=JSON_TYPE,
            signature="none",
            expect="401",
        )
    for i in range(10):  # a valid envelope with random bytes flipped, then signed
        body = bytearray(as_json(g.envelope(g.mention(g.ident("C"), g.words(5)))))
        for _ in range(g.rng.randint(1, 6)):
            body[g.rng.randrange(len(body))] = g.rng.randrange(256)
        add(f"json-mutated-{i}", bytes(body))

    # 5. Invalid form data.
    invalid_form = [
        b"payload=",
        b"payload=%7B",
        b"payload=%5B%5D",
        b"payload=null",
        b"payload=42",
        b"payload=%22str%22",
        b"payload=%7B%7D",
        b"%%%",
        b"a=b&&&=&",
        b"command=/endchat",
        b"payload=" + b"%7B%22a%22%3A" * 3000,
        b"=" * 100,
        b"payload=%FF%FE",
        b"\xff\xfe=\x00",
        b"ssl_check=1&token=x",
        b"payload=" + urlencode({"x": "y"}).encode(),
    ]
    for i, body in enumerate(invalid_form):
        bug = "command-fields" if body == b"command=/endchat" else None
        add(f"form-invalid-{i}", body, content_type=FORM_TYPE, bug=bug)

    # 6. Unknown event types and envelope types (validly signed).
    for etype in ["reaction_added", "team_join", "x" * 1000, "", "message.channels", "💥"]:
        event = {"type": etype, "user": ALICE, "channel": g.ident("C"), "event_ts": g.ts()}
        add(f"unknown-event-{etype[:20]}", as_json(g.envelope(event)), expect="2xx")
    for etype in [None, 123, ["app_mention"], {"type": "app_mention"}]:
        event = {"type": etype, "channel": g.ident("C")}
        bug = "bolt-shape" if etype is not None else None
        add(f"event-type-{type(etype).__name__}", as_json(g.envelope(event)), bug=bug)
    for envelope_type in ["app_rate_limited", "block_actions", "view_submission", "bogus", ""]:
        body = g.envelope(g.mention(g.ident("C"), "envelope"), type=envelope_type)
        add(f"unknown-envelope-{envelope_type}", as_json(body))
    add("unknown-command", as_form(g.command(command="/unknowncommand")))
    add("unknown-shortcut", as_payload(g.shortcut(callback_id="nope")))
    add("unknown-payload-type", as_payload(g.shortcut(type="mystery_action")))
    block_actions = {"type": "block_actions", "actions": [], "user": {"id": ALICE}}
    add("block-actions", as_payload(block_actions), bug="bolt-shape")

    # 7. Missing and mistyped fields.
    for missing in ["channel", "user", "ts", "text", "type", "team", "event_ts"]:
        event = g.mention(g.ident("C"), "missing " + missing)
        del event[missing]
        add(f"mention-without-{missing}", as_json(g.envelope(event)))
        event = g.message(g.ident("C"), "missing " + missing, thread_ts=g.ts())
        del event[missing]
        add(f"message-without-{missing}", as_json(g.envelope(event)))
    add("envelope-without-event", as_json(g.envelope(None)))
    for field_name in ["team_id", "api_app_id", "authorizations", "type", "event_id"]:
        body = g.envelope(g.mention(g.ident("C"), "no " + field_name))
        del body[field_name]
        add(f"envelope-without-{field_name}", as_json(body))
    for value in [None, "a string", [1, 2], 7, {}]:
        bug = None if isinstance(value, dict) else "bolt-shape"
        add(
            f"event-is-{type(value).__name__}", as_json({**g.envelope({}), "event": value}), bug=bug
        )
    for key, value in [
        ("text", 123),
        ("text", ["a", "b"]),
        ("text", {"nested": "dict"}),
        ("user", 42),
        ("user", ["U1"]),
        ("channel", {"id": "C1"}),
        ("channel", 7),
        ("ts", 1700000000.5),
        ("ts", ["1.2"]),
        ("thread_ts", 5),
        ("thread_ts", {"x": 1}),
        ("subtype", ["bot_message"]),
        ("channel_type", 3),
        ("bot_id", 0),
    ]:
        event = g.mention(g.ident("C"), "mistyped " + key)
        event[key] = value
        bug = "event-fields" if key in ("text", "user", "channel", "subtype") else None
        add(f"mention-{key}-as-{type(value).__name__}", as_json(g.envelope(event)), bug=bug)
    for key, value in [("team_id", 5), ("authorizations", "x"), ("authorizations", [None])]:
        body = g.envelope(g.mention(g.ident("C"), "mistyped envelope"))
        body[key] = value
        add(f"envelope-{key}-as-{type(value).__name__}", as_json(body))
    for missing in ["user_id", "channel_id", "team_id", "command", "text", "response_url"]:
        bug = "command-fields" if missing in ("user_id", "channel_id", "team_id") else None
        add(f"command-without-{missing}", as_form(g.command(**{missing: None})), bug=bug)
    for missing in ["message", "channel", "user", "team", "callback_id", "response_url"]:
        bug = "shortcut-fields" if missing in ("message", "channel", "user", "team") else None
        add(f"shortcut-without-{missing}", as_payload(g.shortcut(**{missing: None})), bug=bug)
    for label, override in [
        ("message-without-ts", {"message": {"type": "message"}}),
        ("message-is-string", {"message": "hello"}),
        ("channel-is-string", {"channel": "C1"}),
        ("user-empty", {"user": {}}),
    ]:
        add(f"shortcut-{label}", as_payload(g.shortcut(**override)), bug="shortcut-fields")
    add("shortcut-team-null-id", as_payload(g.shortcut(team={"id": None})))

    # 8. 40,000-character messages (Slack's own text limit).
    long_texts = {
        "ascii": ("lorem ipsum " * 4000)[:40_000],
        "emoji": "\U0001f600" * 40_000,
        "one-word": "a" * 40_000,
        "newlines": "\n" * 40_000,
    }
    for label, text in long_texts.items():
        add(
            f"long-mention-{label}",
            as_json(g.envelope(g.mention(g.ident("C"), text))),
            expect="2xx",
        )
    add(
        "long-thread-message",
        as_json(g.envelope(g.message(g.ident("C"), "b" * 40_000, thread_ts=g.ts()))),
        expect="2xx",
    )
    add("long-command-text", as_form(g.command(text="c" * 40_000)), content_type=FORM_TYPE)
    add("long-shortcut-text", as_payload(g.shortcut(message={"ts": g.ts(), "text": "d" * 40_000})))
    for label, event in [
        ("channel-id", g.mention("C" + "X" * 40_000, "long channel")),
        ("ts", g.mention(g.ident("C"), "long ts", ts="1." + "0" * 2000)),
        ("user-id", g.mention(g.ident("C"), "long user", user="U" * 5000)),
    ]:
        add(f"long-{label}", as_json(g.envelope(event)), bug="event-fields")

    # 9. Unicode and control characters, in text (JSON escapes: lone surrogates included) and
    # in ids and the form encoding.
    for label, text in UNICODE_TEXTS.items():
        body = as_json(g.envelope(g.mention(g.ident("C"), text)))  # ensure_ascii: \ud800 escapes
        add(f"unicode-mention-{label}", body, expect="2xx")
        raw = json.dumps(g.envelope(g.mention(g.ident("C"), text)), ensure_ascii=False)
        add(f"unicode-raw-mention-{label}", raw.encode("utf-8", "surrogatepass"))
    for label in ["nul", "rtl", "emoji", "lone-high-surrogate", "controls"]:
        text = UNICODE_TEXTS[label]
        # A lone surrogate cannot be encoded into a workflow id (protobuf wants UTF-8).
        bug = "event-fields" if "surrogate" in label else None
        event = g.mention("C" + text, "odd channel")
        add(f"unicode-channel-{label}", as_json(g.envelope(event)), bug=bug)
        event = g.mention(g.ident("C"), "odd user", user="U" + text)
        add(f"unicode-user-{label}", as_json(g.envelope(event)))
        event = g.mention(g.ident("C"), "odd ts", ts=text, thread_ts=text)
        add(f"unicode-ts-{label}", as_json(g.envelope(event)), bug=bug)
        event = g.message(g.ident("C"), "odd thread", thread_ts=text)
        add(f"unicode-thread-ts-{label}", as_json(g.envelope(event)), bug=bug)
        body = g.envelope(g.mention(g.ident("C"), "odd team"), team_id="T" + text)
        add(f"unicode-team-{label}", as_json(body))
        fields = {**g.command(), "text": text, "user_id": "U" + text, "channel_id": "C" + text}
        form = as_form(fields)
        add(f"unicode-command-{label}", form, content_type=FORM_TYPE)
    for i in range(15):  # random code points, anywhere in the BMP and beyond
        text = "".join(
            chr(g.rng.choice([g.rng.randrange(0x110000), g.rng.randrange(0x20)]))
            for _ in range(200)
        )
        add(f"unicode-random-{i}", as_json(g.envelope(g.mention(g.ident("C"), text))))

    # 10. Channels the bot is not in, threads it never joined, DMs it was never in.
    for prefix in ["C", "G", "D", "Z"]:
        add(
            f"stranger-mention-{prefix}",
            as_json(g.envelope(g.mention(g.ident(prefix), "hi"))),
            expect="2xx",
        )
    for i in range(3):
        event = g.message(g.ident("C"), "in a thread nobody started", thread_ts=g.ts())
        add(f"stranger-thread-{i}", as_json(g.envelope(event)), expect="2xx")
    event = g.message(g.ident("D"), "a DM to a bot never in it", channel_type="im")
    add("stranger-dm", as_json(g.envelope(event)), expect="2xx")
    event = g.mention(g.ident("C"), "other workspace", team="T0OTHER")
    add("stranger-other-team", as_json(g.envelope(event, team_id="T0OTHER")), expect="2xx")
    add("stranger-endchat", as_form(g.command()), content_type=FORM_TYPE, expect="2xx")
    for link in [
        "https://local.slack.com/archives/C0NOWHERE/p1700000000000100",
        "<https://local.slack.com/archives/C0NOWHERE/p1700000000000100?thread_ts=1.2|x>",
        "https://local.slack.com/archives/C0NOWHERE/p1700000000000100?thread_ts=" + "9" * 2000,
        "https://local.slack.com/archives/C0NOWHERE/p1700000000000100?thread_ts=%00%FF",
        "not a link at all",
        "https://evil.example/archives/C1/p1700000000000100",
    ]:
        add(
            f"stranger-endchat-link-{link[:40]}",
            as_form(g.command(text=link)),
            content_type=FORM_TYPE,
            expect="2xx",
        )
    add("stranger-shortcut", as_payload(g.shortcut()), expect="2xx")
    add(
        "bot-message",
        as_json(g.envelope(g.message(g.ident("C"), "from a bot", bot_id="B1"))),
        expect="2xx",
    )
    add("own-message", as_json(g.envelope(g.mention(g.ident("C"), "me", user=BOT))), expect="2xx")
    add(
        "message-changed",
        as_json(g.envelope(g.message(g.ident("C"), "edit", subtype="message_changed"))),
        expect="2xx",
    )

    # 11. url_verification challenges.
    for label, challenge in [
        ("plain", "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"),
        ("unicode", "\u202e\U0001f600\x00"),
        ("long", "L" * 40_000),
        ("empty", ""),
    ]:
        body = as_json({"token": "t", "challenge": challenge, "type": "url_verification"})
        add(
            f"url-verification-{label}",
            body,
            expect="2xx" if challenge else "any",
            challenge=challenge or None,
        )
    add("url-verification-no-challenge", as_json({"type": "url_verification"}))
    add("url-verification-number", as_json({"type": "url_verification", "challenge": 12345}))
    add(
        "url-verification-form",
        as_form({"type": "url_verification", "challenge": "abc"}),
        content_type=FORM_TYPE,
    )

    # 12. Other methods and paths.
    for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]:
        add(f"method-{method}", mention_body, method=method, expect="4xx")
    for path in ["/slack/events/", "/", "/slack", "/slack/events%00", "/healthz/../slack/events"]:
        add(f"path-{path}", mention_body, path=path)
    add("post-healthz", mention_body, path="/healthz", expect="4xx")

    # 13. Slack's retry headers, with odd values.
    for retry_num in ["1", "abc", "-1", "99999999999999999999", ""]:
        body = as_json(g.envelope(g.mention(g.ident("C"), "retried")))
        headers = {"X-Slack-Retry-Num": retry_num, "X-Slack-Retry-Reason": "\u202ehttp_timeout"}
        add(f"retry-header-{retry_num[:10]}", body, headers=headers)

    return cases


CASES = generate_cases()


def _marked(case: Case):
    key = known_bug(case)
    if key not in KNOWN_BUGS:
        return pytest.param(case, id=case.name)
    where, _ = KNOWN_BUGS[key]
    reason = f"PRODUCT BUG {key} at {where} (see KNOWN_BUGS in tests/test_fuzz.py)"
    return pytest.param(case, id=case.name, marks=pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(scope="module")
async def fuzz_stack(client):
    stack = await start_stack(client)
    yield stack
    await stack.close()


async def _chunks(body: bytes):
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


async def send(stack: Stack, case: Case) -> tuple[int, bytes]:
    base = stack.bot_url.rsplit("/slack/events", 1)[0]
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(force_close=True)
    data = None
    if case.method not in ("GET", "HEAD"):
        data = _chunks(case.body) if case.chunked else case.body
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.request(
            case.method,
            base + case.path,
            data=data,
            headers=request_headers(case),
            skip_auto_headers=["Content-Type"],
        ) as response,
    ):
        return response.status, await response.read()


SENT: list[str] = []


@pytest.mark.parametrize("case", [_marked(c) for c in CASES])
async def test_fuzz_case(fuzz_stack: Stack, case: Case):
    SENT.append(case.name)
    try:
        status, body = await send(fuzz_stack, case)
    except (aiohttp.ClientError, TimeoutError) as err:
        pytest.fail(f"dropped connection: {type(err).__name__}: {err}")
    assert status < 500, f"{status} (server error): {body[:300]!r}"
    assert 200 <= status < 500, status
    if case.expect == "2xx":
        assert 200 <= status < 300, f"expected 2xx, got {status}: {body[:300]!r}"
    elif case.expect in ("401", "413"):
        assert status == int(case.expect), f"expected {case.expect}, got {status}: {body[:300]!r}"
    elif case.expect == "4xx":
        assert 400 <= status < 500, f"expected 4xx, got {status}: {body[:300]!r}"
    if case.challenge is not None:
        assert json.loads(body) == {"challenge": case.challenge}


@pytest.mark.timeout(300)
async def test_bot_still_serves_after_the_fuzz(fuzz_stack: Stack, capsys):
    stack = fuzz_stack
    health = stack.bot_url.replace("/slack/events", "/healthz")
    async with aiohttp.ClientSession() as session, session.get(health) as response:
        assert response.status == 200
    ts = await stack.mention(stack.channel, "still there after the fuzz?")
    [reply] = await stack.replies(stack.channel, ts, 1)
    assert "still there after the fuzz?" in reply["text"]
    # No request with a bad signature started or touched a conversation.
    query = f"{SLACK_CHANNEL.name} = '{SIGNATURE_CHANNEL}'"
    assert (await stack.client.count_workflows(query)).count == 0
    with capsys.disabled():
        print(f"\nfuzz: {len(SENT)} cases (of {len(CASES)} generated, seed {SEED})")
    assert len(CASES) >= 200
