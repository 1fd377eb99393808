"""How each API declares the tools a model may call (pure: no I/O).

The same :class:`Tool` (name, description, JSON-schema parameters) in the
shape each request body takes under ``tools``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._tools import Tool

__all__ = [
    "anthropic_tools",
    "gemini_tools",
    "ollama_tools",
    "openai_tools",
    "responses_tools",
]


def openai_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Chat Completions (and Ollama): ``{"type": "function", "function": {...}}``."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            },
        }
        for t in tools
    ]


ollama_tools = openai_tools


def responses_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Responses: the function's fields at the top level of each tool."""
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": dict(t.parameters),
        }
        for t in tools
    ]


def anthropic_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Messages: ``input_schema`` rather than ``parameters``."""
    return [
        {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
        for t in tools
    ]


def gemini_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Gemini: one tool holding every ``functionDeclarations`` entry."""
    return [
        {
            "functionDeclarations": [
                {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
                for t in tools
            ]
        }
    ]
