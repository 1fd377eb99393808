"""Choosing a store and a provider from environment variables, in one visible place.

Web apps, bots and the command line all configure themselves the same way:

- ``REDIS_URL`` (and ``PROMPTKIT_PREFIX`` for the key prefix): a RedisStore;
  unset, a MemoryStore.
- ``OPENAI_API_KEY`` and/or ``OPENAI_BASE_URL`` (any OpenAI-compatible server):
  an OpenAIProvider; else ``ANTHROPIC_API_KEY`` (``ANTHROPIC_BASE_URL``): an
  AnthropicProvider; else ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``: a
  GeminiProvider; else ``OLLAMA_HOST``: an OllamaProvider; else the offline
  ScriptedProvider. ``PROMPTKIT_MODEL`` names the model. The Responses API
  (``"responses"``, with the OpenAI variables) is chosen only by name.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Literal

from .providers import (
    AnthropicProvider,
    GeminiProvider,
    OllamaProvider,
    OpenAIProvider,
    OpenAIResponsesProvider,
    ScriptedProvider,
)
from .providers._ollama import DEFAULT_OLLAMA_BASE_URL
from .stores import MemoryStore, RedisStore

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .providers import Provider

__all__ = [
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_GEMINI_MODEL",
    "DEFAULT_OLLAMA_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "ProviderName",
    "detect_provider",
    "provider_from_env",
    "store_from_env",
]

logger = logging.getLogger("promptkit_async")

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-5"
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_OLLAMA_MODEL = "llama3.2"

ProviderName = Literal["openai", "responses", "anthropic", "gemini", "ollama", "scripted"]
_NAMES = "openai, responses, anthropic, gemini, ollama or scripted"


def detect_provider(environ: Mapping[str, str] | None = None) -> ProviderName:
    """Which provider the environment configures (``"scripted"`` when none)."""
    env = os.environ if environ is None else environ
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        return "openai"
    if env.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    if env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY"):
        return "gemini"
    if env.get("OLLAMA_HOST"):
        return "ollama"
    return "scripted"


def provider_from_env(
    name: ProviderName | None = None,
    *,
    model: str | None = None,
    environ: Mapping[str, str] | None = None,
    scripted_delay: float = 0.0,
) -> Provider:
    """The provider the environment configures, or ``name`` if given.

    With no key set and no ``name``, a warning is logged and the offline
    :class:`ScriptedProvider` is returned, so apps and demos run without one.

    Raises:
        ValueError: ``name`` asks for a provider whose key is not set, or is
            unknown; ``OLLAMA_HOST`` has a bad port.
    """
    env = os.environ if environ is None else environ
    detected = detect_provider(env)
    if name is None:
        name = detected
        if name == "scripted":
            logger.warning(
                "no OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, GEMINI_API_KEY, "
                "GOOGLE_API_KEY or OLLAMA_HOST set: "
                "falling back to ScriptedProvider (offline echo replies)"
            )
    model = model or env.get("PROMPTKIT_MODEL") or None
    if name in ("openai", "responses"):
        if not (env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL")):
            raise ValueError(
                f"the {name} provider needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local server)"
            )
        cls = OpenAIProvider if name == "openai" else OpenAIResponsesProvider
        return cls(
            model or DEFAULT_OPENAI_MODEL,
            api_key=env.get("OPENAI_API_KEY", ""),
            base_url=env.get("OPENAI_BASE_URL") or None,
        )
    if name == "anthropic":
        if not env.get("ANTHROPIC_API_KEY"):
            raise ValueError("the anthropic provider needs ANTHROPIC_API_KEY")
        return AnthropicProvider(
            model or DEFAULT_ANTHROPIC_MODEL,
            api_key=env["ANTHROPIC_API_KEY"],
            base_url=env.get("ANTHROPIC_BASE_URL") or None,
        )
    if name == "gemini":
        key = env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")
        if not key:
            raise ValueError("the gemini provider needs GEMINI_API_KEY (or GOOGLE_API_KEY)")
        return GeminiProvider(model or DEFAULT_GEMINI_MODEL, api_key=key)
    if name == "ollama":
        # No key needed: without OLLAMA_HOST it is the local server.
        return OllamaProvider(
            model or DEFAULT_OLLAMA_MODEL,
            base_url=env.get("OLLAMA_HOST") or DEFAULT_OLLAMA_BASE_URL,
        )
    if name == "scripted":
        return ScriptedProvider(delay=scripted_delay)
    raise ValueError(f"unknown provider {name!r}: expected {_NAMES}")


def store_from_env(environ: Mapping[str, str] | None = None) -> MemoryStore | RedisStore:
    """A RedisStore from ``REDIS_URL`` (prefix ``PROMPTKIT_PREFIX``), else a MemoryStore.

    Raises:
        ValueError: ``REDIS_URL`` is not a Redis URL.
    """
    env = os.environ if environ is None else environ
    url = env.get("REDIS_URL")
    if url:
        return RedisStore.from_url(url, prefix=env.get("PROMPTKIT_PREFIX") or "promptkit")
    return MemoryStore()
