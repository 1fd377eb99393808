"""The pydantic-ai backend's engine over a RedisStore: standalone or Cluster, alike.

It borrows the store's client and key prefix and keeps its own keys and scripts
(``_pydantic_scripts.py``). Redis errors are read through the store's own table
(``stores/_redis/_errors.py``), so they surface as the same typed ``StoreError``
subclasses as the store's.

A write is one script call. On a Cluster the listing and the new entries' locators live in
other slots, so they are written just before it (a conflict then leaves a locator to an entry
that was never stored, and a listing that already had the conversation: neither is visible),
and the listing's score is raised just after. A write whose reply is lost is settled by its
new revision: applied, or marked aborted so that a copy still in flight can never apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from pydantic_ai.conversation_store import ConversationConflict

from .._exceptions import CommitOutcomeUnknown, StoreUnavailable
from ..stores._redis._errors import Failure, classify, mapped_errors, store_error
from ._pydantic_codec import home_of
from ._pydantic_engine import Found, Write
from ._pydantic_scripts import DELETE, PIN, SETTLE, UNPIN, WALK, WRITE, Keys

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ..stores import RedisStore
    from ..stores._redis._scripts import Script

__all__ = ["RedisEngine"]

logger = logging.getLogger("promptkit_async.integrations.pydantic_ai")

#: Failures after which a script may have run: its outcome is settled, never guessed.
_MAYBE_RAN = (Failure.LOST, Failure.PROTOCOL)
_PAGE = 200


def _b(value: Any) -> bytes:
    """A reply's bytes, from a client with or without decode_responses."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected a bulk string, got {type(value).__name__}")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RedisEngine:
    """One store's pydantic-ai conversations in Redis."""

    __slots__ = ("_client", "_keys")

    def __init__(self, store: RedisStore) -> None:
        # Every client takes the one-slot-per-script path a Cluster needs: a standalone
        # server behind a cluster proxy (or with strict scripting, as managed services
        # enforce it) refuses a script whose keys span slots.
        self._client = store.client
        self._keys = Keys(store.prefix)

    async def _run(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        return await script(self._client, keys, args)

    # -- reads -----------------------------------------------------------------------

    async def read_record(self, conversation_id: str) -> tuple[bytes, bytes] | None:
        key = self._keys.home(home_of(conversation_id), "r")
        with mapped_errors(conversation_id, "reading a conversation record"):
            raw, homes = await self._client.execute_command("HMGET", key, "d", "h")
        if raw is None:
            return None
        return _b(raw), _b(homes) if homes is not None else b""

    async def read_records(self, scope: str | None, limit: int | None) -> list[bytes]:
        listing = self._keys.listing(scope)
        with mapped_errors(None, "listing conversations"):
            return await self._records(listing, scope is not None, limit)

    async def _records(self, listing: bytes, scoped: bool, limit: int | None) -> list[bytes]:
        """A page of the listing, then each record it names (another slot each), pipelined."""
        out: list[bytes] = []
        start = 0
        page = _PAGE if limit is None else min(_PAGE, max(limit, 1))
        while limit is None or len(out) < limit:
            members = await self._client.execute_command(
                "ZREVRANGE", listing, start, start + page - 1
            )
            if not members:
                break
            async with self._client.pipeline() as pipe:
                for member in members:
                    pipe.execute_command("HMGET", self._keys.home(_s(member), "r"), "d", "s")
                replies = await pipe.execute()
            for raw, scope_key in replies:
                if raw is not None and (not scoped or (scope_key and _b(scope_key) == listing)):
                    out.append(_b(raw))
            if len(members) < page:
                break
            start += page
        return out if limit is None else out[:limit]

    async def locate(self, entry_id: str) -> str | None:
        with mapped_errors(None, "locating a conversation entry"):
            home = await self._client.execute_command("GET", self._keys.locator(entry_id))
        return None if home is None else _s(home)

    async def walk(self, head_id: str, home: str | None, limit: int | None) -> list[Found]:
        if home is None:
            home = await self.locate(head_id)
            if home is None:
                raise KeyError(head_id)
        found: list[Found] = []
        entry_id = head_id
        with mapped_errors(None, "reading a conversation history"):
            while True:
                left = 0 if limit is None else limit - len(found)
                reply = await self._run(WALK, [self._keys.home(home, "e")], [entry_id, home, left])
                status, next_id, next_home = int(reply[0]), _s(reply[1]), _s(reply[2])
                found += [
                    Found(_s(reply[i]), _b(reply[i + 1]), _s(reply[i + 2]))
                    for i in range(3, len(reply), 3)
                ]
                if status == 0:
                    raise KeyError(next_id)
                if status == 1:
                    return found
                entry_id, home = next_id, next_home

    # -- writes ------------------------------------------------------------------------

    async def write(self, write: Write) -> None:
        keys = self._keys
        home = write.home
        listings = [keys.listing(None)]
        if write.scope is not None:
            listings.append(keys.listing(write.scope))
        locators = [keys.locator(entry_id) for entry_id, _ in write.entries]
        pinned: list[str] = []
        if write.expected is None and write.foreign_refs:
            # A new record pointing into other homes (a fork): pin them first, no need to ask.
            await self._pin(write, list(write.foreign_refs))
            pinned = list(write.foreign_refs)
        await self._before_write(write, listings, locators)
        script_keys = [keys.home(home, k) for k in ("r", "e", "d", "x")]
        for _ in range(3):
            unpinned = [h for h in write.foreign_refs if h not in pinned]
            args: list[Any] = [
                "0" if write.expected is None else "1" + write.expected,
                write.revision,
                write.record,
                write.homes,
                repr(write.score),
                listings[1] if len(listings) > 1 else b"",
                home,
                _now_ms(),
                len(write.entries),
                len(write.local_refs),
                len(pinned),
                len(unpinned),
            ]
            for entry_id, value in write.entries:
                args += (entry_id, value)
            args += write.local_refs
            args += pinned
            args += unpinned
            status, extra = await self._decided_write(write, script_keys, args)
            if status in (1, 2):
                break
            if status == -2:
                await self._pin(write, extra)
                pinned += extra
                continue
            if status == -1:
                raise StoreUnavailable(
                    f"conversation {write.conversation_id!r}: the write was settled as not "
                    "applied after its reply was lost; nothing was written",
                    session_id=write.conversation_id,
                )
            raise ConversationConflict(write.conversation_id)
        else:  # pragma: no cover - a pin cannot go missing twice while the record is unchanged
            raise ConversationConflict(write.conversation_id)
        await self._after_write(write, listings)

    async def _pin(self, write: Write, homes: Iterable[str]) -> None:
        for other in homes:
            entry_ids = write.foreign_refs.get(other, ())
            with mapped_errors(write.conversation_id, "pinning a forked history"):
                ok = await self._run(
                    PIN,
                    [self._keys.home(other, "e"), self._keys.home(other, "p")],
                    [write.home, *entry_ids],
                )
            if int(ok) != 1:
                raise ConversationConflict(write.conversation_id)

    async def _before_write(
        self, write: Write, listings: Sequence[bytes], locators: Sequence[bytes]
    ) -> None:
        """What lives in other slots and must exist before the record can."""
        with mapped_errors(write.conversation_id, "saving a conversation"):
            async with self._client.pipeline() as pipe:
                for listing in listings:
                    pipe.execute_command("ZADD", listing, "NX", repr(write.score), write.home)
                for locator in locators:
                    pipe.execute_command("SET", locator, write.home)
                await pipe.execute()

    async def _after_write(self, write: Write, listings: Sequence[bytes]) -> None:
        """Raise the listing's score to the record's (it was written: never fails)."""
        try:
            with mapped_errors(write.conversation_id, "listing a saved conversation"):
                async with self._client.pipeline() as pipe:
                    for listing in listings:
                        pipe.execute_command("ZADD", listing, "GT", repr(write.score), write.home)
                    await pipe.execute()
        except Exception:
            logger.warning(
                "conversation %r was saved, but its place in the listing was not updated "
                "(it is listed by its previous save's time until the next save)",
                write.conversation_id,
                exc_info=True,
            )

    async def _decided_write(
        self, write: Write, keys: Sequence[bytes], args: Sequence[Any]
    ) -> tuple[int, list[str]]:
        """Run the write script; a lost reply or a cancellation is settled by the revision."""
        try:
            reply = await self._run(WRITE, keys, args)
        except asyncio.CancelledError:
            await self._settle_quietly(write.home, write.revision)
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure not in _MAYBE_RAN:
                raise store_error(failure, exc, write.conversation_id, "saving") from exc
            applied = await self._settle(write.conversation_id, write.home, write.revision, exc)
            return (1, []) if applied else (-1, [])
        return int(reply[0]), [_s(h) for h in reply[1:]]

    async def _settle(self, conversation_id: str, home: str, token: str, cause: Exception) -> bool:
        try:
            return (
                int(await self._run(SETTLE, [self._keys.home(home, "x")], [token, _now_ms()])) == 1
            )
        except Exception as exc:
            if classify(exc) is None:
                raise
            raise CommitOutcomeUnknown(
                f"conversation {conversation_id!r}: the reply of a change was lost ({cause}) and "
                f"it could not be settled ({exc}): it is applied once or not at all; load the "
                "conversation again before retrying",
                session_id=conversation_id,
                turn_id=token,
            ) from exc

    async def _settle_quietly(self, home: str, token: str) -> None:
        """After a cancellation: decide the write so that no copy of it applies later."""
        try:
            await asyncio.shield(
                self._run(SETTLE, [self._keys.home(home, "x")], [token, _now_ms()])
            )
        except (Exception, asyncio.CancelledError):
            logger.warning(
                "a cancelled conversation write (revision %s) could not be settled",
                token,
                exc_info=True,
            )

    async def delete(self, conversation_id: str, home: str, expected: str) -> None:
        keys = self._keys
        token = uuid.uuid4().hex
        script_keys = [keys.home(home, k) for k in ("r", "e", "p", "d", "x")]
        args = [expected, token, _now_ms()]
        try:
            reply = await self._run(DELETE, script_keys, args)
        except asyncio.CancelledError:
            await self._settle_quietly(home, token)
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure not in _MAYBE_RAN:
                raise store_error(failure, exc, conversation_id, "deleting") from exc
            if await self._settle(conversation_id, home, token, exc):
                return  # deleted; what it released is kept (see the module docstring)
            raise StoreUnavailable(
                f"conversation {conversation_id!r}: the delete was settled as not applied "
                "after its reply was lost; nothing was deleted",
                session_id=conversation_id,
            ) from exc
        status = int(reply[0])
        if status == 2:
            return
        if status == -1:
            raise StoreUnavailable(
                f"conversation {conversation_id!r}: the delete was settled as not applied",
                session_id=conversation_id,
            )
        if status == 0:
            raise ConversationConflict(conversation_id)
        try:
            await self._after_delete(home, reply)
        except Exception:
            logger.warning(
                "conversation %r was deleted; some of its entries are kept (their release failed)",
                conversation_id,
                exc_info=True,
            )

    async def _after_delete(self, home: str, reply: Sequence[Any]) -> None:
        """Unlist (the listings live in other slots), then release what no record or pin
        keeps any more."""
        scope_listing = _b(reply[1])
        with mapped_errors(None, "unlisting a deleted conversation"):
            async with self._client.pipeline() as pipe:
                pipe.execute_command("ZREM", self._keys.listing(None), home)
                if scope_listing:
                    pipe.execute_command("ZREM", scope_listing, home)
                await pipe.execute()
        work = [(home, reply[2:])]
        locators: list[bytes] = []
        while work:
            released, rest = work.pop()
            count = int(rest[0])
            if count < 0:
                continue
            locators += [self._keys.locator(_s(e)) for e in rest[1 : 1 + count]]
            for dep in rest[1 + count :]:
                other = _s(dep)
                with mapped_errors(None, "releasing a conversation's entries"):
                    answer = await self._run(
                        UNPIN, [self._keys.home(other, k) for k in ("r", "e", "p", "d")], [released]
                    )
                work.append((other, answer))
        with mapped_errors(None, "releasing a conversation's entries"):
            for i in range(0, len(locators), 500):
                await self._client.delete(*locators[i : i + 500])
