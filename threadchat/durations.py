"""Parsing human durations such as ``45s``, ``30m``, ``2h`` or plain seconds."""

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError on anything else or on zero."""
    match = _PATTERN.match(text or "")
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 45s, 30m, 2h or seconds)")
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds
