"""pydantic-ai's ``ConversationStore`` over a promptkit_async store: MemoryStore or RedisStore.

Install the extra, then load and save each run's conversation::

    pip install 'promptkit_async[pydantic-ai]'

    from promptkit_async import RedisStore
    from promptkit_async.integrations.pydantic_ai import ConversationStoreBackend

    conversations = ConversationStoreBackend(RedisStore.from_url("redis://localhost:6379"))
    conversation = await conversations.load(cid) or Conversation(conversation_id=cid)
    result = await agent.run("Hello", conversation=conversation)
    await conversations.save(result)  # ConversationConflict if another save won

**What is stored.** pydantic-ai keeps a conversation as a record (its head entry, usage, scope,
branches, revision) and a chain of entries, one message each, linked to the entry before. This
backend keeps each entry in the *home* of the conversation that created it, with the record.
A fork creates no entries: its history reaches into its source's home, so it *pins* that home
(the source's home records the fork's), and the fork's own later entries live in its own home.
A history walk reads a home's chain in one script call and goes on in the next home only where
a fork's history crosses into its source: one round trip for a conversation that is not a fork.
A locator per entry (entry id -> home) finds an entry by id alone, and the record says where
its head and branch tips live, so a load needs no locator.

**Keys and slots.** A conversation's record, entries, pins and write marks share the hash tag
``{c:<conversation id>}``, so a save (revision check, entries, record) is one script in one
slot; the listings (``{l}`` for all, ``{s:<scope>}`` per scope, sorted sets scored by
``updated_at``) and the locators (``{e:<entry id>}``) have tags of their own, written just
before the save's script (and the listing's score raised just after), never read without
checking the record. No script touches two slots, on any client (a standalone server behind
a cluster proxy, or with strict scripting, refuses that). See ``_pydantic_scripts.py`` for
every key.

**Saves.** ``write_record`` checks the revision inside the store's atomic step (the Lua script
on Redis; on a MemoryStore a step that never suspends), so of two processes saving one
conversation exactly one wins and the other gets ``ConversationConflict`` with nothing
written. A save whose reply is lost is settled by its new revision (applied, or marked aborted
so a copy still in flight can never apply); if even that fails, ``CommitOutcomeUnknown``. A
cancelled save or delete on Redis lets its step finish (up to ``grace`` seconds) before the
cancellation is re-raised, so it is decided: the store is as before or as after.

**Deletes.** ``delete`` removes the record and its listing; its home's entries go too, with
their locators, unless a fork still pins them: then they stay until the last fork that reaches
them is deleted, and so on down a chain of forks. Entries of a home that was never forked go at
once. If a release step fails after the delete (on a Cluster it is several steps), the entries
are kept, never lost from a conversation that still reaches them.

**Expiry.** None: promptkit_async's stores have no store-wide TTL (a session's ``ttl`` is per
turn), and a per-conversation expiry would break the forks that share its entries, so
conversations are kept until deleted, as with pydantic-ai's own stores.

Redis errors are the store's own typed ``StoreError`` subclasses (``StoreUnavailable``,
``StoreRejected``, ``CommitOutcomeUnknown``, ...); an undecodable record or entry is
``CorruptHistory``.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # pragma: no cover - the suite's 3.10 run checks it
    raise ImportError(
        "promptkit_async.integrations.pydantic_ai needs Python 3.11 or newer "
        "(pydantic-ai-slim 2.66+, whose ConversationStore it implements, does)"
    )

try:
    from pydantic_ai.conversation_store import (
        ConversationConflict,
        ConversationEntry,
        ConversationRecord,
        ConversationStore,
    )
    from pydantic_ai.exceptions import UserError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "promptkit_async.integrations.pydantic_ai needs pydantic-ai (pydantic-ai-slim 2.66 or "
        f"newer): pip install 'promptkit_async[pydantic-ai]' ({exc})"
    ) from exc

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, TypeVar

from ..stores import MemoryStore, RedisStore
from ..stores._redis._keys import decode_id
from ._pydantic_codec import (
    decode_entry,
    decode_homes,
    decode_record,
    encode_entry,
    encode_homes,
    encode_record,
    home_of,
    score_of,
    tips,
)
from ._pydantic_engine import Engine, Write
from ._pydantic_memory import MemoryEngine
from ._pydantic_redis import RedisEngine

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping, Sequence
    from typing import Any

__all__ = ["ConversationStoreBackend"]

T = TypeVar("T")

logger = logging.getLogger("promptkit_async.integrations.pydantic_ai")

#: How many entry homes a backend remembers (an entry never moves, so a hint never goes stale).
_HINTS = 10_000


class _Hints:
    """Where entries live, as last read: saves a locator lookup, never trusted over the store."""

    __slots__ = ("_homes",)

    def __init__(self) -> None:
        self._homes: OrderedDict[str, str] = OrderedDict()

    def get(self, entry_id: str) -> str | None:
        home = self._homes.get(entry_id)
        if home is not None:
            self._homes.move_to_end(entry_id)
        return home

    def learn(self, homes: Mapping[str, str]) -> None:
        found = self._homes
        for entry_id, home in homes.items():
            found[entry_id] = home
            found.move_to_end(entry_id)
        while len(found) > _HINTS:
            found.popitem(last=False)


class ConversationStoreBackend(ConversationStore):
    """A pydantic-ai ``ConversationStore`` kept in a promptkit_async store.

    Args:
        store: a ``MemoryStore`` or a ``RedisStore`` (standalone or Cluster). It is borrowed:
            the backend never closes it. Backends over one store share its conversations.
        grace: seconds a cancelled save or delete on Redis waits for its step to be decided
            before the cancellation is re-raised.

    Raises:
        TypeError: another kind of store (SQLiteStore is not supported).
    """

    def __init__(self, store: MemoryStore | RedisStore, *, grace: float = 10.0) -> None:
        engine: Engine
        if isinstance(store, RedisStore):
            engine = RedisEngine(store)
        elif isinstance(store, MemoryStore):
            engine = MemoryEngine(store)
        else:
            raise TypeError(
                "ConversationStoreBackend supports MemoryStore and RedisStore (standalone or "
                f"Cluster), got {type(store).__name__}"
            )
        if not 0 <= grace < 1e9:
            raise ValueError(f"grace must be a number of seconds >= 0, got {grace!r}")
        self._store = store
        self._engine = engine
        self._hints = _Hints()
        self._grace = float(grace)
        # A MemoryStore's steps never suspend: there is nothing in flight to wait for.
        self._suspends = isinstance(store, RedisStore)

    @property
    def store(self) -> MemoryStore | RedisStore:
        return self._store

    def __repr__(self) -> str:
        return f"ConversationStoreBackend({self._store!r})"

    # -- records -------------------------------------------------------------------------

    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        """The record for a conversation, or None.

        Raises:
            StoreUnavailable: the store could not be reached.
            CorruptHistory: the stored record cannot be decoded.
        """
        _check_id("conversation_id", conversation_id)
        found = await self._engine.read_record(conversation_id)
        if found is None:
            return None
        raw, homes = found
        record = decode_record(raw, conversation_id)
        self._hints.learn(decode_homes(homes))
        return record

    async def read_records(
        self, *, scope: str | None = None, limit: int | None = None
    ) -> Sequence[ConversationRecord]:
        """The records (of ``scope``, if given), newest ``updated_at`` first, at most ``limit``.

        Read from a listing (a sorted set per scope on Redis): never a scan of the keyspace.

        Raises:
            UserError: ``limit`` is negative.
            StoreUnavailable: the store could not be reached.
        """
        if scope is not None:
            _check_id("scope", scope)
        if limit is not None and limit < 0:
            raise UserError("`limit` must not be negative.")
        if limit == 0:
            return []
        raws = await self._engine.read_records(scope, limit)
        records = [decode_record(raw, f"<listing {scope!r}>") for raw in raws]
        records.sort(key=lambda r: r.updated_at, reverse=True)
        return records

    async def write_record(
        self,
        record: ConversationRecord,
        *,
        new_entries: Sequence[ConversationEntry] = (),
        expected_revision: str | None,
    ) -> None:
        """Store ``record`` and its ``new_entries`` in one atomic step, if the revision matches.

        Raises:
            ConversationConflict: the stored revision is not ``expected_revision`` (or a record
                exists when it is None), or the record points at an entry the store does not
                have; nothing was written.
            StoreUnavailable: the store could not be reached; nothing was written.
            CommitOutcomeUnknown: the reply was lost and could not be settled.
        """
        if not isinstance(record, ConversationRecord):
            raise TypeError(f"record must be a ConversationRecord, got {type(record).__name__}")
        _check_id("conversation_id", record.conversation_id)
        write = await self._encode(record, new_entries, expected_revision)
        await self._decided(self._engine.write(write))
        self._hints.learn({entry_id: write.home for entry_id, _ in write.entries})

    async def _encode(
        self,
        record: ConversationRecord,
        new_entries: Sequence[ConversationEntry],
        expected_revision: str | None,
    ) -> Write:
        own = home_of(record.conversation_id)
        new_ids = {entry.id for entry in new_entries}
        homes: dict[str, str] = {}
        local: list[str] = []
        foreign: dict[str, list[str]] = {}

        async def refer(entry_id: str) -> str:
            """The home of an entry the write points at, recorded as one that must exist."""
            if entry_id in new_ids:
                return own
            home = self._hints.get(entry_id) or await self._engine.locate(entry_id)
            if home is None:
                raise ConversationConflict(record.conversation_id)
            if home == own:
                local.append(entry_id)
            else:
                foreign.setdefault(home, []).append(entry_id)
            return home

        entries: list[tuple[str, bytes]] = []
        for entry in new_entries:
            if not isinstance(entry, ConversationEntry):
                raise TypeError(
                    f"new entries must be ConversationEntry, got {type(entry).__name__}"
                )
            _check_id("entry id", entry.id)
            parent_home = ""
            if entry.parent_id is not None and entry.parent_id not in new_ids:
                home = await refer(entry.parent_id)
                parent_home = "" if home == own else home
            entries.append((entry.id, encode_entry(entry, parent_home)))
        for tip in tips(record):
            homes[tip] = await refer(tip)
        return Write(
            conversation_id=record.conversation_id,
            home=own,
            expected=expected_revision,
            revision=record.revision,
            record=encode_record(record),
            homes=encode_homes(homes),
            score=score_of(record),
            scope=record.scope,
            entries=entries,
            local_refs=local,
            foreign_refs=foreign,
        )

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        """Delete the record with ``expected_revision`` (see the module docstring for entries).

        Raises:
            ConversationConflict: no record with that revision is stored; nothing was deleted.
            StoreUnavailable: the store could not be reached; nothing was deleted.
        """
        _check_id("conversation_id", conversation_id)
        await self._decided(
            self._engine.delete(conversation_id, home_of(conversation_id), expected_revision)
        )

    # -- entries -------------------------------------------------------------------------

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        """The entry with this id.

        Raises:
            KeyError: no such entry is stored.
        """
        _check_id("entry_id", entry_id)
        return (await self._walk(entry_id, 1))[0]

    async def read_history(
        self, head_id: str | None, *, limit: int | None = None
    ) -> list[ConversationEntry]:
        """The entries from the first up to ``head_id``, in order (only the last ``limit``).

        One round trip for a history within one home; one more per fork it reaches through
        (another home is another slot, so another script call).

        Raises:
            KeyError: an entry of the chain is not stored (a concurrent delete released it).
        """
        if head_id is None or limit == 0:
            return []
        _check_id("head_id", head_id)
        if limit is not None and limit < 0:
            raise UserError("`limit` must not be negative.")
        history = await self._walk(head_id, limit)
        history.reverse()
        return history

    async def _walk(self, head_id: str, limit: int | None) -> list[ConversationEntry]:
        found = await self._engine.walk(head_id, self._hints.get(head_id), limit)
        history = [decode_entry(f.entry_id, f.value, decode_id(f.home)).entry for f in found]
        self._hints.learn({f.entry_id: f.home for f in found})
        return history

    # -- cancellation ----------------------------------------------------------------------

    async def _decided(self, step: Coroutine[Any, Any, T]) -> T:
        """Run a change to its end even if the caller is cancelled (up to ``grace``)."""
        if not self._suspends:
            return await step
        task = asyncio.ensure_future(step)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._grace
            while not task.done():
                left = deadline - loop.time()
                if left <= 0:
                    task.cancel()  # the engine settles a script it cancels
                    break
                try:
                    await asyncio.wait({task}, timeout=left)
                except asyncio.CancelledError:
                    continue
            task.add_done_callback(_retrieve)
            raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Log the failure of a change whose caller was cancelled (nobody else sees it)."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("a cancelled conversation change failed", exc_info=task.exception())


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
