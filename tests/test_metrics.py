"""StateMetrics and its alert thresholds."""

from __future__ import annotations


def test_alerts_mirror_thresholds() -> None:
    from promptkit_async import LatencySummary, StateMetrics

    m = StateMetrics(
        active_sessions=12_000,
        avg_history_size=18,
        load_latency=LatencySummary(0.02, 0.25, 100),
        save_latency=LatencySummary(None, None, 0),
        storage_used=10,
        sampled=200,
        exact=False,
    )
    alerts = m.alerts(max_active_sessions=10_000, max_load_latency=0.1)
    assert alerts == [
        "active sessions 12000 above 10000",
        "load latency p99 250.0 ms above 100.0 ms",
    ]
    assert m.alerts(max_active_sessions=20_000, max_load_latency=1) == []
