"""The file's schema, and opening a file as ours: created, checked, or refused.

A database is ours when its header's ``application_id`` is :data:`APPLICATION_ID`;
its ``user_version`` is the schema version. A new (empty) file is given the
schema in one write transaction, so that two processes opening it at once
create it once. Any other file is refused before anything is written to it: a
file that is not a database, one of another application, one of a schema
newer than this library reads.

Tables (session ids are keyed once, in ``sessions``; the others use its
integer ``sid``, which keeps their rows and keys small):

- ``sessions``: one row per conversation: the next message number, the
  generation (the ``~<n>`` of ids after a rewind), how many messages it keeps
  and their bytes (so metrics never read messages), its times in ms, its
  expiry on the store's clock, the conversation's info, and the last applied
  turn (what a re-sent commit of it answers with).
- ``messages``: one row per kept message: its number and the encoded record,
  header included, exactly as the Redis store keeps it (see ``_codec``).
  Numbers count up without gaps within what a session keeps, so a message is
  found by its id in one key lookup.
- ``turns``: the recent turn ids of each session, applied or aborted, numbered
  so that only the newest are kept.
- ``aborts``: turn ids settled as aborted on a session that did not exist
  yet, for an hour (moved into ``turns`` if the session is created), so that
  an aborted turn never applies afterwards, whoever re-sends it.
- ``listings``: the snapshots behind a conversation listing's later pages, in
  the file so that any process can serve the next page.
- ``summaries`` (schema 2): a conversation's rolling summary, one row per
  session, with the id and number of the newest message it covers. A file of
  schema 1 is given the table when it is first opened by this version.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from ..._exceptions import StoreRejected
from ._errors import is_busy

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "open_database"]

#: ``PRAGMA application_id`` of our files: "pkas" (promptkit_async, store).
APPLICATION_ID: Final = 0x706B6173
#: ``PRAGMA user_version``: the schema this library writes and reads.
SCHEMA_VERSION: Final = 2

#: Schema 2's addition (what a file of schema 1 is given).
_SUMMARIES: Final = (
    """CREATE TABLE summaries (
        sid INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        upto TEXT NOT NULL,
        upto_seq INTEGER NOT NULL,
        covered INTEGER NOT NULL,
        version TEXT NOT NULL,
        written_ms INTEGER NOT NULL
    )""",
)
#: What brings a file of each older schema to the next one.
_MIGRATIONS: Final = {1: _SUMMARIES}

_TABLES: Final = (
    """CREATE TABLE sessions (
        sid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        next_id INTEGER NOT NULL DEFAULT 0,
        gen INTEGER NOT NULL DEFAULT 0,
        kept INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL DEFAULT 0,
        expires_at REAL,
        owner TEXT,
        title TEXT,
        forked_from TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        turn_count INTEGER NOT NULL DEFAULT 0,
        last_turn TEXT,
        last_first INTEGER NOT NULL DEFAULT 0,
        last_gen INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX sessions_by_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE INDEX sessions_by_owner ON sessions (owner, updated_ms DESC, id DESC)
        WHERE owner IS NOT NULL""",
    """CREATE TABLE messages (
        sid INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (sid, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE turns (
        sid INTEGER NOT NULL,
        turn_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        applied INTEGER NOT NULL,
        PRIMARY KEY (sid, turn_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE aborts (
        id TEXT NOT NULL,
        turn_id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (id, turn_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE listings (
        token TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        ids TEXT NOT NULL,
        expires_at REAL NOT NULL
    )""",
    *_SUMMARIES,
)


def _identity(conn: sqlite3.Connection) -> tuple[int, int, list[str]]:
    """The file's application id, schema version and table names, as of one moment.

    Read in one transaction when the caller holds none: three autocommit reads
    could straddle another process's schema creation and see its tables
    without its application id, refusing a file that is ours.
    """
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name"
            )
        ]
    finally:
        if own and conn.in_transaction:
            conn.execute("COMMIT")
    return int(app), int(version), tables


def _check(path: str, app: int, version: int, tables: list[str]) -> bool:
    """True if the file is ours at our schema, False if it is new (empty); else refused."""
    if app == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreRejected(
                f"SQLite database {path!r} has schema version {version}, newer than this "
                f"promptkit_async reads ({SCHEMA_VERSION}): upgrade promptkit_async to open it"
            )
        if version < 1 or "sessions" not in tables:
            raise StoreRejected(
                f"SQLite database {path!r} is marked as promptkit_async's but has an unknown "
                f"schema (version {version}, tables {', '.join(tables) or 'none'})"
            )
        return True
    if app == 0 and not tables and version == 0:
        return False
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreRejected(
        f"{path!r} is an SQLite database of another application (application_id "
        f"{app:#x}, tables: {shown or 'none'}), not a promptkit_async store: "
        "give the store a file of its own"
    )


def _into_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL, waiting up to ``busy_timeout`` for other readers.

    Leaving the rollback journal needs the file to itself, and SQLite answers
    "locked" at once, without its busy handler, while another connection
    reads it (as one opening the same new file does): so wait here.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file of an older schema of ours to this one, in one write transaction."""
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])  # another may have
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def open_database(path: str, *, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, with our schema (created if the file is new).

    Raises:
        StoreRejected: the file is not ours (another application's, a newer schema).
        sqlite3.Error: anything else (not a database, busy, unreadable): the
            caller maps it, naming the path.
    """
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=True)
    try:
        ours = _check(path, *_identity(conn))
        if not ours:
            # Empty, so ours to take: WAL first (it cannot change inside a
            # transaction), then the schema, checked again under the write lock
            # in case another process created it meanwhile.
            _into_wal(conn, busy_timeout)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not _check(path, *_identity(conn)):
                    for statement in _TABLES:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        _into_wal(conn, busy_timeout)
        _migrate(conn)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn
