"""Area: what ``min_replicas=1`` costs a turn (the commit followed by WAIT 1).

It starts its own primary and replica (``redis-server`` from PATH, free
loopback ports, no persistence), so the replica is on the same machine: the
cost measured is WAIT's round trip through the replica's acknowledgement,
not a network's. Each round times one whole turn (load the window, add a
user and an assistant message, commit) on a store without ``min_replicas``
and on one with it, interleaved; the set is run several times, and the
medians of the runs and their range are reported, with the ratio of the two.

``python -m benchmarks.replicas [--quick]`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from promptkit_async import Message, RedisStore, Session

from ._common import Context, Params, text
from ._harness import Progress, Variant, paired_ratio, run_interleaved, summarize

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["run", "steps"]

_RETAINED = 40  # each session keeps this many messages: every turn costs the same


def _runs(p: Params) -> int:
    return int(p.extra.get("replica_runs", 1 if p.turn_rounds < 50 else 3 if p.quick else 5))


def _rounds(p: Params) -> int:
    return max(1, p.turn_rounds // 3)


def steps(ctx: Context) -> int:
    p = ctx.params
    return _runs(p) * (p.warmup + _rounds(p))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Server:
    def __init__(self, *args: str) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="promptkit-bench-")
        exe = shutil.which("redis-server")
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir]
            + ["--save", "", "--appendonly", "no", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} within 10 s")


class _Pair:
    """A primary and one replica of it, for as long as the ``with`` block lasts."""

    def __enter__(self) -> _Pair:
        self.primary = _Server()
        self.replica: _Server | None = None
        try:
            _wait(lambda: self.primary.client().ping(), "the primary did not answer")
            self.replica = _Server("--replicaof", "127.0.0.1", str(self.primary.port))
            replica = self.replica
            _wait(
                lambda: replica.client().info("replication").get("master_link_status") == "up",
                "the replica did not sync",
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for server in (self.replica, self.primary):
            if server is not None:
                server.stop()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.primary.port}/0"


def _variant(name: str, store: RedisStore, user: Message, reply: Message) -> Variant:
    async def turn(_: int) -> None:
        async with Session(store, "s", max_messages=20, ttl=3600) as session:
            session.add(user, reply)

    return Variant(name, turn)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


async def _one_run(url: str, p: Params, progress: Progress, run: int) -> dict[str, Any]:
    user = Message.user(text(p.message_chars, 1001))
    reply = Message.assistant(text(p.message_chars, 1002))
    plain = RedisStore.from_url(url, prefix=f"bench-plain-{run}", max_stored=_RETAINED)
    waiting = RedisStore.from_url(
        url, prefix=f"bench-wait-{run}", max_stored=_RETAINED, min_replicas=1
    )
    try:
        variants = [
            _variant("min_replicas=0", plain, user, reply),
            _variant("min_replicas=1", waiting, user, reply),
        ]
        for store in (plain, waiting):  # the retained history, before timing
            for _ in range(_RETAINED // 2):
                async with Session(store, "s") as session:
                    session.add(user, reply)
        progress.section(f"replicas: run {run + 1}, turns without and with WAIT", _rounds(p))
        await run_interleaved(variants, rounds=_rounds(p), warmup=p.warmup, progress=progress)
    finally:
        await plain.aclose()
        await waiting.aclose()
    off, on = (summarize(v.samples) for v in variants)
    return {
        "min_replicas=0": off,
        "min_replicas=1": on,
        "extra_p50_us": on["p50_us"] - off["p50_us"],
        "ratio_p50": _ratio(on["p50_us"], off["p50_us"]),
        "paired_ratio": paired_ratio(variants[1].samples, variants[0].samples),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def run(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server is not on PATH: no replica to wait for"}
    with _Pair() as pair:
        runs = [await _one_run(pair.url, p, ctx.progress, i) for i in range(_runs(p))]
    return {
        "definition": (
            "one turn (load the newest 20 of 40 messages, add a user and an assistant "
            f"message of {p.message_chars} characters, commit), on a store without and with "
            "min_replicas=1 (the commit pipelined with WAIT 1 1000), interleaved; a primary "
            "and a replica on this machine"
        ),
        "runs": runs,
        "p50_us_without": _spread([r["min_replicas=0"]["p50_us"] for r in runs]),
        "p50_us_with": _spread([r["min_replicas=1"]["p50_us"] for r in runs]),
        "extra_p50_us": _spread([r["extra_p50_us"] for r in runs]),
        "ratio_p50": _spread([r["ratio_p50"] for r in runs]),
        "paired_ratio": _spread([r["paired_ratio"] for r in runs]),
    }


def _iter_lines(results: dict[str, Any]) -> Iterator[str]:
    if "skipped" in results:
        yield f"skipped: {results['skipped']}"
        return
    for name in ("p50_us_without", "p50_us_with", "extra_p50_us", "ratio_p50", "paired_ratio"):
        s = results[name]
        yield f"{name:>16}: median {s['median']:8.2f}  range {s['min']:.2f} .. {s['max']:.2f}"


async def _main(quick: bool) -> dict[str, Any]:
    params = Params.quick_run() if quick else Params.full()
    progress = Progress(0, enabled=False)
    ctx = Context(client=None, url="", prefix="", params=params, progress=progress)  # type: ignore[arg-type]
    results = await run(ctx)
    for line in _iter_lines(results):
        print(line)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    found = asyncio.run(_main(args.quick))
    if args.out is not None:
        args.out.write_text(json.dumps(found, indent=1) + "\n")
