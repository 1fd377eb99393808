"""A streaming chat endpoint over promptkit_async (Starlette, served by uvicorn).

Run it offline (no provider key: scripted echo replies; no REDIS_URL: in-memory store)::

    pip install -e ".[examples]"
    cd examples && uvicorn fastapi_chat:app
    curl -N localhost:8000/sessions/alice/messages -H 'content-type: application/json' \\
         -d '{"content": "Hi, I am Alice"}'
    curl localhost:8000/sessions/alice
    curl -X DELETE localhost:8000/sessions/alice

Endpoints:

- ``POST /sessions/{session_id}/messages`` with ``{"content": "..."}``: one turn,
  streamed as Server-Sent Events (``text/event-stream``)::

      event: delta
      data: {"text": "Hello"}          (one per piece of reply text, as it arrives)

      event: done
      data: {"message": {"role": "assistant", "content": "Hello Alice."}}

  ``done`` is sent after the turn (user message + reply) was saved. If the turn
  fails after the stream started, the last event is ``event: error`` with
  ``{"error": <code>, "message": <text>}`` and nothing was saved, except for the
  code ``commit_outcome_unknown``: the commit's reply was lost, the turn may be
  stored (once at most), and the client should reload the history before
  sending it again. Data is JSON
  with non-ASCII escaped, so it never contains a line break of any kind.
- ``GET /sessions/{session_id}``: ``{"session_id": ..., "messages": [{"role": ...,
  "content": ..., "id": ..., "created_at": ...}, ...]}``: every kept message
  (``Message.to_dict()``; an unknown session has no messages). ``?limit=50`` gives
  the newest 50 and ``?limit=50&before=<id>`` the 50 before that message (404
  ``message_not_found`` for an id the session does not keep).
- ``DELETE /sessions/{session_id}``: ``{"session_id": ..., "deleted": true|false}``.

Errors before the stream starts are JSON ``{"error": <code>, "message": <text>}``:
400 bad session id (too long, control characters) or body that is not JSON,
422 JSON of the wrong shape, 413 body or message too large, 429 + Retry-After
when the session is busy with another turn for longer than the lock timeout,
409 ``commit_outcome_unknown`` (the turn may be stored: reload the history, do not
retry blindly), 502 provider failure, 503 + Retry-After store unreachable (nothing
stored: retry) or provider rate limit.

A client that disconnects mid-stream cancels the turn: nothing is written and
the session's lock is released at once (the lock is held only while a turn runs).

Environment (read once, at start-up, in :func:`conversations_from_env`):

- ``REDIS_URL`` (e.g. ``redis://localhost:6379/0``): use Redis; else an in-memory store.
  ``PROMPTKIT_PREFIX``: the Redis key prefix (default ``promptkit``).
- ``OPENAI_API_KEY`` and/or ``OPENAI_BASE_URL`` (any OpenAI-compatible server, e.g.
  Ollama's ``http://localhost:11434/v1``): OpenAIProvider; else ``ANTHROPIC_API_KEY``:
  AnthropicProvider; else ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``: GeminiProvider;
  else ``OLLAMA_HOST``: OllamaProvider; else the offline ScriptedProvider (a warning
  is logged). ``PROMPTKIT_MODEL`` names the model.
- ``PROMPTKIT_SYSTEM`` (system prompt), ``PROMPTKIT_MAX_MESSAGES`` (20),
  ``PROMPTKIT_LOCK_TIMEOUT`` (seconds a turn waits for a busy session, 30),
  ``PROMPTKIT_SCRIPTED_DELAY`` (seconds between scripted words, 0.05).

Why Starlette rather than FastAPI: everything this endpoint must get right (when
the response starts, how a disconnect cancels the stream, which status each
failure gets) is Starlette's in both cases, since FastAPI's ``StreamingResponse``
*is* Starlette's. Parsing the small body by hand gives exact 400/422 messages
without overriding FastAPI's validation handler (whose payload and content-type
rules change between releases), and needs no pydantic. A FastAPI application can
serve this one unchanged: ``fastapi_app.mount("/chat", create_app())``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import promptkit_async
from promptkit_async import (
    CommitOutcomeUnknown,
    Conversations,
    CorruptHistory,
    InvalidMessage,
    InvalidSessionId,
    MessageNotFound,
    MessageTooLarge,
    PromptKitError,
    ProviderError,
    RateLimited,
    SessionBusy,
    StoreUnavailable,
    SupportsHistory,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

    from promptkit_async import Provider, Store

__all__ = [
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "MAX_BODY_BYTES",
    "app",
    "conversations_from_env",
    "create_app",
    "provider_from_env",
    "settings_from_env",
    "store_from_env",
]

logger = logging.getLogger("fastapi_chat")

DEFAULT_OPENAI_MODEL = promptkit_async.DEFAULT_OPENAI_MODEL
DEFAULT_ANTHROPIC_MODEL = promptkit_async.DEFAULT_ANTHROPIC_MODEL
#: Larger bodies are refused with 413 before they are read into memory.
MAX_BODY_BYTES = 1 << 20
# C0 and C1 control characters and DEL: never meant as part of an id, they would
# be written raw into logs and terminals (log injection), so refuse them here.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


# -- configuration -----------------------------------------------------------------


def store_from_env(environ: Mapping[str, str] = os.environ) -> Store:
    """RedisStore from ``REDIS_URL`` (key prefix ``PROMPTKIT_PREFIX``), else MemoryStore."""
    return promptkit_async.store_from_env(environ)


def provider_from_env(environ: Mapping[str, str] = os.environ) -> Provider:
    """OpenAI(-compatible), then Anthropic, then the offline scripted provider (logged)."""
    delay = float(environ.get("PROMPTKIT_SCRIPTED_DELAY", "0.05"))
    return promptkit_async.provider_from_env(environ=environ, scripted_delay=delay)


def settings_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Session settings for :class:`Conversations` (system prompt, window, lock timeout)."""
    return {
        "system": environ.get("PROMPTKIT_SYSTEM", "You are a helpful assistant. Be brief."),
        "max_messages": int(environ.get("PROMPTKIT_MAX_MESSAGES", "20")),
        "lock_timeout": float(environ.get("PROMPTKIT_LOCK_TIMEOUT", "30")),
    }


def conversations_from_env(environ: Mapping[str, str] = os.environ) -> Conversations:
    """The application's store, provider and settings, all from the environment."""
    return Conversations(
        store_from_env(environ), provider=provider_from_env(environ), **settings_from_env(environ)
    )


# -- errors ------------------------------------------------------------------------


class _Rejected(Exception):
    """A request refused before any work: status, machine code, human message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error_response(
    status: int, code: str, message: str, retry_after: float | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _classify(exc: PromptKitError) -> tuple[int, str, float | None]:
    """HTTP status, error code and Retry-After seconds for a library error."""
    if isinstance(exc, InvalidSessionId):
        return 400, "invalid_session_id", None
    if isinstance(exc, MessageTooLarge):
        return 413, "message_too_large", None
    if isinstance(exc, InvalidMessage):
        return 422, "invalid_message", None
    if isinstance(exc, SessionBusy):
        # 429 rather than 409: the same request succeeds later, and clients and
        # proxies already know to honour Retry-After on 429.
        return 429, "session_busy", 1.0
    if isinstance(exc, CommitOutcomeUnknown):
        # Not a 503: the turn may be stored, so a blind retry could store it
        # twice. 409 tells the client to reload the history and decide.
        return 409, "commit_outcome_unknown", None
    if isinstance(exc, StoreUnavailable):
        return 503, "store_unavailable", 1.0
    if isinstance(exc, CorruptHistory):
        return 500, "corrupt_history", None
    if isinstance(exc, MessageNotFound):
        return 404, "message_not_found", None
    if isinstance(exc, RateLimited):
        return 503, "provider_rate_limited", exc.retry_after or 1.0
    if isinstance(exc, ProviderError):
        return 502, "provider_error", None
    return 503, "store_error", 1.0  # StoreRejected and other StoreErrors


async def _on_library_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PromptKitError)
    status, code, retry_after = _classify(exc)
    if status >= 500:
        logger.warning("%s %s: %s: %s", request.method, request.url.path, code, exc)
    return _error_response(status, code, str(exc), retry_after)


async def _on_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Rejected)
    return _error_response(exc.status, exc.code, exc.message)


# -- request parsing ---------------------------------------------------------------


def _conversations(request: Request) -> Conversations:
    chats = request.app.state.chats
    assert isinstance(chats, Conversations)
    return chats


def _session_id(request: Request) -> str:
    """The path's session id; its length and encoding are checked by the library."""
    session_id: str = request.path_params["session_id"]
    bad = _CONTROL.search(session_id)
    if bad is not None:
        raise _Rejected(
            400,
            "invalid_session_id",
            f"session id contains the control character U+{ord(bad.group()):04X} "
            f"at position {bad.start()}",
        )
    return session_id


async def _read_content(request: Request) -> str:
    """The ``content`` of a ``{"content": "..."}`` body, or a 400/413/422 refusal."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Rejected(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _Rejected(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    example = 'send {"content": "your message"}'
    if not raw.strip():
        raise _Rejected(400, "invalid_json", f"the body is empty; {example}")
    try:
        body = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _Rejected(
            400, "invalid_json", f"the body is not valid JSON ({exc}); {example}"
        ) from None
    if not isinstance(body, dict) or "content" not in body:
        raise _Rejected(422, "invalid_body", f"the body must be a JSON object; {example}")
    content = body["content"]
    if not isinstance(content, str):
        raise _Rejected(
            422, "invalid_body", f'"content" must be a string, got {type(content).__name__}'
        )
    if not content.strip():
        raise _Rejected(422, "invalid_body", '"content" must not be empty')
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise _Rejected(422, "invalid_body", '"content" contains a lone surrogate') from None
    return content


# -- the streaming turn --------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    # ensure_ascii: the data line can hold no CR, LF or U+2028 that a client
    # splitting on Unicode line boundaries would break on.
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=True)}\n\n".encode()


async def _turn_events(
    chats: Conversations, session_id: str, content: str
) -> AsyncGenerator[bytes, None]:
    """One turn as SSE frames. The session's ``async with`` lives inside the generator.

    The handler pulls the first frame before the response starts, so failures
    up to the first piece of text (busy session, store down, provider error)
    still become an HTTP status. A failure after that ends the stream with an
    ``error`` event; in every failure case the block writes nothing.
    """
    started = False
    message = None
    try:
        async with chats.session(session_id) as session:
            reply = session.stream(content)
            async for text in reply:
                started = True
                yield _sse("delta", {"text": text})
            message = reply.message
    except PromptKitError as exc:
        if not started:
            raise
        _, code, _ = _classify(exc)
        logger.warning("session %r: turn failed mid-stream (%s): %s", session_id, code, exc)
        yield _sse("error", {"error": code, "message": str(exc)})
        return
    # The block exited cleanly: the user message and the reply are saved.
    assert message is not None
    yield _sse("done", {"message": message.to_dict()})


class _EventStream(StreamingResponse):
    """A StreamingResponse that always closes its turn generator when it ends.

    Under ASGI spec < 2.4 (uvicorn today), Starlette watches for
    ``http.disconnect`` and cancels the streaming task: the cancellation lands
    in the generator if it is awaiting the provider, but if it lands in
    ``send()`` the generator is left suspended at a ``yield``, still inside
    ``async with session``, holding the lock until garbage collection. With
    spec >= 2.4 Starlette only learns of a disconnect from a failing ``send()``
    and never closes the iterator either. Closing it here, shielded, makes the
    session exit (writing nothing) and release its lock at once in every case.
    """

    media_type = "text/event-stream"

    def __init__(self, first: bytes, events: AsyncGenerator[bytes, None]) -> None:
        self._events = events
        super().__init__(
            self._frames(first), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def _frames(self, first: bytes) -> AsyncGenerator[bytes, None]:
        yield first
        async for frame in self._events:
            yield frame

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()


# -- endpoints -----------------------------------------------------------------------


async def post_message(request: Request) -> Response:
    """Run one turn and stream the reply (see the module docstring for the events)."""
    chats = _conversations(request)
    session_id = _session_id(request)
    content = await _read_content(request)
    events = _turn_events(chats, session_id, content)
    # Errors raised here finish the generator (the session exited, nothing
    # written) and become JSON errors through the exception handlers.
    first = await events.__anext__()
    return _EventStream(first, events)


async def get_session(request: Request) -> Response:
    """The kept history, oldest first; ``?limit=N&before=ID`` pages back from a message."""
    session_id = _session_id(request)
    chats = _conversations(request)
    limit_text, before = request.query_params.get("limit"), request.query_params.get("before")
    if limit_text is None and before is None:
        messages = await chats.history(session_id)
    else:
        if limit_text is not None and not (limit_text.isdigit() and 0 < int(limit_text) <= 1000):
            raise _Rejected(400, "invalid_limit", "limit must be a whole number from 1 to 1000")
        store = chats.store
        if not isinstance(store, SupportsHistory):
            raise _Rejected(501, "no_paging", f"{type(store).__name__} cannot page a history")
        limit = int(limit_text) if limit_text is not None else None
        messages = await store.load(session_id, limit, before=before)
    return JSONResponse({"session_id": session_id, "messages": [m.to_dict() for m in messages]})


async def delete_session(request: Request) -> Response:
    """Erase a session. It waits for a running turn, so that turn cannot re-create it."""
    chats = _conversations(request)
    session_id = _session_id(request)
    async with chats.session(session_id, lazy=True):
        deleted = await chats.delete(session_id)
    return JSONResponse({"session_id": session_id, "deleted": deleted})


async def _check_store(store: Store) -> None:
    ping = getattr(store, "ping", None)
    if ping is None:
        return
    try:
        await ping()
    except StoreUnavailable as exc:
        # Keep serving (503 until it is back) rather than refuse to start.
        logger.warning("the store is unreachable at start-up: %s", exc)


def create_app(
    make_conversations: Callable[[], Conversations] = conversations_from_env,
) -> Starlette:
    """The application; ``make_conversations`` runs once at start-up, closed at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with make_conversations() as chats:
            app.state.chats = chats
            await _check_store(chats.store)
            yield

    return Starlette(
        routes=[
            Route("/sessions/{session_id}/messages", post_message, methods=["POST"]),
            Route("/sessions/{session_id}", get_session, methods=["GET"]),
            Route("/sessions/{session_id}", delete_session, methods=["DELETE"]),
        ],
        lifespan=lifespan,
        exception_handlers={PromptKitError: _on_library_error, _Rejected: _on_rejected},
    )


app = create_app()
