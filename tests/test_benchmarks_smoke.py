"""The benchmark suite still runs: every area, a handful of samples, no timing asserted."""

from __future__ import annotations

import importlib.util
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
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
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_summaries(value, f"{path}/{i}"))
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
    _check_codec_turns(results["codec"]["turns"])
    _check_goals(results["goals"], runs=1)
    assert table(results)
    if importlib.util.find_spec("matplotlib") is not None:
        assert chart(results, tmp_path / "chart.png") is None
        assert (tmp_path / "chart.png").stat().st_size > 0


def _check_codec_turns(turns: dict[str, Any]) -> None:
    """The turn under each codec: the floor, the stdlib and each installed fast codec."""
    assert {"floor", "json"} <= set(turns["latency"])
    fast = set(turns["latency"]) - {"floor", "json"}
    assert fast <= {"orjson", "msgspec"}
    assert set(turns["by_codec"]) == fast
    for entry in turns["by_codec"].values():
        assert set(entry) == {"paired_ratio_to_floor", "difference_to_json", "paired_ratio_to_json"}
    identity = turns["identity"]
    assert set(identity) == {"turn_data", "edge_cases", "real_turn"}
    for name in fast:
        # the benchmark's own data is written and read identically (not a timing)
        assert identity["turn_data"][name]["bytes_identical"], name
        assert identity["turn_data"][name]["decoded_identical"], name
        assert identity["real_turn"][name]["payloads_identical"], name
        assert identity["real_turn"][name]["decoded_identical"], name
        assert identity["edge_cases"][name]["cases"] > 0


def _check_goals(goals: dict[str, Any], *, runs: int) -> None:
    """Every goal figure: per-run values, median, range, the goal, met (structure only)."""
    from benchmarks.goals import FIGURES

    assert goals["runs"] == runs
    assert len(goals["per_run"]) == runs
    assert [f.key for f in FIGURES] == list(goals["goals"])
    assert {f.goal for f in FIGURES} == {1, 2, 3, 4, 5}
    for key, entry in goals["goals"].items():
        assert {"goal", "label", "target", "values", "median", "min", "max", "met"} <= set(entry)
        if "codec_" in key and importlib.util.find_spec(key.split("_")[1]) is None:
            continue  # that codec is not installed: no figure
        assert len(entry["values"]) == runs, key
        assert entry["min"] <= entry["median"] <= entry["max"], key
        if entry["target"] == "-":
            assert entry["met"] is None, key
        else:
            assert isinstance(entry["met"], bool), key
    for key in ("codec_orjson_difference", "codec_msgspec_difference"):
        assert goals["goals"][key]["decision"] in {"adopt", "do not adopt", None}
    assert goals["goals"]["turn_round_trips"]["median"] >= 1


async def test_goals_over_several_runs(redis_url: str, tmp_path: Path) -> None:
    params = Params.tiny()
    params.goal_runs = 2
    results = await run_suite(params, url=redis_url, areas=["goals"], peers=[], show_progress=False)
    _check(results, ["goals"])
    _check_goals(results["goals"], runs=2)
    assert "Goals: median and range" in table(results)
    assert results["parameters"]["goal_runs"] == 2


def test_the_goals_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--goals`` and ``--runs N`` reach the suite as the areas and the goal runs."""
    import benchmarks.__main__ as cli

    seen: dict[str, Any] = {}

    async def fake_suite(params: Params, **kw: Any) -> dict[str, Any]:
        seen.update(kw, runs=params.goal_runs)
        return {"machine": {}, "parameters": {}, "elapsed_s": 0.0}

    monkeypatch.setattr(cli, "run_suite", fake_suite)
    monkeypatch.setattr(cli, "table", lambda results: "")

    def main(argv: list[str]) -> int:
        # In a thread of its own: its asyncio.run would otherwise orphan the
        # loop an older pytest-asyncio leaves current after an async test.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(cli.main, argv).result()

    assert main(["--goals", "--out", str(tmp_path / "g"), "--no-progress"]) == 0
    assert seen["areas"] == ["goals"] and seen["runs"] == 5
    assert main(["--runs", "3", "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    assert seen["areas"] is None and seen["runs"] == 3
    assert (tmp_path / "f.json").exists()
    for bad in (["--runs", "0"], ["--goals", "--only", "turns"]):
        with pytest.raises(SystemExit):
            cli.main(bad)


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
