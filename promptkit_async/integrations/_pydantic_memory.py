"""The pydantic-ai backend's engine over a MemoryStore: one structure per store instance.

The state belongs to the MemoryStore it was built for (a ``WeakKeyDictionary`` keyed by the
store), so every backend over one store sees the same conversations, as processes sharing a
Redis do, and the state goes when the store does. Each operation runs without suspending:
Python runs it whole before any other task, the synchronous critical section that makes a
write's revision check and its effects one step.
"""

from __future__ import annotations

import heapq
import weakref
from typing import TYPE_CHECKING

from pydantic_ai.conversation_store import ConversationConflict

from .._exceptions import CorruptHistory
from ._pydantic_codec import home_of, parent_of
from ._pydantic_engine import Found, Write

if TYPE_CHECKING:
    from ..stores import MemoryStore

__all__ = ["MemoryEngine"]


class _Home:
    """What a conversation's home holds: the entries it created, who pins them, what it pins."""

    __slots__ = ("deps", "entries", "pins")

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.pins: set[str] = set()
        self.deps: set[str] = set()


class _Record:
    __slots__ = ("homes", "raw", "revision", "scope", "score")

    def __init__(
        self, revision: str, raw: bytes, homes: bytes, scope: str | None, score: float
    ) -> None:
        self.revision = revision
        self.raw = raw
        self.homes = homes
        self.scope = scope
        self.score = score


class _State:
    __slots__ = ("homes", "locators", "records")

    def __init__(self) -> None:
        self.records: dict[str, _Record] = {}  # home -> record
        self.homes: dict[str, _Home] = {}
        self.locators: dict[str, str] = {}  # entry id -> home


_STATES: weakref.WeakKeyDictionary[MemoryStore, _State] = weakref.WeakKeyDictionary()


class MemoryEngine:
    """The same model as the Redis engine, in dictionaries (see the integration's docstring)."""

    __slots__ = ("_state",)

    def __init__(self, store: MemoryStore) -> None:
        state = _STATES.get(store)
        if state is None:
            state = _STATES[store] = _State()
        self._state = state

    async def read_record(self, conversation_id: str) -> tuple[bytes, bytes] | None:
        record = self._state.records.get(home_of(conversation_id))
        return None if record is None else (record.raw, record.homes)

    async def read_records(self, scope: str | None, limit: int | None) -> list[bytes]:
        records = [r for r in self._state.records.values() if scope is None or r.scope == scope]
        if limit is None:
            records.sort(key=lambda r: r.score, reverse=True)
        else:
            records = heapq.nlargest(limit, records, key=lambda r: r.score)
        return [r.raw for r in records]

    async def write(self, write: Write) -> None:
        state = self._state
        stored = state.records.get(write.home)
        if (stored.revision if stored is not None else None) != write.expected:
            raise ConversationConflict(write.conversation_id)
        home = state.homes.get(write.home)
        new = {entry_id for entry_id, _ in write.entries}
        for entry_id in write.local_refs:
            if entry_id not in new and (home is None or entry_id not in home.entries):
                raise ConversationConflict(write.conversation_id)
        for other, entry_ids in write.foreign_refs.items():
            found = state.homes.get(other)
            if found is None or any(e not in found.entries for e in entry_ids):
                raise ConversationConflict(write.conversation_id)
        # Checked: from here on nothing can fail, so the write is whole.
        if home is None:
            home = state.homes[write.home] = _Home()
        for other in write.foreign_refs:
            state.homes[other].pins.add(write.home)
            home.deps.add(other)
        for entry_id, value in write.entries:
            home.entries.setdefault(entry_id, value)
            state.locators[entry_id] = write.home
        state.records[write.home] = _Record(
            write.revision, write.record, write.homes, write.scope, write.score
        )

    async def delete(self, conversation_id: str, home: str, expected: str) -> None:
        state = self._state
        stored = state.records.get(home)
        if stored is None or stored.revision != expected:
            raise ConversationConflict(conversation_id)
        del state.records[home]
        self._collect(home)

    def _collect(self, first: str) -> None:
        """Drop the homes that neither a record nor a pin keeps, and what only they pinned."""
        state = self._state
        work = [first]
        while work:
            name = work.pop()
            home = state.homes.get(name)
            if home is None or home.pins or name in state.records:
                continue
            del state.homes[name]
            for entry_id in home.entries:
                if state.locators.get(entry_id) == name:
                    del state.locators[entry_id]
            for dep in home.deps:
                other = state.homes.get(dep)
                if other is not None:
                    other.pins.discard(name)
                    work.append(dep)

    async def walk(self, head_id: str, home: str | None, limit: int | None) -> list[Found]:
        state = self._state
        where = home if home is not None else state.locators.get(head_id)
        found: list[Found] = []
        entry_id: str | None = head_id
        while entry_id is not None and (limit is None or len(found) < limit):
            place = state.homes.get(where) if where is not None else None
            value = place.entries.get(entry_id) if place is not None else None
            if value is None or where is None:
                raise KeyError(entry_id)
            found.append(Found(entry_id, value, where))
            try:
                entry_id, parent_home = parent_of(value)
            except ValueError as exc:
                raise CorruptHistory(
                    f"conversation entry {found[-1].entry_id!r} cannot be decoded: {exc}",
                    session_id=where,
                ) from exc
            if parent_home:
                where = parent_home
        return found

    async def locate(self, entry_id: str) -> str | None:
        return self._state.locators.get(entry_id)
