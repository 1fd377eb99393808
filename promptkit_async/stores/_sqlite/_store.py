"""SQLiteStore: conversation state in one SQLite file, on the standard library's ``sqlite3``.

``sqlite3`` blocks, so the event loop never calls it: each store owns one
worker thread (a single-thread executor), which owns the one connection and
runs the store's transactions one at a time, in the order they were asked
for (see ``_db.py``). That order is what makes cancellation simple: a
cancelled call whose job had not started never runs, one that had started
runs to its end (a whole transaction or nothing), and a ``settle_turn`` asked
after it runs after it, so it always sees the commit's real outcome.

Several processes may share the file: WAL mode lets readers go on while one
connection writes, each turn is one ``BEGIN IMMEDIATE`` transaction that
checks its turn id before writing, and a writer that finds the file locked
waits ``busy_timeout`` and then fails with :class:`StoreUnavailable`
(nothing written, ``.unsaved`` holds the messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from ..._codec import DEFAULT_MAX_RECORD_BYTES
from ..._config import (
    DEFAULT_MAX_STORED,
    DEFAULT_TTL,
    check_limit,
    check_owner,
    check_session_id,
    ttl_seconds,
)
from ..._info import UNCHANGED
from ..._metrics import StateMetrics
from ..._summaries import close_summaries, summary_figures
from .._shared import (
    BaseStore,
    check_before,
    check_fork,
    check_info_update,
    check_page,
    check_summary_write,
)
from . import _summaries
from ._db import Database, Settings
from ._errors import store_error
from ._schema import open_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from ..._info import ConversationInfo, ConversationPage
    from ..._messages import Message
    from ..._summary import Summary
    from ..._types import TTL, JSONValue
    from .._contract import Turn, TurnOutcome, TurnStatus

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")
_SYNCHRONOUS: Final = ("FULL", "NORMAL")
#: How many ids one step of :meth:`SQLiteStore.sessions` reads.
_PAGE: Final = 500


#: Workers a forked child inherited: never used there, and never closed (closing a
#: connection inherited across fork is unsafe in SQLite), only kept from collection.
_inherited: list[_Worker] = []


class _Worker:
    """One thread and the one connection it opens and alone uses (in one process)."""

    __slots__ = ("db", "executor", "pid", "settings", "synchronous")

    def __init__(self, settings: Settings, synchronous: str) -> None:
        self.settings = settings
        self.synchronous = synchronous
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="promptkit-sqlite")
        self.db: Database | None = None
        self.pid = os.getpid()

    def run(
        self,
        call: Callable[[Database], _T],
        doing: str,
        session_id: str | None,
        unsaved: Sequence[Message],
    ) -> _T:
        """On the worker thread: ``call`` on the connection (opened on first use)."""
        settings = self.settings
        try:
            db = self.db
            if db is None:
                conn = open_database(
                    settings.path,
                    busy_timeout=settings.busy_timeout,
                    synchronous=self.synchronous,
                )
                db = self.db = Database(conn, settings)
            return call(db)
        except sqlite3.Error as exc:
            raise store_error(
                exc,
                settings.path,
                doing,
                busy_timeout=settings.busy_timeout,
                session_id=session_id,
                unsaved=unsaved,
            ) from exc

    def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):  # nothing is left to save or report
                db.close()


class SQLiteStore(BaseStore):
    """Conversation histories in an SQLite file, shared by every process that opens it.

    Same semantics as :class:`MemoryStore` and :class:`RedisStore`: append-only
    commits, exactly once per turn id, retention trimmed in the commit, a
    sliding TTL, ids and times given at commit, owners, listings and forks.
    The file is opened (and, if new, given the schema) by the first call;
    :meth:`ping` opens it at once. It must be on a local filesystem (WAL mode
    shares memory between the processes using it). A process forked from one
    that used the store opens the file anew.

    Args:
        path: the database file (a str; an ``os.PathLike`` works too). Not
            ``":memory:"``: use a :class:`MemoryStore` for that.
        max_stored: messages kept per session, newest kept (None: unlimited);
            trimmed inside each commit.
        compress_above: zlib-compress records larger than this many bytes
            (None: never). Reads decode either form whatever the setting.
        max_record_bytes: the largest record written, and the most a stored
            compressed record may inflate to when read (default 16 MiB).
        busy_timeout: seconds a call waits for another connection's write
            lock before failing with :class:`StoreUnavailable`.
        synchronous: ``"FULL"`` (each commit is on disk before it returns) or
            ``"NORMAL"`` (faster; a commit survives a crash of the process,
            and may be lost, never half-written, on a power failure).
        clock: seconds since the epoch, for expiry and message times: expiry
            deadlines are stored in the file, so every process sharing it must
            read the same clock (replaceable in tests to move time forward).
        observers: objects with ``on_load`` / ``on_save`` / ``on_error`` hooks.

    Raises (from any call):
        StoreUnavailable: the file is busy beyond ``busy_timeout``, or cannot
            be opened or read; nothing was written (``.unsaved`` on writes).
        StoreRejected: the file is not a promptkit_async store (corrupt, not
            a database, another application's, a newer schema), or refuses
            writes (read-only, disk full); nothing was written.
    """

    def __init__(
        self,
        path: str,
        *,
        max_stored: int | None = DEFAULT_MAX_STORED,
        compress_above: int | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        busy_timeout: float = 5.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
        observers: Sequence[object] = (),
    ) -> None:
        name = os.fspath(path)
        if not isinstance(name, str):
            raise TypeError(f"path must be a str or os.PathLike[str], got {path!r}")
        if not name or name == ":memory:" or name.startswith("file:"):
            raise ValueError(
                f"SQLiteStore needs a file path, got {name!r}: an in-memory SQLite database "
                "cannot be shared; use MemoryStore for a store in memory"
            )
        check_limit("max_stored", max_stored)
        check_limit("compress_above", compress_above, minimum=0)
        check_limit("max_record_bytes", max_record_bytes)
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, (int, float))
            or not 0 <= busy_timeout < 1e6
            or math.isnan(busy_timeout)
        ):
            raise ValueError(f"busy_timeout must be seconds from 0 to 1e6, got {busy_timeout!r}")
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        super().__init__(observers=observers)
        self._settings = Settings(
            path=name,
            clock=clock,
            max_stored=max_stored,
            compress_above=compress_above,
            max_record_bytes=max_record_bytes,
            busy_timeout=float(busy_timeout),
        )
        self._synchronous = synchronous
        self._worker: _Worker | None = None

    # -- settings --------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file, as given."""
        return self._settings.path

    @property
    def max_stored(self) -> int | None:
        """Messages kept per session (newest kept; None: unlimited)."""
        return self._settings.max_stored

    @property
    def compress_above(self) -> int | None:
        return self._settings.compress_above

    @property
    def max_record_bytes(self) -> int:
        return self._settings.max_record_bytes

    @property
    def busy_timeout(self) -> float:
        return self._settings.busy_timeout

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- the worker ------------------------------------------------------------------

    async def _run(
        self,
        call: Callable[[Database], _T],
        doing: str,
        session_id: str | None = None,
        unsaved: Sequence[Message] = (),
    ) -> _T:
        """``call`` on the worker thread; the event loop only waits for it."""
        worker = self._worker
        if worker is None or worker.pid != os.getpid():
            if worker is not None:  # a forked child: the thread did not come along
                _inherited.append(worker)
            worker = self._worker = _Worker(self._settings, self._synchronous)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            worker.executor, worker.run, call, doing, session_id, unsaved
        )

    async def aclose(self) -> None:
        """Close the connection and stop the worker (after what was asked before); idempotent.

        A call made afterwards opens the file again.
        """
        await close_summaries(self)
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.pid != os.getpid():
            _inherited.append(worker)
            return
        try:
            loop = asyncio.get_running_loop()
            await asyncio.shield(loop.run_in_executor(worker.executor, worker.close))
        finally:
            worker.executor.shutdown(wait=False)

    async def ping(self) -> None:
        """Open the file now (creating the schema in a new one) and check it is ours.

        Raises:
            StoreUnavailable, StoreRejected: as any call would.
        """
        await self._run(lambda db: None, "opening the store")

    # -- load and commit -------------------------------------------------------------

    async def load(
        self, session_id: str, limit: int | None = None, *, before: str | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages (all when None), oldest first; one read transaction.

        With ``before`` (a message id), the ``limit`` kept messages just older
        than that message.

        Raises:
            MessageNotFound: no kept message has the id ``before``.
            CorruptHistory: a stored record cannot be decoded.
        """
        session_id = check_session_id(session_id)
        check_limit("limit", limit, minimum=0)
        if before is not None:
            check_before(before)
        started = perf_counter()
        try:
            messages = await self._run(
                partial(Database.load, session_id=session_id, limit=limit, before=before),
                f"loading session {session_id!r}",
                session_id,
            )
        except Exception as exc:
            self._instruments.failed("load", session_id, exc)
            raise
        self._instruments.loaded(session_id, started, len(messages))
        return messages

    # -- summaries -----------------------------------------------------------------

    async def load_summarized(
        self, session_id: str, longest: int | None
    ) -> tuple[list[Message], Summary | None]:
        """The valid summary and the newest ``longest`` kept messages after it, in one
        read transaction (see :class:`SupportsSummaries`)."""
        session_id = check_session_id(session_id)
        check_limit("longest", longest)
        started = perf_counter()
        try:
            messages, summary = await self._run(
                partial(_summaries.load_summarized, session_id=session_id, longest=longest),
                f"loading session {session_id!r}",
                session_id,
            )
        except Exception as exc:
            self._instruments.failed("load", session_id, exc)
            raise
        self._instruments.loaded(session_id, started, len(messages))
        return messages, summary

    async def write_summary(
        self, session_id: str, summary: Summary, *, previous: str | None
    ) -> bool:
        """Replace the summary of version ``previous`` by ``summary``, by compare-and-set
        in one write transaction (see :class:`SupportsSummaries`)."""
        session_id = check_session_id(session_id)
        check_summary_write(summary, previous)
        return await self._run(
            partial(
                _summaries.write_summary,
                session_id=session_id,
                summary=summary,
                previous=previous,
            ),
            f"writing the summary of session {session_id!r}",
            session_id,
        )

    async def summary(self, session_id: str) -> Summary | None:
        """The conversation's valid rolling summary, or None."""
        session_id = check_session_id(session_id)
        return await self._run(
            partial(_summaries.read_summary, session_id=session_id),
            f"reading the summary of session {session_id!r}",
            session_id,
        )

    async def count(self, session_id: str) -> int:
        """How many messages the session keeps (0 if none)."""
        session_id = check_session_id(session_id)
        return await self._run(
            partial(Database.count, session_id=session_id),
            f"counting session {session_id!r}",
            session_id,
        )

    async def commit(self, turn: Turn) -> tuple[Message, ...]:
        """Write ``turn`` in one transaction, exactly once per turn id (see :class:`SupportsTurns`).

        Returns the messages as stored, with their ids and time (the messages
        as given for a re-sent turn that is no longer the session's last).

        Raises:
            StoreUnavailable: nothing was written (busy, unreachable, or the
                turn id was aborted earlier); ``.unsaved`` holds the messages.
            StoreRejected: the file refused the write; nothing was written.
            CommitOutcomeUnknown: the ``COMMIT`` failed and could not be settled.
            OwnerMismatch, MessageNotFound: as the other stores; nothing was written.
        """
        if turn.fence is not None:
            raise TypeError("SQLiteStore has no leases: a fenced turn cannot be written here")
        started = perf_counter()
        session_id = turn.session_id
        try:
            stored = await self._run(
                partial(Database.commit, turn=turn),
                f"committing to session {session_id!r}",
                session_id,
                turn.messages,
            )
        except Exception as exc:
            self._instruments.failed("save", session_id, exc)
            raise
        self._instruments.saved(session_id, started, len(turn.messages))
        return stored

    async def restore(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        replace: bool = False,
        ttl: TTL = DEFAULT_TTL,
    ) -> list[Message]:
        """Write a whole conversation (an import) in one transaction; the messages as stored.

        Raises:
            SessionExists: the session has history and ``replace`` is false.
            InvalidMessage: ids or times that cannot be kept as given.
        """
        session_id = check_session_id(session_id)
        seconds = ttl_seconds(ttl)
        batch = tuple(messages)
        return await self._run(
            partial(
                Database.restore,
                session_id=session_id,
                messages=batch,
                replace=bool(replace),
                ttl=seconds,
            ),
            f"restoring session {session_id!r}",
            session_id,
            batch,
        )

    async def settle_turn(self, session_id: str, turn_id: str) -> TurnOutcome:
        """Applied if the turn id was committed; else it is marked aborted for good.

        Raises:
            StoreUnavailable: the file could not be used; still undecided.
        """
        session_id = check_session_id(session_id)
        return await self._run(
            partial(Database.settle, session_id=session_id, turn_id=turn_id),
            f"settling turn {turn_id} of session {session_id!r}",
            session_id,
        )

    async def turn_status(self, session_id: str, turn_id: str) -> TurnStatus:
        """Whether a turn was applied, aborted, or is unknown here (too old or never sent)."""
        session_id = check_session_id(session_id)
        return await self._run(
            partial(Database.turn_status, session_id=session_id, turn_id=turn_id),
            f"reading turn {turn_id} of session {session_id!r}",
            session_id,
        )

    # -- erase and inspect -------------------------------------------------------------

    async def delete(self, session_id: str) -> bool:
        """Erase the session, its messages and turn ids; True if it existed."""
        session_id = check_session_id(session_id)
        return await self._run(
            partial(Database.delete, session_id=session_id),
            f"deleting session {session_id!r}",
            session_id,
        )

    async def delete_prefix(self, prefix: str) -> int:
        """Erase every session whose id starts with ``prefix`` (a literal), in one transaction.

        Raises:
            ValueError: an empty prefix (erasing everything must be explicit).
        """
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("delete_prefix needs a non-empty str prefix")
        return await self._run(
            partial(Database.delete_prefix, prefix=prefix), f"deleting sessions {prefix!r}*"
        )

    async def ttl(self, session_id: str) -> float | None:
        """Seconds until the session expires; None if it has no TTL or does not exist."""
        session_id = check_session_id(session_id)
        return await self._run(
            partial(Database.ttl, session_id=session_id),
            f"reading the TTL of session {session_id!r}",
            session_id,
        )

    async def exists(self, session_id: str) -> bool:
        session_id = check_session_id(session_id)
        return await self._run(
            partial(Database.exists, session_id=session_id),
            f"reading session {session_id!r}",
            session_id,
        )

    async def sessions(self, prefix: str = "") -> AsyncIterator[str]:
        """Yield the ids of live sessions starting with ``prefix`` (a literal), in order.

        Read a page of ids at a time, each page in one read transaction.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        after: str | None = None
        while True:
            ids, after = await self._run(
                partial(Database.session_page, prefix=prefix, after=after, size=_PAGE),
                "listing sessions",
            )
            for session_id in ids:
                yield session_id
            if after is None:
                return

    async def metrics(self, *, sample: int = 200) -> StateMetrics:
        """A snapshot: exact counts and record bytes of the live sessions.

        One read of the sessions table (never of the messages), which keeps
        each session's message count and bytes; ``sample`` is accepted for
        the other stores' sake and not needed.
        """
        check_limit("sample", sample)
        active, messages, used = await self._run(Database.figures, "reading metrics")
        return StateMetrics(
            active_sessions=active,
            avg_history_size=messages / active if active else 0.0,
            load_latency=self._instruments.load_latency.summary(),
            save_latency=self._instruments.save_latency.summary(),
            storage_used=used,
            sampled=active,
            exact=True,
            **summary_figures(self),
        )

    # -- conversations -----------------------------------------------------------------

    async def info(self, session_id: str, *, owner: str | None = None) -> ConversationInfo | None:
        """The conversation's info; None for an unknown id (or, with ``owner``, another's)."""
        session_id = check_session_id(session_id)
        checked = None if owner is None else check_owner(owner)
        return await self._run(
            partial(Database.info, session_id=session_id, owner=checked),
            f"reading conversation {session_id!r}",
            session_id,
        )

    async def update_info(
        self,
        session_id: str,
        *,
        title: str | None = UNCHANGED,
        metadata: Mapping[str, JSONValue] | None = None,
        owner: str | None = None,
    ) -> bool:
        """Rename, and merge custom metadata (a key set to None is removed), in one
        transaction; False when there is no such conversation (it is never created).

        Raises:
            OwnerMismatch: ``owner`` given, and the conversation is another's.
        """
        session_id = check_session_id(session_id)
        new_title, checked_metadata, checked = check_info_update(title, metadata, owner)
        return await self._run(
            partial(
                Database.update_info,
                session_id=session_id,
                title=new_title,
                metadata=checked_metadata,
                owner=checked,
            ),
            f"updating conversation {session_id!r}",
            session_id,
        )

    async def conversations(
        self, owner: str, *, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        """An owner's conversations, newest ``updated_at`` first.

        A first page with more after it keeps a snapshot of the listing in the
        file (for 10 minutes), so that any process can serve the next pages.

        Raises:
            InvalidCursor: a cursor this store did not give, or one that expired.
        """
        owner = check_owner(owner)
        check_page(limit, cursor)
        return await self._run(
            partial(Database.conversations, owner=owner, limit=limit, cursor=cursor),
            f"listing the conversations of {owner!r}",
        )

    async def fork(
        self,
        source_id: str,
        new_id: str,
        *,
        upto: str | None = None,
        title: str | None = None,
        replace: bool = False,
        owner: str | None = None,
    ) -> ConversationInfo:
        """Copy a conversation up to and including message ``upto`` (None: all of it),
        in one transaction: a half-copied fork is never visible.

        Raises:
            ConversationNotFound, MessageNotFound, ConversationExists, OwnerMismatch:
                as :meth:`RedisStore.fork`.
        """
        source_id, new_id = check_session_id(source_id), check_session_id(new_id)
        check_fork(source_id, new_id, upto, title)
        checked = None if owner is None else check_owner(owner)
        return await self._run(
            partial(
                Database.fork,
                source_id=source_id,
                new_id=new_id,
                upto=upto,
                title=title,
                replace=bool(replace),
                owner=checked,
            ),
            f"forking conversation {source_id!r} to {new_id!r}",
            source_id,
        )

    async def delete_owner(self, owner: str) -> int:
        """Erase every conversation of ``owner`` and their listing; how many were erased."""
        owner = check_owner(owner)
        return await self._run(
            partial(Database.delete_owner, owner=owner),
            f"erasing the conversations of {owner!r}",
        )
