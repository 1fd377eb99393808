"""The store's operations as SQLite transactions, on the connection of the worker thread.

Every method here runs on the store's one worker thread (see ``_store.py``),
never on the event loop, and is one transaction: a write is ``BEGIN
IMMEDIATE`` (the file's write lock, taken before anything is read, so that
what it checks cannot change before it writes) and a read is a deferred
transaction (one consistent snapshot; in WAL mode it never waits for a
writer). The semantics are :class:`MemoryStore`'s, decided inside the
transaction so that every process sharing the file sees them alike:

- ids count positions per session (``messages.seq``), with ``~<gen>`` once
  the history was rewound; a commit's time never goes below the last one;
- a turn id applied or aborted is remembered (the newest ``TURN_MEMORY`` per
  session), so a re-sent commit never applies twice, and a settled one never;
- expiry is a deadline on the store's clock, in the file: an expired session
  is invisible at once, and erased by the next write (or read) that meets it.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
from typing import TYPE_CHECKING, Final, NamedTuple

from ..._codec import (
    EPOCH,
    HEADER_MARK,
    decode_message,
    encode_message,
    header,
    id_number,
    message_id,
    time_of,
)
from ..._exceptions import (
    CommitOutcomeUnknown,
    ConversationExists,
    ConversationNotFound,
    CorruptHistory,
    InvalidCursor,
    MessageNotFound,
    OwnerMismatch,
    SessionExists,
)
from ..._info import UNCHANGED, ConversationInfo, ConversationPage
from ..._messages import stamped
from .._contract import not_newest
from .._shared import aborted_earlier, restored
from ._errors import is_busy, store_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from ..._messages import Message
    from ..._types import JSONValue
    from .._contract import Turn, TurnOutcome, TurnStatus

__all__ = ["TURN_MEMORY", "Database", "Settings"]

#: How many recent turn ids each session remembers for exactly-once commits.
TURN_MEMORY: Final = 64
#: How many expired sessions one write erases on its way (the rest: the next ones).
_SWEEP: Final = 64
#: How long an abort marker for a session that does not exist is kept (seconds).
_ABORT_SECONDS: Final = 3600.0
#: How long the snapshot behind a listing's later pages lives (seconds).
_SNAPSHOT_SECONDS: Final = 600.0
_CURSOR: Final = re.compile(r"([0-9a-f]{16})\.([0-9]{1,9})")

_SESSION: Final = (
    "SELECT sid, next_id, gen, kept, bytes, created_ms, updated_ms, expires_at, owner, "
    "turn_count, last_turn, last_first, last_gen FROM sessions WHERE id = ?"
)
_INFO: Final = (
    "SELECT kept, owner, title, created_ms, updated_ms, metadata, forked_from, expires_at "
    "FROM sessions WHERE id = ?"
)
_LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"


class _Row(NamedTuple):
    sid: int
    next_id: int
    gen: int
    kept: int
    bytes: int
    created_ms: int
    updated_ms: int
    expires_at: float | None
    owner: str | None
    turn_count: int
    last_turn: str | None
    last_first: int
    last_gen: int


class Settings(NamedTuple):
    """What the store was built with, as its transactions need it."""

    path: str
    clock: Callable[[], float]
    max_stored: int | None
    compress_above: int | None
    max_record_bytes: int
    busy_timeout: float


def _record_id(raw: object, seq: int) -> str | None:
    """The id a stored record carries in its header (a record of 0.1.0: its position)."""
    if type(raw) is not bytes:
        return None
    if raw[:2] != HEADER_MARK:
        return str(seq)
    head = raw[2 : raw.find(b"\n")]
    return head.partition(b" ")[2].decode("ascii", "replace")


def _upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which is code point order, so the
    ids starting with ``prefix`` are exactly those in ``[prefix, bound)``: a
    literal prefix on the id index, with no pattern to escape.
    """
    chars = list(prefix)
    while chars:
        point = ord(chars.pop()) + 1
        if 0xD800 <= point <= 0xDFFF:
            point = 0xE000  # surrogates are not characters UTF-8 can hold
        if point <= 0x10FFFF:
            return "".join(chars) + chr(point)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Database:
    """One connection and the store's transactions on it (worker thread only)."""

    __slots__ = ("conn", "settings")

    def __init__(self, conn: sqlite3.Connection, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings

    def close(self) -> None:
        self.conn.close()

    # -- transactions ------------------------------------------------------------------

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite rolled back already
                self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            self._rollback()
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            self._rollback()  # a read wrote nothing: ending it either way is the same

    def _now(self) -> float:
        return float(self.settings.clock())

    def _session(self, conn: sqlite3.Connection, session_id: str, now: float) -> _Row | None:
        """The session's row; an expired one is erased (inside a write) and is None."""
        found = conn.execute(_SESSION, (session_id,)).fetchone()
        if found is None:
            return None
        row = _Row._make(found)
        if row.expires_at is not None and row.expires_at <= now:
            self._erase(conn, [row.sid])
            return None
        return row

    def _erase(self, conn: sqlite3.Connection, sids: Sequence[int]) -> None:
        keys = [(sid,) for sid in sids]
        conn.executemany("DELETE FROM messages WHERE sid = ?", keys)
        conn.executemany("DELETE FROM turns WHERE sid = ?", keys)
        conn.executemany("DELETE FROM summaries WHERE sid = ?", keys)
        conn.executemany("DELETE FROM sessions WHERE sid = ?", keys)

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        doomed = conn.execute(
            "SELECT sid FROM sessions WHERE expires_at <= ? LIMIT ?", (now, _SWEEP)
        ).fetchall()
        if doomed:
            self._erase(conn, [sid for (sid,) in doomed])

    def _sweep_quietly(self, now: float) -> None:
        """Erase what expired, from a read that met it: only if the file is free now.

        The session is invisible already, so a read never waits for the
        write lock for this (the next write sweeps it anyway).
        """
        conn = self.conn
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            with self._writing():
                self._sweep(conn, now)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout * 1000)}")

    def _live_sid(self, conn: sqlite3.Connection, session_id: str, now: float) -> int | None:
        """The sid of a live session in a read; -1 when it exists but expired."""
        found = conn.execute(
            "SELECT sid, expires_at FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if found is None:
            return None
        if found[1] is not None and found[1] <= now:
            return -1
        return int(found[0])

    def _position(self, conn: sqlite3.Connection, sid: int, message_id: str) -> int | None:
        """The number of the kept message with id ``message_id`` (None: not kept).

        Numbers count positions without gaps, so the id's number is its key;
        the record's own id then tells ``"3"`` from ``"3~1"``.
        """
        number = id_number(message_id)
        if number is None:
            return None
        found = conn.execute(
            "SELECT record FROM messages WHERE sid = ? AND seq = ?", (sid, number)
        ).fetchone()
        if found is None or _record_id(found[0], number) != message_id:
            return None
        return number

    def _before_newest(self, conn: sqlite3.Connection, sid: int, message_id: str) -> int | None:
        """The number just before the newest kept message, if that one has id ``message_id``
        (-1 when it is the only one; None: the newest is another, or there is none)."""
        found = conn.execute(
            "SELECT seq, record FROM messages WHERE sid = ? ORDER BY seq DESC LIMIT 1", (sid,)
        ).fetchone()
        if found is None or _record_id(found[1], found[0]) != message_id:
            return None
        return int(found[0]) - 1

    def _remember(self, conn: sqlite3.Connection, sid: int, count: int, turn_id: str) -> None:
        """Record an abort marker as the session's turn number ``count``."""
        conn.execute(
            "INSERT INTO turns (sid, turn_id, n, applied) VALUES (?, ?, ?, 0)",
            (sid, turn_id, count),
        )
        conn.execute("UPDATE sessions SET turn_count = ? WHERE sid = ?", (count, sid))
        self._forget_old(conn, sid, count)

    def _aborted_before(
        self, conn: sqlite3.Connection, session_id: str, turn_id: str, now: float
    ) -> bool:
        """Whether ``turn_id`` was settled as aborted while the session did not exist."""
        found = conn.execute(
            "SELECT 1 FROM aborts WHERE id = ? AND turn_id = ? AND expires_at > ?",
            (session_id, turn_id, now),
        ).fetchone()
        return found is not None

    def _adopt_aborts(
        self, conn: sqlite3.Connection, session_id: str, sid: int, now: float
    ) -> None:
        """A new session takes over the abort markers of its id (the oldest turn numbers)."""
        conn.execute(
            "INSERT INTO turns (sid, turn_id, n, applied) "
            "SELECT ?, turn_id, 0, 0 FROM aborts WHERE id = ? AND expires_at > ?",
            (sid, session_id, now),
        )
        conn.execute("DELETE FROM aborts WHERE id = ?", (session_id,))

    def _forget_old(self, conn: sqlite3.Connection, sid: int, count: int) -> None:
        if count > TURN_MEMORY:
            conn.execute("DELETE FROM turns WHERE sid = ? AND n <= ?", (sid, count - TURN_MEMORY))

    # -- load ---------------------------------------------------------------------------

    def load(self, session_id: str, limit: int | None, before: str | None) -> list[Message]:
        now = self._now()
        rows: list[tuple[int, object]] = []
        with self._reading() as conn:
            sid = self._live_sid(conn, session_id, now)
            end = None
            if before is not None:
                end = None if sid is None or sid < 0 else self._position(conn, sid, before)
                if end is None:
                    raise MessageNotFound(session_id, before)
            if sid is not None and sid >= 0 and limit != 0:
                count = -1 if limit is None else limit
                if end is None:
                    sql = "SELECT seq, record FROM messages WHERE sid = ? ORDER BY seq DESC LIMIT ?"
                    rows = conn.execute(sql, (sid, count)).fetchall()
                else:
                    sql = (
                        "SELECT seq, record FROM messages WHERE sid = ? AND seq < ? "
                        "ORDER BY seq DESC LIMIT ?"
                    )
                    rows = conn.execute(sql, (sid, end, count)).fetchall()
        if sid == -1:
            self._sweep_quietly(now)
        rows.reverse()
        return self._decode(session_id, rows, limit)

    def _decode(
        self, session_id: str, rows: list[tuple[int, object]], limit: int | None
    ) -> list[Message]:
        # A window of the newest cannot name absolute positions: count from the end.
        windowed = limit is not None and len(rows) == limit
        size = len(rows)
        out: list[Message] = []
        max_bytes = self.settings.max_record_bytes
        for i, (seq, raw) in enumerate(rows):
            index = i - size if windowed else i
            if type(raw) is not bytes:
                raise CorruptHistory(
                    f"session {session_id!r}: stored record {index} is "
                    f"{type(raw).__name__}, not an encoded record (bytes)",
                    session_id=session_id,
                    index=index,
                )
            out.append(
                decode_message(
                    raw,
                    session_id=session_id,
                    index=index,
                    max_bytes=max_bytes,
                    id=str(seq),
                    created_at=EPOCH,
                )
            )
        return out

    def count(self, session_id: str) -> int:
        now = self._now()
        with self._reading() as conn:
            found = conn.execute(
                f"SELECT kept FROM sessions WHERE id = ? AND {_LIVE}", (session_id, now)
            ).fetchone()
        return 0 if found is None else int(found[0])

    # -- commit -------------------------------------------------------------------------

    def commit(self, turn: Turn) -> tuple[Message, ...]:
        """Apply ``turn`` in one write transaction unless its id was applied or aborted.

        A ``COMMIT`` that fails leaves the outcome to be read back: the turn is
        settled by id at once (applied, or aborted for good), and only if that
        fails too is the outcome unknown.
        """
        settings = self.settings
        payloads = [
            encode_message(
                m, compress_above=settings.compress_above, max_bytes=settings.max_record_bytes
            )
            for m in turn.messages
        ]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = self._apply(conn, turn, payloads)
        except BaseException:
            self._rollback()
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            try:
                outcome = self.settle(turn.session_id, turn.turn_id)
            except sqlite3.Error:
                raise CommitOutcomeUnknown(
                    f"session {turn.session_id!r}: the commit of turn {turn.turn_id} to "
                    f"{settings.path!r} failed ({exc}) and could not be settled: it is stored "
                    "once or not at all",
                    session_id=turn.session_id,
                    turn_id=turn.turn_id,
                    unsaved=turn.messages,
                ) from exc
            if outcome == "applied":
                return stored
            raise store_error(
                exc,
                settings.path,
                f"committing to session {turn.session_id!r}",
                busy_timeout=settings.busy_timeout,
                session_id=turn.session_id,
                unsaved=turn.messages,
            ) from exc
        return stored

    def _apply(
        self, conn: sqlite3.Connection, turn: Turn, payloads: list[bytes]
    ) -> tuple[Message, ...]:
        session_id = turn.session_id
        batch = turn.messages
        now = self._now()
        self._sweep(conn, now)
        row = self._session(conn, session_id, now)
        at = None
        if row is not None:
            seen = conn.execute(
                "SELECT applied FROM turns WHERE sid = ? AND turn_id = ?", (row.sid, turn.turn_id)
            ).fetchone()
            if seen is not None and seen[0]:  # a re-sent commit of a turn already applied
                if row.last_turn != turn.turn_id:
                    return batch
                when = time_of(row.updated_ms)
                first, gen = row.last_first, row.last_gen
                return tuple(
                    stamped(m, message_id(first + i, gen), when) for i, m in enumerate(batch)
                )
            if seen is not None:
                raise aborted_earlier(turn)
            if turn.owner is not None and row.owner not in (None, turn.owner):
                raise OwnerMismatch(session_id)
            if turn.after is not None:
                at = self._position(conn, row.sid, turn.after)
            elif turn.replace_last is not None:
                at = self._before_newest(conn, row.sid, turn.replace_last)
        elif self._aborted_before(conn, session_id, turn.turn_id, now):
            raise aborted_earlier(turn)
        if turn.after is not None and at is None:
            raise MessageNotFound(session_id, turn.after)
        if turn.replace_last is not None and at is None:
            raise not_newest(session_id, turn.replace_last)
        if row is None:
            cursor = conn.execute("INSERT INTO sessions (id) VALUES (?)", (session_id,))
            assert cursor.lastrowid is not None
            sid, next_id, gen, kept, size = cursor.lastrowid, 0, 0, 0, 0
            created, last_ms, count = 0, 0, 0
            self._adopt_aborts(conn, session_id, sid, now)
        else:
            sid, next_id, gen, kept, size = row.sid, row.next_id, row.gen, row.kept, row.bytes
            created, last_ms, count = row.created_ms, row.updated_ms, row.turn_count
        if at is not None and at + 1 < next_id:
            dropped, freed = conn.execute(
                "SELECT count(*), total(length(record)) FROM messages WHERE sid = ? AND seq > ?",
                (sid, at),
            ).fetchone()
            conn.execute("DELETE FROM messages WHERE sid = ? AND seq > ?", (sid, at))
            kept -= dropped
            size -= int(freed)
            next_id = at + 1
            gen += 1
        ms = max(int(now * 1000), last_ms)
        when = time_of(ms)
        first = next_id
        rows = []
        stored = []
        for i, (message, payload) in enumerate(zip(batch, payloads, strict=True)):
            mid = message_id(first + i, gen)
            record = header(ms, mid) + payload
            size += len(record)
            rows.append((sid, first + i, record))
            stored.append(stamped(message, mid, when))
        conn.executemany("INSERT INTO messages (sid, seq, record) VALUES (?, ?, ?)", rows)
        next_id += len(rows)
        kept += len(rows)
        cap = self.settings.max_stored
        if turn.max_messages is not None and (cap is None or turn.max_messages < cap):
            cap = turn.max_messages
        if cap is not None and kept > cap:
            low = next_id - cap
            trimmed, freed = conn.execute(
                "SELECT count(*), total(length(record)) FROM messages WHERE sid = ? AND seq < ?",
                (sid, low),
            ).fetchone()
            conn.execute("DELETE FROM messages WHERE sid = ? AND seq < ?", (sid, low))
            kept -= trimmed
            size -= int(freed)
        count += 1
        conn.execute(
            "UPDATE sessions SET next_id = ?, gen = ?, kept = ?, bytes = ?, created_ms = ?, "
            "updated_ms = ?, expires_at = ?, owner = coalesce(owner, ?), turn_count = ?, "
            "last_turn = ?, last_first = ?, last_gen = ? WHERE sid = ?",
            (
                next_id,
                gen,
                kept,
                size,
                created or ms,
                ms,
                None if turn.ttl is None else now + turn.ttl,
                turn.owner,
                count,
                turn.turn_id,
                first,
                gen,
                sid,
            ),
        )
        conn.execute(
            "INSERT INTO turns (sid, turn_id, n, applied) VALUES (?, ?, ?, 1)",
            (sid, turn.turn_id, count),
        )
        self._forget_old(conn, sid, count)
        return tuple(stored)

    def settle(self, session_id: str, turn_id: str) -> TurnOutcome:
        """Applied if the turn id was committed; else it is marked aborted for good.

        A session that does not exist keeps the marker beside it for an hour
        (the session adopts it if a commit creates it meanwhile).
        """
        with self._writing() as conn:
            now = self._now()
            row = self._session(conn, session_id, now)
            if row is None:
                conn.execute("DELETE FROM aborts WHERE expires_at <= ?", (now,))
                conn.execute(
                    "INSERT OR IGNORE INTO aborts (id, turn_id, expires_at) VALUES (?, ?, ?)",
                    (session_id, turn_id, now + _ABORT_SECONDS),
                )
                return "aborted"
            seen = conn.execute(
                "SELECT applied FROM turns WHERE sid = ? AND turn_id = ?", (row.sid, turn_id)
            ).fetchone()
            if seen is not None:
                return "applied" if seen[0] else "aborted"
            self._remember(conn, row.sid, row.turn_count + 1, turn_id)
        return "aborted"

    def turn_status(self, session_id: str, turn_id: str) -> TurnStatus:
        now = self._now()
        with self._reading() as conn:
            sid = self._live_sid(conn, session_id, now)
            if sid is not None and sid >= 0:
                seen = conn.execute(
                    "SELECT applied FROM turns WHERE sid = ? AND turn_id = ?", (sid, turn_id)
                ).fetchone()
            else:
                seen = (0,) if self._aborted_before(conn, session_id, turn_id, now) else None
        if seen is None:
            return "unknown"
        return "applied" if seen[0] else "aborted"

    def restore(
        self, session_id: str, messages: Sequence[Message], replace: bool, ttl: float | None
    ) -> list[Message]:
        settings = self.settings
        stored, times, next_id, generation = restored(
            messages, settings.max_stored, int(self._now() * 1000)
        )
        records = [
            header(ms, m.id or "")
            + encode_message(
                m, compress_above=settings.compress_above, max_bytes=settings.max_record_bytes
            )
            for m, ms in zip(stored, times, strict=True)
        ]
        with self._writing() as conn:
            now = self._now()
            self._sweep(conn, now)
            row = self._session(conn, session_id, now)
            if row is not None:
                if not replace:
                    raise SessionExists(session_id)
                self._erase(conn, [row.sid])
            if not stored:
                return []
            cursor = conn.execute(
                "INSERT INTO sessions (id, next_id, gen, kept, bytes, created_ms, updated_ms, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    next_id,
                    generation,
                    len(records),
                    sum(len(r) for r in records),
                    times[-1],
                    times[-1],
                    None if ttl is None else now + ttl,
                ),
            )
            sid = cursor.lastrowid
            assert sid is not None
            self._adopt_aborts(conn, session_id, sid, now)
            conn.executemany(
                "INSERT INTO messages (sid, seq, record) VALUES (?, ?, ?)",
                [(sid, id_number(m.id or ""), r) for m, r in zip(stored, records, strict=True)],
            )
        return list(stored)

    def delete(self, session_id: str) -> bool:
        with self._writing() as conn:
            now = self._now()
            conn.execute("DELETE FROM aborts WHERE id = ?", (session_id,))
            found = conn.execute(
                "SELECT sid, expires_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if found is None:
                return False
            self._erase(conn, [found[0]])
        return found[1] is None or found[1] > now

    def delete_prefix(self, prefix: str) -> int:
        sql, args = self._range("SELECT sid, expires_at FROM sessions", prefix)
        markers, marker_args = self._range("DELETE FROM aborts", prefix)
        with self._writing() as conn:
            now = self._now()
            conn.execute(markers, marker_args)
            found = conn.execute(sql, args).fetchall()
            self._erase(conn, [sid for sid, _ in found])
        return sum(1 for _, expires_at in found if expires_at is None or expires_at > now)

    # -- inspect ------------------------------------------------------------------------

    def ttl(self, session_id: str) -> float | None:
        now = self._now()
        with self._reading() as conn:
            found = conn.execute(
                "SELECT expires_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if found is None or found[0] is None:
            return None
        if found[0] <= now:
            self._sweep_quietly(now)
            return None
        return float(found[0]) - now

    def exists(self, session_id: str) -> bool:
        now = self._now()
        with self._reading() as conn:
            sid = self._live_sid(conn, session_id, now)
        if sid == -1:
            self._sweep_quietly(now)
        return sid is not None and sid >= 0

    @staticmethod
    def _range(select: str, prefix: str, after: str | None = None) -> tuple[str, list[object]]:
        """``select`` restricted to the ids starting with ``prefix`` (and above ``after``)."""
        clauses: list[str] = []
        args: list[object] = []
        if after is not None:
            clauses.append("id > ?")
            args.append(after)
        elif prefix:
            clauses.append("id >= ?")
            args.append(prefix)
        upper = _upper_bound(prefix)
        if upper is not None:
            clauses.append("id < ?")
            args.append(upper)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return select + where, args

    def session_page(
        self, prefix: str, after: str | None, size: int
    ) -> tuple[list[str], str | None]:
        """Live ids starting with ``prefix`` above ``after``, in order; and where to go on."""
        if not _encodable(prefix):
            return [], None  # no session id can start with it
        sql, args = self._range("SELECT id, expires_at FROM sessions", prefix, after)
        now = self._now()
        with self._reading() as conn:
            found = conn.execute(f"{sql} ORDER BY id LIMIT ?", [*args, size]).fetchall()
        live = [sid for sid, expires_at in found if expires_at is None or expires_at > now]
        if len(live) < len(found):
            self._sweep_quietly(now)
        return live, found[-1][0] if len(found) == size else None

    def figures(self) -> tuple[int, int, int]:
        """Live sessions, the messages they keep, and those messages' record bytes."""
        now = self._now()
        with self._reading() as conn:
            active, messages, used = conn.execute(
                f"SELECT count(*), total(kept), total(bytes) FROM sessions WHERE {_LIVE}", (now,)
            ).fetchone()
        return int(active), int(messages), int(used)

    # -- conversations ------------------------------------------------------------------

    def _info(
        self, conn: sqlite3.Connection, session_id: str, owner: str | None, now: float
    ) -> ConversationInfo | None:
        found = conn.execute(_INFO, (session_id,)).fetchone()
        if found is None:
            return None
        kept, recorded, title, created_ms, updated_ms, metadata, forked_from, expires_at = found
        if expires_at is not None and expires_at <= now:
            return None
        if owner is not None and recorded != owner:
            return None
        return ConversationInfo(
            id=session_id,
            owner=recorded,
            title=title,
            created_at=time_of(created_ms),
            updated_at=time_of(updated_ms),
            message_count=kept,
            metadata=json.loads(metadata),
            forked_from=forked_from,
        )

    def info(self, session_id: str, owner: str | None) -> ConversationInfo | None:
        now = self._now()
        with self._reading() as conn:
            return self._info(conn, session_id, owner, now)

    def update_info(
        self,
        session_id: str,
        title: object,
        metadata: Mapping[str, JSONValue] | None,
        owner: str | None,
    ) -> bool:
        with self._writing() as conn:
            row = self._session(conn, session_id, self._now())
            if row is None:
                return False
            if owner is not None and row.owner != owner:
                raise OwnerMismatch(session_id)
            if title is not UNCHANGED:
                conn.execute("UPDATE sessions SET title = ? WHERE sid = ?", (title, row.sid))
            if metadata:
                (current,) = conn.execute(
                    "SELECT metadata FROM sessions WHERE sid = ?", (row.sid,)
                ).fetchone()
                custom = json.loads(current)
                for key, value in metadata.items():
                    if value is None:
                        custom.pop(key, None)
                    else:
                        custom[key] = value
                conn.execute(
                    "UPDATE sessions SET metadata = ? WHERE sid = ?",
                    (json.dumps(custom, ensure_ascii=False), row.sid),
                )
        return True

    def conversations(self, owner: str, limit: int, cursor: str | None) -> ConversationPage:
        now = self._now()
        if cursor is None:
            token, offset = secrets.token_hex(8), 0
            with self._reading() as conn:
                ids = [
                    sid
                    for (sid,) in conn.execute(
                        f"SELECT id FROM sessions WHERE owner = ? AND {_LIVE} "
                        "ORDER BY updated_ms DESC, id DESC",
                        (owner, now),
                    )
                ]
            if len(ids) > limit:
                with self._writing() as conn:
                    conn.execute("DELETE FROM listings WHERE expires_at <= ?", (now,))
                    conn.execute(
                        "INSERT INTO listings (token, owner, ids, expires_at) VALUES (?, ?, ?, ?)",
                        (
                            token,
                            owner,
                            json.dumps(ids, ensure_ascii=False),
                            now + _SNAPSHOT_SECONDS,
                        ),
                    )
        else:
            match = _CURSOR.fullmatch(cursor)
            found = None
            if match is not None:
                token, offset = match.group(1), int(match.group(2))
                with self._reading() as conn:
                    found = conn.execute(
                        "SELECT ids FROM listings WHERE token = ? AND owner = ? AND expires_at > ?",
                        (token, owner, now),
                    ).fetchone()
            if found is None:
                raise InvalidCursor(
                    f"cursor {cursor!r} is not one of this store's, or its listing expired; "
                    "start again from the first page"
                )
            ids = json.loads(found[0])
        end = offset + limit
        with self._reading() as conn:
            infos = [self._info(conn, sid, owner, now) for sid in ids[offset:end]]
        if cursor is not None and end >= len(ids):
            with self._writing() as conn:
                conn.execute("DELETE FROM listings WHERE token = ?", (token,))
        return ConversationPage(
            tuple(i for i in infos if i is not None),
            f"{token}.{end}" if end < len(ids) else None,
        )

    def fork(
        self,
        source_id: str,
        new_id: str,
        upto: str | None,
        title: str | None,
        replace: bool,
        owner: str | None,
    ) -> ConversationInfo:
        with self._writing() as conn:
            now = self._now()
            source = self._session(conn, source_id, now)
            if source is None or not source.kept:
                raise ConversationNotFound(source_id)
            if owner is not None and source.owner != owner:
                raise OwnerMismatch(source_id)
            last = source.next_id - 1
            if upto is not None:
                found = self._position(conn, source.sid, upto)
                if found is None:
                    raise MessageNotFound(source_id, upto)
                last = found
            target = self._session(conn, new_id, now)
            if target is not None:
                if not replace:
                    raise ConversationExists(new_id)
                self._erase(conn, [target.sid])
            kept, size = conn.execute(
                "SELECT count(*), total(length(record)) FROM messages WHERE sid = ? AND seq <= ?",
                (source.sid, last),
            ).fetchone()
            ms = max(source.updated_ms, int(now * 1000))
            cursor = conn.execute(
                "INSERT INTO sessions (id, next_id, gen, kept, bytes, created_ms, updated_ms, "
                "expires_at, owner, title, forked_from, metadata) "
                "SELECT ?, ?, gen + 1, ?, ?, ?, ?, expires_at, owner, coalesce(?, title), ?, "
                "metadata FROM sessions WHERE sid = ?",
                (new_id, last + 1, kept, int(size), ms, ms, title, source_id, source.sid),
            )
            sid = cursor.lastrowid
            assert sid is not None
            self._adopt_aborts(conn, new_id, sid, now)
            # The records as stored: ids, times and compression are kept.
            conn.execute(
                "INSERT INTO messages (sid, seq, record) "
                "SELECT ?, seq, record FROM messages WHERE sid = ? AND seq <= ?",
                (sid, source.sid, last),
            )
            info = self._info(conn, new_id, None, now)
        assert info is not None
        return info

    def delete_owner(self, owner: str) -> int:
        with self._writing() as conn:
            now = self._now()
            found = conn.execute(
                "SELECT sid, expires_at FROM sessions WHERE owner = ?", (owner,)
            ).fetchall()
            self._erase(conn, [sid for sid, _ in found])
            conn.execute("DELETE FROM listings WHERE owner = ?", (owner,))
        return sum(1 for _, expires_at in found if expires_at is None or expires_at > now)
