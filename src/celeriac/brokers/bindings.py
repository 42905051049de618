"""Exchange -> queue matching for brokers that keep bindings themselves (pure)."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def _topic_regex(pattern: str) -> re.Pattern[str]:
    # AMQP topic patterns: words split by '.', '*' is one word, '#' is zero or more words.
    parts = []
    for word in pattern.split("."):
        if word == "#":
            parts.append(r"(?:[^.]+(?:\.[^.]+)*)?")
        elif word == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(word))
    regex = r"\.".join(parts).replace(r"(?:[^.]+(?:\.[^.]+)*)?\.", r"(?:[^.]+\.)*")
    return re.compile(f"^{regex}$")


def matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether a message with `routing_key` goes to a queue bound with `binding_key`."""
    if exchange_type == "fanout":
        return True
    if exchange_type == "topic":
        return bool(_topic_regex(binding_key).match(routing_key))
    return binding_key == routing_key
