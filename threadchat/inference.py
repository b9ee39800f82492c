"""Pure rules about model calls: parameters for a regenerate, and how answers end."""

import dataclasses
import hashlib

from threadchat.model import InferenceSettings

# A regenerate samples more freely, so the new answer differs from the one it replaces.
REGENERATE_TEMPERATURE_STEP = 0.3
MAX_TEMPERATURE = 1.0  # the top of Bedrock's range for Claude and Nova models

# Stop reasons where the output is not the model's answer: it stays out of the context.
BLOCKED = {"guardrail_intervened", "content_filtered"}
# Not Bedrock's: a turn someone stopped with Slack's Stop button.
STOPPED = "stopped"
CUT = "max_tokens"


def for_regenerate(settings: InferenceSettings) -> InferenceSettings:
    temperature = min(MAX_TEMPERATURE, settings.temperature + REGENERATE_TEMPERATURE_STEP)
    return dataclasses.replace(settings, temperature=round(temperature, 3))


def prompt_hash(system_prompt: str) -> str:
    """A short fingerprint of a system prompt: which prompt a call used, without its text."""
    return hashlib.sha256(system_prompt.encode()).hexdigest()[:12]
