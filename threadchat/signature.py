"""Slack's request signature, checked on the raw body before anything reads it as a payload.

Slack signs `v0:{timestamp}:{body}` with HMAC-SHA256 and the app's signing secret. The cheap
part (headers shaped right, a timestamp within five minutes) is checked before the body is
even read, so a flood of unsigned bodies costs the bot its headers only.
"""

import hashlib
import hmac
import re

# The largest request body the bot reads: Slack's largest payloads (a block action carrying
# a whole 40,000-character message, form-encoded) stay well below it.
MAX_BODY_BYTES = 1024 * 1024
MAX_SKEW_SECONDS = 5 * 60
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def plausible(timestamp: str | None, signature: str | None, now: float) -> bool:
    """Headers that could carry a valid signature: a fresh integer timestamp and a `v0=`
    signature of 64 lowercase hex digits. Says nothing about the body."""
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        return False
    return bool(signature and _SIGNATURE.fullmatch(signature))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def valid(secret: str, timestamp: str, signature: str, body: bytes) -> bool:
    """Whether `signature` is Slack's for `body` at `timestamp` (compared in constant time)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
