"""The ``promptkit-async`` command, run as real processes against a real Redis server.

Each test uses its own key prefix (``--key-prefix``) and deletes its keys after.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from promptkit_async import Message, RedisStore, Session, SQLiteStore, Summary

from .conftest import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
GLOB_IDS = ["a*b", "a?c", "a[x]", "ab", "{tag}%25", "b*", "a\\*"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ANTHROPIC_", "GEMINI_", "OLLAMA_", "PROMPTKIT_"))
        and k not in ("GOOGLE_API_KEY", "REDIS_URL")
    }
    env.update(extra)
    return env


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m promptkit_async ARGS`` with no provider keys and no REDIS_URL unless given."""
    result = subprocess.run(
        [sys.executable, "-m", "promptkit_async", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env if env is not None else _clean_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_all(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at once (each process spends most of its time starting)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run(*args), commands))


@pytest.fixture
def store_args(redis_url: str, prefix: str) -> Iterator[list[str]]:
    """``--store URL --key-prefix P`` for this test; its keys are deleted afterwards."""
    try:
        yield ["--store", redis_url, "--key-prefix", prefix]
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
        finally:
            client.close()


async def seed(redis_url: str, prefix: str, *session_ids: str, owner: str | None = None) -> None:
    """One turn in each session, in order; with ``owner``, recorded as that owner's."""
    async with RedisStore.from_url(redis_url, prefix=prefix) as store:
        for session_id in session_ids:
            if owner is None:
                await store.append(session_id, [Message.user("hi"), Message.assistant("hello")])
                continue
            async with Session(store, session_id, owner=owner) as session:
                session.add(Message.user("hi"), Message.assistant("hello"))
            await asyncio.sleep(0.003)  # times are in ms: each turn gets its own


def test_help_reads_well() -> None:
    top = run("--help")
    assert top.returncode == 0
    for text in ("chat", "history", "export", "import", "delete", "sessions", "stats", "130"):
        assert text in top.stdout
    for text in ("conversations ada", "fork chat-7 chat-7b --upto", "fork onto an existing id"):
        assert text in top.stdout
    chat = run("chat", "--help")
    assert chat.returncode == 0
    assert "--key-prefix" in chat.stdout
    assert "end of input" in chat.stdout


def test_demo_still_works() -> None:
    result = run("demo", "--delay", "0")
    assert result.returncode == 0
    assert "stored history of 'demo-user': 4 messages" in result.stdout


def test_piped_chat_on_redis_remembers_across_processes(store_args: list[str]) -> None:
    first = run("chat", "--session", "pipe", *store_args, stdin="My name is Ada\n\n")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        'You said: "My name is Ada". That is the first thing you told me in this conversation.'
    ]
    assert "offline scripted provider" in first.stderr  # no key: a note, not an error
    second = run("chat", "--session", "pipe", *store_args, stdin="What is my name?\n")
    assert second.returncode == 0
    assert 'Before that you said: "My name is Ada"' in second.stdout
    history = run("history", "pipe", *store_args)
    assert history.returncode == 0
    assert history.stdout.splitlines()[0] == "user: My name is Ada"
    assert len(history.stdout.splitlines()) == 4
    as_json = json.loads(run("history", "pipe", "--json", *store_args).stdout)
    assert as_json["session_id"] == "pipe"
    assert [m["role"] for m in as_json["messages"]] == ["user", "assistant"] * 2


def test_chat_defaults_to_memory_and_reads_redis_url_from_env(
    redis_url: str, prefix: str, store_args: list[str]
) -> None:
    result = run("chat", "--session", "m", stdin="one\ntwo\n")
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2
    env = _clean_env(REDIS_URL=redis_url, PROMPTKIT_PREFIX=prefix)
    assert run("chat", "--session", "e", stdin="hello\n", env=env).returncode == 0
    assert run("history", "e", env=env).stdout.startswith("user: hello\n")
    assert run("history", "e", *store_args).returncode == 0  # the same keys


async def test_sessions_history_delete_with_glob_characters(
    redis_url: str, prefix: str, store_args: list[str]
) -> None:
    await seed(redis_url, prefix, *GLOB_IDS)
    listed = run("sessions", *store_args)
    assert listed.returncode == 0
    assert sorted(listed.stdout.splitlines()) == sorted(GLOB_IDS)
    assert json.loads(run("sessions", "--json", *store_args).stdout) == sorted(GLOB_IDS)

    prefixes = {"a*": ["a*b"], "a[": ["a[x]"], "a\\": ["a\\*"], "{tag}%": ["{tag}%25"]}
    prefixes |= {"a": ["a*b", "a?c", "a[x]", "a\\*", "ab"], "zzz": []}
    results = run_all(*(["sessions", "--prefix", p, *store_args] for p in prefixes))
    for (p, expected), result in zip(prefixes.items(), results, strict=True):
        # Glob characters in a prefix match only themselves.
        assert sorted(result.stdout.splitlines()) == expected, p
    for result in run_all(["history", "a[x]", *store_args], ["history", "{tag}%25", *store_args]):
        assert result.stdout == "user: hi\nassistant: hello\n"
    deleted = run("delete", "a*b", *store_args)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted 'a*b'\n")
    assert sorted(run("sessions", *store_args).stdout.splitlines()) == sorted(
        set(GLOB_IDS) - {"a*b"}
    )
    again = run("delete", "a*b", *store_args)
    assert again.returncode == 1
    assert "no session 'a*b'" in again.stderr


def test_unknown_session_is_exit_1(store_args: list[str]) -> None:
    for command in ("history", "delete"):
        result = run(command, "nobody", *store_args)
        assert result.returncode == 1
        assert result.stdout == ""
        assert "no session 'nobody'" in result.stderr
    assert run("history", "nobody", "--json", *store_args).stdout == ""


async def test_stats(redis_url: str, prefix: str, store_args: list[str]) -> None:
    await seed(redis_url, prefix, "s1", "s2")
    text = run("stats", *store_args)
    assert text.returncode == 0, text.stderr
    assert "active_sessions" in text.stdout
    stats = json.loads(run("stats", "--json", *store_args).stdout)
    assert stats["active_sessions"] == 2
    assert stats["avg_history_size"] == 2
    assert stats["storage_used"] > 0
    assert "load_latency.p50" in stats


def test_unreachable_redis_is_exit_3() -> None:
    port = free_port()  # nothing listens there
    closed = ["--store", f"redis://127.0.0.1:{port}/0"]
    commands = [["history", "x"], ["delete", "x"], ["sessions"], ["stats"], ["chat"]]
    for result in run_all(*([*c, *closed] for c in commands)):
        assert result.returncode == 3, result.stderr
        assert "store unavailable" in result.stderr
        assert f"127.0.0.1:{port}" in result.stderr


def test_bad_store_url_is_exit_2() -> None:
    cases = {
        "http://localhost:6379": "not a store URL (scheme 'http')",
        "redis://localhost:port": "Port could not be cast",
        "localhost:6379": "not a store URL",
        "sqlite://relative.db": "bad SQLite URL",
    }
    results = run_all(*(["history", "x", "--store", url] for url in cases))
    for words, result in zip(cases.values(), results, strict=True):
        assert result.returncode == 2
        assert "bad store URL" in result.stderr
        assert words in result.stderr


def test_usage_errors_are_exit_2(store_args: list[str]) -> None:
    no_store, memory, too_long, unknown, missing_id = run_all(
        ["history", "x"],
        ["history", "x", "--store", "memory"],
        ["history", "x" * 5000, *store_args],
        ["frobnicate"],
        ["history"],
    )
    assert "needs a persistent store" in no_store.stderr
    assert "invalid session id" in too_long.stderr
    for result in (no_store, memory, too_long, unknown, missing_id):
        assert result.returncode == 2, result.stderr
    no_key = run("chat", "--provider", "openai", stdin="hi\n")
    assert no_key.returncode == 2
    assert "OPENAI_API_KEY" in no_key.stderr


def test_provider_failure_is_exit_4() -> None:
    env = _clean_env(OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    result = run("chat", "--provider", "openai", "--model", "m", stdin="hi\n", env=env)
    assert result.returncode == 4, result.stderr
    assert "provider error" in result.stderr


def test_the_newer_provider_names() -> None:
    responses, gemini, chat_help = run_all(
        ["chat", "--provider", "responses"],
        ["chat", "--provider", "gemini"],
        ["chat", "--help"],
    )
    assert responses.returncode == 2 and "OPENAI_API_KEY" in responses.stderr
    assert gemini.returncode == 2 and "GEMINI_API_KEY" in gemini.stderr
    assert "{scripted,openai,responses,anthropic,gemini,ollama}" in chat_help.stdout
    # Ollama is detected from OLLAMA_HOST (host:port, no scheme); nobody listens there.
    env = _clean_env(OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    unreachable = run("chat", "--model", "m", stdin="hi\n", env=env)
    assert unreachable.returncode == 4, unreachable.stderr
    assert "provider error" in unreachable.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_interactive_chat_prompts_and_commands() -> None:
    import pty

    master, slave = pty.openpty()
    try:
        os.write(master, b"My name is Ada\n/history\n/quit\n")
        result = subprocess.run(
            [sys.executable, "-m", "promptkit_async", "chat", "--session", "tty", "--delay", "0"],
            stdin=slave,
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=ROOT,
            timeout=60,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('you> bot> You said: "My name is Ada".')
    assert "you> user: My name is Ada\nassistant: You said" in result.stdout
    assert "/quit" in result.stderr  # the banner says how to leave


async def test_export_delete_import_export_gives_identical_lines(
    redis_url: str, prefix: str, store_args: list[str]
) -> None:
    from promptkit_async import ImagePart, TextPart, ThinkingPart, ToolCall

    conversation = [
        Message.user(
            [TextPart("what is this? "), ImagePart(data=b"\x89PNG..", media_type="image/png")]
        ),
        Message.assistant(
            [ThinkingPart("let me look", signature="c2ln")],
            tool_calls=[ToolCall("call_1", "look", '{"at": "image"}')],
        ),
        Message.tool("a cat", tool_call_id="call_1", is_error=False),
        Message.assistant("A cat. ✨", usage={"in": 10, "out": 3}),
    ]
    async with RedisStore.from_url(redis_url, prefix=prefix) as store:
        await store.append("conv", conversation[:2])
        await store.append("conv", conversation[2:])
        stored = await store.load("conv")
    first = run("export", "conv", *store_args)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [json.loads(line) for line in lines] == [m.to_dict() for m in stored]
    assert [Message.from_dict(json.loads(line)) for line in lines] == conversation
    assert run("delete", "conv", *store_args).returncode == 0
    assert run("export", "conv", *store_args).returncode == 1  # gone
    restored = run("import", "conv", *store_args, stdin=first.stdout)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == "imported 4 messages into 'conv'\n"
    assert run("export", "conv", *store_args).stdout == first.stdout
    # The history as JSON carries the same lossless dicts.
    as_json = json.loads(run("history", "conv", "--json", *store_args).stdout)
    assert as_json["messages"] == [json.loads(line) for line in lines]


def test_import_refuses_to_merge_unless_told_to(store_args: list[str]) -> None:
    one = json.dumps(Message.user("one").to_dict()) + "\n"
    two = (
        json.dumps(Message.user("two").to_dict())
        + "\n"
        + json.dumps(Message.assistant("2").to_dict())
    )
    assert run("import", "imp", *store_args, stdin=one).returncode == 0
    refused = run("import", "imp", *store_args, stdin=two)
    assert refused.returncode == 5
    assert "already has history" in refused.stderr and "--replace" in refused.stderr
    assert [
        json.loads(x)["content"] for x in run("export", "imp", *store_args).stdout.splitlines()
    ] == ["one"]
    replaced = run("import", "imp", "--replace", *store_args, stdin=two)
    assert replaced.returncode == 0, replaced.stderr
    exported = [json.loads(x) for x in run("export", "imp", *store_args).stdout.splitlines()]
    assert [(m["id"], m["content"]) for m in exported] == [("0", "two"), ("1", "2")]


def test_import_of_bad_input_is_a_usage_error_and_writes_nothing(store_args: list[str]) -> None:
    good = json.dumps(Message.user("fine").to_dict())
    cases = {
        "not json": f"{good}\n{{oops\n",
        "not a message": f'{good}\n{{"role": "wizard", "content": "x"}}\n',
        "empty": "\n\n",
        "ids that go back in time": (
            json.dumps({**Message.user("a").to_dict(), "created_at": "2026-01-02T00:00:00+00:00"})
            + "\n"
            + json.dumps({**Message.user("b").to_dict(), "created_at": "2026-01-01T00:00:00+00:00"})
        ),
    }
    for name, text in cases.items():
        result = run("import", "bad", *store_args, stdin=text)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith("promptkit-async: "), name
    assert "input line 2" in run("import", "bad", *store_args, stdin=cases["not json"]).stderr
    assert run("export", "bad", *store_args).returncode == 1  # nothing was written


# -- conversations and fork ------------------------------------------------------------


async def test_conversations_newest_first_across_pages(
    redis_url: str, prefix: str, store_args: list[str]
) -> None:
    await seed(redis_url, prefix, "c0", "c1", "c2", "c3", "c4", owner="ada")
    await seed(redis_url, prefix, "c1", owner="ada")  # c1 again: now the newest
    await seed(redis_url, prefix, "b0", owner="bob")
    await seed(redis_url, prefix, "anon")  # no owner: nobody's listing
    async with RedisStore.from_url(redis_url, prefix=prefix) as store:
        assert await store.update_info("c3", title="Trip\nplans")
    newest_first = ["c1", "c4", "c3", "c2", "c0"]
    text, paged, as_json, bob, nobody, nobody_json = run_all(
        ["conversations", "ada", *store_args],
        ["conversations", "ada", "--limit", "2", *store_args],  # three pages
        ["conversations", "ada", "--json", "--limit", "3", *store_args],
        ["conversations", "bob", *store_args],
        ["conversations", "nobody", *store_args],
        ["conversations", "nobody", "--json", *store_args],
    )
    assert text.returncode == 0, text.stderr
    lines = [line.split("  ") for line in text.stdout.splitlines()]
    assert [line[0] for line in lines] == newest_first
    assert [(line[2], line[3]) for line in lines] == [
        ("4", "-"),
        ("2", "-"),
        ("2", repr("Trip\nplans")),  # one line, however the title is written
        ("2", "-"),
        ("2", "-"),
    ]
    times = [datetime.fromisoformat(line[1]) for line in lines]
    assert times == sorted(times, reverse=True) and times[0].utcoffset() is not None
    assert paged.stdout == text.stdout
    infos = json.loads(as_json.stdout)
    assert [i["id"] for i in infos] == newest_first
    assert infos[2] == {
        "id": "c3",
        "owner": "ada",
        "title": "Trip\nplans",
        "created_at": infos[2]["created_at"],
        "updated_at": infos[2]["updated_at"],
        "message_count": 2,
        "metadata": {},
        "forked_from": None,
    }
    assert datetime.fromisoformat(infos[0]["updated_at"]) == times[0]
    assert bob.stdout.split("  ")[0] == "b0"
    assert (nobody.returncode, nobody.stdout, nobody.stderr) == (0, "", "")
    assert (nobody_json.returncode, json.loads(nobody_json.stdout)) == (0, [])
    for bad in (["--limit", "0"], ["--limit", "1001"], ["--limit", "x"]):
        assert run("conversations", "ada", *bad, *store_args).returncode == 2, bad
    too_long = run("conversations", "x" * 5000, *store_args)
    assert too_long.returncode == 2 and "invalid owner" in too_long.stderr


def _exported(store_args: list[str], session_id: str) -> list[dict[str, object]]:
    result = run("export", session_id, *store_args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_fork_whole_and_up_to_a_message(
    redis_url: str, prefix: str, store_args: list[str]
) -> None:
    await seed(redis_url, prefix, "src", "src", owner="ada")  # two turns: messages 0-3
    source = _exported(store_args, "src")
    whole, part = run_all(
        ["fork", "src", "copy", *store_args],
        ["fork", "src", "branch", "--upto", "1", "--title", "Branch", *store_args],
    )
    assert (whole.returncode, whole.stdout) == (0, "forked 'src' into 'copy' (4 messages)\n")
    assert (part.returncode, part.stdout) == (0, "forked 'src' into 'branch' (2 messages)\n")
    assert _exported(store_args, "copy") == source  # ids and times kept
    assert _exported(store_args, "branch") == source[:2]
    listed = json.loads(run("conversations", "ada", "--json", *store_args).stdout)
    by_id = {i["id"]: i for i in listed}
    assert sorted(by_id) == ["branch", "copy", "src"]
    assert (by_id["branch"]["title"], by_id["branch"]["forked_from"]) == ("Branch", "src")
    assert (by_id["copy"]["title"], by_id["copy"]["forked_from"]) == (None, "src")
    assert _exported(store_args, "src") == source  # the source is unchanged


async def test_fork_onto_an_existing_id_needs_replace(
    redis_url: str, prefix: str, store_args: list[str]
) -> None:
    await seed(redis_url, prefix, "src", "src", owner="ada")
    await seed(redis_url, prefix, "taken", owner="ada")
    kept = _exported(store_args, "taken")
    refused = run("fork", "src", "taken", *store_args)
    assert (refused.returncode, refused.stdout) == (5, "")
    assert "'taken' already exists" in refused.stderr and "--replace" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert _exported(store_args, "taken") == kept
    replaced = run("fork", "src", "taken", "--upto", "2", "--replace", *store_args)
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout == "forked 'src' into 'taken' (3 messages)\n"
    assert _exported(store_args, "taken") == _exported(store_args, "src")[:3]


async def test_fork_of_an_unknown_source_or_message_is_exit_1(
    redis_url: str, prefix: str, store_args: list[str]
) -> None:
    await seed(redis_url, prefix, "src", owner="ada")
    unknown, no_message, same, empty_title = run_all(
        ["fork", "nobody", "new", *store_args],
        ["fork", "src", "new", "--upto", "99", *store_args],
        ["fork", "src", "src", *store_args],
        ["fork", "src", "new", "--title", "", *store_args],
    )
    for result in (unknown, no_message):
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert "no conversation 'nobody'" in unknown.stderr
    assert "no message '99'" in no_message.stderr
    for result in (same, empty_title):
        assert result.returncode == 2, result.stderr
    assert run("export", "new", *store_args).returncode == 1  # nothing was written


def test_chat_on_an_sqlite_file_remembers_across_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"  # sqlite:////abs/path: four slashes
    first = run("chat", "--session", "ada", "--store", url, stdin="My name is Ada\n")
    assert first.returncode == 0, first.stderr
    second = run("chat", "--session", "ada", "--store", url, stdin="What is my name?\n")
    assert 'Before that you said: "My name is Ada"' in second.stdout
    history = run("history", "ada", "--store", url)
    assert history.stdout.splitlines()[0] == "user: My name is Ada"
    # PROMPTKIT_STORE names it too, and wins over REDIS_URL.
    env = _clean_env(PROMPTKIT_STORE=url, REDIS_URL="redis://127.0.0.1:1")
    assert run("sessions", env=env).stdout == "ada\n"
    exported = run("export", "ada", env=env)
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 4
    assert run("history", "ada", "--store", "sqlite:///").returncode == 2  # a bad URL


async def test_history_shows_the_summary_and_what_it_covers(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    async with SQLiteStore(str(path)) as store:
        await store.append("ada", [Message.user(f"m{i}") for i in range(5)])
        summary = Summary("Ada likes tea.", upto="2", covered=3, version="v1")
        assert await store.write_summary("ada", summary, previous=None)
    url = f"sqlite:///{path}"
    text = run("history", "ada", "--store", url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:2] == ["summary of the 3 messages up to 2:", "  Ada likes tea."]
    as_json = json.loads(run("history", "ada", "--store", url, "--json").stdout)
    assert as_json["summary"]["text"] == "Ada likes tea." and as_json["summary"]["upto"] == "2"
    assert as_json["summary"]["covered"] == 3 and len(as_json["messages"]) == 5
