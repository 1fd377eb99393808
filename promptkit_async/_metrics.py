"""Store metrics and observer hooks.

Stores time every load and save. The timings feed an in-process window of
recent load latencies (for :class:`StateMetrics`) and any observers a user
registers, so that Prometheus, OpenTelemetry or logs can be fed without the
library depending on them.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "Instruments",
    "LatencySummary",
    "LatencyWindow",
    "Observer",
    "Observers",
    "StateMetrics",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Observer(Protocol):
    """Called on every load, save and store error, with timings in seconds.

    Implement any subset: missing methods are skipped. Observers run inline
    on the request path, so keep them cheap (increment a counter, observe a
    histogram); an observer that raises is logged and ignored.
    """

    def on_load(self, session_id: str, seconds: float, messages: int) -> None: ...

    def on_save(self, session_id: str, seconds: float, messages: int) -> None: ...

    def on_error(self, operation: str, session_id: str | None, error: BaseException) -> None: ...

    def on_summary(self, session_id: str, seconds: float, covered: int) -> None:
        """A rolling summary was written in the background: ``covered`` messages in all,
        ``seconds`` the summarizer call and the write took."""
        ...


_HOOKS = ("on_load", "on_save", "on_error", "on_summary")


class Observers:
    """The observers of one store; dispatch never lets an observer break a turn."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[object] = ()) -> None:
        self._items: list[object] = []
        for item in items:
            self.add(item)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> tuple[object, ...]:
        return tuple(self._items)

    def add(self, observer: object) -> None:
        if not any(hasattr(observer, m) for m in _HOOKS):
            raise TypeError(
                f"{type(observer).__name__} has none of on_load / on_save / on_error / on_summary"
            )
        self._items.append(observer)

    def remove(self, observer: object) -> None:
        self._items.remove(observer)

    def load(self, session_id: str, seconds: float, messages: int) -> None:
        self._call("on_load", session_id, seconds, messages)

    def save(self, session_id: str, seconds: float, messages: int) -> None:
        self._call("on_save", session_id, seconds, messages)

    def error(self, operation: str, session_id: str | None, error: BaseException) -> None:
        self._call("on_error", operation, session_id, error)

    def _call(self, name: str, *args: object) -> None:
        for observer in self._items:
            method = getattr(observer, name, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                logger.exception("observer %r failed in %s", observer, name)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of recent operations in this process, in seconds (None: no samples)."""

    p50: float | None
    p99: float | None
    count: int


class LatencyWindow:
    """The last ``size`` durations, summarised on demand (O(size log size))."""

    __slots__ = ("_samples",)

    def __init__(self, size: int = 1024) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def summary(self) -> LatencySummary:
        data = sorted(self._samples)
        if not data:
            return LatencySummary(None, None, 0)

        def pct(q: float) -> float:
            return data[min(len(data) - 1, int(q * len(data)))]

        return LatencySummary(pct(0.50), pct(0.99), len(data))


class Instruments:
    """A store's bookkeeping of its own operations: latency windows and observers.

    Every store times its loads and saves the same way; this is that code,
    once. ``started`` is a :func:`time.perf_counter` reading.
    """

    __slots__ = ("add_load", "add_save", "hooked", "load_latency", "observers", "save_latency")

    def __init__(self, observers: Iterable[object] = ()) -> None:
        self.observers = Observers(observers)
        self.load_latency = LatencyWindow()
        self.save_latency = LatencyWindow()
        # What loaded() and saved() use, for a store that inlines them on its
        # hot path (MemoryStore, whose operations take a few µs): the windows'
        # appends, and the observers' list itself (empty: nobody to call).
        self.add_load = self.load_latency._samples.append
        self.add_save = self.save_latency._samples.append
        self.hooked = self.observers._items

    def loaded(self, session_id: str, started: float, messages: int) -> None:
        elapsed = perf_counter() - started
        self.add_load(elapsed)
        if self.hooked:  # the list, not bool(observers): no Python call per operation
            self.observers.load(session_id, elapsed, messages)

    def saved(self, session_id: str, started: float, messages: int) -> None:
        elapsed = perf_counter() - started
        self.add_save(elapsed)
        if self.hooked:
            self.observers.save(session_id, elapsed, messages)

    def failed(self, operation: str, session_id: str | None, error: BaseException) -> None:
        if self.observers:
            self.observers.error(operation, session_id, error)


@dataclass(frozen=True, slots=True)
class StateMetrics:
    """A snapshot of a store's state, cheap enough for a health endpoint.

    Attributes:
        active_sessions: sessions that exist and have not expired.
        avg_history_size: mean number of stored messages per active session.
        load_latency: p50/p99 of recent loads made by this process.
        save_latency: p50/p99 of recent saves made by this process.
        storage_used: bytes used by the sessions' keys (Redis: MEMORY USAGE).
        sampled: how many sessions the averages were computed from.
        exact: False when avg_history_size/storage_used are estimated from a sample.
        summaries_written: rolling summaries this process wrote in the background.
        summaries_failed: summarizer calls (or their writes) that failed, each
            tried again later.
        summaries_pending: sessions with a summary being written or due a retry.
    """

    active_sessions: int
    avg_history_size: float
    load_latency: LatencySummary
    save_latency: LatencySummary
    storage_used: int
    sampled: int
    exact: bool
    summaries_written: int = 0
    summaries_failed: int = 0
    summaries_pending: int = 0

    def alerts(
        self,
        *,
        max_active_sessions: int | None = None,
        max_load_latency: float | None = None,
        max_avg_history_size: float | None = None,
        max_storage_used: int | None = None,
    ) -> list[str]:
        """The thresholds crossed, as readable lines (empty: all good)."""
        out: list[str] = []
        if max_active_sessions is not None and self.active_sessions > max_active_sessions:
            out.append(f"active sessions {self.active_sessions} above {max_active_sessions}")
        p99 = self.load_latency.p99
        if max_load_latency is not None and p99 is not None and p99 > max_load_latency:
            out.append(
                f"load latency p99 {p99 * 1000:.1f} ms above {max_load_latency * 1000:.1f} ms"
            )
        if max_avg_history_size is not None and self.avg_history_size > max_avg_history_size:
            out.append(
                f"average history size {self.avg_history_size:.1f} above {max_avg_history_size}"
            )
        if max_storage_used is not None and self.storage_used > max_storage_used:
            out.append(f"storage used {self.storage_used} bytes above {max_storage_used}")
        return out
