"""OpenTelemetry: the spans and metrics of a turn, read back from the SDK's in-memory exporters.

Providers are real clients talking to a loopback HTTP server that speaks the
OpenAI Chat Completions and Anthropic Messages SSE formats; stores are
MemoryStore and a real Redis server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from promptkit_async import (
    AnthropicProvider,
    GeminiProvider,
    MemoryStore,
    Message,
    OllamaProvider,
    OpenAIProvider,
    OpenAIResponsesProvider,
    ProviderStatusError,
    ProviderStreamError,
    RateLimited,
    RedisStore,
    ScriptedProvider,
    Session,
    SQLiteStore,
    StoreUnavailable,
    TextDelta,
    _telemetry,
    otel,
    tool,
)

from .conftest import free_port
from .providers._fakeapi import FakeAPI, Script, anthropic_sse, sse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from promptkit_async import Store, StreamEvent

MODEL = "gpt-4o-mini"
SERVED_MODEL = "gpt-4o-mini-2024-07-18"  # what the API answers with: the dated snapshot


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.finished()])
        return found[0]

    def points(self, name: str) -> tuple[str, list[HistogramDataPoint]]:
        """The unit and the data points of one histogram (``("", [])``: not recorded)."""
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points = [
                            p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)
                        ]
                        assert len(points) == len(metric.data.data_points), name
                        return metric.unit or "", points
        return "", []


def _attributes(item: ReadableSpan | HistogramDataPoint) -> dict[str, Any]:
    return dict(item.attributes or {})


def _providers() -> tuple[
    TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader
]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tracer_provider, exporter, MeterProvider(metric_readers=[reader]), reader


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    tracer_provider, exporter, meter_provider, reader = _providers()
    otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Telemetry(tracer_provider, exporter, reader)
    finally:
        otel.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture
def content() -> Iterator[Telemetry]:
    """Telemetry with message contents recorded (the opt-in)."""
    tracer_provider, exporter, meter_provider, reader = _providers()
    otel.instrument(tracer_provider, meter_provider, record_content=True)
    try:
        yield Telemetry(tracer_provider, exporter, reader)
    finally:
        otel.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    fake = FakeAPI("loopback")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
        return
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        async with RedisStore(client, prefix=prefix) as redis_store:
            yield redis_store
    finally:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
        await client.aclose()


def _system(store: Store) -> str:
    return "redis" if isinstance(store, RedisStore) else "memory"


# -- the wire formats --------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return sse(
        {
            "id": "chatcmpl-abc123",
            "object": "chat.completion.chunk",
            "created": 1730000000,
            "model": SERVED_MODEL,
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": None,
        }
    )


def _usage_chunk(prompt: int, completion: int) -> bytes:
    return sse(
        {
            "id": "chatcmpl-abc123",
            "object": "chat.completion.chunk",
            "created": 1730000000,
            "model": SERVED_MODEL,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        }
    )


def openai_reply(*pieces: str, prompt: int = 11, completion: int = 7) -> list[bytes]:
    """A Chat Completions stream as the API sends it, with the usage chunk asked for."""
    return [
        _chunk({"role": "assistant", "content": "", "refusal": None}),
        *(_chunk({"content": piece}) for piece in pieces),
        _chunk({}, "stop"),
        _usage_chunk(prompt, completion),
        sse("[DONE]"),
    ]


def openai_tool_call(call_id: str, name: str, arguments: str) -> list[bytes]:
    half = len(arguments) // 2
    head = {"index": 0, "id": call_id, "type": "function"}
    return [
        _chunk({"role": "assistant", "content": None}),
        _chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        _chunk({}, "tool_calls"),
        _usage_chunk(20, 9),
        sse("[DONE]"),
    ]


def anthropic_reply(text: str) -> list[bytes]:
    return [
        anthropic_sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-sonnet-4-5-20250929",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 25,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 100,
                        "output_tokens": 1,
                    },
                },
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 15},
            },
            {"type": "message_stop"},
        )
    ]


def openai(api: FakeAPI, **options: Any) -> OpenAIProvider:
    options.setdefault("retry_backoff", 0.01)
    return OpenAIProvider(MODEL, "sk-test", api.base_url + "/v1", **options)


def _port(api: FakeAPI) -> int:
    return int(api.base_url.rsplit(":", 1)[1])


def _children(parent: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[str]:
    return [
        s.name for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def _no_content(spans: Sequence[ReadableSpan]) -> None:
    for span in spans:
        recorded = set(span.attributes or {})
        assert not recorded & {
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.system_instructions",
            "gen_ai.tool.definitions",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        }, span.name


def _sid() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


# -- turning it on, and off ------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_TURNS = """
import asyncio
from promptkit_async import MemoryStore, ScriptedProvider, Session

async def turns():
    store = MemoryStore()
    async with Session(store, "s", provider=ScriptedProvider(["hi"])) as session:
        await session.send("hello")
    async with Session(store, "s") as session:
        assert len(session.history) == 2

asyncio.run(turns())
"""

# A finder that makes OpenTelemetry unimportable, as if it were not installed, and
# records which module asked for it (the nearest frame outside the import system).
_HIDDEN = """
import importlib.abc, sys

asked = []

class NoOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] != "opentelemetry":
            return None
        frame = sys._getframe(1)
        while frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
            frame = frame.f_back
        asked.append(frame.f_globals.get("__name__"))
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoOpenTelemetry())
"""


def test_the_library_never_imports_opentelemetry() -> None:
    # (redis-py imports it by itself when it is installed: what counts is that no
    # module of ours ever asks for it, and that the library works without it.)
    done = _run(
        _HIDDEN
        + "import promptkit_async\n"
        + _TURNS
        + textwrap.dedent(
            """
            ours = sorted({m for m in asked if m and m.split(".")[0] == "promptkit_async"})
            print(ours)
            try:
                import promptkit_async.otel
            except ImportError:
                pass
            print(sorted({m for m in asked if m and m.split(".")[0] == "promptkit_async"}))
            """
        )
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()
    assert before == "[]"  # importing the library and running turns asked for nothing
    assert after == "['promptkit_async.otel']"  # the finder does see our imports


def test_the_library_loads_no_opentelemetry_module_beyond_its_dependencies() -> None:
    done = _run(
        "import sys, redis, httpx, anyio\n"
        'dependencies = {m for m in sys.modules if m.split(".")[0] == "opentelemetry"}\n'
        "import promptkit_async\n"
        + _TURNS
        + 'print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry" '
        "and m not in dependencies))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_otel_module_without_the_api_names_the_extra_to_install() -> None:
    done = _run(
        """
        import sys
        import importlib.abc

        class NoOpenTelemetry(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoOpenTelemetry())
        import promptkit_async
        try:
            import promptkit_async.otel
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'promptkit_async[otel]'" in done.stdout


async def test_off_by_default_and_uninstrument_restores_the_untraced_path() -> None:
    assert _telemetry.active is None and not otel.is_instrumented()
    tracer_provider, exporter, meter_provider, reader = _providers()
    store = MemoryStore()
    otel.instrument(tracer_provider, meter_provider)
    assert otel.is_instrumented()
    async with Session(store, "s", provider=ScriptedProvider(["one"])) as session:
        assert session._trace is not None
        await session.send("hi")
    assert {s.name for s in exporter.get_finished_spans()} == {
        "turn",
        "load",
        "chat scripted",
        "commit",
    }
    before = len(exporter.get_finished_spans())
    otel.uninstrument()
    assert _telemetry.active is None and not otel.is_instrumented()
    provider = ScriptedProvider(["two"])
    async with Session(store, "s", provider=provider) as session:
        assert session._trace is None  # the hot path's one check, and nothing else
        await session.send("again")
    assert session.committed[-1].text == "two"
    assert len(exporter.get_finished_spans()) == before
    _, durations = Telemetry(tracer_provider, exporter, reader).points(
        "gen_ai.client.operation.duration"
    )
    assert [p.count for p in durations] == [1]  # the call made while instrumented, none after
    meter_provider.shutdown()
    tracer_provider.shutdown()


async def test_no_op_providers_leave_the_turn_on_the_untraced_path() -> None:
    otel.instrument(NoOpTracerProvider(), NoOpMeterProvider())
    try:
        assert otel.is_instrumented()
        provider = ScriptedProvider(["fine"])
        async with Session(MemoryStore(), "s", provider=provider) as session:
            assert session._trace is None
            assert (await session.send("hi")).text == "fine"
    finally:
        otel.uninstrument()


async def test_the_global_providers_are_used_when_none_is_given(telemetry: Telemetry) -> None:
    # With no SDK set globally, the default is the API's proxy, which records
    # nothing: the turn takes the untraced path (and still works).
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider was set in this process")
    otel.instrument()
    async with Session(MemoryStore(), "s") as session:
        assert session._trace is None
        session.add(Message.user("hi"))
    assert telemetry.finished() == []


# -- a streamed turn ---------------------------------------------------------------------


async def test_a_streamed_turn(telemetry: Telemetry, api: FakeAPI, store: Store) -> None:
    api.queue(Script(items=openai_reply("Hel", "lo", "!")))
    sid = _sid()
    server_tracer = telemetry.tracer_provider.get_tracer("web")
    async with openai(api) as provider:
        with server_tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as server:
            async with Session(store, sid, provider=provider, system="Be brief.") as session:
                pieces = [piece async for piece in session.stream("Hi there")]
            assert trace.get_current_span() is server  # the turn's context is gone
    assert pieces == ["Hel", "lo", "!"]

    spans = telemetry.finished()
    assert [s.name for s in spans] == ["load", f"chat {MODEL}", "commit", "turn", "POST /chat"]
    turn = telemetry.one("turn")
    assert turn.parent is not None and turn.parent.span_id == server.get_span_context().span_id
    assert _children(turn, spans) == ["load", f"chat {MODEL}", "commit"]
    assert {s.context.trace_id for s in spans} == {server.get_span_context().trace_id}
    assert turn.kind is SpanKind.INTERNAL
    assert turn.attributes == {"gen_ai.conversation.id": sid}
    assert turn.status.status_code is StatusCode.UNSET

    chat = telemetry.one(f"chat {MODEL}")
    assert chat.kind is SpanKind.CLIENT
    attributes = dict(chat.attributes or {})
    first_chunk = attributes.pop("gen_ai.response.time_to_first_chunk")
    assert isinstance(first_chunk, float) and 0 < first_chunk < 10
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.stream": True,
        "gen_ai.response.model": SERVED_MODEL,
        "gen_ai.response.id": "chatcmpl-abc123",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.conversation.id": sid,
        "server.address": "127.0.0.1",
        "server.port": _port(api),
    }
    assert chat.status.status_code is StatusCode.UNSET and not chat.events

    load, commit = telemetry.one("load"), telemetry.one("commit")
    system = _system(store)
    assert load.attributes == {
        "db.system.name": system,
        "db.operation.name": "load",
        "gen_ai.conversation.id": sid,
        "db.response.returned_rows": 0,
    }
    commit_attributes = dict(commit.attributes or {})
    assert commit_attributes.pop("promptkit_async.turn.id")
    assert commit_attributes == {
        "db.system.name": system,
        "db.operation.name": "commit",
        "gen_ai.conversation.id": sid,
        "promptkit_async.turn.messages": 2,
    }
    assert (load.kind, commit.kind) == (
        (SpanKind.CLIENT,) * 2 if system == "redis" else (SpanKind.INTERNAL,) * 2
    )
    assert turn.start_time is not None and load.start_time is not None
    assert chat.end_time is not None and commit.start_time is not None
    assert turn.start_time <= load.start_time and chat.end_time <= commit.start_time
    _no_content(spans)

    async with Session(store, sid) as session:  # the next turn's load sees the two messages
        assert [m.text for m in session.history] == ["Hi there", "Hel" + "lo!"]
    assert _attributes(telemetry.named("load")[-1])["db.response.returned_rows"] == 2


async def test_the_genai_metrics(telemetry: Telemetry, api: FakeAPI) -> None:
    api.queue(Script(items=openai_reply("ok", prompt=30, completion=4)))
    async with openai(api) as provider, Session(MemoryStore(), _sid(), provider=provider) as s:
        await s.send("hi")
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": SERVED_MODEL,
        "server.address": "127.0.0.1",
        "server.port": _port(api),
    }
    unit, durations = telemetry.points("gen_ai.client.operation.duration")
    assert unit == "s"
    assert [_attributes(p) for p in durations] == [expected]
    chat = telemetry.one(f"chat {MODEL}")
    assert chat.end_time is not None and chat.start_time is not None
    assert 0 < durations[0].sum <= (chat.end_time - chat.start_time) / 1e9
    unit, tokens = telemetry.points("gen_ai.client.token.usage")
    assert unit == "{token}"
    by_type = {_attributes(p)["gen_ai.token.type"]: p for p in tokens}
    assert set(by_type) == {"input", "output"}
    assert (by_type["input"].sum, by_type["output"].sum) == (30, 4)
    assert all(p.count == 1 for p in tokens)
    assert {k: v for k, v in _attributes(by_type["input"]).items() if k != "gen_ai.token.type"} == (
        expected
    )
    unit, first = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert unit == "s" and [p.count for p in first] == [1]
    # The bucket boundaries the conventions advise, where the API can carry the advice.
    if tuple(durations[0].explicit_bounds)[:3] != (0.0, 5.0, 10.0):  # not the SDK's defaults
        assert tuple(durations[0].explicit_bounds)[:3] == (0.01, 0.02, 0.04)
        assert tuple(tokens[0].explicit_bounds)[:3] == (1, 4, 16)


async def test_an_anthropic_turn(telemetry: Telemetry, api: FakeAPI) -> None:
    api.queue(Script(items=anthropic_reply("Bonjour")))
    provider = AnthropicProvider("claude-sonnet-4-5", "sk-ant-test", api.base_url)
    async with provider, Session(MemoryStore(), "s", provider=provider) as session:
        assert (await session.send("Salut")).text == "Bonjour"
    chat = telemetry.one("chat claude-sonnet-4-5")
    attributes = chat.attributes or {}
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attributes["gen_ai.response.id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    # Anthropic counts cached input apart; the convention counts it in.
    assert attributes["gen_ai.usage.input_tokens"] == 125
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert attributes["gen_ai.usage.output_tokens"] == 15
    assert attributes["server.port"] == _port(api)


# -- failures ------------------------------------------------------------------------------


def _assert_failed(span: ReadableSpan, error: str) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == error
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 1
    assert (events[0].attributes or {})["exception.type"] == error


async def test_a_provider_error(telemetry: Telemetry, api: FakeAPI, store: Store) -> None:
    api.queue(Script(status=500, headers={}, items=[b'{"error": {"message": "boom"}}']))
    sid = _sid()
    async with openai(api, max_retries=0) as provider:
        with pytest.raises(ProviderStatusError):
            async with Session(store, sid, provider=provider) as session:
                await session.send("hi")
    chat, turn = telemetry.one(f"chat {MODEL}"), telemetry.one("turn")
    _assert_failed(chat, "promptkit_async.ProviderStatusError")
    assert (chat.attributes or {})["http.response.status_code"] == 500
    assert "gen_ai.response.model" not in (chat.attributes or {})
    _assert_failed(turn, "promptkit_async.ProviderStatusError")
    assert [s.name for s in telemetry.finished()] == ["load", f"chat {MODEL}", "turn"]  # no commit
    unit, durations = telemetry.points("gen_ai.client.operation.duration")
    assert [_attributes(p).get("error.type") for p in durations] == [
        "promptkit_async.ProviderStatusError"
    ]
    assert telemetry.points("gen_ai.client.token.usage") == ("", [])
    async with Session(store, sid) as session:
        assert session.history == ()


async def test_a_rate_limit_retried_then_given_up(telemetry: Telemetry, api: FakeAPI) -> None:
    limited = Script(status=429, headers={"retry-after": "0"}, items=[b'{"error": {}}'])
    api.queue(limited, Script(items=openai_reply("ok")))
    async with openai(api, max_retries=1) as provider:
        async with Session(MemoryStore(), "s", provider=provider) as session:
            await session.send("hi")
        chat = telemetry.one(f"chat {MODEL}")
        assert chat.status.status_code is StatusCode.UNSET
        assert [(e.name, dict(e.attributes or {})) for e in chat.events] == [
            ("retry", {"promptkit_async.retry.attempt": 1, "promptkit_async.retry.delay": 0.0})
        ]
        telemetry.spans.clear()
        api.queue(limited, limited)
        with pytest.raises(RateLimited):
            async with Session(MemoryStore(), "s", provider=provider) as session:
                await session.send("hi")
    chat = telemetry.one(f"chat {MODEL}")
    _assert_failed(chat, "promptkit_async.RateLimited")
    assert (chat.attributes or {})["http.response.status_code"] == 429
    assert [e.name for e in chat.events] == ["retry", "exception"]
    _assert_failed(telemetry.one("turn"), "promptkit_async.RateLimited")


async def test_a_store_that_cannot_be_reached(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("web")
    async with RedisStore.from_url(f"redis://127.0.0.1:{free_port()}") as store:
        with tracer.start_as_current_span("request") as outer:
            with pytest.raises(StoreUnavailable):
                async with Session(store, "s"):
                    pass
            assert trace.get_current_span() is outer  # the failed entry left no context behind
        load, turn = telemetry.one("load"), telemetry.one("turn")
        _assert_failed(load, "promptkit_async.StoreUnavailable")
        _assert_failed(turn, "promptkit_async.StoreUnavailable")
        assert (load.attributes or {})["db.system.name"] == "redis"
        assert load.kind is SpanKind.CLIENT

        # Going on with an empty history: the load failed, the turn did not.
        telemetry.spans.clear()
        async with Session(store, "s", on_load_error="empty") as session:
            assert session.history == ()
        _assert_failed(telemetry.one("load"), "promptkit_async.StoreUnavailable")
        assert telemetry.one("turn").status.status_code is StatusCode.UNSET

        # A commit that fails: the commit span and the turn say so.
        telemetry.spans.clear()
        with pytest.raises(StoreUnavailable):
            async with Session(store, "s", lazy=True) as session:
                session.add(Message.user("lost"))
        assert [s.name for s in telemetry.finished()] == ["commit", "turn"]
        _assert_failed(telemetry.one("commit"), "promptkit_async.StoreUnavailable")
        _assert_failed(telemetry.one("turn"), "promptkit_async.StoreUnavailable")


async def test_an_error_inside_the_block(telemetry: Telemetry, store: Store) -> None:
    with pytest.raises(KeyError):
        async with Session(store, _sid()) as session:
            session.add(Message.user("discarded"))
            raise KeyError("mine")
    _assert_failed(telemetry.one("turn"), "KeyError")
    assert [s.name for s in telemetry.finished()] == ["load", "turn"]


# -- the tool loop -------------------------------------------------------------------------


@tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"rainy in {city}"


async def test_a_tool_loop_has_a_chat_span_per_step(telemetry: Telemetry, api: FakeAPI) -> None:
    api.queue(
        Script(items=openai_tool_call("call_1", "weather", '{"city": "Paris"}')),
        Script(items=openai_reply("It rains.")),
    )
    async with openai(api) as provider, Session(MemoryStore(), "s", provider=provider) as session:
        reply = session.run("Weather in Paris?", tools=[weather])
        assert await reply.text() == "It rains."
    spans = telemetry.finished()
    turn = telemetry.one("turn")
    assert _children(turn, spans) == [
        "load",
        f"chat {MODEL}",
        "execute_tool weather",
        f"chat {MODEL}",
        "commit",
    ]
    first, second = telemetry.named(f"chat {MODEL}")
    assert (first.attributes or {})["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert (first.attributes or {})["gen_ai.usage.input_tokens"] == 20
    assert (second.attributes or {})["gen_ai.response.finish_reasons"] == ("stop",)
    called = telemetry.one("execute_tool weather")
    assert called.attributes == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "weather",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.type": "function",
    }
    assert (telemetry.one("commit").attributes or {})["promptkit_async.turn.messages"] == 4
    _no_content(spans)
    unit, durations = telemetry.points("gen_ai.client.operation.duration")
    assert [p.count for p in durations] == [2]


async def test_a_tool_that_raises_is_an_error_of_its_span_only(telemetry: Telemetry) -> None:
    @tool
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("down")

    from promptkit_async import ToolCall

    provider = ScriptedProvider(
        [Message.assistant("", tool_calls=[ToolCall("c1", "broken", "{}")]), "Sorry."]
    )
    async with Session(MemoryStore(), "s", provider=provider) as session:
        assert await session.run("go", tools=[broken]).text() == "Sorry."
    called = telemetry.one("execute_tool broken")
    assert called.status.status_code is StatusCode.ERROR
    assert (called.attributes or {})["error.type"] == "tool_error"
    assert telemetry.one("turn").status.status_code is StatusCode.UNSET


# -- cancellation ----------------------------------------------------------------------------


async def test_a_cancelled_turn(telemetry: Telemetry, api: FakeAPI, store: Store) -> None:
    never = asyncio.Event()
    api.queue(Script(items=[*openai_reply("Hel")[:2], never]))
    sid = _sid()
    started = asyncio.Event()

    async def handler(provider: OpenAIProvider) -> None:
        async with Session(store, sid, provider=provider) as session:
            async for _ in session.stream("hi"):
                started.set()

    async with openai(api) as provider:
        task = asyncio.create_task(handler(provider))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # never swallowed
        await asyncio.wait_for(api.served[0].closed.wait(), 5)
    for span in (telemetry.one(f"chat {MODEL}"), telemetry.one("turn")):
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == otel.CANCELLED == "cancelled"
        assert not [e for e in span.events if e.name == "exception"]
    assert [s.name for s in telemetry.finished()] == ["load", f"chat {MODEL}", "turn"]
    unit, durations = telemetry.points("gen_ai.client.operation.duration")
    assert [_attributes(p).get("error.type") for p in durations] == ["cancelled"]
    async with Session(store, sid) as session:
        assert session.history == ()


async def test_a_reply_closed_early_is_a_cancelled_call(telemetry: Telemetry) -> None:
    provider = ScriptedProvider(["one two three"])
    async with Session(MemoryStore(), "s", provider=provider) as session:
        async with session.stream("hi") as reply:
            async for _ in reply:
                break
    assert (telemetry.one("chat scripted").attributes or {})["error.type"] == "cancelled"
    assert telemetry.one("turn").status.status_code is StatusCode.UNSET


# -- content --------------------------------------------------------------------------------


async def test_content_is_recorded_only_when_asked_for(content: Telemetry, api: FakeAPI) -> None:
    api.queue(
        Script(items=openai_tool_call("call_1", "weather", '{"city": "Paris"}')),
        Script(items=openai_reply("It rains.")),
    )
    async with openai(api) as provider:
        async with Session(MemoryStore(), "s", provider=provider, system="Be brief.") as session:
            await session.run("Weather in Paris?", tools=[weather]).text()
    first, second = content.named(f"chat {MODEL}")
    attributes = first.attributes or {}
    assert json.loads(str(attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Be brief."}
    ]
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "weather",
                    "arguments": {"city": "Paris"},
                }
            ],
            "finish_reason": "tool_calls",
        }
    ]
    definitions = json.loads(str(attributes["gen_ai.tool.definitions"]))
    assert [(d["type"], d["name"]) for d in definitions] == [("function", "weather")]
    sent = json.loads(str((second.attributes or {})["gen_ai.input.messages"]))
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[2]["parts"] == [
        {"type": "tool_call_response", "id": "call_1", "result": "rainy in Paris"}
    ]
    assert json.loads(str((second.attributes or {})["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "It rains."}],
            "finish_reason": "stop",
        }
    ]
    called = content.one("execute_tool weather").attributes or {}
    assert called["gen_ai.tool.call.arguments"] == '{"city": "Paris"}'
    assert called["gen_ai.tool.call.result"] == "rainy in Paris"
    # Never on the store spans, the turn or the metrics.
    for name in ("load", "commit", "turn"):
        assert not [
            k
            for k in content.one(name).attributes or {}
            if k.startswith("gen_ai.") and k != "gen_ai.conversation.id"
        ]


async def test_inline_media_is_recorded_without_its_bytes(content: Telemetry) -> None:
    from promptkit_async import ImagePart, TextPart

    image = ImagePart(data=b"\x89PNG" + b"\0" * 100, media_type="image/png")
    linked = ImagePart(url="https://example.com/cat.png")
    message = Message.user([TextPart("What is this?"), image, linked])
    async with Session(MemoryStore(), "s", provider=ScriptedProvider(["A cat."])) as session:
        await session.send(message)
    sent = json.loads(str((content.one("chat scripted").attributes or {})["gen_ai.input.messages"]))
    assert sent == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is this?"},
                {"type": "media", "bytes": 104, "modality": "image", "mime_type": "image/png"},
                {
                    "type": "uri",
                    "uri": "https://example.com/cat.png",
                    "modality": "image",
                    "mime_type": None,
                },
            ],
        }
    ]


# -- what the spans say of providers and stores ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name", "address", "port"),
    [
        (lambda: OpenAIProvider("m", "k"), "openai", "api.openai.com", 443),
        (
            lambda: OpenAIProvider("m", "k", "http://vllm.local:8000/v1"),
            "openai",
            "vllm.local",
            8000,
        ),
        (lambda: OpenAIResponsesProvider("m", api_key="k"), "openai", "api.openai.com", 443),
        (lambda: AnthropicProvider("m", "k"), "anthropic", "api.anthropic.com", 443),
        (
            lambda: GeminiProvider("m", api_key="k"),
            "gcp.gemini",
            "generativelanguage.googleapis.com",
            443,
        ),
        (
            lambda: OllamaProvider("m", base_url="http://localhost:11434"),
            "ollama",
            "localhost",
            11434,
        ),
        (lambda: ScriptedProvider(), "scripted", None, None),
    ],
)
async def test_the_provider_names_of_the_conventions(
    make: Any, name: str, address: str | None, port: int | None
) -> None:
    provider = make()
    try:
        info = otel._ProviderInfo(provider)
        assert (info.name, info.model, info.address, info.port) == (
            name,
            "m" if address is not None else "scripted",
            address,
            port,
        )
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("provider", "usage", "expected"),
    [
        (
            "openai",  # Chat Completions
            {
                "prompt_tokens": 50,
                "completion_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 32},
            },
            {"input_tokens": 50, "output_tokens": 9, "cache_read.input_tokens": 32},
        ),
        (
            "openai",  # Responses
            {
                "input_tokens": 40,
                "output_tokens": 12,
                "output_tokens_details": {"reasoning_tokens": 8},
            },
            {"input_tokens": 40, "output_tokens": 12, "reasoning.output_tokens": 8},
        ),
        (
            "gcp.gemini",
            {"promptTokenCount": 7, "candidatesTokenCount": 5, "thoughtsTokenCount": 20},
            {"input_tokens": 7, "output_tokens": 25, "reasoning.output_tokens": 20},
        ),
        (
            "ollama",
            {"prompt_eval_count": 26, "eval_count": 290},
            {"input_tokens": 26, "output_tokens": 290},
        ),
        ("openai", None, {}),
        ("openai", {"prompt_tokens": "many"}, {}),
    ],
)
def test_usage_is_read_from_each_providers_own_fields(
    provider: str, usage: object, expected: dict[str, int]
) -> None:
    found = otel._usage(provider, usage)
    assert found == {f"gen_ai.usage.{key}": value for key, value in expected.items()}


async def test_an_sqlite_store(telemetry: Telemetry, tmp_path: Any) -> None:
    async with SQLiteStore(str(tmp_path / "chat.db")) as store:
        async with Session(store, "s") as session:
            session.add(Message.user("hi"))
    for name in ("load", "commit"):
        span = telemetry.one(name)
        assert span.kind is SpanKind.CLIENT
        assert _attributes(span)["db.system.name"] == "sqlite"
        assert _attributes(span)["db.operation.name"] == name


async def test_an_instrumented_http_client_nests_under_the_chat_span(
    telemetry: Telemetry, api: FakeAPI
) -> None:
    # What opentelemetry-instrumentation-httpx would parent its span on: the span
    # current when the request is sent.
    current: list[trace.Span] = []

    async def on_request(request: httpx.Request) -> None:
        current.append(trace.get_current_span())

    api.queue(Script(items=openai_reply("ok")))
    async with httpx.AsyncClient(event_hooks={"request": [on_request]}) as client:
        provider = openai(api, client=client)
        async with Session(MemoryStore(), "s", provider=provider, lazy=True) as session:
            await session.send("hi")
            assert trace.get_current_span() is not current[0]  # not current across yields
    chat = telemetry.one(f"chat {MODEL}")
    assert [span.get_span_context().span_id for span in current] == [chat.context.span_id]
    turn = telemetry.one("turn")
    assert _children(turn, telemetry.finished()) == ["load", f"chat {MODEL}", "commit"]


class _Broken:
    """A provider of one's own: no model attribute, and a stream that stops short."""

    async def stream_reply(
        self, messages: Sequence[Message], *, system: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        yield TextDelta("half a rep")

    async def aclose(self) -> None:
        return None


async def test_a_provider_of_ones_own_whose_stream_stops_short(telemetry: Telemetry) -> None:
    with pytest.raises(ProviderStreamError):
        async with Session(MemoryStore(), "s", provider=_Broken()) as session:
            await session.send("hi")
    chat = telemetry.one("chat")  # no model known: the operation alone
    assert _attributes(chat)["gen_ai.provider.name"] == "_Broken"
    assert "gen_ai.request.model" not in _attributes(chat)
    _assert_failed(chat, "promptkit_async.ProviderStreamError")
    _assert_failed(telemetry.one("turn"), "promptkit_async.ProviderStreamError")


class _FailingProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("exporter down")


async def test_a_failing_span_processor_never_fails_a_turn(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry.tracer_provider.add_span_processor(_FailingProcessor())
    store = MemoryStore()
    async with Session(store, "s", provider=ScriptedProvider(["fine"])) as session:
        assert (await session.send("hi")).text == "fine"
    assert [m.text for m in await store.load("s")] == ["hi", "fine"]
    assert {s.name for s in telemetry.finished()} == {"turn", "load", "chat scripted", "commit"}
    assert "a span processor failed" in caplog.text
