"""Choosing a store and a provider from the environment."""

from __future__ import annotations

import logging

import pytest

from promptkit_async import (
    AnthropicProvider,
    MemoryStore,
    OpenAIProvider,
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
    with pytest.raises(ValueError, match="unknown provider"):
        provider_from_env("gemini", environ={})  # type: ignore[arg-type]


async def test_store_from_env() -> None:
    assert isinstance(store_from_env({}), MemoryStore)
    store = store_from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "PROMPTKIT_PREFIX": "app"})
    assert isinstance(store, RedisStore) and store.prefix == "app"
    await store.aclose()
    with pytest.raises(ValueError, match="not a Redis URL"):
        store_from_env({"REDIS_URL": "postgres://x"})
