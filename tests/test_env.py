"""Choosing a store and a provider from the environment."""

from __future__ import annotations

import logging

import pytest

from promptkit_async import (
    AnthropicProvider,
    GeminiProvider,
    MemoryStore,
    OllamaProvider,
    OpenAIProvider,
    OpenAIResponsesProvider,
    RedisStore,
    ScriptedProvider,
    provider_from_env,
    store_from_env,
)
from promptkit_async._env import detect_provider


async def test_provider_precedence_and_models(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        offline = provider_from_env(environ={}, scripted_delay=0.01)
    assert isinstance(offline, ScriptedProvider) and offline.delay == 0.01
    assert "falling back to ScriptedProvider" in caplog.text
    both = {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "ak-x"}
    assert detect_provider(both) == "openai"
    openai = provider_from_env(environ=both)
    assert isinstance(openai, OpenAIProvider) and openai.model == "gpt-4o-mini"
    local = provider_from_env(
        environ={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "PROMPTKIT_MODEL": "llama3.2"}
    )
    assert isinstance(local, OpenAIProvider) and local.model == "llama3.2"
    anthropic = provider_from_env("anthropic", model="claude-x", environ=both)
    assert isinstance(anthropic, AnthropicProvider) and anthropic.model == "claude-x"
    assert "ak-x" not in repr(anthropic) and "sk-x" not in repr(openai)
    for provider in (offline, openai, local, anthropic):
        await provider.aclose()


def test_asking_for_a_provider_without_its_key_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        provider_from_env("openai", environ={})
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        provider_from_env("anthropic", environ={"OPENAI_API_KEY": "x"})
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        provider_from_env("responses", environ={"ANTHROPIC_API_KEY": "x"})
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        provider_from_env("gemini", environ={"OPENAI_API_KEY": "x"})
    with pytest.raises(ValueError, match="unknown provider 'cohere'"):
        provider_from_env("cohere", environ={})  # type: ignore[arg-type]


async def test_gemini_ollama_and_responses(caplog: pytest.LogCaptureFixture) -> None:
    order = [
        ({"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b", "GEMINI_API_KEY": "c"}, "openai"),
        ({"ANTHROPIC_API_KEY": "b", "GEMINI_API_KEY": "c", "OLLAMA_HOST": "h"}, "anthropic"),
        ({"GOOGLE_API_KEY": "c", "OLLAMA_HOST": "h"}, "gemini"),
        ({"OLLAMA_HOST": "h"}, "ollama"),
        ({"OLLAMA_HOST": ""}, "scripted"),
    ]
    for environ, expected in order:
        assert detect_provider(environ) == expected, environ
    gemini = provider_from_env(environ={"GEMINI_API_KEY": "g-1", "GOOGLE_API_KEY": "g-2"})
    assert isinstance(gemini, GeminiProvider) and gemini.model == "gemini-2.5-flash"
    assert gemini._api_key is not None and gemini._api_key.reveal() == "g-1"
    google = provider_from_env("gemini", model="gemini-pro", environ={"GOOGLE_API_KEY": "g-2"})
    assert isinstance(google, GeminiProvider) and google.model == "gemini-pro"
    ollama = provider_from_env(environ={"OLLAMA_HOST": "gpu-box:11500", "PROMPTKIT_MODEL": "qwen3"})
    assert isinstance(ollama, OllamaProvider) and ollama.model == "qwen3"
    assert ollama.base_url == "http://gpu-box:11500"
    local = provider_from_env("ollama", environ={})
    assert isinstance(local, OllamaProvider) and local.model == "llama3.2"
    assert local.base_url == "http://localhost:11434"
    responses = provider_from_env("responses", environ={"OPENAI_API_KEY": "sk-r"})
    assert isinstance(responses, OpenAIResponsesProvider) and responses.model == "gpt-4o-mini"
    assert "sk-r" not in repr(responses) and "g-1" not in repr(gemini)
    with caplog.at_level(logging.WARNING):
        offline = provider_from_env(environ={})
    assert "GEMINI_API_KEY" in caplog.text and "OLLAMA_HOST" in caplog.text
    for provider in (gemini, google, ollama, local, responses, offline):
        await provider.aclose()


async def test_store_from_env() -> None:
    assert isinstance(store_from_env({}), MemoryStore)
    store = store_from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "PROMPTKIT_PREFIX": "app"})
    assert isinstance(store, RedisStore) and store.prefix == "app"
    await store.aclose()
    with pytest.raises(ValueError, match="not a Redis URL"):
        store_from_env({"REDIS_URL": "postgres://x"})
