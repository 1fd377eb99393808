"""``session.run()``: the tool loop, with the scripted provider (wire formats: tests/providers)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

import pytest

from promptkit_async import (
    MemoryStore,
    Message,
    ProviderError,
    RunOutcome,
    ScriptedProvider,
    Session,
    Tool,
    ToolCall,
    tool,
)

if TYPE_CHECKING:
    from promptkit_async import Turn


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    async def commit(self, turn: Turn) -> tuple[Message, ...]:
        self.commits += 1
        return await super().commit(turn)


@tool
async def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """The weather in a city.

    Ignored: only the first paragraph is the description.
    """
    return {"city": city, "temp": 18, "unit": unit}


def call(call_id: str, name: str, arguments: str) -> ToolCall:
    return ToolCall(call_id, name, arguments)


def calls(*tool_calls: ToolCall, text: str = "") -> Message:
    return Message.assistant(text, tool_calls=list(tool_calls))


async def test_a_two_step_loop_is_one_commit_with_every_message_in_order() -> None:
    store = CountingStore()
    provider = ScriptedProvider(
        [
            calls(call("c1", "get_weather", '{"city": "Paris"}'), text="Let me look. "),
            "It is 18 °C in Paris.",
        ]
    )
    async with Session(store, "s", provider=provider) as session:
        reply = session.run("Weather in Paris?", tools=[get_weather])
        texts = [t async for t in reply]
        assert store.commits == 0  # nothing is written before the block ends
    assert "".join(texts) == "Let me look. It is 18 °C in Paris."
    assert reply.message is not None and reply.message.text == "It is 18 °C in Paris."
    assert reply.outcome == RunOutcome("answered", 2, reply.outcome.messages)  # type: ignore[union-attr]
    kept = await store.load("s")
    assert [m.role for m in kept] == ["user", "assistant", "tool", "assistant"]
    assert kept[1].tool_calls == (call("c1", "get_weather", '{"city": "Paris"}'),)
    assert kept[2] == Message.tool('{"city": "Paris", "temp": 18, "unit": "C"}', tool_call_id="c1")
    assert store.commits == 1
    assert list(reply.outcome.messages) == kept
    # The second call was sent the first call and its result, and both were told the tools.
    first, second = provider.calls
    assert first.tools == second.tools == ("get_weather",)
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]


async def test_parallel_calls_run_concurrently_and_results_keep_the_calls_order() -> None:
    started: list[str] = []
    both = asyncio.Event()

    async def slow(name: str) -> str:
        started.append(name)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # only returns if the other one runs too
        return f"done {name}"

    echo = Tool(
        name="echo",
        fn=slow,
        description="echo a name",
        parameters={"type": "object", "properties": {"name": {"type": "string"}}},
    )
    provider = ScriptedProvider(
        [calls(call("a", "echo", '{"name": "A"}'), call("b", "echo", '{"name": "B"}')), "ok"]
    )
    store = MemoryStore()
    async with Session(store, "p", provider=provider) as session:
        await session.run("go", tools=[echo]).text()
    results = [m for m in await store.load("p") if m.role == "tool"]
    assert [(m.tool_call_id, m.text) for m in results] == [("a", "done A"), ("b", "done B")]


async def test_a_failing_tool_is_an_error_result_the_model_reads() -> None:
    def divide(a: int, b: int) -> float:
        return a / b

    bad_json = call("c2", "divide", "{not json")
    provider = ScriptedProvider(
        [
            calls(
                call("c1", "divide", '{"a": 1, "b": 0}'),
                bad_json,
                call("c3", "nope", "{}"),
                call("c4", "divide", '{"a": 1, "c": 2}'),
            ),
            "Sorry, that failed.",
        ]
    )
    store = MemoryStore()
    async with Session(store, "e", provider=provider) as session:
        reply = session.run("1/0?", tools=[tool(divide)])
        await reply.text()
    assert reply.outcome is not None and reply.outcome.stop == "answered"
    results = [m for m in await store.load("e") if m.role == "tool"]
    assert all(m.is_error for m in results)
    assert results[0].text == "ZeroDivisionError: division by zero"
    assert "not valid JSON" in results[1].text
    assert "no tool named 'nope'" in results[2].text
    assert "TypeError" in results[3].text
    # The model was sent the errors.
    assert [m.is_error for m in provider.calls[1].messages if m.role == "tool"] == [True] * 4


async def test_max_steps_is_an_outcome_and_every_call_keeps_its_result() -> None:
    looping = [calls(call(f"c{i}", "get_weather", '{"city": "Oslo"}')) for i in range(5)]
    provider = ScriptedProvider(looping)
    store = MemoryStore()
    async with Session(store, "m", provider=provider) as session:
        reply = session.run("loop", tools=[get_weather], max_steps=3)
        await reply.text()
    assert reply.outcome is not None
    assert (reply.outcome.stop, reply.outcome.steps) == ("max_steps", 3)
    kept = await store.load("m")
    assert [m.role for m in kept] == ["user"] + ["assistant", "tool"] * 3
    assert len(provider.calls) == 3
    with pytest.raises(ValueError, match="max_steps"):
        async with Session(store, "m", provider=provider) as session:
            session.run("x", tools=[get_weather], max_steps=0)


async def test_cancelling_during_a_tool_stops_it_and_writes_nothing() -> None:
    entered = asyncio.Event()
    stopped = asyncio.Event()

    async def forever() -> str:
        entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()
        return "never"

    provider = ScriptedProvider([calls(call("c1", "forever", "{}")), "unreached"])
    store = MemoryStore()

    async def turn() -> None:
        async with Session(store, "c", provider=provider) as session:
            await session.run("go", tools=[tool(forever)]).text()

    task = asyncio.create_task(turn())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()  # the tool was cancelled too
    assert await store.load("c") == []
    assert len(store.locks) == 0


async def test_a_failed_model_call_mid_loop_stages_nothing() -> None:
    provider = ScriptedProvider(
        [calls(call("c1", "get_weather", '{"city": "Rome"}')), ProviderError("down")]
    )
    store = MemoryStore()
    with pytest.raises(ProviderError):
        async with Session(store, "f", provider=provider) as session:
            await session.run("weather?", tools=[get_weather]).text()
    assert await store.load("f") == []


async def test_sync_tools_run_off_the_event_loop() -> None:
    import threading

    loop_thread = threading.get_ident()
    seen: list[int] = []

    def where() -> str:
        seen.append(threading.get_ident())
        return "here"

    provider = ScriptedProvider([calls(call("c1", "where", "")), "done"])
    async with Session(MemoryStore(), "t", provider=provider) as session:
        await session.run("where?", tools=[tool(where)]).text()
    assert seen and seen[0] != loop_thread


def test_the_decorator_builds_a_json_schema_from_annotations() -> None:
    assert get_weather.name == "get_weather"
    assert get_weather.description == "The weather in a city."
    assert get_weather.parameters == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
        "required": ["city"],
    }

    @tool(name="search-docs", description="Search.")
    def search(query: str, limit: int | None = None, tags: list[str] = []) -> list[str]:  # noqa: B006
        return []

    assert search.name == "search-docs"
    assert search.parameters["properties"] == {
        "query": {"type": "string"},
        "limit": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    }
    assert search.parameters["required"] == ["query"]


def test_bad_tools_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="tool name"):
        Tool(name="has space", fn=print)
    with pytest.raises(ValueError, match="object"):
        Tool(name="t", fn=print, parameters={"type": "string"})
    with pytest.raises(TypeError, match="callable"):
        Tool(name="t", fn="not a function")  # type: ignore[arg-type]

    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(TypeError, match="annotation"):
        tool(untyped)

    def odd(x: set[int]) -> None: ...

    with pytest.raises(TypeError, match="parameters= by hand"):
        tool(odd)


async def test_run_refuses_duplicate_names_and_non_tools() -> None:
    async with Session(MemoryStore(), "d", provider=ScriptedProvider()) as session:
        with pytest.raises(ValueError, match="share a name"):
            session.run("x", tools=[get_weather, get_weather])
        with pytest.raises(TypeError, match="Tool objects"):
            session.run("x", tools=[print])  # type: ignore[list-item]
