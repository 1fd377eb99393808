"""Choosing a store and a provider from environment variables, in one visible place.

Web apps, bots and the command line all configure themselves the same way:

- ``PROMPTKIT_STORE``, a store URL (see :func:`store_from_url`): an
  SQLiteStore or a RedisStore; else ``REDIS_URL``: a RedisStore
  (``PROMPTKIT_PREFIX``: the Redis key prefix); neither set, a MemoryStore.
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
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from .providers import (
    AnthropicProvider,
    GeminiProvider,
    OllamaProvider,
    OpenAIProvider,
    OpenAIResponsesProvider,
    ScriptedProvider,
)
from .providers._ollama import DEFAULT_OLLAMA_BASE_URL
from .stores import MemoryStore, RedisStore, SQLiteStore

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
    "store_from_url",
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


_REDIS_SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
)


def _sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:`` URL in SQLAlchemy's spelling (None: not one).

    ``sqlite:///chat.db`` is relative to the working directory,
    ``sqlite:////var/lib/app/chat.db`` absolute; the path is percent-decoded.
    """
    if not url.lower().startswith("sqlite:"):
        return None
    rest = url[len("sqlite:") :]
    if not rest.startswith("///") or len(rest) == 3 or "?" in rest or "#" in rest:
        raise ValueError(
            f"bad SQLite URL {url!r}: expected sqlite:///relative/file.db or "
            "sqlite:////absolute/file.db (no in-memory database, no query options)"
        )
    return unquote(rest[3:])


def store_from_url(url: str, **options: Any) -> RedisStore | SQLiteStore:
    """The store a URL names, built with ``options`` (keywords of that store).

    ``sqlite:///relative/file.db`` and ``sqlite:////absolute/file.db``: an
    :class:`SQLiteStore` on that file. ``redis://``, ``rediss://``,
    ``unix://``, ``redis+cluster://``, ``rediss+cluster://``,
    ``redis+sentinel://`` and ``rediss+sentinel://`` URLs:
    :meth:`RedisStore.from_url`.

    Raises:
        ValueError: not a store URL, or a bad one.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    path = _sqlite_path(url)
    if path is not None:
        return SQLiteStore(path, **options)
    if not url.startswith(_REDIS_SCHEMES):
        # Only the scheme is shown: the rest of a URL may hold a password.
        scheme = repr(url.partition("://")[0]) if "://" in url else "none"
        raise ValueError(
            f"not a store URL (scheme {scheme}): expected sqlite:///relative/file.db, "
            "sqlite:////absolute/file.db, or a Redis URL (redis://, rediss://, unix://, "
            "redis+cluster://, redis+sentinel://)"
        )
    return RedisStore.from_url(url, **options)


def store_from_env(
    environ: Mapping[str, str] | None = None,
) -> MemoryStore | RedisStore | SQLiteStore:
    """The store ``PROMPTKIT_STORE`` names (a store URL, see :func:`store_from_url`),
    else a RedisStore from ``REDIS_URL``, else a MemoryStore. A Redis store's key
    prefix is ``PROMPTKIT_PREFIX`` (default ``promptkit``).

    Raises:
        ValueError: ``PROMPTKIT_STORE`` is not a store URL, or ``REDIS_URL`` not a Redis URL.
    """
    env = os.environ if environ is None else environ
    prefix = env.get("PROMPTKIT_PREFIX") or "promptkit"
    url = env.get("PROMPTKIT_STORE")
    if url:
        if _sqlite_path(url) is not None:
            return store_from_url(url)
        return store_from_url(url, prefix=prefix)
    url = env.get("REDIS_URL")
    if url:
        return RedisStore.from_url(url, prefix=prefix)
    return MemoryStore()
