"""``python -m benchmarks [--quick] [--runs N] [--goals]``: run the suite, print the tables,
write JSON and PNG."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from . import (
    agents_turns,
    codec,
    correctness,
    decoders,
    goals,
    otel_cost,
    pydantic_turns,
    replicas,
    scaling,
    streaming,
    summaries,
    turns,
)
from ._common import Context, Params, delete_prefix, new_prefix
from ._contestants import PEERS
from ._harness import Progress
from ._report import chart, machine_info, table

__all__ = ["AREAS", "main", "run_suite"]

AREAS = {
    "turns": turns,
    "scaling": scaling,
    "streaming": streaming,
    "correctness": correctness,
    "codec": codec,
    "decoders": decoders,
    "summaries": summaries,
    "otel_cost": otel_cost,
    "agents_turns": agents_turns,
    "pydantic_turns": pydantic_turns,
    "replicas": replicas,
    # Last: the five goals, measured over --runs N goal runs (see goals.py).
    "goals": goals,
}

RESULTS = Path(__file__).resolve().parent / "results"


async def run_suite(
    params: Params,
    *,
    url: str,
    areas: list[str] | None = None,
    peers: list[str] | None = None,
    show_progress: bool = True,
    max_connections: int = 200,
) -> dict[str, Any]:
    """Run the chosen areas and return every result (what the JSON file holds)."""
    # A bounded, blocking pool, as a production service would configure it: above
    # ``max_connections`` in-flight commands, turns wait for a free connection.
    # (redis-py's default pool instead raises MaxConnectionsError past 100.)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=60
    )
    client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
    prefix = new_prefix()
    progress = Progress(0, enabled=show_progress)
    ctx = Context(
        client=client,
        url=url,
        prefix=prefix,
        params=params,
        progress=progress,
        peers=list(PEERS) if peers is None else peers,
    )
    chosen = list(AREAS) if areas is None else areas
    progress.total = max(1, sum(AREAS[a].steps(ctx) for a in chosen))
    results: dict[str, Any] = {
        "machine": await machine_info(client),
        "parameters": {
            **params.as_dict(),
            "areas": chosen,
            "peers": list(ctx.peers),
            "max_connections": max_connections,
        },
    }
    started = time.monotonic()
    try:
        for name in chosen:
            results[name] = await AREAS[name].run(ctx)
    finally:
        progress.close()
        await client.aclose()
        cleaner = aioredis.Redis.from_url(url)
        try:
            await delete_prefix(cleaner, prefix)
        finally:
            await cleaner.aclose()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="the Redis server to use (default $REDIS_URL or 127.0.0.1:6379)",
    )
    parser.add_argument("--only", nargs="+", choices=list(AREAS), help="run only these areas")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip openai-agents and llama-index"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write <name>.json and <name>.png (default benchmarks/results/latest "
        "for a full run, benchmarks/results/goals for --goals, benchmarks/results/quick "
        "for --quick)",
    )
    parser.add_argument(
        "--max-connections", type=int, default=200, help="Redis connection pool size (200)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        metavar="N",
        help="goal runs: the goal figures' median and range over N interleaved runs "
        "(default 1; 5 with --goals)",
    )
    parser.add_argument(
        "--goals",
        action="store_true",
        help="run only the goal measurements (default 5 runs; writes benchmarks/results/goals)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.goals and args.only:
        parser.error("--goals runs the goal measurements only: drop --only")
    runs = args.runs if args.runs is not None else 5 if args.goals else 1
    if runs < 1:
        parser.error("--runs must be at least 1")

    params = Params.quick_run() if args.quick else Params.full()
    params.goal_runs = runs
    areas = ["goals"] if args.goals else args.only
    default = "quick" if args.quick else "goals" if args.goals else "latest"
    out: Path = args.out or RESULTS / default
    results = asyncio.run(
        run_suite(
            params,
            url=args.redis_url,
            areas=areas,
            peers=[] if args.no_peers else None,
            show_progress=not args.no_progress,
            max_connections=args.max_connections,
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    png_path = out.with_suffix(".png")
    json_path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    note = chart(results, png_path)
    print(table(results))
    print(f"\nwrote {json_path}" + (f" ({note})" if note else f" and {png_path}"))
    print(f"elapsed {results['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
