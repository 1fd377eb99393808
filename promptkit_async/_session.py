"""Session: lock -> load -> trim -> use -> commit -> unlock.

``async with Session(store, session_id)`` is one turn of a conversation. The
per-session lock makes concurrent requests on one session run in turn, so each
sees the previous one's messages. Messages staged during the block are written
in one atomic append on a clean exit. On an exception or cancellation inside
the block nothing is written (``on_error="discard"``, the default) or the staged
messages are written anyway (``on_error="commit"``); the lock is released in
every case.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import sys
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ._config import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_TTL,
    TTL,
    OnError,
    OnLoadError,
    check_limit,
    check_session_id,
    ttl_seconds,
)
from ._exceptions import (
    InvalidMessage,
    MessageTooLarge,
    ProviderStreamError,
    SessionBusy,
    SessionStateError,
    StoreUnavailable,
)
from ._locks import LockRegistry
from ._messages import Message
from ._resources import AsyncResource
from ._trim import TokenCounter, estimate_tokens, trim
from .providers._base import Provider, ReplyDone, TextDelta

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Iterable
    from types import TracebackType

    from typing_extensions import Self

    from .stores._base import Store

__all__ = ["ReplyStream", "Session"]

logger = logging.getLogger(__name__)

#: Default limits on what one turn may write (UTF-8 bytes of text).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_MAX_TURN_BYTES = 4 << 20
#: How long a cancelled block keeps waiting for its in-flight commit.
DEFAULT_COMMIT_GRACE = 10.0


#: How long a leaving session waits for its lease to be released.
_LEASE_RELEASE_WAIT = 2.0
#: Lease releases still running after their session was cancelled.
_background: set[asyncio.Future[Any]] = set()


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def _registry_for(store: Store) -> LockRegistry:
    locks = getattr(store, "locks", None)
    if isinstance(locks, LockRegistry):
        return locks
    try:  # a user store without a registry gets one attached to it
        locks = LockRegistry()
        store.locks = locks  # type: ignore[attr-defined]
        return locks
    except AttributeError:
        raise TypeError(
            f"{type(store).__name__} has no 'locks' LockRegistry and does not accept one; "
            "add `self.locks = promptkit_async.LockRegistry()` to it"
        ) from None


def _message_bytes(message: Message) -> int:
    size = len(message.content)
    if not message.content.isascii():
        size = len(message.content.encode("utf-8", "surrogatepass"))
    for call in message.tool_calls:
        size += len(call.arguments.encode("utf-8", "surrogatepass")) + len(call.name)
    return size


class Session:
    """One turn of one conversation, as an async context manager.

    Args:
        store: where the history lives (:class:`MemoryStore`, :class:`RedisStore`,
            or any :class:`Store`).
        session_id: the conversation's id, e.g. ``"user-123-conv-7"``.
        max_messages: window size and storage cap (newest kept; None: unlimited).
        ttl: sliding expiry in seconds or a timedelta, refreshed by each write
            (default 24 h; None keeps the session forever).
        system: system prompt: sent first on every call, never trimmed, never stored.
        lock_timeout: seconds to wait for the session lock (None: wait forever).
        on_error: ``"discard"`` (default) writes nothing when the block raises or
            is cancelled; ``"commit"`` writes what was staged anyway.
        on_load_error: ``"raise"`` (default) raises StoreUnavailable when the
            history cannot be loaded; ``"empty"`` logs a warning and goes on
            with an empty history (the turn is still saved if the store is back).
        lazy: do not load on entry; load on the first ``await session.load()``,
            ``send`` or ``stream``. A block that only appends costs one round trip.
        max_tokens: optional token budget for the window (newest messages that fit).
        token_counter: counts a message's tokens (default: a ~4 chars/token estimate).
        provider: the model client used by ``send`` and ``stream``.
        save_unanswered: also save the user message when the provider fails
            (default False: a turn is saved whole or not at all).
        max_message_bytes / max_turn_bytes: size limits on what one turn writes.
        commit_grace: seconds a cancelled block waits for its commit to finish.

    Raises:
        InvalidSessionId: ``session_id`` is empty, not a str, or too long.
    """

    __slots__ = (
        "_commit_grace",
        "_entry",
        "_history",
        "_lease",
        "_locks",
        "_pending",
        "_pending_bytes",
        "_state",
        "_stream",
        "lazy",
        "lock_timeout",
        "max_message_bytes",
        "max_messages",
        "max_tokens",
        "max_turn_bytes",
        "on_error",
        "on_load_error",
        "provider",
        "save_unanswered",
        "session_id",
        "store",
        "system",
        "token_counter",
        "ttl",
    )

    def __init__(
        self,
        store: Store,
        session_id: str,
        *,
        max_messages: int | None = DEFAULT_MAX_MESSAGES,
        ttl: TTL = DEFAULT_TTL,
        system: str | None = None,
        lock_timeout: float | None = None,
        on_error: OnError = "discard",
        on_load_error: OnLoadError = "raise",
        lazy: bool = False,
        max_tokens: int | None = None,
        token_counter: TokenCounter = estimate_tokens,
        provider: Provider | None = None,
        save_unanswered: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_turn_bytes: int = DEFAULT_MAX_TURN_BYTES,
        commit_grace: float = DEFAULT_COMMIT_GRACE,
    ) -> None:
        self.store = store
        self.session_id = check_session_id(session_id)
        self.max_messages = check_limit("max_messages", max_messages)
        self.ttl = ttl_seconds(ttl)
        if system is not None and not isinstance(system, str):
            raise TypeError(f"system must be a str or None, got {type(system).__name__}")
        self.system = system
        if lock_timeout is not None and not lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be >= 0 or None, got {lock_timeout!r}")
        self.lock_timeout = lock_timeout
        if on_error not in ("discard", "commit"):
            raise ValueError(f"on_error must be 'discard' or 'commit', got {on_error!r}")
        self.on_error = on_error
        if on_load_error not in ("raise", "empty"):
            raise ValueError(f"on_load_error must be 'raise' or 'empty', got {on_load_error!r}")
        self.on_load_error = on_load_error
        self.lazy = lazy
        self.max_tokens = check_limit("max_tokens", max_tokens)
        self.token_counter = token_counter
        self.provider = provider
        self.save_unanswered = save_unanswered
        self.max_message_bytes = check_limit("max_message_bytes", max_message_bytes) or 0
        self.max_turn_bytes = check_limit("max_turn_bytes", max_turn_bytes) or 0
        if not 0 <= commit_grace < float("inf"):
            raise ValueError(f"commit_grace must be >= 0 seconds, got {commit_grace!r}")
        self._commit_grace = commit_grace
        self._locks = _registry_for(store)
        self._state = _State.NEW
        self._entry: Any = None
        self._lease: Any = None
        self._history: tuple[Message, ...] | None = None
        self._pending: list[Message] = []
        self._pending_bytes = 0
        self._stream: ReplyStream | None = None

    def __repr__(self) -> str:
        return (
            f"Session({self.session_id!r}, state={self._state.value}, "
            f"history={len(self._history) if self._history is not None else '-'}, "
            f"pending={len(self._pending)})"
        )

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise SessionStateError(
                f"session {self.session_id!r} was already entered; create a new Session per turn"
            )
        self._state = _State.OPEN
        started = perf_counter()
        try:
            self._entry = await self._locks.acquire(self.session_id, self.lock_timeout)
        except BaseException:
            self._state = _State.CLOSED
            raise
        try:
            if getattr(self.store, "distributed_lock", False):
                left = self.lock_timeout
                if left is not None:
                    left = max(0.0, left - (perf_counter() - started))
                try:
                    self._lease = await self.store.acquire_lease(  # type: ignore[attr-defined]
                        self.session_id, left
                    )
                except SessionBusy:
                    assert self.lock_timeout is not None
                    raise SessionBusy(self.session_id, self.lock_timeout) from None
            if not self.lazy:
                await self._load()
        except BaseException:
            self._state = _State.CLOSED
            await self._release_all()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is not _State.OPEN:
            return
        try:
            stream = self._stream
            if stream is not None:
                await stream.aclose()
            if exc_type is None:
                if self._pending:
                    await self._commit()
            elif self.on_error == "commit" and self._pending:
                await self._commit_after_error(exc)
        finally:
            self._state = _State.CLOSED
            await self._release_all()

    async def _release_all(self) -> None:
        """Give back the distributed lease (if any), then the in-process lock."""
        lease, self._lease = self._lease, None
        try:
            if lease is not None:
                # Its own task: a cancellation here must not leave the lease held
                # (it would block other instances until it expires). Waited for a
                # bounded time only: a Redis that stopped answering must not hold
                # the turn (the release goes on, and the lease expires anyway).
                task = asyncio.ensure_future(lease.release())
                _background.add(task)
                task.add_done_callback(_background.discard)
                await asyncio.wait({task}, timeout=_LEASE_RELEASE_WAIT)
        finally:
            entry, self._entry = self._entry, None
            if entry is not None:
                self._locks.release(self.session_id, entry)

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise SessionStateError(
                f"session {self.session_id!r} is {self._state.value}: "
                "use it inside `async with Session(...) as session:`"
            )

    # -- history -----------------------------------------------------------------

    async def _load(self) -> tuple[Message, ...]:
        try:
            loaded = await self.store.load(self.session_id, self.max_messages)
        except StoreUnavailable as exc:
            if self.on_load_error != "empty":
                raise
            logger.warning(
                "session %r: history unavailable, continuing with an empty one: %s",
                self.session_id,
                exc,
            )
            loaded = []
        if self.max_tokens is not None or (loaded and loaded[0].role == "tool"):
            loaded = trim(
                loaded,
                self.max_messages,
                max_tokens=self.max_tokens,
                count_tokens=self.token_counter,
            )
        self._history = tuple(loaded)
        return self._history

    async def load(self) -> tuple[Message, ...]:
        """The trimmed history, loading it now if the session is lazy."""
        self._check_open()
        if self._history is None:
            return await self._load()
        return self._history

    @property
    def loaded(self) -> bool:
        return self._history is not None

    @property
    def history(self) -> tuple[Message, ...]:
        """The loaded, trimmed history (read-only, without the system prompt).

        Raises:
            SessionStateError: outside the block, or lazy and not loaded yet
                (``await session.load()`` first).
        """
        if self._history is None:
            if self._state is _State.OPEN:
                raise SessionStateError(
                    f"session {self.session_id!r} is lazy and not loaded yet: "
                    "await session.load() first"
                )
            self._check_open()
        assert self._history is not None
        return self._history

    @property
    def pending(self) -> tuple[Message, ...]:
        """Messages staged in this block, written on a clean exit."""
        return tuple(self._pending)

    @property
    def messages(self) -> list[Message]:
        """What a provider is sent: system prompt, trimmed history, then staged messages."""
        window = trim(
            [*self.history, *self._pending],
            self.max_messages,
            max_tokens=self.max_tokens,
            count_tokens=self.token_counter,
        )
        if self.system is not None:
            window.insert(0, Message("system", self.system))
        return window

    def add(self, *messages: Message) -> None:
        """Stage messages for the atomic write on exit.

        Raises:
            InvalidMessage: not a Message.
            MessageTooLarge: a message or the turn exceeds its size limit.
            SessionStateError: outside the block.
        """
        self._check_open()
        self._pending_bytes = self._turn_size_with(messages)
        self._pending.extend(messages)

    def _turn_size_with(self, messages: Iterable[Message]) -> int:
        size = self._pending_bytes
        for m in messages:
            if not isinstance(m, Message):
                raise InvalidMessage(
                    f"session.add() takes Message objects, got {type(m).__name__}; "
                    "use Message.user(...) etc."
                )
            n = _message_bytes(m)
            if n > self.max_message_bytes:
                raise MessageTooLarge(
                    f"a {m.role} message of {n} bytes exceeds max_message_bytes="
                    f"{self.max_message_bytes}",
                    size=n,
                    limit=self.max_message_bytes,
                )
            size += n
        if size > self.max_turn_bytes:
            raise MessageTooLarge(
                f"this turn would write {size} bytes, over max_turn_bytes={self.max_turn_bytes}",
                size=size,
                limit=self.max_turn_bytes,
            )
        return size

    # -- commit ------------------------------------------------------------------

    async def _commit(self) -> None:
        batch = self._pending
        if getattr(self.store, "in_process", False):
            # Never suspends, so it cannot be interrupted half-way, nor re-sent:
            # no turn id needed.
            await self.store.append(
                self.session_id, batch, max_messages=self.max_messages, ttl=self.ttl
            )
        else:
            await self._commit_protected(batch, secrets.token_hex(12))
        self._pending = []
        self._pending_bytes = 0

    async def _commit_protected(self, batch: list[Message], turn_id: str) -> None:
        """Commit so that a cancellation cannot leave the outcome undecided.

        A cancelled caller waits (up to ``commit_grace``) until the commit is
        finished or settled, then re-raises the cancellation. Holding the lock
        until then keeps the next turn from loading a history that is still
        being written. Stores that can settle a turn by id (RedisStore) are
        awaited directly, and a cancellation mid-commit is settled afterwards
        (applied, or aborted for good); other stores run the commit as a task
        of its own that the cancelled caller waits for.
        """
        store = self.store
        extra: dict[str, Any] = {}
        if self._lease is not None:
            extra["fence"] = self._lease.token  # refused if the lease was lost
        commit = store.append(
            self.session_id,
            batch,
            max_messages=self.max_messages,
            ttl=self.ttl,
            turn_id=turn_id,
            **extra,
        )
        settle = getattr(store, "settle_turn", None)
        if settle is not None:
            try:
                await commit
            except asyncio.CancelledError:
                task = asyncio.ensure_future(settle(self.session_id, turn_id))
                await _wait_bounded(task, self._commit_grace)
                self._log_commit_after_cancel(task, turn_id)
                raise
            return
        task = asyncio.ensure_future(commit)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await _wait_bounded(task, self._commit_grace)
            self._log_commit_after_cancel(task, turn_id)
            raise

    def _log_commit_after_cancel(self, task: asyncio.Future[Any], turn_id: str) -> None:
        if not task.done():
            task.cancel()
            logger.warning(
                "session %r: commit of turn %s not settled within %.1fs of a cancellation, "
                "outcome unknown: it is stored once or not at all",
                self.session_id,
                turn_id,
                self._commit_grace,
            )
        elif task.cancelled() or task.exception() is not None:
            logger.warning(
                "session %r: commit of turn %s after a cancellation: %s",
                self.session_id,
                turn_id,
                "cancelled" if task.cancelled() else task.exception(),
            )
        else:
            logger.info(
                "session %r: turn %s %s despite a cancellation",
                self.session_id,
                turn_id,
                task.result() if task.result() is not None else "committed",
            )

    async def _commit_after_error(self, exc: BaseException | None) -> None:
        try:
            await self._commit()
        except Exception as commit_exc:
            logger.warning(
                "session %r: commit after error failed, %d messages unsaved: %s",
                self.session_id,
                len(self._pending),
                commit_exc,
            )
            if exc is not None and sys.version_info >= (3, 11):
                exc.add_note(f"promptkit_async: the staged messages were not saved: {commit_exc}")

    # -- provider ----------------------------------------------------------------

    def stream(self, content: str | Message, *, provider: Provider | None = None) -> ReplyStream:
        """Send the window plus a new user message; iterate the reply text as it arrives.

        The user message and the assembled reply are staged together when the
        stream completes, and written on the block's clean exit. Use it as
        ``async for text in session.stream("hi")`` or, to close it early
        deterministically, ``async with session.stream("hi") as reply``.

        Raises:
            SessionStateError: outside the block, no provider, or a stream
                already running.
            ProviderError: the call failed (nothing is staged).
        """
        self._check_open()
        provider = provider or self.provider
        if provider is None:
            raise SessionStateError(
                f"session {self.session_id!r} has no provider: pass provider=... to Session"
            )
        if self._stream is not None and not self._stream.finished:
            raise SessionStateError(
                "a reply is already streaming in this session: read it to the end, or close "
                "it first (await reply.aclose(), or use `async with session.stream(...)`)"
            )
        user = content if isinstance(content, Message) else Message.user(content)
        if user.role not in ("user", "tool"):
            raise InvalidMessage(f"stream() sends a user or tool message, not {user.role}")
        self._stream = ReplyStream(self._run(provider, user))
        return self._stream

    async def send(self, content: str | Message, *, provider: Provider | None = None) -> Message:
        """Like :meth:`stream`, but wait for the whole reply and return it."""
        async with self.stream(content, provider=provider) as reply:
            async for _ in reply:
                pass
        assert reply.message is not None
        return reply.message

    async def _run(self, provider: Provider, user: Message) -> AsyncGenerator[str | Message, None]:
        if self._history is None:
            await self._load()
        self._turn_size_with((user,))  # size checks before anything is sent
        window = trim(
            [*self.history, *self._pending, user],
            self.max_messages,
            max_tokens=self.max_tokens,
            count_tokens=self.token_counter,
        )
        if not window or window[-1] is not user:  # a token budget smaller than the question
            window = _minimal_window([*self.history, *self._pending], user)
        reply: Message | None = None
        events = provider.stream_reply(window, system=self.system)
        try:
            async for event in events:
                if type(event) is TextDelta:
                    yield event.text
                elif type(event) is ReplyDone:
                    reply = event.message
        except GeneratorExit:
            raise  # the caller stopped reading: not a failure, nothing is staged
        except BaseException:
            if self.save_unanswered:
                self.add(user)
            raise
        finally:
            await _aclose(events)
        if reply is None:
            if self.save_unanswered:
                self.add(user)
            raise ProviderStreamError("the provider stream ended without a complete reply")
        self.add(user, reply)
        yield reply


def _minimal_window(before: list[Message], user: Message) -> list[Message]:
    """The least an API accepts: the new message, with its tool call if it is a result."""
    if user.role != "tool":
        return [user]
    for i in range(len(before) - 1, -1, -1):
        if before[i].role == "assistant" and before[i].tool_calls:
            return [*before[i:], user]  # the call and every result given so far
    return [user]


async def _aclose(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def _wait_bounded(task: asyncio.Future[Any], grace: float) -> None:
    """Wait for ``task`` up to ``grace`` seconds, whatever further cancellations arrive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            continue


class ReplyStream(AsyncResource):
    """The reply of one ``session.stream()`` call: an async iterator of text pieces.

    After it is exhausted, :attr:`message` holds the assembled assistant message.
    """

    __slots__ = ("_gen", "finished", "message")

    def __init__(self, gen: AsyncGenerator[str | Message, None]) -> None:
        self._gen = gen
        self.message: Message | None = None
        self.finished = False

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> str:
        if self.finished:
            raise StopAsyncIteration
        try:
            item = await self._gen.__anext__()
        except BaseException:
            self.finished = True
            raise
        if isinstance(item, Message):
            self.message = item
            self.finished = True
            await self._gen.aclose()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop the reply early and close the HTTP response; nothing is staged."""
        self.finished = True
        await self._gen.aclose()

    async def text(self) -> str:
        """Consume the rest of the stream and return the whole reply text."""
        parts = [piece async for piece in self]
        return "".join(parts)
