"""Replica-acknowledged commits: the commit script and WAIT in one round trip, on one connection.

Redis replicates asynchronously: a commit that the primary applied can be lost
if the primary dies before a replica has it. ``WAIT numreplicas timeout``
blocks until that many replicas acknowledged the replication offset of the
*connection's* last write, or the timeout passes, and answers how many did.
Because the offset is per connection, WAIT is pipelined behind the commit
script on the connection that sent it (on a Cluster: a connection to the
primary of the session's slot, the node that ran it), and both replies are
read in the same round trip.

A commit that did not write on this connection (a re-sent copy that found
its turn already applied, or a turn settled by id after a lost reply) has no
offset of its own to wait for: a fresh connection's would be 0, which every
replica has acknowledged. Such a commit is confirmed by a probe instead: one
PUBLISH (a write that replicates, and touches no key) and a WAIT on its
connection, which covers everything the primary holds, the turn included.

What each answer means for the caller is decided here, in
:meth:`ReplicaWait.confirm`: enough acknowledgements, the commit returns;
fewer, ``CommitNotReplicated`` (the turn is stored on the primary, exactly
once, and may be lost on a failover).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from ..._exceptions import CommitNotReplicated
from . import _keys
from ._errors import classify

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio.cluster import ClusterNode

    from ..._messages import Message
    from .._contract import Turn
    from ._link import Link
    from ._scripts import Script

__all__ = ["DEFAULT_REPLICA_TIMEOUT", "ReplicaWait", "check_replica_options"]

#: Seconds a commit waits for its replicas by default (with ``min_replicas`` set).
DEFAULT_REPLICA_TIMEOUT: Final = 1.0
#: Redirections (MOVED, ASK) a Cluster commit follows before giving up.
_REDIRECTS: Final = 5

# The commit script's statuses that mean "the turn is applied" (see _commit.py).
_APPLIED, _ALREADY_APPLIED = 1, 0


def check_replica_options(min_replicas: object, replica_timeout: object) -> ReplicaWait | None:
    """The replica wait the options ask for (None: off), validated.

    Raises:
        TypeError: ``min_replicas`` is not an int, or ``replica_timeout`` not a number.
        ValueError: ``min_replicas`` below 0, or ``replica_timeout`` not above 0.
    """
    if isinstance(min_replicas, bool) or not isinstance(min_replicas, int):
        raise TypeError(f"min_replicas must be an int (0: off), got {min_replicas!r}")
    if min_replicas < 0:
        raise ValueError(f"min_replicas must be >= 0 (0: off), got {min_replicas}")
    if isinstance(replica_timeout, bool) or not isinstance(replica_timeout, (int, float)):
        raise TypeError(f"replica_timeout must be a number of seconds, got {replica_timeout!r}")
    if not (0 < replica_timeout < 1e9) or math.isnan(replica_timeout):
        raise ValueError(f"replica_timeout must be > 0 seconds, got {replica_timeout!r}")
    if min_replicas == 0:
        return None
    return ReplicaWait(min_replicas, float(replica_timeout))


class ReplicaWait:
    """How many replicas must acknowledge a commit, and for how long it waits for them."""

    __slots__ = ("required", "timeout", "timeout_ms")

    def __init__(self, required: int, timeout: float) -> None:
        self.required = required
        self.timeout = timeout
        # WAIT 0 would wait forever: never less than 1 ms.
        self.timeout_ms = max(1, math.ceil(timeout * 1000))

    def __repr__(self) -> str:
        return f"ReplicaWait(required={self.required}, timeout={self.timeout:g})"

    def _wait(self) -> tuple[Any, ...]:
        return ("WAIT", self.required, self.timeout_ms)

    async def commit(
        self, link: Link, script: Script, keys: Sequence[bytes], args: Sequence[Any]
    ) -> tuple[Any, int | BaseException]:
        """Run ``script`` and WAIT on one connection: the script's reply, and how many
        replicas acknowledged (or why that is unknown: the WAIT reply's error).

        Raises:
            Exception: whatever the script raised (an error reply, a broken
                connection), as the store's error table reads it.
        """
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        reply, acked = await self._pipelined(link, keys[0], call)
        if isinstance(reply, rexc.NoScriptError):
            call = ("EVAL", script.source, len(keys), *keys, *args)
            reply, acked = await self._pipelined(link, keys[0], call)
        if isinstance(reply, BaseException):
            raise reply
        return reply, acked

    async def confirm(
        self,
        link: Link,
        turn: Turn,
        stored: tuple[Message, ...],
        outcome: int,
        acked: int | BaseException | None,
    ) -> None:
        """Return if the applied turn reached ``required`` replicas; else raise.

        ``acked`` is what the WAIT behind the script answered, or None when
        the outcome came from settling the turn by id (no WAIT was sent).

        Raises:
            CommitNotReplicated: fewer replicas acknowledged it in time, or
                their acknowledgement could not be read.
        """
        if outcome not in (_APPLIED, _ALREADY_APPLIED):
            return
        if outcome != _APPLIED or acked is None:
            # Nothing of this turn was written on that connection (see the module doc).
            acked = await self._probe(link, turn)
        why = ""
        if isinstance(acked, BaseException):
            why = f" (their acknowledgement could not be read: {type(acked).__name__}: {acked})"
            acked = 0
        if acked >= self.required:
            return
        raise CommitNotReplicated(
            f"session {turn.session_id!r}: turn {turn.turn_id} was applied on the primary but "
            f"acknowledged by {acked} of {self.required} replicas within {self.timeout:g}s"
            f"{why}; it is stored once, and may be lost on a failover",
            session_id=turn.session_id,
            turn_id=turn.turn_id,
            acknowledged=acked,
            required=self.required,
            messages=stored,
        )

    async def _probe(self, link: Link, turn: Turn) -> int | BaseException:
        """WAIT behind a write of this connection's own, for a turn written by another."""
        channel = f"{link.prefix}:replication".encode()
        key = _keys.key(link.prefix, turn.session_id, _keys.HISTORY)  # its slot's primary
        try:
            reply, acked = await self._pipelined(
                link, key, ("PUBLISH", channel, turn.turn_id.encode())
            )
        except Exception as exc:
            if classify(exc) is None:
                raise
            return exc
        return reply if isinstance(reply, BaseException) else acked

    async def _pipelined(
        self, link: Link, key: bytes, command: tuple[Any, ...]
    ) -> tuple[Any, int | BaseException]:
        """``command`` then WAIT on one connection: the command's reply (an error reply
        as an exception object) and WAIT's count (or its error)."""
        # The WAIT reply may take the whole replica timeout: its read gets that on
        # top of the connection's own deadline.
        extra = self.timeout
        if isinstance(link.client, RedisCluster):
            replies = await _on_cluster(link.client, key, [command, self._wait()], extra)
        else:
            replies = await link.call_pipelined([command, self._wait()], extra)
        reply, acked = replies
        if isinstance(acked, BaseException):
            return reply, acked
        if type(acked) is not int or acked < 0:
            return reply, rexc.InvalidResponse(f"unexpected reply to WAIT: {acked!r}")
        return reply, acked


async def _on_cluster(
    client: RedisCluster, key: bytes, commands: list[tuple[Any, ...]], extra: float
) -> list[Any]:
    """``commands`` pipelined to the primary of ``key``'s slot, following MOVED and ASK
    (the commands did not run where they were redirected from)."""
    await client.initialize()
    node = client.get_node_from_key(key)  # type: ignore[arg-type]
    asking = False
    for _ in range(_REDIRECTS):
        if node is None:
            break
        sent = [("ASKING",), *commands] if asking else commands
        replies = await _node_pipelined(node, sent, extra)
        if asking:
            replies = replies[1:]
        first = replies[0]
        if isinstance(first, rexc.AskError):
            node = client.get_node(host=first.host, port=first.port)
            asking = True
            continue
        if isinstance(first, rexc.MovedError):
            await client.nodes_manager.move_slot(first)
            node = client.get_node_from_key(key)  # type: ignore[arg-type]
            asking = False
            continue
        return replies
    raise rexc.TryAgainError(f"the slot of {key!r} kept moving; nothing ran")


async def _node_pipelined(
    node: ClusterNode, commands: list[tuple[Any, ...]], extra: float
) -> list[Any]:
    conn = node.acquire_connection()
    sound = False
    try:
        replies = await read_pipelined(conn, commands, extra)
        sound = True
        return replies
    finally:
        if not sound:
            await conn.disconnect(nowait=True)  # may hold unread replies: never reused
        node.release(conn)


async def read_pipelined(conn: Any, commands: list[tuple[Any, ...]], extra: float) -> list[Any]:
    """Send ``commands`` in one write on ``conn`` and read every reply; an error reply
    is returned as its exception, so that the replies after it are read too. The last
    read may take ``extra`` seconds more than the connection's deadline.

    Raises:
        Exception: the connection failed (it may hold unread replies: close it).
    """
    await conn.send_packed_command(conn.pack_commands(commands))
    last = len(commands) - 1
    # timeout=None is the connection's own deadline, as with no argument.
    replies: list[Any] = [
        await _reply(conn, _read_timeout(conn, extra) if i == last and extra else None)
        for i in range(len(commands))
    ]
    return replies


async def _reply(conn: Any, timeout: float | None) -> Any:
    try:
        return await conn.read_response(timeout=timeout)
    except rexc.ResponseError as exc:
        return exc  # a whole reply: the connection is still in step


def _read_timeout(conn: Any, extra: float) -> float | None:
    """The connection's deadline plus ``extra`` (None: it has none, so none is added)."""
    base = getattr(conn, "deadline", None) if hasattr(conn, "deadline") else conn.socket_timeout
    return None if not base else base + extra
