"""A chat page and a streaming chat API over promptkit_async (FastAPI, served by uvicorn).

Run it offline (no provider key: scripted echo replies; no REDIS_URL: in-memory store)::

    pip install -e ".[examples]"
    cd examples && uvicorn fastapi_chat:app      # then open http://localhost:8000/
    curl -N localhost:8000/sessions/alice/messages -H 'content-type: application/json' \\
         -d '{"content": "Hi, I am Alice"}'
    curl localhost:8000/sessions/alice
    curl -X DELETE localhost:8000/sessions/alice

Who is asking: the ``X-User`` header names the request's user (the owner of the
conversations it touches). A real application puts its *authenticated* user
there, in a proxy or a middleware that has checked the login; this example
trusts the header as it is, so it shows how ownership is enforced, not how to
authenticate. It is checked like a session id (400 ``invalid_user``). Without
it, the session endpoints behave as if there were no users (no owner recorded
or checked); with it, a conversation that is not the user's answers exactly as
an unknown one would, with a 404 ``not_found`` that says nothing of its owner.
A conversation recorded without an owner is claimed by the first user who posts
into it (the library's rule); until then only requests without ``X-User`` see it::

    curl -N localhost:8000/sessions/c1/messages -H 'x-user: ada' -d '{"content": "Hi"}'
    curl localhost:8000/users/ada/conversations -H 'x-user: ada'
    curl -X PATCH localhost:8000/sessions/c1 -H 'x-user: ada' -d '{"title": "Greetings"}'

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
  With ``X-User``, the first turn records the conversation as the user's, and
  another's is refused with 404 before the provider is called.
- ``GET /sessions/{session_id}``: ``{"session_id": ..., "messages": [{"role": ...,
  "content": ..., "id": ..., "created_at": ...}, ...]}``: every kept message
  (``Message.to_dict()``; an unknown session has no messages). ``?limit=50`` gives
  the newest 50 and ``?limit=50&before=<id>`` the 50 before that message (404
  ``message_not_found`` for an id the session does not keep).
  With ``X-User``, 404 ``not_found`` unless the conversation is the user's.
- ``DELETE /sessions/{session_id}``: ``{"session_id": ..., "deleted": true|false}``
  (with ``X-User``, another's conversation is 404 and stays).
- ``POST /sessions/{session_id}/regenerate`` (no body): a new answer to the last
  user message, streamed with the events above; it replaces the old reply (and
  anything after it) in one commit. 409 ``nothing_to_regenerate`` when the
  session holds no user message.
- ``GET /users/{owner}/conversations?limit=20&cursor=...`` (``X-User`` required,
  and it must be ``owner``: 401 ``no_user`` without it, 404 for anyone else's):
  ``{"items": [<info>, ...], "next_cursor": ...}``, newest activity first; pass
  ``next_cursor`` back for the next page (null: the last). An info is ``{"id",
  "owner", "title", "created_at", "updated_at", "message_count", "metadata",
  "forked_from"}`` (times ISO 8601). 400 ``invalid_limit`` / ``invalid_cursor``.
- ``PATCH /sessions/{session_id}`` (``X-User`` required) with ``{"title": "..." or
  null, "metadata": {...}}``, both optional: renames (null removes the title) and
  merges the metadata (a key set to null is removed); returns the info. 404 for
  an unknown conversation or another's.
- ``POST /sessions/{session_id}/fork`` with ``{"new_id": "...", "upto": <message
  id> or null, "title": ... or null}``: copies the conversation up to and
  including ``upto`` (null: all of it) into ``new_id``, owner and metadata
  included; 201 with the new info. 404 ``not_found`` (unknown source, or with
  ``X-User`` another's) or ``message_not_found``, 409 ``conversation_exists``.

Errors before the stream starts are JSON ``{"error": <code>, "message": <text>}``:
400 bad session id (too long, control characters), bad ``X-User``, or body that
is not JSON, 401 ``no_user`` (an endpoint that needs ``X-User``), 404 ``not_found``,
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

``GET /`` serves the chat page (``examples/static/``: plain HTML, CSS and
JavaScript, nothing fetched from elsewhere). ``/openapi.json`` describes every
endpoint with its request and response schemas and its errors; ``/docs`` renders
it, but loads its own assets from a CDN, so it needs a network.

Why bodies are parsed by hand and then validated into the Pydantic models: the
exact 400/413/422 codes and messages (an empty body, bad JSON, a body over
1 MiB refused before it is read) are this API's contract, and FastAPI's body
parsing would answer them in its own words; the models still type the handlers
and describe every body in the OpenAPI document.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

import promptkit_async
from promptkit_async import (
    BaseStore,
    CommitOutcomeUnknown,
    ConversationExists,
    ConversationNotFound,
    Conversations,
    CorruptHistory,
    InvalidCursor,
    InvalidMessage,
    InvalidSessionId,
    MessageNotFound,
    MessageTooLarge,
    OwnerMismatch,
    PromptKitError,
    ProviderError,
    RateLimited,
    SessionBusy,
    SessionSettings,
    StoreUnavailable,
    SupportsHistory,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from starlette.types import Receive, Scope, Send

    from promptkit_async import ConversationInfo, Provider, ReplyStream, Session, Store

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
_M = TypeVar("_M", bound=BaseModel)
#: The chat page's files: served at / and /static, no build step.
STATIC = Path(__file__).resolve().parent / "static"

DEFAULT_OPENAI_MODEL = promptkit_async.DEFAULT_OPENAI_MODEL
DEFAULT_ANTHROPIC_MODEL = promptkit_async.DEFAULT_ANTHROPIC_MODEL
#: Larger bodies are refused with 413 before they are read into memory.
MAX_BODY_BYTES = 1 << 20
#: The most items one page (of a history or of a listing) may ask for.
_MAX_LIMIT = 1000
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
    if isinstance(exc, (ConversationNotFound, OwnerMismatch)):
        # One code for both: whether someone else's conversation exists is theirs.
        return 404, "not_found", None
    if isinstance(exc, ConversationExists):
        return 409, "conversation_exists", None
    if isinstance(exc, InvalidCursor):
        return 400, "invalid_cursor", None
    if isinstance(exc, RateLimited):
        return 503, "provider_rate_limited", exc.retry_after or 1.0
    if isinstance(exc, ProviderError):
        return 502, "provider_error", None
    return 503, "store_error", 1.0  # StoreRejected and other StoreErrors


def _message_of(exc: PromptKitError) -> str:
    """The error's text for the client: another's conversation reads as an unknown one."""
    if isinstance(exc, OwnerMismatch):
        return str(ConversationNotFound(exc.session_id))
    return str(exc)


def _not_found(session_id: str) -> _Rejected:
    """The refusal for an id that is unknown or not the user's: the same words for both."""
    return _Rejected(404, "not_found", str(ConversationNotFound(session_id)))


async def _on_library_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PromptKitError)
    status, code, retry_after = _classify(exc)
    if status >= 500:
        logger.warning("%s %s: %s: %s", request.method, request.url.path, code, exc)
    return _error_response(status, code, _message_of(exc), retry_after)


async def _on_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Rejected)
    return _error_response(exc.status, exc.code, exc.message)


# -- request parsing ---------------------------------------------------------------


def _conversations(request: Request) -> Conversations:
    """The lifespan's Conversations, for handlers through ``Depends``."""
    chats = request.app.state.chats
    assert isinstance(chats, Conversations)
    return chats


def _conversation_store(chats: Conversations) -> BaseStore:
    """The store, for the conversation endpoints (owners, titles, listings, forks)."""
    store = chats.store
    if not isinstance(store, BaseStore):
        raise _Rejected(501, "no_conversations", f"{type(store).__name__} keeps no owners")
    return store


def _refuse_controls(value: str, code: str, what: str) -> None:
    bad = _CONTROL.search(value)
    if bad is not None:
        raise _Rejected(
            400,
            code,
            f"{what} contains the control character U+{ord(bad.group()):04X} "
            f"at position {bad.start()}",
        )


def _session_id(request: Request) -> str:
    """The path's session id; its length and encoding are checked by the library."""
    session_id: str = request.path_params["session_id"]
    _refuse_controls(session_id, "invalid_session_id", "session id")
    return session_id


def _user(request: Request) -> str | None:
    """The ``X-User`` header (trusted as is, see the module docstring), or None."""
    values = request.headers.getlist("x-user")
    if not values:
        return None
    if len(values) > 1:
        raise _Rejected(400, "invalid_user", "send one X-User header, not several")
    try:
        # Starlette decodes header bytes as Latin-1; a user name is sent as UTF-8.
        user = values[0].encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise _Rejected(400, "invalid_user", "X-User is not valid UTF-8") from None
    if not user:
        raise _Rejected(400, "invalid_user", "X-User must not be empty")
    _refuse_controls(user, "invalid_user", "X-User")
    try:
        SessionSettings(owner=user)  # the library's own rule for an owner: that of an id
    except InvalidSessionId as exc:
        raise _Rejected(400, "invalid_user", f"X-User is not a valid user name ({exc})") from None
    return user


def _required_user(request: Request) -> str:
    user = _user(request)
    if user is None:
        raise _Rejected(401, "no_user", "send the X-User header: who is asking")
    return user


def _limit(request: Request) -> int | None:
    text = request.query_params.get("limit")
    if text is None:
        return None
    if not (text.isdigit() and 0 < int(text) <= _MAX_LIMIT):
        raise _Rejected(
            400, "invalid_limit", f"limit must be a whole number from 1 to {_MAX_LIMIT}"
        )
    return int(text)


async def _read_json(request: Request, example: str, fields: set[str]) -> dict[str, Any]:
    """The body as a JSON object with no other keys than ``fields``, or a 400/413/422."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Rejected(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _Rejected(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise _Rejected(400, "invalid_json", f"the body is empty; {example}")
    try:
        body = json.loads(raw)
    # JSONDecodeError and UnicodeDecodeError; RecursionError: nested too deeply
    except (ValueError, RecursionError) as exc:
        raise _Rejected(
            400, "invalid_json", f"the body is not valid JSON ({exc}); {example}"
        ) from None
    if not isinstance(body, dict):
        raise _Rejected(422, "invalid_body", f"the body must be a JSON object; {example}")
    unknown = sorted(body.keys() - fields)
    if unknown:  # a misspelt field would otherwise be ignored without a word
        raise _Rejected(422, "invalid_body", f"unknown field {unknown[0]!r}; {example}")
    return body


def _text_field(body: dict[str, Any], key: str) -> str | None:
    """A non-blank string field that UTF-8 can carry, or None (null or absent)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Rejected(422, "invalid_body", f'"{key}" must be a non-empty string or null')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Rejected(422, "invalid_body", f'"{key}" contains a lone surrogate') from None
    return value


async def _read_content(request: Request) -> str:
    """The ``content`` of a ``{"content": "..."}`` body, or a 400/413/422 refusal."""
    example = 'send {"content": "your message"}'
    body = await _read_json(request, example, {"content"})
    if "content" not in body:
        raise _Rejected(
            422, "invalid_body", f'the body must be a JSON object with "content"; {example}'
        )
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


async def _check_owner(store: BaseStore, session_id: str, user: str) -> None:
    """Refuse another's conversation before the provider is called: the window sent
    would be theirs, and so would what the reply tells. (The commit checks again.)"""
    info = await store.info(session_id)
    if info is not None and info.owner not in (None, user):
        raise OwnerMismatch(session_id)


def _ask(content: str) -> Callable[[Session], ReplyStream]:
    return lambda session: session.stream(content)


def _answer_again(session: Session) -> ReplyStream:
    if not any(m.role == "user" and m.id is not None for m in session.history):
        raise _Rejected(
            409,
            "nothing_to_regenerate",
            f"session {session.session_id!r} holds no user message to answer again",
        )
    return session.regenerate()


async def _turn_events(
    request: Request, chats: Conversations, reply_to: Callable[[Session], ReplyStream]
) -> AsyncGenerator[bytes, None]:
    """One turn as SSE frames. The session's ``async with`` lives inside the generator.

    The handler pulls the first frame before the response starts, so failures
    up to the first piece of text (busy session, store down, provider error,
    another's conversation) still become an HTTP status. A failure after that
    ends the stream with an ``error`` event; in every failure case the block
    writes nothing. The history is loaded only once the owner was checked.
    """
    session_id, user = _session_id(request), _user(request)
    started = False
    message = None
    try:
        if user is None:
            session = chats.session(session_id, lazy=True)
        else:
            session = chats.session(session_id, lazy=True, owner=user)
        async with session:
            if user is not None:
                await _check_owner(_conversation_store(chats), session_id, user)
            await session.load()
            reply = reply_to(session)
            async for text in reply:
                started = True
                yield _sse("delta", {"text": text})
            message = reply.message
    except PromptKitError as exc:
        if not started:
            raise
        _, code, _ = _classify(exc)
        logger.warning("session %r: turn failed mid-stream (%s): %s", session_id, code, exc)
        yield _sse("error", {"error": code, "message": _message_of(exc)})
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


# -- models (what /openapi.json shows) -----------------------------------------------


class ErrorOut(BaseModel):
    """Every refusal's body: a code for programs, a sentence for people."""

    error: str = Field(examples=["session_busy"])
    message: str


class MessageIn(BaseModel):
    """The body of ``POST /sessions/{id}/messages``."""

    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1, examples=["Hi, I am Alice"])


class PatchIn(BaseModel):
    """The body of ``PATCH /sessions/{id}``: absent fields are unchanged."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, description="null removes the title")
    metadata: dict[str, Any] | None = Field(
        default=None, description="merged; a key set to null is removed"
    )


class ForkIn(BaseModel):
    """The body of ``POST /sessions/{id}/fork``."""

    model_config = ConfigDict(extra="forbid")
    new_id: str = Field(min_length=1)
    upto: str | None = Field(default=None, description="the last message id copied; null: all")
    title: str | None = None


class StoredMessage(BaseModel):
    """A kept message (``Message.to_dict()``): more keys may follow (``metadata``, ...)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: Any
    id: str | None = None
    created_at: str | None = None


class HistoryOut(BaseModel):
    session_id: str
    messages: list[StoredMessage]


class DeletedOut(BaseModel):
    session_id: str
    deleted: bool


class ConversationOut(BaseModel):
    """A conversation's info; times are ISO 8601."""

    id: str
    owner: str | None
    title: str | None
    created_at: str
    updated_at: str
    message_count: int
    metadata: dict[str, Any]
    forked_from: str | None


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None = Field(description="pass back as ?cursor= for the next page")


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "bad session id, X-User, JSON, limit or cursor",
        401: "no X-User where one is needed (no_user)",
        404: "unknown conversation or message, or another user's",
        409: "conversation_exists, nothing_to_regenerate, commit_outcome_unknown",
        413: "body or message too large",
        422: "a body of the wrong shape",
        429: "the session is busy with another turn (Retry-After)",
        502: "the provider failed",
        503: "store unreachable or provider rate limit (Retry-After)",
    }.items()
}

_SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            'Server-Sent Events: `event: delta` with `{"text"}` per piece of the reply, then '
            '`event: done` with `{"message"}` once saved, or `event: error` with '
            '`{"error", "message"}` (nothing saved, except for commit_outcome_unknown)'
        ),
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **_ERRORS,
}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The request body's schema for the docs; the handler parses it (see the docstring)."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


def _parsed(model: type[_M], body: dict[str, Any]) -> _M:
    """The checked body as its model (the hand checks already gave the exact refusals)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _Rejected(422, "invalid_body", _validation_message(exc)) from None


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "; ".join(parts) or "the request is invalid"


# -- endpoints -----------------------------------------------------------------------


def _info_out(info: ConversationInfo) -> ConversationOut:
    return ConversationOut(**info.to_dict())


def _json(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code)


async def _stream(
    request: Request, chats: Conversations, reply_to: Callable[[Session], ReplyStream]
) -> Response:
    events = _turn_events(request, chats, reply_to)
    # Errors raised here finish the generator (the session exited, nothing
    # written) and become JSON errors through the exception handlers.
    first = await events.__anext__()
    return _EventStream(first, events)


Chats = Annotated[Conversations, Depends(_conversations)]
XUser = Annotated[
    str | None,
    Header(
        alias="X-User",
        description="who is asking; a real application sets it from its authentication",
    ),
]
_LIMIT = Query(default=None, description=f"a page of at most this many (1 to {_MAX_LIMIT})")

router = APIRouter()


@router.post(
    "/sessions/{session_id}/messages",
    response_class=StreamingResponse,
    responses=_SSE_RESPONSE,
    openapi_extra=_body(MessageIn),
)
async def post_message(
    request: Request, session_id: str, chats: Chats, x_user: XUser = None
) -> Response:
    """Run one turn and stream the reply (see the module docstring for the events)."""
    _user(request)  # a bad X-User or session id is refused before the body is read
    _session_id(request)
    content = await _read_content(request)
    return await _stream(request, chats, _ask(content))


@router.post(
    "/sessions/{session_id}/regenerate",
    response_class=StreamingResponse,
    responses=_SSE_RESPONSE,
)
async def post_regenerate(
    request: Request, session_id: str, chats: Chats, x_user: XUser = None
) -> Response:
    """Answer the last user message again, streamed like a turn; the new reply replaces
    the old one in the same commit (a client that disconnects keeps the old one)."""
    return await _stream(request, chats, _answer_again)


@router.get("/sessions/{session_id}", response_model=HistoryOut, responses=_ERRORS)
async def get_session(
    request: Request,
    session_id: str,
    chats: Chats,
    x_user: XUser = None,
    limit: str | None = _LIMIT,
    before: str | None = Query(default=None, description="page back from this message id"),
) -> Response:
    """The kept history, oldest first; ``?limit=N&before=ID`` pages back from a message."""
    session_id = _session_id(request)
    user = _user(request)
    if user is not None:
        # One answer for unknown and for another's: a 404 that tells nothing.
        if await _conversation_store(chats).info(session_id, owner=user) is None:
            raise _not_found(session_id)
    before = request.query_params.get("before")
    page = _limit(request)
    if page is None and before is None:
        messages = await chats.history(session_id)
    else:
        store = chats.store
        if not isinstance(store, SupportsHistory):
            raise _Rejected(501, "no_paging", f"{type(store).__name__} cannot page a history")
        messages = await store.load(session_id, page, before=before)
    return JSONResponse({"session_id": session_id, "messages": [m.to_dict() for m in messages]})


@router.delete("/sessions/{session_id}", response_model=DeletedOut, responses=_ERRORS)
async def delete_session(
    request: Request, session_id: str, chats: Chats, x_user: XUser = None
) -> Response:
    """Erase a session. It waits for a running turn, so that turn cannot re-create it."""
    session_id = _session_id(request)
    user = _user(request)
    async with chats.session(session_id, lazy=True):
        if user is not None:
            info = await _conversation_store(chats).info(session_id)
            if info is not None and info.owner != user:
                raise OwnerMismatch(session_id)
        deleted = await chats.delete(session_id)
    return _json(DeletedOut(session_id=session_id, deleted=deleted))


@router.patch(
    "/sessions/{session_id}",
    response_model=ConversationOut,
    responses=_ERRORS,
    openapi_extra=_body(PatchIn),
)
async def patch_session(
    request: Request, session_id: str, chats: Chats, x_user: XUser = None
) -> Response:
    """Rename a conversation and merge its custom metadata: its owner only."""
    user = _required_user(request)
    session_id = _session_id(request)
    store = _conversation_store(chats)
    example = 'send {"title": "a name" or null, "metadata": {"key": "value"}}'
    body = await _read_json(request, example, {"title", "metadata"})
    changes: dict[str, Any] = {}
    if "title" in body:  # absent: unchanged; null: removed
        changes["title"] = _text_field(body, "title")
    if "metadata" in body:
        if not isinstance(body["metadata"], dict):
            raise _Rejected(422, "invalid_body", f'"metadata" must be a JSON object; {example}')
        changes["metadata"] = body["metadata"]
    _parsed(PatchIn, changes)
    try:
        found = await store.update_info(session_id, owner=user, **changes)
    except PromptKitError:
        raise
    except (TypeError, ValueError) as exc:  # what the library refuses in a title or metadata
        raise _Rejected(422, "invalid_body", str(exc)) from None
    info = await store.info(session_id, owner=user) if found else None
    if info is None:  # unknown, or erased just now
        raise _not_found(session_id)
    return _json(_info_out(info))


@router.post(
    "/sessions/{session_id}/fork",
    status_code=201,
    response_model=ConversationOut,
    responses=_ERRORS,
    openapi_extra=_body(ForkIn),
)
async def fork_session(
    request: Request, session_id: str, chats: Chats, x_user: XUser = None
) -> Response:
    """Copy a conversation, up to a message, into a new id: a branch to go on from."""
    user = _user(request)
    source_id = _session_id(request)
    store = _conversation_store(chats)
    example = 'send {"new_id": "an id", "upto": "a message id" or null, "title": "..." or null}'
    body = await _read_json(request, example, {"new_id", "upto", "title"})
    new_id = _text_field(body, "new_id")
    if new_id is None:
        raise _Rejected(422, "invalid_body", f'"new_id" is required; {example}')
    _refuse_controls(new_id, "invalid_session_id", "new_id")
    if "/" in new_id:  # no route could reach it: /sessions/{id} matches no "/"
        raise _Rejected(400, "invalid_session_id", 'new_id must not contain "/"')
    if new_id == source_id:
        raise _Rejected(422, "invalid_body", '"new_id" must differ from the source\'s id')
    fork = _parsed(
        ForkIn,
        {"new_id": new_id, "upto": _text_field(body, "upto"), "title": _text_field(body, "title")},
    )
    try:
        info = await store.fork(
            source_id, fork.new_id, upto=fork.upto, title=fork.title, owner=user
        )
    except PromptKitError:
        raise
    except (TypeError, ValueError) as exc:
        raise _Rejected(422, "invalid_body", str(exc)) from None
    return _json(_info_out(info), status_code=201)


@router.get("/users/{owner}/conversations", response_model=ConversationPage, responses=_ERRORS)
async def list_conversations(
    request: Request,
    owner: str,
    chats: Chats,
    x_user: XUser = None,
    limit: str | None = _LIMIT,
    cursor: str | None = Query(default=None, description="a page's next_cursor"),
) -> Response:
    """A page of the user's conversations, newest activity first; ``next_cursor`` goes on."""
    user = _required_user(request)
    if owner != user:
        raise _Rejected(404, "not_found", "only your own conversations can be listed")
    store = _conversation_store(chats)
    page = await store.conversations(user, limit=_limit(request) or 20, cursor=cursor)
    return _json(
        ConversationPage(items=[_info_out(i) for i in page.items], next_cursor=page.next_cursor)
    )


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The chat page (the rest of it is under /static)."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _check_store(store: Store) -> None:
    ping = getattr(store, "ping", None)
    if ping is None:
        return
    try:
        await ping()
    except StoreUnavailable as exc:
        # Keep serving (503 until it is back) rather than refuse to start.
        logger.warning("the store is unreachable at start-up: %s", exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own 422, in this API's ``{"error", "message"}`` shape."""
    assert isinstance(exc, RequestValidationError)
    return _error_response(422, "invalid_request", _validation_message(exc))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods (404, 405) in the same shape as every other error."""
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "no_route", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = _error_response(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def create_app(
    make_conversations: Callable[[], Conversations] = conversations_from_env,
) -> FastAPI:
    """The application; ``make_conversations`` runs once at start-up, closed at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with make_conversations() as chats:
            app.state.chats = chats
            await _check_store(chats.store)
            yield

    application = FastAPI(
        title="promptkit_async chat",
        version=promptkit_async.__version__,
        lifespan=lifespan,
        exception_handlers={
            PromptKitError: _on_library_error,
            _Rejected: _on_rejected,
            RequestValidationError: _on_validation_error,
            StarletteHTTPException: _on_http_error,
        },
    )
    application.include_router(router)
    application.mount("/static", StaticFiles(directory=STATIC), name="static")
    return application


app = create_app()
