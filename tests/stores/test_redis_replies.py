"""Every store operation against a peer that answers with the wrong shapes.

A loopback RESP server (tests/resp_server.py) answers each command with a
scripted reply: an integer, nil, an empty array, ``+OK``, an array of nils...
Whatever it sends, the store raises only its own typed errors; it reports
"saved" only when the commit script said so, and "not saved" only when that
is certain: a commit whose reply cannot be trusted is settled by turn id, and
is CommitOutcomeUnknown when that cannot be done either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    CommitOutcomeUnknown,
    PromptKitError,
    RedisStore,
    StoreProtocolError,
    StoreUnavailable,
)

from ..resp_server import RespServer
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable

#: Replies of the wrong shape for (nearly) every command the store sends.
WRONG = {
    "integer": b":5\r\n",
    "nil": b"$-1\r\n",
    "empty array": b"*0\r\n",
    "ok": b"+OK\r\n",
    "array of nils": b"*2\r\n$-1\r\n$-1\r\n",
    "one integer in an array": b"*1\r\n:1\r\n",
    "text": b"$3\r\nabc\r\n",
    "unknown status": b"*2\r\n:7\r\n$0\r\n",
    "three integers": b"*3\r\n:1\r\n:1\r\n:1\r\n",
    "nested arrays": b"*2\r\n*0\r\n*0\r\n",
}

Operation = Callable[[RedisStore], "Awaitable[object]"]


def _sessions(store: RedisStore) -> Awaitable[object]:
    async def listing() -> object:
        return [s async for s in store.sessions("")]

    return listing()


OPERATIONS: dict[str, Operation] = {
    "load": lambda s: s.load("s"),
    "load a window": lambda s: s.load("s", limit=20),
    "cached load": lambda s: s.load("s", limit=20),
    "commit": lambda s: s.append("s", [u("q"), a("r")], turn_id="t1"),
    "settle": lambda s: s.settle_turn("s", "t1"),
    "turn status": lambda s: s.turn_status("s", "t1"),
    "delete": lambda s: s.delete("s"),
    "ttl": lambda s: s.ttl("s"),
    "exists": lambda s: s.exists("s"),
    "sessions": _sessions,
    "metrics": lambda s: s.metrics(),
    "lease": lambda s: s.acquire_lease("s", timeout=0.5),
    "ping": lambda s: s.ping(),
}

#: Replies that are a legitimate answer for an operation (not wrong for it).
LEGITIMATE = {
    ("load", "empty array"),
    ("load a window", "empty array"),
    ("ttl", "integer"),
    ("delete", "integer"),
    ("exists", "one integer in an array"),  # never sent: EXISTS answers an integer
}


@pytest.fixture
async def peer() -> AsyncIterator[RespServer]:
    async with RespServer() as server:
        yield server


def _answer_everything_with(server: RespServer, reply: bytes) -> None:
    for command in ("LRANGE", "EVALSHA", "EVAL", "PTTL", "EXISTS", "SCAN", "PING", "MEMORY"):
        server.replies[command] = reply


@pytest.mark.parametrize("shape", list(WRONG))
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_wrong_replies_are_typed_errors_never_false_outcomes(
    peer: RespServer, operation: str, shape: str
) -> None:
    _answer_everything_with(peer, WRONG[shape])
    async with RedisStore.from_url(
        peer.url,
        socket_timeout=2,
        retries=0,
        client_options={"protocol": 2},
        near_cache=10 if operation == "cached load" else 0,
    ) as store:
        try:
            result = await OPERATIONS[operation](store)
        except CommitOutcomeUnknown as exc:
            assert operation == "commit"
            assert exc.turn_id == "t1"
        except StoreUnavailable as exc:
            # "Not saved" would be a lie: the commit was sent and no reply can be trusted.
            assert operation != "commit", exc
        except PromptKitError:
            pass
        else:
            # Returning normally is only right where the reply is a real answer;
            # for a commit it would claim "saved" on the word of a broken reply.
            assert (operation, shape) in LEGITIMATE, (operation, shape, result)


@pytest.mark.parametrize("shape", list(WRONG))
async def test_a_commit_whose_reply_is_wrong_is_settled_by_turn_id(
    peer: RespServer, shape: str
) -> None:
    sha_of: dict[bytes, bytes] = {}

    def script(command: list[bytes]) -> bytes:
        # The commit's reply is garbled; the settling script answers for real.
        keys = int(command[2])
        turn_id = command[3 + keys]
        sha_of.setdefault(command[1], turn_id)
        if command[1] == next(iter(sha_of)):
            return WRONG[shape]
        return settled

    peer.replies["EVALSHA"] = script
    async with RedisStore.from_url(
        peer.url, socket_timeout=2, retries=0, client_options={"protocol": 2}
    ) as store:
        settled = b":1\r\n"  # it was applied: saved, without an error
        await store.append("s", [u("q")], turn_id="t1")
        sha_of.clear()
        settled = b":-1\r\n"  # it was not (and now never will be): certainly not saved
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s", [u("q")], turn_id="t2")
        assert not isinstance(info.value, CommitOutcomeUnknown)
        assert info.value.unsaved == (u("q"),)


async def test_a_corrupted_commit_reply_is_not_reported_not_saved(peer: RespServer) -> None:
    # A reply redis-py cannot parse at all (a protocol error) after the commit was sent.
    peer.replies["EVALSHA"] = b"*2\r\n:1\r\n?garbage\r\n"
    async with RedisStore.from_url(
        peer.url, socket_timeout=2, retries=0, client_options={"protocol": 2}
    ) as store:
        with pytest.raises((CommitOutcomeUnknown, StoreProtocolError)) as info:
            await store.append("s", [u("q")], turn_id="t1")
        assert not isinstance(info.value, StoreUnavailable)
