"""The benchmark suite still runs: every area, a handful of samples, no timing asserted."""

from __future__ import annotations

import importlib.util
import json
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from benchmarks.__main__ import AREAS, run_suite
from benchmarks._common import Params
from benchmarks._report import chart, table

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.redis


def _summaries(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every latency summary (a dict with a sample count ``n``) in the results."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "n" in node and "p50_us" in node or node.get("n") == 0:
            found.append((path, node))
        for key, value in node.items():
            found.extend(_summaries(value, f"{path}/{key}"))
    return found


def _check(results: dict[str, Any], areas: list[str]) -> None:
    json.dumps(results)  # the JSON file can be written
    for key in ("date", "cpu", "cores", "python", "redis_py", "hiredis", "redis_server"):
        assert results["machine"][key], key
    assert results["parameters"]["areas"] == areas
    for area in areas:
        assert results[area], area
    summaries = _summaries(results)
    assert summaries
    empty = [path for path, s in summaries if not s["n"]]
    assert not empty, f"variants without samples: {empty}"


async def test_every_area_runs(redis_url: str, tmp_path: Path) -> None:
    areas = list(AREAS)
    results = await run_suite(Params.tiny(), url=redis_url, peers=[], show_progress=False)
    _check(results, areas)
    lat = results["turns"]["latency"]
    assert {"PING", "floor", "promptkit_async", "promptkit_async (MemoryStore)"} <= set(lat)
    assert results["turns"]["round_trips"]["promptkit_async"]["round_trips"] >= 1
    assert set(results["scaling"]["concurrency"]) == {"1", "3"}
    assert len(results["scaling"]["history_window"]) == 4
    race = results["correctness"]["results"]["promptkit_async"]
    assert race["lost"] == race["interleaved"] == race["overlapping"] == 0  # not a timing
    assert "2" in results["streaming"] and "added_per_token_us" in results["streaming"]
    assert "json" in results["codec"]["encode_plus_decode_p50_us"]
    assert table(results)
    if importlib.util.find_spec("matplotlib") is not None:
        assert chart(results, tmp_path / "chart.png") is None
        assert (tmp_path / "chart.png").stat().st_size > 0


@pytest.mark.parametrize("peer", ["openai-agents", "llama-index"])
async def test_peer_runs(redis_url: str, peer: str) -> None:
    module = {"openai-agents": "agents", "llama-index": "llama_index"}[peer]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{peer} is not installed (pip install -e '.[bench]')")
    with warnings.catch_warnings():  # third-party deprecations are not ours to fail on
        warnings.simplefilter("ignore")
        areas = ["turns", "correctness"]
        results = await run_suite(
            Params.tiny(), url=redis_url, areas=areas, peers=[peer], show_progress=False
        )
    _check(results, areas)
    assert not results["turns"]["peers_missing"]
    assert len(results["turns"]["latency"]) == 5  # PING, floor, ours, the peer, MemoryStore
    assert len(results["correctness"]["results"]) == 3
