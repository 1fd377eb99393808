"""SessionSettings: validated once, immutable, the one definition of the options."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import promptkit_async
from promptkit_async import (
    Conversations,
    MemoryStore,
    ScriptedProvider,
    Session,
    SessionOptions,
    SessionSettings,
)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_messages": 0}, ValueError),
        ({"max_messages": "20"}, TypeError),
        ({"ttl": 0}, ValueError),
        ({"ttl": -5}, ValueError),
        ({"ttl": "1h"}, TypeError),
        ({"on_error": "ignore"}, ValueError),
        ({"on_load_error": "skip"}, ValueError),
        ({"lock_timeout": -1}, ValueError),
        ({"system": 3}, TypeError),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Session(MemoryStore(), "x", **kwargs)


async def test_conversations_reject_bad_settings_at_once() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Conversations(MemoryStore(), max_messages=0)
    with pytest.raises(TypeError):
        Conversations(MemoryStore(), max_mesages=5)  # type: ignore[call-arg]
    chats = Conversations(MemoryStore(), commit_grace=2.0)
    async with chats.session("x", provider=ScriptedProvider(["hi"])) as s:
        assert (await s.send("hello")).content == "hi"
    with pytest.raises(ValueError, match="commit_grace"):
        Session(MemoryStore(), "x", commit_grace=float("nan"))


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_options() -> list[tuple[str, str]]:
    """``(name, default expression)`` of each row of the README's options table."""
    lines = README.read_text().splitlines()
    start = lines.index("| option | default | |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[0])
        default = re.match(r"`([^`]+)`", cells[1])
        assert name and default, line
        rows.append((name.group(1), default.group(1)))
    return rows


def test_the_readme_options_table_is_the_settings() -> None:
    rows = _readme_options()
    names = [f.name for f in dataclasses.fields(SessionSettings)]
    assert [name for name, _ in rows] == names
    defaults = SessionSettings()
    for name, expression in rows:
        documented = eval(expression, dict(vars(promptkit_async)))
        assert documented == getattr(defaults, name), name


def test_session_options_mirror_the_settings() -> None:
    names = {f.name for f in dataclasses.fields(SessionSettings)}
    assert set(SessionOptions.__annotations__) == names
    assert SessionOptions.__total__ is False


def test_settings_are_immutable_validated_and_shared() -> None:
    settings = SessionSettings(max_messages=5, ttl=timedelta(hours=1))
    assert settings.ttl == 3600.0  # normalised once
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_messages = 6  # type: ignore[misc]
    other = settings.replace(system="Be brief.")
    assert (other.max_messages, other.system, settings.system) == (5, "Be brief.", None)
    with pytest.raises(ValueError, match="max_messages"):
        settings.replace(max_messages=0)
    with pytest.raises(TypeError, match="unknown session option.*max_mesages"):
        settings.replace(max_mesages=5)
    session = Session(MemoryStore(), "x", settings=settings)
    assert session.settings is settings  # no copy, no re-validation per session
    chats = Conversations(MemoryStore(), settings=settings)
    assert chats.session("y").settings is settings
    assert chats.session("y", lazy=True).settings == settings.replace(lazy=True)
    with pytest.raises(TypeError, match="SessionSettings"):
        Session(MemoryStore(), "x", settings={"max_messages": 5})  # type: ignore[arg-type]


def test_derived_settings_are_remembered_but_never_stale() -> None:
    store = MemoryStore()
    a = Session(store, "x", max_messages=7).settings
    assert Session(store, "y", max_messages=7).settings is a  # validated once
    base0 = SessionSettings()
    options: dict[str, Any] = {"max_messages": 3}
    b = base0.with_options(options)
    options["max_messages"] = 4  # the caller's dict changing later changes nothing
    assert b.max_messages == 3 and base0.with_options({"max_messages": 3}) is b
    assert base0.with_options(options).max_messages == 4
    base = SessionSettings(system="s")
    assert base.with_options({"max_messages": 4}).system == "s"  # another base: its own
    assert Session(store, "z", max_messages=7, lazy=True).settings.lazy is True
    with pytest.raises(ValueError, match="max_messages"):
        Session(store, "x", max_messages=0)
