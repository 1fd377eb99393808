"""OpenTelemetry traces and metrics for every turn, turned on explicitly.

Call :func:`instrument` once at start-up, as one enables the OpenTelemetry
instrumentations of httpx or redis-py: every :class:`Session` and
:class:`Conversations` of the process is traced from then on, with no
argument to thread through request handlers. :func:`uninstrument` turns it
off again. Importing this module needs ``opentelemetry-api``
(``pip install 'promptkit_async[otel]'``); importing ``promptkit_async``
itself never imports OpenTelemetry, and with telemetry off each hook point in
a turn costs one attribute check.

What a turn records, following the OpenTelemetry GenAI and database semantic
conventions (the caller's current span, e.g. a web framework's server span,
is the parent)::

    turn                        INTERNAL  gen_ai.conversation.id
    ├── load                    CLIENT    db.system.name, db.operation.name
    ├── chat {model}            CLIENT    gen_ai.*: one per model call (per tool-loop step)
    ├── execute_tool {name}     INTERNAL  one per tool call of session.run()
    └── commit                  CLIENT    db.system.name, db.operation.name

(``load`` and ``commit`` are INTERNAL on a MemoryStore: no I/O leaves the process.)

Errors set the span's status to ERROR, ``error.type`` to the exception's
qualified class name (``promptkit_async.RateLimited``) and add an exception
event; a cancellation sets ``error.type`` to ``"cancelled"`` and no event, and
is re-raised as always. Message contents are recorded only with
``record_content=True``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from functools import lru_cache
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the API
    raise ImportError(
        "promptkit_async.otel needs the OpenTelemetry API: pip install 'promptkit_async[otel]'"
    ) from exc

from . import __version__, _telemetry
from ._exceptions import ProviderStreamError
from ._parts import AudioPart, FilePart, ImagePart, TextPart, ThinkingPart
from .providers._base import ReplyDone
from .providers._http import HTTPProvider
from .providers._scripted import ScriptedProvider
from .stores import MemoryStore, RedisStore, SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, Meter, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from ._messages import Message, ToolCall
    from ._session import Session
    from ._tools import Tool
    from .providers._base import StreamEvent
    from .stores._contract import Turn

__all__ = ["CANCELLED", "SCOPE", "instrument", "is_instrumented", "uninstrument"]

logger = logging.getLogger(__name__)

#: The instrumentation scope: the tracer's and meter's name.
SCOPE: Final = "promptkit_async"
#: ``error.type`` of an operation that was cancelled (or whose reply was abandoned).
CANCELLED: Final = "cancelled"

#: ``gen_ai.provider.name`` of the bundled providers, from the semantic conventions'
#: registry; OpenAI-compatible servers (vLLM, Ollama's ``/v1``) are reported as
#: ``openai``, as the convention says. The registry has no value for Ollama's own API.
_PROVIDER_NAMES: Final = {
    "openai": "openai",
    "openai-responses": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
}
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

# The bucket boundaries the semantic conventions advise for the two histograms.
_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_TOKEN_BUCKETS: Final = tuple(4.0**i for i in range(14))  # 1, 4, 16, ... 67108864


def instrument(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    record_content: bool = False,
) -> None:
    """Trace every turn, and record the GenAI client metrics, from now on.

    Calling it again replaces the previous settings. Turns already running
    finish with the settings they started with.

    Args:
        tracer_provider: where spans go (default: the global one, also when it
            is configured only later). A ``NoOpTracerProvider`` turns tracing off.
        meter_provider: where metrics go (default: the global one). A
            ``NoOpMeterProvider`` turns metrics off.
        record_content: also record what was sent and received (messages,
            system prompt, tool definitions, tool arguments and results) as the
            opt-in attributes ``gen_ai.input.messages``, ``gen_ai.output.messages``,
            ``gen_ai.system_instructions``, ``gen_ai.tool.definitions``,
            ``gen_ai.tool.call.arguments`` and ``gen_ai.tool.call.result``. Off by
            default: conversations hold personal data.
    """
    tracer: Tracer | None = None
    if tracer_provider is None:
        configured = trace.get_tracer_provider()
        # Configured already: its tracer directly. Not yet: the API's proxy,
        # which follows the SDK once one is set (recording nothing until then).
        if not isinstance(configured, trace.ProxyTracerProvider):
            tracer_provider = configured
    if not isinstance(tracer_provider, NoOpTracerProvider):
        tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
    instruments: _Instruments | None = None
    if not isinstance(meter_provider, NoOpMeterProvider):
        instruments = _Instruments(metrics.get_meter(SCOPE, __version__, meter_provider))
    _telemetry.active = _Instrumentation(tracer, instruments, record_content=bool(record_content))


def uninstrument() -> None:
    """Stop tracing: from the next turn on, telemetry costs one attribute check per hook."""
    _telemetry.active = None


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in force."""
    return isinstance(_telemetry.active, _Instrumentation)


class _Instruments:
    """The GenAI client histograms of one meter."""

    __slots__ = ("duration", "first_chunk", "tokens")

    def __init__(self, meter: Meter) -> None:
        self.duration = _histogram(
            meter, "gen_ai.client.operation.duration", "s", "GenAI operation duration.",
            _DURATION_BUCKETS,
        )  # fmt: skip
        self.tokens = _histogram(
            meter, "gen_ai.client.token.usage", "{token}",
            "Number of input and output tokens used.", _TOKEN_BUCKETS,
        )  # fmt: skip
        self.first_chunk = _histogram(
            meter, "gen_ai.client.operation.time_to_first_chunk", "s",
            "Time to receive the first chunk of a streamed reply.", _DURATION_BUCKETS,
        )  # fmt: skip


def _histogram(
    meter: Meter, name: str, unit: str, description: str, buckets: Sequence[float]
) -> Histogram:
    # The bucket advice is an API of opentelemetry-api 1.30 and later; older
    # versions use the SDK's default buckets (or the application's views).
    parameters = inspect.signature(meter.create_histogram).parameters
    if "explicit_bucket_boundaries_advisory" in parameters:
        return meter.create_histogram(
            name, unit, description, explicit_bucket_boundaries_advisory=buckets
        )
    return meter.create_histogram(name, unit, description)  # pragma: no cover - old API


# -- what goes into an attribute -------------------------------------------------


def _error_type(error: BaseException) -> str:
    """The ``error.type`` of ``error``: its qualified class name, or ``"cancelled"``."""
    if isinstance(error, asyncio.CancelledError):
        return CANCELLED
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _record_error(span: Span, error: BaseException) -> str:
    kind = _error_type(error)
    try:
        _describe_error(span, error, kind)
    except Exception:  # telemetry never replaces the error it describes
        logger.exception("promptkit_async.otel: could not record %s on a span", kind)
    return kind


def _describe_error(span: Span, error: BaseException, kind: str) -> None:
    if span.is_recording():
        span.set_attribute("error.type", kind)
        if kind == CANCELLED:
            span.set_status(Status(StatusCode.ERROR, CANCELLED))
        else:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error) or kind))
        status_code = getattr(error, "status_code", None)
        if type(status_code) is int:
            span.set_attribute("http.response.status_code", status_code)


def _begin(
    tracer: Tracer, name: str, kind: SpanKind, attributes: Mapping[str, AttributeValue]
) -> tuple[Span, Token[Context]] | None:
    """A span, started and made current (None: the tracer failed; the operation goes on)."""
    try:
        span = tracer.start_span(name, kind=kind, attributes=attributes)
        return span, otel_context.attach(trace.set_span_in_context(span))
    except Exception:  # a broken sampler or processor must not cost a turn
        logger.exception("promptkit_async.otel: could not start the %r span", name)
        return None


def _end(span: Span, token: Token[Context]) -> None:
    """Make the span's parent current again, and end it (whatever a processor does)."""
    otel_context.detach(token)
    try:
        span.end()
    except Exception:  # a processor that fails must not fail the operation
        logger.exception("promptkit_async.otel: a span processor failed")


def _store_system(store: object) -> str:
    """``db.system.name`` of a store: ``redis``, ``sqlite``, ``memory``, else its class name."""
    if isinstance(store, RedisStore):
        return "redis"
    if isinstance(store, SQLiteStore):
        return "sqlite"
    if isinstance(store, MemoryStore):
        return "memory"
    return type(store).__name__


class _ProviderInfo:
    """What a span says of the provider it calls."""

    __slots__ = ("address", "model", "name", "port")

    def __init__(self, provider: object) -> None:
        model = getattr(provider, "model", None)
        self.model: str | None = model if isinstance(model, str) and model else None
        self.address: str | None = None
        self.port: int | None = None
        if isinstance(provider, HTTPProvider):
            name = provider._provider_name
            self.name = _PROVIDER_NAMES.get(name, name)
            self.address, self.port = _server(provider.base_url)
        elif isinstance(provider, ScriptedProvider):
            self.name = "scripted"
        else:
            self.name = type(provider).__name__


@lru_cache(maxsize=64)
def _server(base_url: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(base_url)
        return parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None, None


def _usage(provider: str, usage: object) -> dict[str, int]:
    """The ``gen_ai.usage.*`` attributes of a reply's ``usage`` metadata (each provider's own)."""
    if not isinstance(usage, dict):
        return {}

    def count(source: Mapping[str, Any], *keys: str) -> int | None:
        for key in keys:
            value = source.get(key)
            if type(value) is int:
                return value
        return None

    def nested(key: str) -> Mapping[str, Any]:
        value = usage.get(key)
        return value if isinstance(value, dict) else {}

    found: dict[str, int | None] = {}
    if provider == "anthropic":
        # Anthropic's input_tokens leave out the cached ones; the convention counts them in.
        plain = count(usage, "input_tokens")
        read = count(usage, "cache_read_input_tokens")
        created = count(usage, "cache_creation_input_tokens")
        if plain is not None:
            found["gen_ai.usage.input_tokens"] = plain + (read or 0) + (created or 0)
        found["gen_ai.usage.cache_read.input_tokens"] = read
        found["gen_ai.usage.cache_creation.input_tokens"] = created
        found["gen_ai.usage.output_tokens"] = count(usage, "output_tokens")
    elif provider == "gcp.gemini":
        found["gen_ai.usage.input_tokens"] = count(usage, "promptTokenCount")
        answer = count(usage, "candidatesTokenCount")
        thoughts = count(usage, "thoughtsTokenCount")
        if answer is not None or thoughts is not None:
            found["gen_ai.usage.output_tokens"] = (answer or 0) + (thoughts or 0)
        found["gen_ai.usage.reasoning.output_tokens"] = thoughts
        found["gen_ai.usage.cache_read.input_tokens"] = count(usage, "cachedContentTokenCount")
    else:  # Chat Completions, Responses, Ollama and what mimics them
        found["gen_ai.usage.input_tokens"] = count(
            usage, "prompt_tokens", "input_tokens", "prompt_eval_count"
        )
        found["gen_ai.usage.output_tokens"] = count(
            usage, "completion_tokens", "output_tokens", "eval_count"
        )
        found["gen_ai.usage.cache_read.input_tokens"] = count(
            nested("prompt_tokens_details"), "cached_tokens"
        ) or count(nested("input_tokens_details"), "cached_tokens")
        found["gen_ai.usage.reasoning.output_tokens"] = count(
            nested("completion_tokens_details"), "reasoning_tokens"
        ) or count(nested("output_tokens_details"), "reasoning_tokens")
    return {key: value for key, value in found.items() if value is not None}


def _modality(part: object) -> str:
    if isinstance(part, ImagePart):
        return "image"
    if isinstance(part, AudioPart):
        return "audio"
    media_type = getattr(part, "media_type", None) or ""
    return "video" if media_type.startswith("video/") else "document"


def _parts_json(message: Message) -> list[dict[str, Any]]:
    """A message's content as the parts of the GenAI messages JSON schema.

    Inline media are recorded by modality, media type and size, never their
    bytes (a span is no place for a PDF); media by URL keep their URL.
    """
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.tool_call_id, "result": message.text}
        )
        return parts
    for part in message.parts:
        if type(part) is TextPart:
            parts.append({"type": "text", "content": part.text})
        elif type(part) is ThinkingPart:
            parts.append({"type": "reasoning", "content": part.text})
        elif isinstance(part, (ImagePart, FilePart, AudioPart)):
            media: dict[str, Any] = {"modality": _modality(part), "mime_type": part.media_type}
            if part.url is not None:
                parts.append({"type": "uri", "uri": part.url, **media})
            else:
                parts.append({"type": "media", "bytes": part.size, **media})
    for call in message.tool_calls:
        try:
            arguments: Any = json.loads(call.arguments)
        except ValueError:
            arguments = call.arguments
        parts.append(
            {"type": "tool_call", "id": call.id, "name": call.name, "arguments": arguments}
        )
    return parts


def _messages_json(messages: Sequence[Message]) -> str:
    out = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "parts": _parts_json(message)}
        if message.name is not None:
            item["name"] = message.name
        out.append(item)
    return json.dumps(out, ensure_ascii=False, default=str)


def _output_json(reply: Message, finish_reason: str | None) -> str:
    item = {"role": "assistant", "parts": _parts_json(reply), "finish_reason": finish_reason or ""}
    return json.dumps([item], ensure_ascii=False, default=str)


def _tools_json(tools: Sequence[Tool]) -> str:
    return json.dumps(
        [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            }
            for t in tools
        ],
        ensure_ascii=False,
        default=str,
    )


# -- the hooks ---------------------------------------------------------------------


class _Instrumentation:
    """The :class:`~promptkit_async._telemetry.Telemetry` that :func:`instrument` installs."""

    __slots__ = ("instruments", "record_content", "tracer")

    def __init__(
        self, tracer: Tracer | None, instruments: _Instruments | None, *, record_content: bool
    ) -> None:
        self.tracer = tracer
        self.instruments = instruments
        self.record_content = record_content

    def turn(self, session: Session) -> _Turn | None:
        tracer = self.tracer
        if tracer is None:
            return None
        try:
            span = tracer.start_span(
                "turn",
                kind=SpanKind.INTERNAL,
                attributes={"gen_ai.conversation.id": session.session_id},
            )
            if not span.is_recording() and not span.get_span_context().is_valid:
                # A no-op tracer (no SDK configured): nothing to record, nothing to
                # propagate, so the turn runs on the untraced path.
                return None
            return _Turn(tracer, span, session)
        except Exception:  # a broken sampler or processor must not cost a turn
            logger.exception("promptkit_async.otel: could not start the turn span")
            return None

    def provider_call(
        self,
        session: Session,
        provider: object,
        window: Sequence[Message],
        tools: Sequence[Tool],
        events: AsyncIterator[StreamEvent],
    ) -> AsyncIterator[StreamEvent]:
        try:
            return self._provider_call(session, provider, window, tools, events)
        except Exception:  # a broken sampler or processor must not cost a reply
            logger.exception("promptkit_async.otel: could not trace a provider call")
            return events

    def _provider_call(
        self,
        session: Session,
        provider: object,
        window: Sequence[Message],
        tools: Sequence[Tool],
        events: AsyncIterator[StreamEvent],
    ) -> AsyncIterator[StreamEvent]:
        info = _ProviderInfo(provider)
        common: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": info.name,
        }
        if info.model is not None:
            common["gen_ai.request.model"] = info.model
        if info.address is not None:
            common["server.address"] = info.address
            if info.port is not None:
                common["server.port"] = info.port
        span: Span | None = None
        if self.tracer is not None:
            span = self.tracer.start_span(
                "chat" if info.model is None else f"chat {info.model}",
                kind=SpanKind.CLIENT,
                attributes={
                    **common,
                    "gen_ai.conversation.id": session.session_id,
                    "gen_ai.request.stream": True,
                },
            )
            if span.is_recording():
                if self.record_content:
                    # What the provider is sent: the setting, with any rolling summary.
                    system = getattr(session, "system_prompt", session.settings.system)
                    if system:
                        span.set_attribute(
                            "gen_ai.system_instructions",
                            json.dumps([{"type": "text", "content": system}], ensure_ascii=False),
                        )
                    span.set_attribute("gen_ai.input.messages", _messages_json(window))
                    if tools:
                        span.set_attribute("gen_ai.tool.definitions", _tools_json(tools))
            elif not span.get_span_context().is_valid:
                span = None
        if span is None and self.instruments is None:
            return events
        return self._traced(span, info.name, common, events)

    async def _traced(
        self,
        span: Span | None,
        provider: str,
        common: dict[str, AttributeValue],
        events: AsyncIterator[StreamEvent],
    ) -> AsyncGenerator[StreamEvent, None]:
        """``events``, timed and traced: the span ends with the stream, however it ends."""
        started = perf_counter()
        first: float | None = None
        reply: Message | None = None
        error: BaseException | None = None
        iterator = events.__aiter__()
        try:
            # The span is current until the first event: the HTTP request (and
            # its retries) runs then, so an instrumented HTTP client's spans
            # are its children. It is never current across a yield.
            token = None if span is None else otel_context.attach(trace.set_span_in_context(span))
            try:
                event = await iterator.__anext__()
            finally:
                if token is not None:
                    otel_context.detach(token)
            first = perf_counter()
            while True:
                if type(event) is ReplyDone:
                    reply = event.message
                yield event
                event = await iterator.__anext__()
        except StopAsyncIteration:
            if reply is None:  # what the session raises next: the call failed
                error = ProviderStreamError("the provider stream ended without a complete reply")
        except GeneratorExit:
            if reply is None:
                # The reader stopped before the reply was whole (it closed the
                # stream, was cancelled, or refused a reply past its size limit):
                # for the provider, the request was cancelled.
                error = asyncio.CancelledError()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            aclose = getattr(iterator, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
            finally:
                try:
                    self._finish(span, provider, common, started, first, reply, error)
                except Exception:  # a processor or reader that fails must not fail the reply
                    logger.exception("promptkit_async.otel: could not record a provider call")

    def _finish(
        self,
        span: Span | None,
        provider: str,
        common: dict[str, AttributeValue],
        started: float,
        first: float | None,
        reply: Message | None,
        error: BaseException | None,
    ) -> None:
        elapsed = perf_counter() - started
        attributes = dict(common)
        usage: dict[str, int] = {}
        if reply is not None:
            metadata = reply.metadata
            model = metadata.get("model")
            if isinstance(model, str) and model:
                attributes["gen_ai.response.model"] = model
            usage = _usage(provider, metadata.get("usage"))
        kind = None
        if error is not None:
            kind = _error_type(error)
            attributes["error.type"] = kind
        if span is not None:
            if error is not None:
                _record_error(span, error)
            if span.is_recording():
                if first is not None:
                    span.set_attribute("gen_ai.response.time_to_first_chunk", first - started)
                if reply is not None:
                    self._describe_reply(span, attributes, reply, usage)
            span.end()
        instruments = self.instruments
        if instruments is not None:
            instruments.duration.record(elapsed, attributes)
            if kind is None:
                attributes.pop("error.type", None)
                if first is not None:
                    instruments.first_chunk.record(first - started, attributes)
                tokens = instruments.tokens
                if "gen_ai.usage.input_tokens" in usage:
                    tokens.record(
                        usage["gen_ai.usage.input_tokens"],
                        {**attributes, "gen_ai.token.type": "input"},
                    )
                if "gen_ai.usage.output_tokens" in usage:
                    tokens.record(
                        usage["gen_ai.usage.output_tokens"],
                        {**attributes, "gen_ai.token.type": "output"},
                    )

    def _describe_reply(
        self,
        span: Span,
        attributes: Mapping[str, AttributeValue],
        reply: Message,
        usage: Mapping[str, int],
    ) -> None:
        metadata = reply.metadata
        model = attributes.get("gen_ai.response.model")
        if model is not None:
            span.set_attribute("gen_ai.response.model", model)
        response_id = metadata.get("id")
        if isinstance(response_id, str) and response_id:
            span.set_attribute("gen_ai.response.id", response_id)
        finish = metadata.get("finish_reason")
        finish_reason = finish if isinstance(finish, str) and finish else None
        if finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", (finish_reason,))
        if usage:
            span.set_attributes(usage)
        if self.record_content:
            span.set_attribute("gen_ai.output.messages", _output_json(reply, finish_reason))

    async def tool(self, call: ToolCall, run: Awaitable[Message]) -> Message:
        started = None
        if self.tracer is not None:
            started = _begin(
                self.tracer,
                f"execute_tool {call.name}",
                SpanKind.INTERNAL,
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": call.name,
                    "gen_ai.tool.call.id": call.id,
                    "gen_ai.tool.type": "function",
                },
            )
        if started is None:
            return await run
        span, token = started
        try:
            result = await run
        except BaseException as exc:
            _record_error(span, exc)
            raise
        else:
            if span.is_recording():
                if result.is_error:
                    # The tool raised: the model is told, and the run goes on.
                    span.set_attribute("error.type", "tool_error")
                    span.set_status(Status(StatusCode.ERROR, "the tool failed"))
                if self.record_content:
                    span.set_attribute("gen_ai.tool.call.arguments", call.arguments)
                    span.set_attribute("gen_ai.tool.call.result", result.text)
            return result
        finally:
            _end(span, token)

    def retrying(self, provider: str, attempt: int, delay: float) -> None:
        if self.tracer is None:
            return
        # Retries happen before a reply's first event, while its chat span is current.
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "retry",
                {"promptkit_async.retry.attempt": attempt, "promptkit_async.retry.delay": delay},
            )


class _Turn:
    """The trace of one block: its span, current from entry to exit."""

    __slots__ = ("_attributes", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, span: Span, session: Session) -> None:
        self._tracer = tracer
        self._span = span
        system = _store_system(session.store)
        self._attributes: dict[str, AttributeValue] = {
            "db.system.name": system,
            "gen_ai.conversation.id": session.session_id,
        }
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def _store_span(
        self, operation: str, extra: Mapping[str, AttributeValue] | None = None
    ) -> tuple[Span, Token[Context]] | None:
        in_process = self._attributes["db.system.name"] == "memory"
        return _begin(
            self._tracer,
            operation,
            SpanKind.INTERNAL if in_process else SpanKind.CLIENT,
            {**self._attributes, "db.operation.name": operation, **(extra or {})},
        )

    async def load(self, call: Awaitable[list[Message]]) -> list[Message]:
        started = self._store_span("load")
        if started is None:
            return await call
        span, token = started
        try:
            loaded = await call
        except BaseException as exc:
            _record_error(span, exc)
            raise
        else:
            if span.is_recording():
                span.set_attribute("db.response.returned_rows", len(loaded))
            return loaded
        finally:
            _end(span, token)

    async def commit(
        self, turn: Turn, call: Awaitable[Sequence[Message] | None]
    ) -> Sequence[Message] | None:
        started = self._store_span(
            "commit",
            {
                "promptkit_async.turn.id": turn.turn_id,
                "promptkit_async.turn.messages": len(turn.messages),
            },
        )
        if started is None:
            return await call
        span, token = started
        try:
            return await call
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            _end(span, token)

    def end(self, error: BaseException | None) -> None:
        if error is not None:
            _record_error(self._span, error)
        _end(self._span, self._token)
