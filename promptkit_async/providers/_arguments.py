"""Tool-call arguments between our JSON text and the objects some wire formats want.

:class:`ToolCall` keeps arguments as the JSON text the model wrote. Anthropic,
Gemini and Ollama carry them as a JSON object instead, in requests and replies.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["arguments_object", "arguments_text"]

logger = logging.getLogger("promptkit_async.providers")


def arguments_object(arguments: str) -> dict[str, Any]:
    """The arguments as an object; ``{}`` when the text is empty or not a JSON object."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    # The model wrote arguments that are not a JSON object. Raising would make
    # this history unsendable forever, so the call is replayed with no input.
    logger.debug("tool call arguments are not a JSON object; sending {}")
    return {}


def arguments_text(value: object) -> str:
    """JSON text for arguments a reply carried as an object (or already as text)."""
    if isinstance(value, str):
        return value or "{}"
    if value is None:
        return "{}"
    return json.dumps(value, ensure_ascii=False)
