"""A session's rolling summary in the file: the ``summaries`` table, one row per session.

Each function is one transaction on the worker thread, like the rest of
:class:`Database`. A summary is valid while its ``upto`` message is still kept
with that id, or has been dropped by retention (its number is below every kept
one): a rewind before it voids it, and reads stop returning it. The write is a
compare-and-set under the file's write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._codec import time_of
from ..._summary import Summary

if TYPE_CHECKING:
    import sqlite3

    from ..._messages import Message
    from ._db import Database

__all__ = ["load_summarized", "read_summary", "write_summary"]

_ROW = "SELECT text, upto, upto_seq, covered, version, written_ms FROM summaries WHERE sid = ?"


def _valid(db: Database, conn: sqlite3.Connection, sid: int) -> Summary | None:
    found = conn.execute(_ROW, (sid,)).fetchone()
    if found is None:
        return None
    text, upto, upto_seq, covered, version, written_ms = found
    next_id, kept = conn.execute(
        "SELECT next_id, kept FROM sessions WHERE sid = ?", (sid,)
    ).fetchone()
    if upto_seq >= next_id - kept and db._position(conn, sid, upto) is None:
        return None  # rewound (or forked) before the message it covers
    return Summary(
        text=text,
        upto=upto,
        covered=int(covered),
        version=version,
        updated_at=time_of(int(written_ms)),
    )


def load_summarized(
    db: Database, session_id: str, longest: int | None
) -> tuple[list[Message], Summary | None]:
    now = db._now()
    rows: list[tuple[int, object]] = []
    summary = None
    with db._reading() as conn:
        sid = db._live_sid(conn, session_id, now)
        if sid is not None and sid >= 0:
            summary = _valid(db, conn, sid)
            start = -1 if summary is None else summary.upto_number + 1
            rows = conn.execute(
                "SELECT seq, record FROM messages WHERE sid = ? AND seq >= ? "
                "ORDER BY seq DESC LIMIT ?",
                (sid, start, -1 if longest is None else longest),
            ).fetchall()
    if sid == -1:
        db._sweep_quietly(now)
    rows.reverse()
    return db._decode(session_id, rows, None), summary


def read_summary(db: Database, session_id: str) -> Summary | None:
    now = db._now()
    with db._reading() as conn:
        sid = db._live_sid(conn, session_id, now)
        return _valid(db, conn, sid) if sid is not None and sid >= 0 else None


def write_summary(db: Database, session_id: str, summary: Summary, previous: str | None) -> bool:
    now = db._now()
    with db._writing() as conn:
        row = db._session(conn, session_id, now)
        if row is None:
            return False
        current = _valid(db, conn, row.sid)
        if (None if current is None else current.version) != previous:
            return False
        if db._position(conn, row.sid, summary.upto) is None:
            return False
        if current is not None and summary.upto_number <= current.upto_number:
            return False
        conn.execute(
            "INSERT OR REPLACE INTO summaries "
            "(sid, text, upto, upto_seq, covered, version, written_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.sid,
                summary.text,
                summary.upto,
                summary.upto_number,
                summary.covered,
                summary.version,
                int(now * 1000),
            ),
        )
    return True
