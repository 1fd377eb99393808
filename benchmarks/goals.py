"""The five goals of the performance issue, measured over N interleaved runs.

A goal run is six interleaved sets back to back, each the same code the suite
runs (no peers: the goals compare promptkit_async with the floor only):

1. the headline turn set (PING, floor, RedisStore turn; re-seeded every round);
2. the steady-state set (floor, RedisStore, ``RedisStore(near_cache=1000)``);
3. the MemoryStore turn;
4. ``goal_concurrency`` (100) sessions at once (floor, ours), then
   ``one_session_requests`` (50) turns at once on one session (floor+lock, ours);
5. the RedisStore turn with the stdlib json, orjson and msgspec in the codec,
   with the floor (see ``codec.turns_by_codec``).

``goal_runs`` (``--runs N``) goal runs are made one after another, so machine
drift during the run reaches every goal alike. Every figure is taken within its
own run (a ratio to the floor measured in the same set); the goals section holds
each figure's value per run, its median, min and max over the runs, and whether
the median meets the goal.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import TYPE_CHECKING, Any

from . import codec, scaling, turns
from ._contestants import FloorContestant, OursContestant

if TYPE_CHECKING:
    from ._common import Context

__all__ = ["FIGURES", "Figure", "figures", "goal_run", "run", "steps", "summarize_goals"]


@dataclasses.dataclass(frozen=True)
class Figure:
    """One reported figure: which goal, what it is, and the target it is held to."""

    key: str
    goal: int
    label: str
    op: str  # "<=", ">=", or "info" (reported, not judged)
    target: float | None = None
    decision: bool = False  # a decision rule (adopt / keep), not a goal

    def met(self, value: float | None) -> bool | None:
        if value is None or self.target is None or self.op == "info":
            return None
        return value <= self.target if self.op == "<=" else value >= self.target

    def goal_text(self) -> str:
        if self.op == "info" or self.target is None:
            return "-"
        return f"{self.op} {self.target:g}"


FIGURES: tuple[Figure, ...] = (
    Figure("turn_paired_ratio", 1, "standard turn, x floor (paired, median of rounds)", "<=", 0.75),
    Figure("turn_p99_ratio", 1, "standard turn p99 / floor p99", "<=", 1.0),
    Figure("turn_round_trips", 1, "standard turn, round trips", "info"),
    Figure("near_cache_paired_ratio", 2, "near_cache steady turn, x floor (paired)", "<=", 0.40),
    Figure("near_cache_round_trips", 2, "near_cache steady turn, round trips", "<=", 1),
    Figure("memory_p50_us", 3, "MemoryStore turn p50 (µs)", "<=", 5.0),
    Figure("sessions_throughput_ratio", 4, "C sessions at once, turns/s x floor", ">=", 1.3),
    Figure("one_session_throughput_ratio", 4, "N on one session, turns/s x floor+lock", ">=", 1.2),
    Figure("codec_json_paired_ratio", 5, "turn with stdlib json, x floor (paired)", "info"),
    Figure("codec_orjson_paired_ratio", 5, "turn with orjson, x floor (paired)", "info"),
    Figure("codec_orjson_difference", 5, "orjson turn - json turn (x floor)", "<=", -0.03, True),
    Figure("codec_msgspec_paired_ratio", 5, "turn with msgspec, x floor (paired)", "info"),
    Figure("codec_msgspec_difference", 5, "msgspec turn - json turn (x floor)", "<=", -0.03, True),
)


def _goal_steps(ctx: Context) -> int:
    p = ctx.params
    rounds = scaling.level_rounds(ctx, p.goal_concurrency) + 1
    return (
        p.warmup
        + p.turn_rounds  # headline
        + p.warmup
        + max(1, p.turn_rounds // 3)  # near cache
        + p.warmup
        + p.memory_rounds  # MemoryStore
        + rounds
        + p.one_session_rounds
        + 1  # throughput
        + codec.turns_by_codec_steps(ctx)
    )


def steps(ctx: Context) -> int:
    return ctx.params.goal_runs * _goal_steps(ctx)


async def goal_run(ctx: Context, index: int) -> dict[str, Any]:
    """One goal run: the results of its six sets, in the suite's own layout."""
    ctx = dataclasses.replace(ctx, peers=())
    p = ctx.params
    seed, user, reply = turns.turn_messages(ctx)
    label = f"goals: run {index + 1} of {p.goal_runs}: "
    found = [
        FloorContestant(ctx.client, f"{ctx.prefix}:floor", p.window),
        OursContestant(ctx.store("ours"), p.window),
    ]
    ctx.progress.section(label + "standard turn", 0)
    latency = await turns.headline(ctx, found, seed, user, reply)
    trips = {c.name: await turns.count_round_trips(ctx, c, seed, user, reply) for c in found}
    ctx.progress.section(label + "near cache", 0)
    steady = await turns.near_cache(ctx, seed, user, reply)
    latency.update(await turns.memory_turn(ctx, seed, user, reply))
    level = p.goal_concurrency
    concurrency = {str(level): await scaling.concurrency_level(ctx, level)}
    one = await scaling.one_session(ctx, plain_floor=False)
    by_codec = await codec.turns_by_codec(ctx)
    return {
        "turns": {"latency": latency, "round_trips": trips, "near_cache": steady},
        "scaling": {"concurrency": concurrency, "one_session": one},
        "codec": {"turns": by_codec},
    }


def _get(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def figures(results: dict[str, Any], level: int) -> dict[str, float | None]:
    """Every figure of :data:`FIGURES` from one run's results (None where absent)."""
    lat = _get(results, "turns", "latency") or {}
    ours, floor = lat.get("promptkit_async") or {}, lat.get("floor") or {}
    cache = _get(results, "turns", "near_cache", "promptkit_async near_cache") or {}
    by_codec = _get(results, "codec", "turns", "by_codec") or {}
    out: dict[str, float | None] = {
        "turn_paired_ratio": ours.get("paired_ratio_to_floor"),
        "turn_p99_ratio": (
            ours["p99_us"] / floor["p99_us"] if "p99_us" in ours and "p99_us" in floor else None
        ),
        "turn_round_trips": _get(results, "turns", "round_trips", "promptkit_async", "round_trips"),
        "near_cache_paired_ratio": cache.get("paired_ratio_to_floor"),
        "near_cache_round_trips": cache.get("round_trips"),
        "memory_p50_us": _get(lat, "promptkit_async (MemoryStore)", "p50_us"),
        "sessions_throughput_ratio": _get(
            results,
            "scaling",
            "concurrency",
            str(level),
            "promptkit_async",
            "throughput_ratio_to_floor",
        ),
        "one_session_throughput_ratio": _get(
            results,
            "scaling",
            "one_session",
            "results",
            "promptkit_async",
            "throughput_ratio_to_floor",
        ),
        "codec_json_paired_ratio": _get(
            results, "codec", "turns", "latency", "json", "paired_ratio_to_floor"
        ),
    }
    for name in ("orjson", "msgspec"):
        entry = by_codec.get(name) or {}
        out[f"codec_{name}_paired_ratio"] = entry.get("paired_ratio_to_floor")
        out[f"codec_{name}_difference"] = entry.get("difference_to_json")
    return out


def summarize_goals(per_run: list[dict[str, float | None]], ctx: Context) -> dict[str, Any]:
    """Median, min and max of each figure over the runs; met (or the decision) on the median."""
    p = ctx.params
    out: dict[str, Any] = {}
    for f in FIGURES:
        values = [v for run in per_run if (v := run.get(f.key)) is not None]
        median = statistics.median(values) if values else None
        label = f.label.replace("C sessions", f"{p.goal_concurrency} sessions").replace(
            "N on one", f"{p.one_session_requests} on one"
        )
        entry: dict[str, Any] = {
            "goal": f.goal,
            "label": label,
            "target": f.goal_text(),
            "values": values,
            "median": median,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "met": f.met(median),
        }
        if f.decision:
            entry["decision"] = (
                None if median is None else "adopt" if f.met(median) else "do not adopt"
            )
        out[f.key] = entry
    return out


async def run(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    per_run: list[dict[str, float | None]] = []
    raw: list[dict[str, Any]] = []
    for i in range(p.goal_runs):
        results = await goal_run(ctx, i)
        raw.append(results)
        per_run.append(figures(results, p.goal_concurrency))
    identity = _get(raw[-1], "codec", "turns", "identity") if raw else None
    return {
        "runs": p.goal_runs,
        "definition": (
            "each run: the headline turn set, the steady-state near-cache set, the "
            f"MemoryStore turn, {p.goal_concurrency} sessions at once, "
            f"{p.one_session_requests} turns on one session, and the turn under each "
            "codec, every one an interleaved set with the floor; median and range "
            "over the runs; met is judged on the median"
        ),
        "goals": summarize_goals(per_run, ctx),
        "per_run": per_run,
        "codec_identity": identity,
        "round_trips": [_get(r, "turns", "round_trips") for r in raw],
        # Every number of every run, in the suite's layout (codec identity kept once, above).
        "run_results": [_without_identity(r) for r in raw],
    }


def _without_identity(results: dict[str, Any]) -> dict[str, Any]:
    by_codec = dict(_get(results, "codec", "turns") or {})
    by_codec.pop("identity", None)
    return {**results, "codec": {"turns": by_codec}}
