"""A session through every real wire format: the tool loop (tools declared, calls run,
results sent, errors sent back, a cancelled tool), and a stream cancelled mid-reply.

The replies are the fixtures of each provider's own tests (their shapes and
sources are cited there): a reply calling ``get_weather`` for Paris and Tōkyō
at once, then a text answer.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import MemoryStore, Session, tool

from . import (
    test_anthropic_provider as anthropic_t,
)
from . import (
    test_gemini_provider as gemini_t,
)
from . import (
    test_ollama_provider as ollama_t,
)
from . import (
    test_openai_provider as openai_t,
)
from . import (
    test_responses_provider as responses_t,
)
from ._fakeapi import Script, anthropic_sse, sse

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptkit_async import Provider

    from ._fakeapi import FakeAPI


@tool
async def get_weather(city: str) -> dict[str, Any]:
    """The weather in a city."""
    return {"city": city, "temp_c": 18}


PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}

# Chat Completions: a streamed pair of tool calls (ids and names in the first fragment of
# each, arguments after; https://platform.openai.com/docs/api-reference/chat-streaming).
OPENAI_CALLS = [
    sse(
        openai_t.chunk(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_paris",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            }
        )
    ),
    sse(openai_t.chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]})),
    sse(openai_t.chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})),
    sse(
        openai_t.chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_tokyo",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Tōkyō"}'},
                    }
                ]
            }
        )
    ),
    sse(openai_t.chunk({}, "tool_calls")),
    sse("[DONE]"),
]


def _tool_use(index: int, tool_id: str, city: str) -> bytes:
    return anthropic_sse(
        {
            "type": "content_block_start",
            "index": index,
            "content_block": {
                "type": "tool_use",
                "id": tool_id,
                "name": "get_weather",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": json.dumps({"city": city})},
        },
        {"type": "content_block_stop", "index": index},
    )


# Messages API: tool_use blocks with input_json_delta
# (https://docs.anthropic.com/en/docs/build-with-claude/streaming).
ANTHROPIC_CALLS = [
    anthropic_sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_2",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-test",
                "stop_reason": None,
                "usage": {"input_tokens": 30, "output_tokens": 1},
            },
        }
    ),
    _tool_use(0, "toolu_paris", "Paris"),
    _tool_use(1, "toolu_tokyo", "Tōkyō"),
    anthropic_sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 40},
        },
        {"type": "message_stop"},
    ),
]

JSON_SSE = {"content-type": "text/event-stream"}
NDJSON = {"content-type": "application/x-ndjson"}


def _openai(api: FakeAPI) -> tuple[Provider, list[Script]]:
    return openai_t.make(api), [Script(items=OPENAI_CALLS), Script(items=openai_t.HELLO)]


def _anthropic(api: FakeAPI) -> tuple[Provider, list[Script]]:
    return anthropic_t.make(api), [Script(items=ANTHROPIC_CALLS), Script(items=anthropic_t.HELLO)]


def _responses(api: FakeAPI) -> tuple[Provider, list[Script]]:
    return responses_t.make(api), [
        Script(items=[responses_t.PARALLEL]),
        Script(items=[responses_t.TEXT]),
    ]


def _gemini(api: FakeAPI) -> tuple[Provider, list[Script]]:
    return gemini_t.make(api), [Script(items=[gemini_t.PARALLEL]), Script(items=[gemini_t.TEXT])]


def _ollama(api: FakeAPI) -> tuple[Provider, list[Script]]:
    return ollama_t.make(api), [
        Script(headers=NDJSON, items=[ollama_t.PARALLEL_WITH_IDS]),
        Script(headers=NDJSON, items=[ollama_t.TEXT]),
    ]


def _declared(kind: str, body: dict[str, Any]) -> list[Any]:
    """The tools a request declared, reduced to (name, description, schema)."""
    tools = body["tools"]
    if kind == "gemini":
        return [
            (d["name"], d["description"], d["parameters"])
            for t in tools
            for d in t["functionDeclarations"]
        ]
    if kind == "anthropic":
        return [(t["name"], t["description"], t["input_schema"]) for t in tools]
    if kind == "responses":
        assert all(t["type"] == "function" for t in tools)
        return [(t["name"], t["description"], t["parameters"]) for t in tools]
    assert all(t["type"] == "function" for t in tools)
    return [
        (t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in tools
    ]


def _results_sent(kind: str, body: dict[str, Any]) -> list[str]:
    """The tool results the second request carried, as text, in order."""
    if kind == "gemini":
        return [
            json.dumps(p["functionResponse"]["response"], ensure_ascii=False)
            for c in body["contents"]
            for p in c["parts"]
            if "functionResponse" in p
        ]
    if kind == "anthropic":
        return [
            b["content"]
            for m in body["messages"]
            if isinstance(m["content"], list)
            for b in m["content"]
            if b.get("type") == "tool_result"
        ]
    if kind == "responses":
        return [i["output"] for i in body["input"] if i.get("type") == "function_call_output"]
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


KINDS: dict[str, Callable[[FakeAPI], tuple[Provider, list[Script]]]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "responses": _responses,
    "gemini": _gemini,
    "ollama": _ollama,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_two_step_parallel_tool_loop_on_every_wire_format(
    loopback: FakeAPI, kind: str
) -> None:
    provider, scripts = KINDS[kind](loopback)
    loopback.queue(*scripts)
    store = MemoryStore()
    async with contextlib.aclosing(provider):
        async with Session(store, "w", provider=provider) as session:
            reply = session.run("Weather in Paris and Tōkyō?", tools=[get_weather])
            await reply.text()
    assert reply.outcome is not None and reply.outcome.stop == "answered"
    assert reply.outcome.steps == 2
    first, second = (served.json() for served in loopback.served)
    for body in (first, second):
        assert _declared(kind, body) == [("get_weather", "The weather in a city.", PARAMETERS)]
    kept = await store.load("w")
    assert [m.role for m in kept] == ["user", "assistant", "tool", "tool", "assistant"]
    calls = kept[1].tool_calls
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tōkyō"}]
    results = [m for m in kept if m.role == "tool"]
    assert [m.tool_call_id for m in results] == [c.id for c in calls]
    assert [json.loads(m.text) for m in results] == [
        {"city": "Paris", "temp_c": 18},
        {"city": "Tōkyō", "temp_c": 18},
    ]
    sent = [json.loads(text) for text in _results_sent(kind, second)]
    assert sent == [json.loads(m.text) for m in results]
    assert kept[-1].role == "assistant" and kept[-1].text and not kept[-1].tool_calls


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_raising_tool_is_sent_back_as_an_error_on_every_wire_format(
    loopback: FakeAPI, kind: str
) -> None:
    async def broken(city: str) -> str:
        raise RuntimeError(f"no station in {city}")

    failing = tool(broken, name="get_weather", description="The weather in a city.")
    provider, scripts = KINDS[kind](loopback)
    loopback.queue(*scripts)
    store = MemoryStore()
    async with contextlib.aclosing(provider):
        async with Session(store, "e", provider=provider) as session:
            await session.run("Weather?", tools=[failing]).text()
    second = loopback.served[1].json()
    texts = _results_sent(kind, second)
    if kind == "gemini":  # a functionResponse is an object: the text sits inside it
        assert all("no station in" in t for t in texts)
    else:
        assert texts == ["RuntimeError: no station in Paris", "RuntimeError: no station in Tōkyō"]
    if kind == "anthropic":
        flags = [
            b.get("is_error")
            for m in second["messages"]
            if isinstance(m["content"], list)
            for b in m["content"]
            if b.get("type") == "tool_result"
        ]
        assert flags == [True, True]
    assert [m.is_error for m in await store.load("e") if m.role == "tool"] == [True, True]


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_cancelling_during_a_tool_sends_nothing_more_and_writes_nothing(
    loopback: FakeAPI, kind: str
) -> None:
    import asyncio

    entered = asyncio.Event()

    async def stuck(city: str) -> str:
        entered.set()
        await asyncio.sleep(3600)
        return "never"

    provider, scripts = KINDS[kind](loopback)
    loopback.queue(*scripts)
    store = MemoryStore()

    async def turn() -> None:
        async with Session(store, "c", provider=provider) as session:
            await session.run("Weather?", tools=[tool(stuck, name="get_weather")]).text()

    async with contextlib.aclosing(provider):
        task = asyncio.create_task(turn())
        await asyncio.wait_for(entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(loopback.served) == 1  # the results were never sent
    assert await store.load("c") == []
    assert len(store.locks) == 0


def _first_piece(kind: str) -> bytes:
    """The start of a streamed text reply, after which the server goes silent."""
    if kind == "openai":
        return sse(openai_t.chunk({"content": "Hel"}))
    if kind == "anthropic":
        return anthropic_t.START + anthropic_t.text("Hel")
    if kind == "responses":
        return responses_t.stream(
            {"type": "response.created", "response": responses_t.response("in_progress", [])},
            responses_t.text_delta("Hel"),
        )
    if kind == "gemini":
        return gemini_t.sse(gemini_t.chunk([{"text": "Hel"}], gemini_t.PROMPT_ONLY))
    return ollama_t.ndjson(ollama_t.line("Hel"))


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_cancelling_mid_stream_closes_the_connection_and_writes_nothing(
    loopback: FakeAPI, kind: str
) -> None:
    import asyncio

    from ._fakeapi import HANG

    provider, _ = KINDS[kind](loopback)
    headers = NDJSON if kind == "ollama" else JSON_SSE
    loopback.queue(Script(headers=headers, items=[_first_piece(kind), HANG]))
    store = MemoryStore()
    first = asyncio.Event()

    async def turn() -> None:
        async with Session(store, "x", provider=provider) as session:
            async for _ in session.stream("hi"):
                first.set()

    async with contextlib.aclosing(provider):
        task = asyncio.create_task(turn())
        await asyncio.wait_for(first.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(loopback.served[0].closed.wait(), 5)  # the server saw it close
    assert await store.load("x") == []
    assert len(store.locks) == 0
