"""An openai-agents ``Session`` kept in any promptkit_async store.

``AgentsSession(session_id, store)`` implements the ``Session`` protocol of
openai-agents (``agents.memory.Session``: ``get_items``, ``add_items``,
``pop_item``, ``clear_session``) over a :class:`MemoryStore`,
:class:`RedisStore` (standalone or Cluster), :class:`SQLiteStore` or any store
with exactly-once commits (:class:`SupportsTurns`)::

    from agents import Agent, Runner
    from promptkit_async import RedisStore
    from promptkit_async.integrations.openai_agents import AgentsSession

    store = RedisStore.from_url("redis://localhost:6379")
    result = await Runner.run(agent, "Hi", session=AgentsSession("user-42", store))

Each item is one stored message (see :mod:`._agents_items` for the lossless
mapping), so promptkit's own views (``store.load``, ``Conversations``, an
export) show the conversation, and every item comes back exactly as it went in.

- ``add_items`` is one commit through the store's exactly-once path, with one
  turn id: all the items or none, never twice (a lost reply is settled by id).
- ``pop_item`` reads the newest message, then removes it with a commit that
  applies only while it is still the newest (``Turn.replace_last``), retrying
  on a change: two pops never return the same item, and a pop never removes
  an item that another writer added meanwhile.
- A cancellation during a write waits (up to ten seconds) until the write is
  applied or settled as aborted, then is re-raised: the store is left as
  before the call or as after it, never in between, and nothing lands later.
- The store's retention applies: it keeps its ``max_stored`` newest items per
  session (10,000 by default; ``None``: all), and its sliding TTL (``ttl``).

Needs ``pip install 'promptkit_async[agents]'`` (openai-agents).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any, Final, cast

try:
    from agents.memory.session_settings import (
        SessionSettings,
        coerce_session_settings,
        resolve_session_limit,
    )
except ImportError as exc:  # pragma: no cover - tested in a subprocess without agents
    raise ImportError(
        "promptkit_async.integrations.openai_agents needs openai-agents: "
        "pip install 'promptkit_async[agents]'"
    ) from exc

from .._config import DEFAULT_TTL, check_owner, check_session_id, ttl_seconds
from .._exceptions import MessageNotFound
from .._ids import new_turn_id
from .._plan import plan_for, wait_bounded
from .._settings import DEFAULT_COMMIT_GRACE
from ..stores._contract import Store, SupportsTurns, Turn
from ._agents_items import items_of, to_message

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

    from .._messages import Message
    from .._types import TTL

__all__ = ["AgentsSession"]

logger = logging.getLogger(__name__)

#: The longest pause between two attempts of a pop that keeps losing its race.
_MAX_BACKOFF: Final = 0.05
#: How many times a pop tries before it gives up (about two seconds of losing every race).
_MAX_ATTEMPTS: Final = 64


class AgentsSession:
    """An openai-agents session whose items live in a promptkit_async store.

    Args:
        session_id: the conversation (a promptkit session id: the same id
            opens it in a promptkit ``Session``).
        store: where it lives: a store with exactly-once commits
            (:class:`SupportsTurns`: every store of this package). Borrowed:
            the session never closes it.
        session_settings: openai-agents ``SessionSettings`` (or a dict of
            them); ``limit`` is how many of the newest items ``get_items()``
            returns when called without one (None: all).
        ttl: the sliding expiry every write refreshes, in seconds or a
            timedelta (None: keep forever); the store's default, 24 h.
        owner: who the conversation belongs to (see ``Session(owner=...)``):
            recorded by the first write, and a write naming another owner is
            refused with ``OwnerMismatch``.

    Raises:
        TypeError: ``store`` has no exactly-once commits.
        InvalidSessionId: a bad session id.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        store: Store,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        ttl: TTL = DEFAULT_TTL,
        owner: str | None = None,
    ) -> None:
        if not isinstance(store, Store) or not isinstance(store, SupportsTurns):
            raise TypeError(
                f"AgentsSession needs a promptkit_async store with exactly-once commits "
                f"(SupportsTurns: commit and settle_turn), got {type(store).__name__}"
            )
        self.session_id = check_session_id(session_id)
        self.session_settings = (
            SessionSettings()
            if session_settings is None
            else coerce_session_settings(session_settings)
        )
        self._store = store
        self._ttl = ttl_seconds(ttl)
        self._owner = None if owner is None else check_owner(owner)
        self._plan = plan_for(store)

    def __repr__(self) -> str:
        return f"AgentsSession({self.session_id!r}, {self._store!r})"

    @property
    def store(self) -> Store:
        """The store the items live in."""
        return self._store

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The newest ``limit`` items, oldest first; all of them when there is no limit.

        Without ``limit``, ``session_settings.limit`` applies (as openai-agents
        resolves it); 0 returns none. One store read of ``limit`` messages.

        Raises:
            TypeError, ValueError: a limit that is not an int, or is negative.
            StoreUnavailable: the store could not be reached.
            CorruptHistory: a stored record cannot be decoded.
        """
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is not None:
            if type(wanted) is not int:
                raise TypeError(f"limit must be an int or None, got {wanted!r}")
            if wanted < 0:
                raise ValueError(f"limit must be >= 0 (or None: all items), got {wanted}")
            if wanted == 0:
                return []
        messages = await self._store.load(self.session_id, wanted)
        items: list[Any] = []
        for message in messages:
            items.extend(items_of(message))
        # A message not written from an item can stand for several (see items_of).
        if wanted is not None and len(items) > wanted:
            del items[:-wanted]
        return cast("list[TResponseInputItem]", items)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in order, atomically and exactly once (an empty list: nothing).

        Raises:
            TypeError: an item that is not a JSON object.
            InvalidMessage: an item that is not JSON, or too large for the store.
            StoreUnavailable, StoreRejected: nothing was written.
            CommitOutcomeUnknown: stored once or not at all, and the store
                could not tell which.
            OwnerMismatch: the conversation is another owner's; nothing was written.
        """
        messages = tuple(to_message(item, i) for i, item in enumerate(items))
        if not messages:
            return
        await self._commit(Turn(
            session_id=self.session_id,
            messages=messages,
            turn_id=new_turn_id(),
            ttl=self._ttl,
            owner=self._owner,
        ))  # fmt: skip

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest item and return it; None when there is none.

        Raises:
            StoreUnavailable, StoreRejected: nothing was removed.
            CommitOutcomeUnknown: removed or not, and the store could not tell.
            OwnerMismatch: the conversation is another owner's.
            MessageNotFound: every attempt found another newest message than
                the one it read (see ``_MAX_ATTEMPTS``); nothing was removed.
        """
        attempt = 0
        while True:
            newest = await self._store.load(self.session_id, 1)
            if not newest:
                return None
            message = newest[0]
            if message.id is None:
                raise TypeError(
                    f"{type(self._store).__name__} gives its messages no ids: "
                    "AgentsSession cannot remove one safely"
                )
            items = items_of(message)
            # The other items of a message that stands for several stay, in place.
            rest: tuple[Message, ...] = tuple(to_message(i) for i in items[:-1])
            turn = Turn(
                session_id=self.session_id,
                messages=rest,
                turn_id=new_turn_id(),
                ttl=self._ttl,
                owner=self._owner,
                replace_last=message.id,
            )
            try:
                await self._commit(turn)
            except MessageNotFound as exc:
                # Another writer got there first: read the newest again. A
                # jittered pause keeps pops that keep colliding from spinning.
                attempt += 1
                if attempt >= _MAX_ATTEMPTS:
                    exc.args = (
                        f"session {self.session_id!r}: pop_item gave up after {attempt} "
                        "attempts: the newest message kept changing, or is a record written "
                        "around the store (without the id it was loaded with); nothing removed",
                    )
                    raise
                if attempt > 2:
                    await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF, 0.001 * 2**attempt)))
                continue
            return cast("TResponseInputItem", items[-1])

    async def clear_session(self) -> None:
        """Delete the session: every item, and the conversation's info.

        Raises:
            StoreUnavailable: the store could not be reached.
        """
        # Its own task, waited for by a cancelled caller: a delete still on
        # its way would otherwise erase what is written after it returns.
        deleting = asyncio.ensure_future(self._store.delete(self.session_id))
        try:
            await asyncio.shield(deleting)
        except asyncio.CancelledError:
            await wait_bounded(deleting, DEFAULT_COMMIT_GRACE)
            if deleting.done() and not deleting.cancelled() and deleting.exception() is not None:
                logger.warning(
                    "session %r: clear_session after a cancellation failed: %s",
                    self.session_id,
                    deleting.exception(),
                )
            raise

    async def _commit(self, turn: Turn) -> None:
        await self._plan.commit(self._store, turn, DEFAULT_COMMIT_GRACE)
