"""What an ``sqlite3`` error means for the store: read in one place, never let out raw.

SQLite's result code says what happened; ``sqlite3`` gives it as
``sqlite_errorcode`` on Python 3.11+, and only in the message before, so both
are read here. Every failure maps to one of the library's errors, each naming
the database's path:

- the file is busy (another connection held the write lock for the whole
  ``busy_timeout``), cannot be opened or read (I/O): :class:`StoreUnavailable`,
  nothing was written, retrying later is safe;
- the file refuses (corrupt, not a database, read-only, disk full, too big):
  :class:`StoreRejected`, nothing was written, retrying will not help.

A failed write never leaves anything behind: every write is one transaction,
rolled back on any error before its ``COMMIT``.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Final

from ..._exceptions import StoreError, StoreRejected, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..._messages import Message

__all__ = ["is_busy", "store_error"]

# SQLite's primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _IOERR, _CANTOPEN, _PROTOCOL, _NOLFS = 5, 6, 10, 14, 15, 22
_INTERRUPT = 9
_UNAVAILABLE: Final = frozenset((_BUSY, _LOCKED, _IOERR, _CANTOPEN, _PROTOCOL, _NOLFS, _INTERRUPT))
_CORRUPT, _NOTADB = 11, 26
#: Python < 3.11 gives no code: the messages SQLite writes for the codes above.
_TEXTS: Final = (
    ("database is locked", _BUSY),
    ("database table is locked", _LOCKED),
    ("disk i/o error", _IOERR),
    ("unable to open database", _CANTOPEN),
    ("locking protocol", _PROTOCOL),
    ("interrupted", _INTERRUPT),
    ("malformed", _CORRUPT),
    ("file is not a database", _NOTADB),
    ("readonly database", 8),  # SQLITE_READONLY
    ("database or disk is full", 13),  # SQLITE_FULL
)


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()
    for fragment, known in _TEXTS:
        if fragment in text:
            return known
    return None


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another connection holds the lock (waiting more may help)."""
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in (_BUSY, _LOCKED)


def store_error(
    exc: sqlite3.Error,
    path: str,
    doing: str,
    *,
    busy_timeout: float,
    session_id: str | None = None,
    unsaved: Sequence[Message] = (),
) -> StoreError:
    """The library's error for ``exc``, raised while ``doing`` (for the message)."""
    code = _code(exc)
    what = f"{doing}: SQLite database {path!r}"
    if code in (_BUSY, _LOCKED):
        return StoreUnavailable(
            f"{what} is busy: another connection held its lock for the whole "
            f"busy_timeout ({busy_timeout:g} s); nothing was written ({exc})",
            session_id=session_id,
            unsaved=unsaved,
        )
    if code in (_CORRUPT, _NOTADB):
        return StoreRejected(
            f"{what} is corrupt or not a database ({exc})",
            session_id=session_id,
            unsaved=unsaved,
        )
    if code in _UNAVAILABLE or (code is None and isinstance(exc, sqlite3.OperationalError)):
        return StoreUnavailable(
            f"{what} could not be used ({exc})", session_id=session_id, unsaved=unsaved
        )
    return StoreRejected(f"{what} refused it ({exc})", session_id=session_id, unsaved=unsaved)
