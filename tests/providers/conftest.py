"""Fixtures for provider tests: a fake API served over loopback HTTP or MockTransport."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ._fakeapi import FakeAPI

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture(params=["loopback", "mock"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[FakeAPI]:
    fake = FakeAPI(request.param)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
async def loopback() -> AsyncIterator[FakeAPI]:
    fake = FakeAPI("loopback")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture(autouse=True)
def _no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "OLLAMA_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
