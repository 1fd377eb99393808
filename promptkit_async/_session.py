"""Session: lock -> load -> trim -> use -> commit -> unlock.

``async with Session(store, session_id)`` is one turn of a conversation. The
per-session lock makes concurrent requests on one session run in turn, so each
sees the previous one's messages. Messages staged during the block are written
in one atomic commit on a clean exit. On an exception or cancellation inside
the block nothing is written (``on_error="discard"``, the default) or the staged
messages are written anyway (``on_error="commit"``); the lock is released in
every case. What the session may use of its store is decided once per store
(``_plan.py``); the call to a provider lives in ``_reply.py``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from time import perf_counter
from typing import TYPE_CHECKING, Final, cast

from . import _telemetry
from ._compact import compacted
from ._config import check_session_id
from ._exceptions import (
    CommitNotReplicated,
    InvalidMessage,
    MessageNotFound,
    SessionStateError,
    StoreUnavailable,
)
from ._ids import new_turn_id
from ._messages import Message
from ._plan import plan_for, release, settle_after_cancel
from ._reply import ReplyStream, run_reply
from ._settings import DEFAULT_SETTINGS, SessionSettings
from ._summaries import fold_plan, work_for
from ._summary import with_summary
from ._toolloop import run_tools
from ._tools import Tool
from ._trim import trim
from .stores._contract import Turn, trusted_turn

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType

    from typing_extensions import Self, Unpack

    from ._settings import SessionOptions
    from ._summary import Summary
    from ._telemetry import TurnTrace
    from .providers._base import Provider
    from .stores._contract import Lease, Store, SupportsSummaries

__all__ = ["Session"]

logger = logging.getLogger(__name__)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


# The states as module globals: reading an enum member off its class costs
# more than the rest of the check, and a turn checks its state several times.
_NEW: Final = _State.NEW
_OPEN: Final = _State.OPEN
_CLOSED: Final = _State.CLOSED


class Session:
    """One turn of one conversation, as an async context manager.

    Args:
        store: where the history lives (:class:`MemoryStore`, :class:`RedisStore`,
            or any :class:`Store`).
        session_id: the conversation's id, e.g. ``"user-123-conv-7"``.
        provider: the model client used by ``send`` and ``stream``.
        settings: a :class:`SessionSettings` (default: all defaults).
        **options: any :class:`SessionSettings` field, applied over ``settings``
            (``max_messages=10``, ``system="..."``, ``lock_timeout=5``, ...).

    Raises:
        InvalidSessionId: ``session_id`` is empty, not a str, or too long.
        TypeError, ValueError: an unknown option, or a bad value.
    """

    __slots__ = (
        "_after",
        "_committed",
        "_entry",
        "_history",
        "_lease",
        "_pending",
        "_pending_bytes",
        "_plan",
        "_state",
        "_stream",
        "_summary",
        "_trace",
        "provider",
        "session_id",
        "settings",
        "store",
    )

    def __init__(
        self,
        store: Store,
        session_id: str,
        *,
        provider: Provider | None = None,
        settings: SessionSettings | None = None,
        **options: Unpack[SessionOptions],
    ) -> None:
        self.store = store
        self.session_id = check_session_id(session_id)
        if settings is None:
            base = DEFAULT_SETTINGS  # no isinstance check needed: the common case
        elif isinstance(settings, SessionSettings):
            base = settings
        else:
            raise TypeError(f"settings must be a SessionSettings, got {type(settings).__name__}")
        self.settings = base.with_options(options) if options else base
        self.provider = provider
        self._plan = plan_for(store)
        self._state = _NEW
        self._entry: object | None = None
        self._lease: Lease | None = None
        self._history: tuple[Message, ...] | None = None
        self._pending: list[Message] = []
        self._pending_bytes = 0
        self._committed: tuple[Message, ...] = ()
        self._after: str | None = None  # a rewind: the message the commit truncates after
        self._stream: ReplyStream | None = None
        self._trace: TurnTrace | None = None  # None: telemetry off
        self._summary: Summary | None = None
        if self.settings.summarizer is not None and not self._plan.summaries:
            raise TypeError(
                f"{type(store).__name__} keeps no summaries (it lacks load_summarized, "
                "write_summary and summary: see promptkit_async.SupportsSummaries); "
                "use it without a summarizer"
            )

    def __repr__(self) -> str:
        return (
            f"Session({self.session_id!r}, state={self._state.value}, "
            f"history={len(self._history) if self._history is not None else '-'}, "
            f"pending={len(self._pending)})"
        )

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _NEW:
            raise SessionStateError(
                f"session {self.session_id!r} was already entered; create a new Session per turn"
            )
        self._state = _OPEN
        telemetry = _telemetry.active
        if telemetry is not None:
            self._trace = telemetry.turn(self)
        plan = self._plan
        settings = self.settings
        timeout = settings.lock_timeout
        started = perf_counter() if plan.leases else 0.0
        locks = plan.locks
        entry = locks.try_acquire(self.session_id)  # free, as it nearly always is: no await
        if entry is None:
            try:
                entry = await locks.acquire(self.session_id, timeout)
            except BaseException as exc:
                self._state = _CLOSED
                self._end_trace(exc)
                raise
        self._entry = entry
        try:
            if plan.leases:
                self._lease = await plan.take_lease(self.store, self.session_id, timeout, started)
            if settings.lazy:
                pass
            elif self._trace is None and settings.summarizer is None:
                # _load's common case, inlined: one coroutine less on a turn's hot path.
                try:
                    loaded = await self.store.load(self.session_id, settings.max_messages)
                except StoreUnavailable as exc:
                    if settings.on_load_error != "empty":
                        raise
                    loaded = self._empty_history(exc)
                if settings.max_tokens is None and not (loaded and loaded[0].role == "tool"):
                    self._history = tuple(loaded)  # _keep's common case: nothing to trim
                else:
                    self._keep(loaded)
            else:
                await self._load()
        except BaseException as exc:
            self._state = _CLOSED
            await self._release_traced(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is not _OPEN:
            return
        error = exc
        try:
            stream = self._stream
            if stream is not None:
                await stream.aclose()
            if exc_type is None:
                if not self._pending and self._after is None:
                    pass  # nothing to write
                elif self._trace is None and self._plan.turns:
                    # _commit with StorePlan.commit's first branch, inlined: the
                    # common case, one coroutine less on a turn's hot path (and
                    # _turn and _written inlined too: calls less).
                    settings = self.settings
                    lease = self._lease
                    turn: Turn = tuple.__new__(  # trusted_turn(...), inlined
                        Turn,
                        (
                            self.session_id,
                            tuple(self._pending),
                            new_turn_id(),
                            settings.ttl,  # seconds: normalised by SessionSettings
                            None,
                            None if lease is None else lease.token,
                            settings.owner,
                            self._after,
                            None,
                        ),
                    )
                    try:
                        # Not cast(): a call, and plan.turns checked the protocol.
                        stored = await self.store.commit(turn)  # type: ignore[attr-defined]
                    except asyncio.CancelledError:
                        await settle_after_cancel(self.store, turn, settings.commit_grace)
                        raise
                    except CommitNotReplicated as partly:
                        self._written(partly.messages or turn.messages)
                        raise
                    self._committed = tuple(turn.messages if stored is None else stored)
                    self._after = None
                    self._pending = []
                    self._pending_bytes = 0
                    if settings.summarizer is not None:
                        self._summarize_later()
                else:
                    await self._commit()
            elif self.settings.on_error == "commit" and self._pending:
                await self._commit_after_error(exc)
        except BaseException as failure:
            error = failure
            raise
        finally:
            self._state = _CLOSED
            if self._trace is not None:
                await self._release_traced(error)
            elif self._lease is None:
                # No lease: the lock is given back here, with nothing to await.
                entry, self._entry = self._entry, None
                if entry is not None:
                    self._plan.locks.release(self.session_id, entry)
            else:
                await self._release()

    async def _release(self) -> None:
        entry, self._entry = self._entry, None
        lease, self._lease = self._lease, None
        if entry is not None:
            await release(self._plan.locks, self.session_id, entry, lease)

    async def _release_traced(self, error: BaseException | None) -> None:
        """Release, then end the turn's trace (if any) whatever the release did."""
        try:
            await self._release()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._end_trace(error)

    def _end_trace(self, error: BaseException | None) -> None:
        trace, self._trace = self._trace, None
        if trace is not None:
            trace.end(error)

    def _check_open(self) -> None:
        if self._state is not _OPEN:
            raise SessionStateError(
                f"session {self.session_id!r} is {self._state.value}: "
                "use it inside `async with Session(...) as session:`"
            )

    # -- history -----------------------------------------------------------------

    async def _load(self) -> tuple[Message, ...]:
        settings = self.settings
        try:
            if settings.summarizer is not None:
                loaded = await (
                    self._load_summarized()
                    if self._trace is None
                    else self._trace.load(self._load_summarized())
                )
            elif self._trace is None:
                loaded = await self.store.load(self.session_id, settings.max_messages)
            else:
                loaded = await self._trace.load(
                    self.store.load(self.session_id, settings.max_messages)
                )
        except StoreUnavailable as exc:
            if settings.on_load_error != "empty":
                raise
            loaded = self._empty_history(exc)
        return self._keep(loaded)

    def _empty_history(self, exc: StoreUnavailable) -> list[Message]:
        """``on_load_error="empty"``: the history the block goes on with, logged."""
        logger.warning(
            "session %r: history unavailable, continuing with an empty one: %s",
            self.session_id,
            exc,
        )
        return []

    def _keep(self, loaded: list[Message]) -> tuple[Message, ...]:
        """The loaded messages as the block's history, trimmed when the window needs it."""
        settings = self.settings
        if settings.max_tokens is not None or (loaded and loaded[0].role == "tool"):
            # Counted as sent (compacted), kept as stored: the same suffix.
            kept = len(
                trim(
                    compacted(loaded, settings),
                    self.window_limit,
                    max_tokens=self.window_budget,
                    count_tokens=settings.token_counter,
                )
            )
            loaded = loaded[len(loaded) - kept :]
        self._history = tuple(loaded)
        return self._history

    async def _load_summarized(self) -> list[Message]:
        """The summary and the messages after it, in the load's one round trip."""
        store = cast("SupportsSummaries", self.store)
        limit = self.settings.max_messages
        assert limit is not None  # a summarizer needs it (checked by the settings)
        loaded, self._summary = await store.load_summarized(self.session_id, 3 * limit)
        return loaded

    @property
    def summary(self) -> Summary | None:
        """The conversation's rolling summary as loaded (None: none yet, or no summarizer).

        What the window leaves out: it covers every message up to
        ``summary.upto``, and the window starts right after it.
        """
        return self._summary

    @property
    def system_prompt(self) -> str | None:
        """The system text a provider is sent: the ``system`` setting, then the summary."""
        return with_summary(self.settings.system, self._summary)

    @property
    def window_limit(self) -> int | None:
        """How many messages the window may hold: ``max_messages``, or with a summarizer
        every message after the summary (the summary covers the rest)."""
        settings = self.settings
        return None if settings.summarizer is not None else settings.max_messages

    @property
    def window_budget(self) -> int | None:
        """``max_tokens`` less what the system prompt and the summary take: what the
        window may use (None: no budget)."""
        settings = self.settings
        budget = settings.max_tokens
        if budget is None:
            return None
        system = self.system_prompt
        if system:
            budget -= settings.token_counter(Message("system", system))
        return max(0, budget)

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
            if self._state is _OPEN:
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
    def committed(self) -> tuple[Message, ...]:
        """The messages this block wrote, as stored (with ``id`` and ``created_at`` when
        the store gives them), once the block has exited; ``()`` before."""
        return self._committed

    @property
    def messages(self) -> list[Message]:
        """What a provider is sent: system prompt, trimmed history, then staged messages."""
        settings = self.settings
        window = trim(
            compacted([*self.history, *self._pending], settings),
            self.window_limit,
            max_tokens=self.window_budget,
            count_tokens=settings.token_counter,
        )
        system = self.system_prompt
        if system is not None:
            window.insert(0, Message("system", system))
        return window

    def add(self, *messages: Message) -> None:
        """Stage messages for the atomic write on exit.

        Raises:
            InvalidMessage: not a Message.
            MessageTooLarge: a message or the turn exceeds its size limit.
            SessionStateError: outside the block.
        """
        if self._state is not _OPEN:
            self._check_open()
        self._pending_bytes = self.settings.check_turn_size(self._pending_bytes, messages)
        self._pending.extend(messages)

    def _check_turn_size(self, messages: Iterable[Message]) -> int:
        """The turn's size with ``messages`` added, checked against the limits."""
        return self.settings.check_turn_size(self._pending_bytes, messages)

    def rewind(self, *, after: str) -> None:
        """Drop every message after the one with id ``after`` (an edit, a new answer).

        The window loses them at once; on the clean exit the store drops them
        and appends what was staged, in the block's one atomic commit. A block
        that fails or is cancelled changes nothing. Staged messages get fresh
        ids: an id is never reused for other content.

        Raises:
            MessageNotFound: no message of the loaded window has that id
                (``store.truncate`` reaches further back).
            SessionStateError: outside the block, not loaded yet, or with
                messages already staged (rewind first, then stage).
        """
        history = self.history
        if self._pending:
            raise SessionStateError(
                "rewind before staging messages: what is staged would be dropped too"
            )
        at = next((i for i, m in enumerate(history) if m.id == after), None)
        if at is None:
            raise MessageNotFound(self.session_id, after)
        self._history = history[: at + 1]
        self._after = after

    def regenerate(self, *, provider: Provider | None = None) -> ReplyStream:
        """A new answer to the last user message, replacing the reply (and anything after it).

        Like :meth:`stream`, the reply is staged when it completes and written
        by the clean exit, with the old reply dropped in the same commit.

        Raises:
            SessionStateError: no user message in the loaded window, or as
                :meth:`stream`.
        """
        history = self.history
        for message in reversed(history):
            if message.role == "user" and message.id is not None:
                break
        else:
            raise SessionStateError(
                f"session {self.session_id!r} has no stored user message to answer again"
            )
        provider, _ = self._start_reply(message, provider)
        self.rewind(after=message.id)
        self._stream = ReplyStream(run_reply(self, provider, message, again=True))
        return self._stream

    # -- commit ------------------------------------------------------------------

    def _turn(self) -> Turn:
        """The block's commit: what was staged (and any rewind), under a new turn id."""
        settings = self.settings
        lease = self._lease
        return trusted_turn(
            self.session_id,
            tuple(self._pending),
            new_turn_id(),
            settings.ttl,  # type: ignore[arg-type]  # normalised to seconds by SessionSettings
            None,  # the window deletes nothing: what is kept is the store's policy
            None if lease is None else lease.token,  # refused if the lease was lost
            settings.owner,
            self._after,
        )

    def _written(self, stored: Sequence[Message]) -> None:
        """The block's state once its commit is stored: those messages, nothing staged.

        Also after ``CommitNotReplicated``: stored (on the primary, once), only
        not acknowledged by enough replicas, so the state is that of a commit,
        and the exception tells the caller.
        """
        self._committed = tuple(stored)
        self._after = None
        self._pending = []
        self._pending_bytes = 0

    async def _commit(self) -> None:
        """Commit what was staged (``__aexit__`` inlines the common case)."""
        settings = self.settings
        turn = self._turn()
        plan = self._plan
        try:
            if self._trace is not None:
                stored = await self._trace.commit(
                    turn, plan.commit(self.store, turn, settings.commit_grace)
                )
            else:
                stored = await plan.commit(self.store, turn, settings.commit_grace)
        except CommitNotReplicated as exc:
            self._written(exc.messages or turn.messages)
            raise
        self._written(turn.messages if stored is None else stored)
        if settings.summarizer is not None:
            self._summarize_later()

    def _summarize_later(self) -> None:
        """Ask the store's background work for a summary, if the window left some behind."""
        settings = self.settings
        window = settings.max_messages
        assert window is not None  # a summarizer needs it (checked by the settings)
        uncovered = len(self._history or ()) + len(self._committed)
        if uncovered - window > settings.summary_lag:
            work_for(self.store).schedule(
                self.session_id,
                fold_plan(
                    settings.summarizer, window, settings.summary_lag, settings.summary_timeout
                ),
            )

    async def _commit_after_error(self, exc: BaseException | None) -> None:
        try:
            await self._commit()
        except CommitNotReplicated as commit_exc:
            logger.warning("session %r: commit after error: %s", self.session_id, commit_exc)
            if exc is not None and sys.version_info >= (3, 11):
                exc.add_note(f"promptkit_async: the staged messages were saved: {commit_exc}")
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
        provider, user = self._start_reply(content, provider)
        self._stream = ReplyStream(run_reply(self, provider, user))
        return self._stream

    def run(
        self,
        content: str | Message,
        *,
        tools: Sequence[Tool],
        max_steps: int = 8,
        provider: Provider | None = None,
    ) -> ReplyStream:
        """Like :meth:`stream`, with tools: the model may call them, and is sent their results.

        Each step streams a reply (its text is yielded as it arrives); when the
        reply calls tools, they run (concurrently when several are asked for at
        once) and the next step sends their results, until the model answers
        without calling one or ``max_steps`` model calls were made. A tool that
        raises becomes an error result (``is_error``) the model reads. Every
        message of the run is staged together when it ends and written by the
        block's one commit; a failed or cancelled run stages nothing. After the
        stream is read, ``reply.message`` is the last reply and
        ``reply.outcome`` (:class:`RunOutcome`) says why it stopped.

        Raises:
            SessionStateError: outside the block, no provider, or a reply
                already running.
            ValueError: ``max_steps`` below 1, or two tools with one name.
            ProviderError: a model call failed (nothing is staged).
        """
        if type(max_steps) is not int or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        tools = tuple(tools)
        for t in tools:
            if not isinstance(t, Tool):
                raise TypeError(f"tools must be Tool objects (see promptkit_async.tool), got {t!r}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"two tools share a name: {sorted(names)}")
        provider, user = self._start_reply(content, provider)
        self._stream = ReplyStream(run_tools(self, provider, user, tools, max_steps))
        return self._stream

    def _start_reply(
        self, content: str | Message, provider: Provider | None
    ) -> tuple[Provider, Message]:
        """The provider and user message of a new reply, after the checks both calls share."""
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
        return provider, user

    async def send(self, content: str | Message, *, provider: Provider | None = None) -> Message:
        """Like :meth:`stream`, but wait for the whole reply and return it."""
        async with self.stream(content, provider=provider) as reply:
            async for _ in reply:
                pass
        assert reply.message is not None
        return reply.message
