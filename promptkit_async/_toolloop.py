"""``session.run()``: stream, run the tools the model asks for, send the results, repeat.

Everything one run produces (the user message, each assistant message with
its tool calls, each tool result, the final answer) is held by the run and
staged together only when the run ends, so the block's one atomic commit
writes a call with its result, never one without the other; a run that fails
or is cancelled stages nothing. Tools the model asks for at once run
concurrently; a tool that raises becomes an error result (``is_error``) the
model reads, not a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, cast

from . import _telemetry
from ._compact import compacted
from ._exceptions import MessageTooLarge, ProviderStreamError
from ._messages import Message
from ._reply import RunOutcome, RunStop, aclose_events
from ._trim import trim
from .providers._base import ReplyDone, TextDelta

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Sequence

    from ._messages import ToolCall
    from ._session import Session
    from ._tools import Tool
    from .providers._base import Provider, StreamEvent

__all__ = ["run_tools"]

logger = logging.getLogger("promptkit_async.tools")


async def run_tools(
    session: Session,
    provider: Provider,
    user: Message,
    tools: Sequence[Tool],
    max_steps: int,
) -> AsyncGenerator[str | Message | RunOutcome, None]:
    """Yield the text of every step as it arrives, the outcome, then the last assistant message."""
    settings = session.settings
    by_name = {t.name: t for t in tools}
    history = await session.load()
    made: list[Message] = [user]
    session._check_turn_size(made)  # size checks before anything is sent
    steps = 0
    stop: RunStop = "answered"
    reply: Message | None = None
    try:
        while True:
            steps += 1
            window = _window(session, history, made)
            budget = min(
                settings.max_message_bytes,
                settings.max_turn_bytes - session._check_turn_size(made),
            )
            reply = None
            received = 0
            events = cast("Any", provider).stream_reply(
                window, system=session.system_prompt, tools=tools
            )
            telemetry = _telemetry.active
            if telemetry is not None:
                events = telemetry.provider_call(session, provider, window, tools, events)
            try:
                async for event in cast("AsyncIterator[StreamEvent]", events):
                    if type(event) is TextDelta:
                        text = event.text
                        received += len(text.encode("utf-8", "replace"))
                        if received > budget:
                            raise MessageTooLarge(
                                f"a reply of the tool loop passed {budget} bytes and was abandoned",
                                size=received,
                                limit=budget,
                            )
                        yield text
                    elif type(event) is ReplyDone:
                        reply = event.message
            finally:
                await aclose_events(events)
            if reply is None:
                raise ProviderStreamError("the provider stream ended without a complete reply")
            made.append(reply)
            if not reply.tool_calls:
                break
            made.extend(await _run_calls(reply.tool_calls, by_name))
            session._check_turn_size(made)
            if steps >= max_steps:
                stop = "max_steps"
                logger.info(
                    "session %r: tool loop stopped after %d steps (max_steps)",
                    session.session_id,
                    steps,
                )
                break
    except GeneratorExit:
        raise  # the caller stopped reading: nothing is staged
    except BaseException:
        if settings.save_unanswered:
            session.add(user)
        raise
    session.add(*made)
    assert reply is not None
    yield RunOutcome(stop, steps, tuple(made))
    yield reply


def _window(session: Session, history: Sequence[Message], made: list[Message]) -> list[Message]:
    """The earlier conversation trimmed to what is left of the window, then this run whole.

    The run's own messages are never trimmed: a tool result without the call
    before it would be refused by every API.
    """
    settings = session.settings
    limit = session.window_limit
    # Compacted as a whole, so that this run counts as the newest turn.
    whole = compacted([*history, *session.pending, *made], settings)
    earlier = trim(
        whole[: len(whole) - len(made)],
        None if limit is None else max(0, limit - len(made)),
        max_tokens=session.window_budget,
        count_tokens=settings.token_counter,
    )
    return [*earlier, *made]


async def _run_calls(calls: Sequence[ToolCall], by_name: dict[str, Tool]) -> list[Message]:
    """Run every call at once; each result in the order of the calls."""
    results = await asyncio.gather(*(_run_call(call, by_name) for call in calls))
    return list(results)


async def _run_call(call: ToolCall, by_name: dict[str, Tool]) -> Message:
    telemetry = _telemetry.active
    if telemetry is not None:
        return await telemetry.tool(call, _call_tool(call, by_name))
    return await _call_tool(call, by_name)


async def _call_tool(call: ToolCall, by_name: dict[str, Tool]) -> Message:
    tool = by_name.get(call.name)
    if tool is None:
        known = ", ".join(sorted(by_name)) or "none"
        return _error(call, f"there is no tool named {call.name!r} (tools: {known})")
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as exc:
        return _error(call, f"the arguments are not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        return _error(call, "the arguments must be a JSON object")
    try:
        result = await tool.call(arguments)
    except Exception as exc:  # the model reads what went wrong; the run goes on
        logger.info("tool %r raised %s: %s", call.name, type(exc).__name__, exc)
        return _error(call, f"{type(exc).__name__}: {exc}")
    return Message.tool(_as_text(result), tool_call_id=call.id)


def _error(call: ToolCall, text: str) -> Message:
    return Message.tool(text, tool_call_id=call.id, is_error=True)


def _as_text(result: object) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # a circular structure
        return str(result)
