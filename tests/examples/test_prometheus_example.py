"""The Prometheus example wires observers and metrics into real collectors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prometheus_metrics.py"


async def test_prometheus_example_exports_store_metrics() -> None:
    spec = importlib.util.spec_from_file_location("prometheus_metrics_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        text: str = await module.main()
    finally:
        del sys.modules[spec.name]
    lines = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(lines["promptkit_load_seconds_count"]) == 6
    assert float(lines["promptkit_save_seconds_count"]) == 6
    assert float(lines["promptkit_messages_saved_total"]) == 12
    assert float(lines["promptkit_active_sessions"]) == 3
    assert float(lines["promptkit_avg_history_size"]) == 4
    assert float(lines["promptkit_storage_bytes"]) > 0
