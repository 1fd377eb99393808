"""What a redis-py error means for the store: one table, read in one place.

Every exception class redis-py defines is listed in :data:`REDIS_ERRORS` with
what it tells the store about the command that raised it (a test checks that
none is missing, so a new redis-py exception fails the suite instead of
escaping). Server errors arrive as ``ResponseError`` subclasses or as a plain
``ResponseError`` whose first word is the server's error code; the codes that
matter are in :data:`RESPONSE_CODES`. The few facts redis-py gives only in
text are read here and nowhere else:

- a connection that could not be made at all (refused, no route) is told
  apart from one that broke mid-command by redis-py's message
  ("Error ... connecting to ...") or a ``ConnectionRefusedError`` cause;
- the blocking pool's timeout is a ``ConnectionError("No connection available")``;
- Sentinel's "no primary found" is a ``ConnectionError`` subclass of
  ``redis.asyncio.sentinel`` (nothing was sent), and a demoted primary's
  ``READONLY`` reply is turned by redis-py into ``ConnectionError("The previous
  master is now a slave")`` (nothing was written): both are
  ``Failure.UNREACHABLE``, so the store tries again on the new primary;
- redis-py's own teardown of a connection while another task sends on it
  surfaces as an ``AttributeError`` raised inside redis-py (seen with 8.1's
  Cluster client during slot migrations), or on Python 3.12+ as a
  ``TypeError`` or ``AttributeError`` from asyncio's ``writelines`` on the
  closed transport: a broken connection, told apart from a bug of ours by
  where it was raised (inside redis-py, or in asyncio's transport under it).

Each operation then turns a :class:`Failure` into one of our errors:
:func:`store_error` for everything but commits, whose outcome rules live in
``_commit.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from typing import TYPE_CHECKING, Final

from redis import exceptions as rexc

from ..._exceptions import (
    CorruptHistory,
    StoreError,
    StoreProtocolError,
    StoreRejected,
    StoreUnavailable,
)
from ._replies import BadReply

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "REDIS_ERRORS",
    "RESPONSE_CODES",
    "Failure",
    "classify",
    "mapped_errors",
    "pool_exhausted",
    "store_error",
]


class Failure(enum.Enum):
    """What a failed Redis command tells about its effect."""

    #: No connection was had: the command was never sent, nothing ran.
    UNREACHABLE = "unreachable"
    #: The connection broke or timed out after sending: it may have run.
    LOST = "lost"
    #: The reply could not be read, or had the wrong shape: it may have run.
    PROTOCOL = "protocol"
    #: The server cannot run commands now (loading, busy script, failover,
    #: Cluster resharding or down): nothing ran; try again later.
    BUSY = "busy"
    #: The server refused the command (out of memory, ACL, script error): nothing ran.
    REFUSED = "refused"
    #: A key holds another Redis type than the command expects: nothing ran.
    WRONG_TYPE = "wrong type"
    #: A text client (decode_responses=True) met stored bytes that are not UTF-8.
    UNDECODABLE = "undecodable"
    #: redis-py refused how it was called, or a feature we never use failed.
    USAGE = "usage"


#: Every exception class of ``redis.exceptions``, by name, most specific first.
#: Names a given redis-py release lacks (the table covers 6.0 to 8.x) are
#: skipped; a test checks that every class the installed one has is here.
_BY_NAME: Final = (
    # Connections: ConnectionError is refined by _connection_failure().
    ("MaxConnectionsError", Failure.UNREACHABLE),
    ("AuthenticationError", Failure.UNREACHABLE),
    ("AuthorizationError", Failure.UNREACHABLE),
    ("ExternalAuthProviderError", Failure.UNREACHABLE),
    ("BusyLoadingError", Failure.BUSY),
    ("ConnectionError", Failure.LOST),
    ("TimeoutError", Failure.LOST),
    ("InvalidResponse", Failure.PROTOCOL),
    # Server states that pass: nothing ran.
    ("MasterDownError", Failure.BUSY),
    ("ClusterDownError", Failure.BUSY),
    ("TryAgainError", Failure.BUSY),
    ("ReadOnlyError", Failure.BUSY),
    ("MovedError", Failure.BUSY),
    ("AskError", Failure.BUSY),
    ("ClusterError", Failure.BUSY),
    ("SlotNotCoveredError", Failure.BUSY),
    ("RedisClusterException", Failure.BUSY),
    # Refusals: nothing ran.
    ("OutOfMemoryError", Failure.REFUSED),
    ("NoPermissionError", Failure.REFUSED),
    ("NoScriptError", Failure.REFUSED),
    ("ExecAbortError", Failure.REFUSED),
    ("ClusterCrossSlotError", Failure.REFUSED),
    ("CrossSlotTransactionError", Failure.REFUSED),
    ("ModuleError", Failure.REFUSED),
    ("NoSuchFieldsetError", Failure.REFUSED),
    ("AuthenticationWrongNumberOfArgsError", Failure.REFUSED),
    ("ResponseError", Failure.REFUSED),  # refined by RESPONSE_CODES
    # Usage, and redis-py features the store does not use.
    ("DataError", Failure.USAGE),
    ("WatchError", Failure.USAGE),
    ("PubSubError", Failure.USAGE),
    ("LockNotOwnedError", Failure.USAGE),
    ("LockError", Failure.USAGE),
    ("InvalidPipelineStack", Failure.USAGE),
    ("IncorrectPolicyType", Failure.USAGE),
    ("ChildDeadlockedError", Failure.USAGE),
    ("RedisError", Failure.USAGE),
)
REDIS_ERRORS: Final[Mapping[type[BaseException], Failure]] = {
    getattr(rexc, name): failure for name, failure in _BY_NAME if hasattr(rexc, name)
}

#: Server error codes (the first word of an error reply) that a plain
#: ResponseError may carry, and what they mean.
RESPONSE_CODES: Final[Mapping[str, Failure]] = {
    "WRONGTYPE": Failure.WRONG_TYPE,
    "BUSY": Failure.BUSY,
    "LOADING": Failure.BUSY,
    "MASTERDOWN": Failure.BUSY,
    "READONLY": Failure.BUSY,
    "TRYAGAIN": Failure.BUSY,
    "CLUSTERDOWN": Failure.BUSY,
    "OOM": Failure.REFUSED,
    "NOPERM": Failure.REFUSED,
}


#: Sentinel: no server to connect to was found (nothing sent), and redis-py's
#: text for the READONLY reply of a demoted primary (refused, nothing written;
#: the connection is closed, and the next one goes to the new primary).
_NO_SENTINEL_TARGET: Final = ("MasterNotFoundError", "SlaveNotFoundError")
_DEMOTED: Final = "The previous master is now a slave"


def pool_exhausted(exc: BaseException) -> bool:
    """No connection could be taken from the pool: the command was never sent."""
    return type(exc).__name__ == "MaxConnectionsError" or (
        isinstance(exc, rexc.ConnectionError) and str(exc).startswith("No connection available")
    )


def _connection_failure(exc: rexc.ConnectionError) -> Failure:
    if pool_exhausted(exc):
        return Failure.UNREACHABLE
    if type(exc).__name__ in _NO_SENTINEL_TARGET or str(exc) == _DEMOTED:
        return Failure.UNREACHABLE
    if "connecting to" in str(exc) or isinstance(exc.__context__, ConnectionRefusedError):
        return Failure.UNREACHABLE
    return Failure.LOST


def _torn_down(exc: BaseException) -> bool:
    """A connection redis-py tore down while this call was using it (see the module doc)."""
    if not isinstance(exc, (AttributeError, TypeError)):
        return False
    files = []
    tb = exc.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if not files:
        return False
    in_redis = f"{os.sep}redis{os.sep}"
    if isinstance(exc, AttributeError) and in_redis in files[-1]:
        return True
    asyncio_transport = files[-1].endswith(
        (f"asyncio{os.sep}selector_events.py", f"asyncio{os.sep}streams.py")
    )
    return asyncio_transport and any(in_redis in f for f in files)


def _parsing_a_reply(exc: BaseException) -> bool:
    """redis-py's own reply parsing failed on a reply of another shape than it expects.

    Its response callbacks (``float(reply)`` for ZSCORE, ``cursor, keys = reply``
    for SCAN) raise plain ValueError, TypeError or IndexError from inside redis-py.
    """
    if not isinstance(exc, (ValueError, TypeError, IndexError, KeyError)):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and f"{os.sep}redis{os.sep}" in last


def classify(exc: BaseException) -> Failure | None:
    """What ``exc`` says about the command, or None if it is not a Redis failure."""
    for cls in type(exc).__mro__:
        failure = REDIS_ERRORS.get(cls)
        if failure is not None:
            if failure is Failure.LOST and isinstance(exc, rexc.ConnectionError):
                return _connection_failure(exc)
            if type(exc) is rexc.ResponseError:
                code = str(exc).split(" ", 1)[0]
                return RESPONSE_CODES.get(code, Failure.REFUSED)
            return failure
    if isinstance(exc, BadReply):
        return Failure.PROTOCOL
    if isinstance(exc, UnicodeDecodeError):
        return Failure.UNDECODABLE
    if isinstance(exc, (OSError, asyncio.TimeoutError)):  # raw socket errors, wait_for timeouts
        if isinstance(exc, ConnectionRefusedError):
            return Failure.UNREACHABLE
        return Failure.LOST
    if _torn_down(exc):
        return Failure.LOST
    if _parsing_a_reply(exc):
        return Failure.PROTOCOL
    return None


def store_error(
    failure: Failure, exc: BaseException, session_id: str | None, action: str
) -> StoreError:
    """Our error for a failed read or administrative command (commits: see _commit.py)."""
    name = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (AttributeError, TypeError)):  # a torn-down connection (see classify)
        return StoreUnavailable(
            f"Redis connection broke while {action}: {name}", session_id=session_id
        )
    if failure in (Failure.UNREACHABLE, Failure.LOST, Failure.BUSY):
        return StoreUnavailable(f"Redis unavailable while {action}: {name}", session_id=session_id)
    if failure is Failure.PROTOCOL:
        return StoreProtocolError(
            f"Redis answered {action} with a reply of the wrong shape ({name})",
            session_id=session_id,
        )
    if failure is Failure.WRONG_TYPE and session_id is not None:
        return CorruptHistory(
            f"session {session_id!r}: the Redis key has the wrong type ({exc})",
            session_id=session_id,
        )
    if failure is Failure.UNDECODABLE:
        message = (
            f"Redis returned bytes that are not UTF-8 text while {action} ({exc}); "
            "a client with decode_responses=True cannot read compressed records"
        )
        if session_id is not None:
            return CorruptHistory(message, session_id=session_id)
        return StoreError(message)
    if failure in (Failure.REFUSED, Failure.WRONG_TYPE):
        return StoreRejected(f"Redis refused {action}: {exc}", session_id=session_id)
    return StoreError(f"Redis error while {action}: {name}")


@contextlib.contextmanager
def mapped_errors(session_id: str | None, action: str) -> Iterator[None]:
    """Map every Redis failure raised inside to our error, ``from`` the original."""
    try:
        yield
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        raise store_error(failure, exc, session_id, action) from exc
