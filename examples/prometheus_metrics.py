"""Feed Prometheus from a store's observer hooks and its metrics snapshot.

Install the extra: ``pip install "promptkit_async[metrics]"``. Run from
``examples/``: ``python prometheus_metrics.py`` serves ``/metrics`` on port 9108
while a few demo turns run, then prints what a scrape returns.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from promptkit_async import MemoryStore, Message, Session, StateMetrics

if TYPE_CHECKING:
    from promptkit_async.stores import Store

#: Latency buckets for a store: µs for memory, ms for Redis, up to a slow second.
BUCKETS = (0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0)


class PrometheusObserver:
    """Counts and times every load, save and error of the stores it is added to."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.load_seconds = Histogram(
            "promptkit_load_seconds",
            "Time to load a session history",
            buckets=BUCKETS,
            registry=registry,
        )
        self.save_seconds = Histogram(
            "promptkit_save_seconds", "Time to save a turn", buckets=BUCKETS, registry=registry
        )
        self.messages_saved = Counter(
            "promptkit_messages_saved", "Messages written", registry=registry
        )
        self.errors = Counter(
            "promptkit_store_errors", "Store failures", ["operation"], registry=registry
        )

    def on_load(self, session_id: str, seconds: float, messages: int) -> None:
        self.load_seconds.observe(seconds)

    def on_save(self, session_id: str, seconds: float, messages: int) -> None:
        self.save_seconds.observe(seconds)
        self.messages_saved.inc(messages)

    def on_error(self, operation: str, session_id: str | None, error: BaseException) -> None:
        self.errors.labels(operation).inc()


class StateGauges:
    """Gauges refreshed from ``store.metrics()``, e.g. before each scrape or every 15 s."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = Gauge("promptkit_active_sessions", "Live sessions", registry=registry)
        self.avg_size = Gauge(
            "promptkit_avg_history_size", "Mean stored messages per session", registry=registry
        )
        self.storage = Gauge("promptkit_storage_bytes", "Bytes used by sessions", registry=registry)

    async def refresh(self, store: Store) -> StateMetrics:
        metrics: StateMetrics = await store.metrics()  # type: ignore[attr-defined]
        self.active.set(metrics.active_sessions)
        self.avg_size.set(metrics.avg_history_size)
        self.storage.set(metrics.storage_used)
        return metrics


async def main() -> str:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    gauges = StateGauges(registry)
    async with MemoryStore(observers=[observer]) as store:
        for user in range(3):
            for turn in range(2):
                async with Session(store, f"user-{user}") as session:
                    session.add(Message.user(f"question {turn}"), Message.assistant("answer"))
        metrics = await gauges.refresh(store)
        for alert in metrics.alerts(max_active_sessions=10_000, max_load_latency=0.1):
            print("ALERT:", alert)
    return generate_latest(registry).decode()


if __name__ == "__main__":
    print(asyncio.run(main()))
