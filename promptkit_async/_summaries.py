"""Summaries written in the background, after the commit, never on a turn's path.

A session whose history holds messages older than its window that the
summary does not cover yet asks the store's :class:`SummaryWork` to bring the
summary up to date, and returns. The work, one task per session at a time and
at most ``concurrency`` at once per store:

1. loads the summary and the messages after it (one step, as a turn does);
2. folds the oldest of them into it, leaving the window (``max_messages``)
   plus ``summary_lag`` unsummarized, in chunks of at most ``3 * max_messages``;
3. writes each new summary by compare-and-set on the version it extends: if
   another process, or a rewind, got there first, nothing is written and the
   work starts again from what is stored. Coverage is never lost nor counted twice.

A summarizer that raises, or runs past ``summary_timeout``, is logged and
counted; the session is tried again after a backoff (1 s, doubling to 5
minutes) by a timer, or by its next turn, whichever comes later. ``aclose()``
of the store cancels the work still running (a cancelled write leaves the old
summary or the new one, never a mix); ``await flush_summaries(store)`` waits
for it instead, which a command-line tool or a test does before closing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, cast

from ._codec import id_number
from ._summary import Summary, as_summarizer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ._messages import Message
    from .stores._contract import SupportsHistory, SupportsSummaries

__all__ = [
    "FoldPlan",
    "SummaryWork",
    "close_summaries",
    "flush_summaries",
    "fold_plan",
    "summary_figures",
    "work_for",
]

logger = logging.getLogger("promptkit_async.summaries")

#: Summaries written at once per store, across its sessions.
DEFAULT_CONCURRENCY = 4
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 300.0
#: How many times one run starts again after losing a compare-and-set.
_RACES = 5


@dataclass(frozen=True, slots=True)
class FoldPlan:
    """What a session asks of the work: who summarizes, and what stays unsummarized."""

    summarize: Callable[[str | None, Sequence[Message]], Awaitable[str]]
    window: int
    lag: int
    timeout: float

    @property
    def longest(self) -> int:
        """The most messages a summarized turn loads (and a run folds at once)."""
        return 3 * self.window


class SummaryWork:
    """The background summaries of one store (see the module docstring)."""

    __slots__ = (
        "__weakref__",
        "_backoff",
        "_dirty",
        "_gate",
        "_plans",
        "_retry_at",
        "_store",
        "_tasks",
        "_timers",
        "failed",
        "written",
    )

    def __init__(self, store: object, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self._store = weakref.ref(store)
        self._gate = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._plans: dict[str, FoldPlan] = {}
        self._backoff: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.written = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        """Sessions with a summary being written, or due to be tried again."""
        return len(self._tasks) + len(self._timers.keys() - self._tasks.keys())

    def schedule(self, session_id: str, plan: FoldPlan) -> None:
        """Bring ``session_id``'s summary up to date, in the background."""
        self._plans[session_id] = plan
        if session_id in self._tasks:
            self._dirty.add(session_id)  # the running task goes round once more
            return
        if monotonic() < self._retry_at.get(session_id, 0.0):
            return  # backing off: its timer will try again
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(session_id))
        self._tasks[session_id] = task

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait for the summaries being written; True if none is left running."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(list(self._tasks.values()), timeout=left)
        return True

    async def aclose(self) -> None:
        """Cancel what is running or due, and wait for it to stop."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tasks.clear()
        self._dirty.clear()

    # -- the work ----------------------------------------------------------------

    async def _run(self, session_id: str) -> None:
        try:
            while True:
                self._dirty.discard(session_id)
                store = self._store()
                if store is None:
                    return
                plan = self._plans[session_id]
                try:
                    async with self._gate:
                        await self._catch_up(store, session_id, plan)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.failed += 1
                    self._back_off(session_id, exc)
                    return
                self._backoff.pop(session_id, None)
                self._retry_at.pop(session_id, None)
                if session_id not in self._dirty:
                    return
        finally:
            self._tasks.pop(session_id, None)
            if session_id not in self._timers:
                self._plans.pop(session_id, None)

    def _back_off(self, session_id: str, exc: Exception) -> None:
        delay = self._backoff.get(session_id, _BACKOFF_FIRST / 2) * 2
        delay = min(delay, _BACKOFF_MAX)
        self._backoff[session_id] = delay
        self._retry_at[session_id] = monotonic() + delay
        logger.warning(
            "session %r: summary not written (%s: %s); trying again in %.0f s",
            session_id,
            type(exc).__name__,
            exc,
            delay,
        )
        loop = asyncio.get_running_loop()
        self._timers[session_id] = loop.call_later(delay, self._retry, session_id)

    def _retry(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        self._retry_at.pop(session_id, None)
        plan = self._plans.get(session_id)
        if plan is not None:
            self.schedule(session_id, plan)

    async def _catch_up(self, store: object, session_id: str, plan: FoldPlan) -> None:
        """Fold what the window left behind, chunk by chunk, by compare-and-set."""
        summaries = cast("SupportsSummaries", store)
        for _ in range(_RACES):
            messages, summary = await summaries.load_summarized(session_id, plan.longest)
            excess = len(messages) - plan.window
            if excess <= plan.lag:
                return
            fold = list(messages[:excess])
            if len(messages) >= plan.longest and messages[0].id is not None:
                fold = await self._older(store, session_id, messages[0].id, summary) + fold
            if await self._fold(summaries, session_id, summary, fold, plan):
                return
        logger.info("session %r: summary still contended after %d tries", session_id, _RACES)

    async def _older(
        self, store: object, session_id: str, first_id: str, summary: Summary | None
    ) -> list[Message]:
        """The uncovered messages older than the loaded ones (a window that was capped)."""
        first = id_number(first_id)
        if first is None:
            return []
        if summary is not None:
            missing = first - summary.upto_number - 1
            if missing <= 0:
                return []
            limit: int | None = missing
        else:
            limit = None
        history = cast("SupportsHistory", store)
        return await history.load(session_id, limit, before=first_id)

    async def _fold(
        self,
        store: SupportsSummaries,
        session_id: str,
        summary: Summary | None,
        fold: list[Message],
        plan: FoldPlan,
    ) -> bool:
        """Write the summaries of ``fold``; False if another write got there first."""
        step = plan.longest
        for start in range(0, len(fold), step):
            chunk = fold[start : start + step]
            upto = chunk[-1].id
            if upto is None or id_number(upto) is None:
                raise ValueError(f"message {chunk[-1]!r} has no id a store gave: cannot summarize")
            started = perf_counter()
            text = await asyncio.wait_for(
                plan.summarize(None if summary is None else summary.text, chunk), plan.timeout
            )
            if not isinstance(text, str) or not text.strip():
                raise TypeError(f"the summarizer returned {text!r}, not a non-empty str")
            new = Summary(
                text=text,
                upto=upto,
                covered=(0 if summary is None else summary.covered) + len(chunk),
                version=secrets.token_hex(8),
            )
            written = await store.write_summary(
                session_id, new, previous=None if summary is None else summary.version
            )
            if not written:
                return False
            self.written += 1
            _observe(store, session_id, perf_counter() - started, new)
            summary = new
        return True


def _observe(store: object, session_id: str, seconds: float, summary: Summary) -> None:
    for observer in getattr(store, "observers", ()):
        hook = getattr(observer, "on_summary", None)
        if hook is None:
            continue
        try:
            hook(session_id, seconds, summary.covered)
        except Exception:
            logger.exception("observer %r failed in on_summary", observer)


_works: weakref.WeakKeyDictionary[object, SummaryWork] = weakref.WeakKeyDictionary()


def work_for(store: object) -> SummaryWork:
    """The background summaries of ``store``, made on first use.

    Raises:
        TypeError: the store cannot carry them (not hashable and weak-referenceable).
    """
    try:
        work = _works.get(store)
    except TypeError:
        raise TypeError(
            f"{type(store).__name__} cannot carry background summaries: make it hashable "
            "and weak-referenceable"
        ) from None
    if work is None:
        work = _works[store] = SummaryWork(store)
    return work


def summary_figures(store: object) -> dict[str, int]:
    """Summaries written, failed and pending in this process for ``store``, as the
    :class:`StateMetrics` fields of those names."""
    try:
        work = _works.get(store)
    except TypeError:
        work = None
    if work is None:
        return {"summaries_written": 0, "summaries_failed": 0, "summaries_pending": 0}
    return {
        "summaries_written": work.written,
        "summaries_failed": work.failed,
        "summaries_pending": work.pending,
    }


async def flush_summaries(store: object, timeout: float | None = None) -> bool:
    """Wait until ``store`` writes no summary in the background; True if none is left.

    What a command-line tool or a test awaits before closing the store (whose
    ``aclose()`` cancels the summaries still running).
    """
    try:
        work = _works.get(store)
    except TypeError:
        return True
    return True if work is None else await work.flush(timeout)


async def close_summaries(store: object) -> None:
    """Cancel ``store``'s background summaries (its ``aclose()`` calls this)."""
    try:
        work = _works.pop(store, None)
    except TypeError:
        return
    if work is not None:
        await work.aclose()


def fold_plan(settings_summarizer: object, window: int, lag: int, timeout: float) -> FoldPlan:
    """A :class:`FoldPlan` from a session's settings (checked there)."""
    return FoldPlan(as_summarizer(settings_summarizer), window, lag, timeout)
