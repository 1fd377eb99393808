"""The redis-py error table: complete, and what each failure becomes for each operation."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rexc

from promptkit_async import (
    CommitOutcomeUnknown,
    CorruptHistory,
    Message,
    PromptKitError,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from promptkit_async.stores._redis._errors import (
    REDIS_ERRORS,
    Failure,
    classify,
    mapped_errors,
    store_error,
)


def _redis_exception_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(rexc, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.startswith("redis")
    ]


def test_every_redis_py_exception_class_is_in_the_table() -> None:
    # As httpx checks every httpcore exception: a class redis-py adds fails here
    # until someone decides what it means for the store.
    missing = [cls.__name__ for cls in _redis_exception_classes() if cls not in REDIS_ERRORS]
    assert missing == []


@pytest.mark.parametrize("cls", _redis_exception_classes(), ids=lambda c: c.__name__)
def test_no_redis_error_escapes_unmapped(cls: type[BaseException]) -> None:
    # Redirections carry "<slot> <host>:<port>", as the server sends them.
    message = "3999 127.0.0.1:6381" if issubclass(cls, rexc.AskError) else "some failure"
    exc = cls(message)
    assert classify(exc) is not None
    with pytest.raises(PromptKitError) as info, mapped_errors("s", "testing"):
        raise exc
    assert info.value.__cause__ is exc


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (
            rexc.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
            Failure.UNREACHABLE,
        ),
        (rexc.ConnectionError("No connection available."), Failure.UNREACHABLE),
        (rexc.MaxConnectionsError("Too many connections"), Failure.UNREACHABLE),
        (rexc.ConnectionError("Connection closed by server."), Failure.LOST),
        (rexc.TimeoutError("Timeout reading from socket"), Failure.LOST),
        (asyncio.TimeoutError(), Failure.LOST),
        (ConnectionResetError(), Failure.LOST),
        (ConnectionRefusedError(), Failure.UNREACHABLE),
        (rexc.InvalidResponse("Protocol error"), Failure.PROTOCOL),
        (rexc.BusyLoadingError("Redis is loading"), Failure.BUSY),
        (rexc.ResponseError("BUSY Redis is busy running a script"), Failure.BUSY),
        (rexc.ResponseError("LOADING Redis is loading the dataset"), Failure.BUSY),
        (rexc.ReadOnlyError("You can't write against a read only replica."), Failure.BUSY),
        (rexc.TryAgainError("Multiple keys request during rehashing"), Failure.BUSY),
        (rexc.ClusterDownError("The cluster is down"), Failure.BUSY),
        (rexc.ResponseError("WRONGTYPE Operation against a key"), Failure.WRONG_TYPE),
        (
            rexc.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            Failure.REFUSED,
        ),
        (rexc.NoPermissionError("this user has no permissions"), Failure.REFUSED),
        (rexc.ResponseError("ERR Error running script"), Failure.REFUSED),
        (rexc.DataError("Invalid input of type"), Failure.USAGE),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"), Failure.UNDECODABLE),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, BaseException) else x.name,
)
def test_what_each_failure_means(exc: BaseException, failure: Failure) -> None:
    assert classify(exc) is failure


def test_errors_that_are_not_redis_failures_pass_through() -> None:
    assert classify(ValueError("a bug of ours")) is None
    assert classify(AttributeError("'NoneType' object has no attribute 'x'")) is None
    with pytest.raises(KeyError), mapped_errors("s", "testing"):
        raise KeyError("ours")


def test_one_failure_is_one_error_class_everywhere() -> None:
    # The same redis-py error means the same thing in every operation.
    for action in ("loading", "deleting", "listing sessions", "reading metrics"):
        refused = store_error(Failure.REFUSED, rexc.ResponseError("ERR nope"), "s", action)
        assert type(refused) is StoreRejected
        down = store_error(Failure.LOST, rexc.ConnectionError("gone"), "s", action)
        assert type(down) is StoreUnavailable
        busy = store_error(Failure.BUSY, rexc.ReadOnlyError("READONLY"), None, action)
        assert type(busy) is StoreUnavailable
    wrong = store_error(Failure.WRONG_TYPE, rexc.ResponseError("WRONGTYPE x"), "s", "loading")
    assert type(wrong) is CorruptHistory
    assert type(store_error(Failure.USAGE, rexc.DataError("x"), None, "x")) is StoreError


def test_maybe_stored_is_not_not_stored() -> None:
    unknown = CommitOutcomeUnknown("lost", session_id="s", turn_id="t", unsaved=[Message.user("x")])
    assert not isinstance(unknown, StoreUnavailable)
    assert isinstance(unknown, StoreError)
    assert (unknown.session_id, unknown.turn_id, unknown.unsaved) == (
        "s",
        "t",
        (Message.user("x"),),
    )


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the TypeError is a 3.12+ asyncio trait")
async def test_sending_on_a_transport_torn_down_under_us_is_a_lost_connection(
    redis_url: str,
) -> None:
    # What redis-py's Cluster client does during a slot migration: another task
    # closes the connection while this one sends on it.
    conn = aioredis.Connection(**aioredis.ConnectionPool.from_url(redis_url).connection_kwargs)
    await conn.connect()  # type: ignore[no-untyped-call]
    assert conn._writer is not None
    writer = conn._writer
    writer.transport.abort()
    await asyncio.sleep(0)
    conn._writer = writer  # as if the teardown raced this send
    try:
        await conn.send_packed_command(b"*1\r\n$4\r\nPING\r\n", check_health=False)
    except (TypeError, AttributeError) as exc:
        assert classify(exc) is Failure.LOST
    except OSError:  # pragma: no cover - an asyncio that reports it properly
        pytest.skip("this asyncio raises an OSError here, which needs no special case")
    finally:
        await conn.disconnect()


def test_a_type_error_of_ours_is_not_a_connection_failure() -> None:
    try:
        len(None)  # type: ignore[arg-type]
    except TypeError as exc:
        assert classify(exc) is None
