"""Area: what OpenTelemetry costs a turn, from off to the SDK recording every span.

The turn of ``turns.py`` (load the newest 20 of 40 messages, add a user and an
assistant message, commit), on MemoryStore and on RedisStore, plus a streamed
turn (MemoryStore, a streamed ScriptedProvider reply: a chat span and the metrics too).
Each instrumented variant runs interleaved with ``off``, a pair at a time,
switched untimed before every timed turn:

- ``off``: not instrumented (``uninstrument()``): the hot path's checks;
- ``no-op providers``: ``instrument(NoOpTracerProvider(), NoOpMeterProvider())``;
- ``API, no SDK``: ``instrument()`` with no SDK configured (the API's proxies);
- ``SDK, in-memory``: the SDK's TracerProvider with a SimpleSpanProcessor into an
  InMemorySpanExporter (each span exported as it ends, on the request path: the
  upper bound of what a BatchSpanProcessor costs there) and a MeterProvider
  with an InMemoryMetricReader.

``python -m benchmarks.otel_cost [--quick] [--runs N]`` runs it on its own and
prints each ratio to ``off`` as the median and range over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from typing import TYPE_CHECKING, Any

from promptkit_async import MemoryStore, ScriptedProvider, Session

from ._common import Context, Params, delete_prefix, new_prefix
from ._contestants import Contestant, MemoryContestant, OursContestant
from ._harness import Progress, Variant, paired_ratio, run_interleaved, summarize
from .turns import turn_messages

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptkit_async import Message

    Maker = Callable[[str, str], Variant]  # a variant of one turn, by name and session id

__all__ = ["VARIANTS", "run", "steps"]

VARIANTS = ("off", "no-op providers", "API, no SDK", "SDK, in-memory")


def _rounds(ctx: Context) -> tuple[int, int, int]:
    """Rounds of the Redis, MemoryStore and streamed sets."""
    p = ctx.params
    return p.turn_rounds, p.memory_rounds, max(1, p.memory_rounds // 4)


def steps(ctx: Context) -> int:
    pairs = len(VARIANTS) - 1
    return sum(pairs * (ctx.params.warmup + rounds) for rounds in _rounds(ctx))


class _Modes:
    """Switches the process's telemetry between the variants (untimed).

    Each variant's instrumentation is built once, here; a switch only puts it in
    force, so that no variant's ``prepare`` allocates more than another's (a
    collection it triggered would move out of, or into, the timed turn).
    """

    def __init__(self) -> None:
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import NoOpTracerProvider

        from promptkit_async import _telemetry, otel

        self._telemetry = _telemetry
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exported = 0
        self._active: dict[str, _telemetry.Telemetry | None] = {"off": None}
        otel.instrument(NoOpTracerProvider(), NoOpMeterProvider())
        self._active["no-op providers"] = _telemetry.active
        otel.instrument()
        self._active["API, no SDK"] = _telemetry.active
        otel.instrument(self.tracer_provider, self.meter_provider)
        self._active["SDK, in-memory"] = _telemetry.active
        otel.uninstrument()
        assert list(self._active) == list(VARIANTS)

    def switch(self, variant: str) -> None:
        self.exported += len(self.exporter.get_finished_spans())
        self.exporter.clear()  # what the previous turn exported: memory stays flat
        self._telemetry.active = self._active[variant]

    def close(self) -> None:
        self._telemetry.active = None
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


def _store_turn(
    modes: _Modes, c: Contestant, seed: list[Message], user: Message, reply: Message
) -> Maker:
    def make(variant: str, sid: str) -> Variant:
        async def prepare(_: int) -> None:
            await c.reseed([sid], seed)
            modes.switch(variant)

        async def turn(_: int) -> None:
            seen = await c.turn(sid, user, reply)
            if seen != c.window:
                raise AssertionError(f"loaded {seen} messages, expected {c.window}")

        return Variant(variant, turn, prepare)

    return make


def _streamed_turn(modes: _Modes, store: MemoryStore) -> Maker:
    provider = ScriptedProvider(chunk="word")  # echoes the user: a reply of 14 words

    def make(variant: str, sid: str) -> Variant:
        async def prepare(_: int) -> None:
            await store.delete(sid)
            provider.calls.clear()  # what it records of each call: memory stays flat
            modes.switch(variant)

        async def turn(_: int) -> None:
            async with Session(store, sid, provider=provider) as session:
                async for _piece in session.stream("hello"):
                    pass

        return Variant(variant, turn, prepare)

    return make


async def _compare(ctx: Context, modes: _Modes, kind: str, rounds: int, make: Maker) -> Any:
    """Each instrumented variant interleaved with ``off``, in a pair of its own.

    Pairs, not one set of four: the rotation of a set keeps the order of its
    variants, so one variant would always run right after the SDK's (whose
    spans evict the others' code and data from the CPU caches) and pay for it.
    In a pair each variant follows either one equally often.
    """
    out: dict[str, Any] = {}
    for variant in VARIANTS[1:]:
        pair = [make("off", f"{kind}-off-{variant}"), make(variant, f"{kind}-{variant}")]
        ctx.progress.section(f"OpenTelemetry cost: {kind} turn, off and {variant}", rounds)
        modes.exported = 0
        await run_interleaved(pair, rounds=rounds, warmup=ctx.params.warmup, progress=ctx.progress)
        modes.switch("off")
        off, on = (summarize(v.samples) for v in pair)
        entry: dict[str, Any] = {
            **on,
            "off": off,
            "ratio_to_off_p50": on["p50_us"] / off["p50_us"],
            "paired_ratio_to_off": paired_ratio(pair[1].samples, pair[0].samples),
        }
        if variant == "SDK, in-memory":
            if not modes.exported:
                raise AssertionError(f"the SDK variant of the {kind} turn exported no span")
            entry["spans_per_turn"] = modes.exported / (rounds + ctx.params.warmup)
        out[variant] = entry
    return out


async def run(ctx: Context) -> dict[str, Any]:
    try:
        modes = _Modes()
    except ImportError as exc:  # the bench needs the test extra's opentelemetry-sdk
        return {"skipped": f"opentelemetry-sdk is not installed ({exc})"}
    p = ctx.params
    redis_rounds, memory_rounds, stream_rounds = _rounds(ctx)
    seed, user, reply = turn_messages(ctx)
    results: dict[str, Any] = {
        "definition": (
            f"load the newest {p.window} of {p.history_len} messages, add a user and an "
            f"assistant message of {p.message_chars} characters, commit; streamed: the same "
            "on MemoryStore, the reply streamed by a ScriptedProvider (14 words)"
        ),
        "variants": list(VARIANTS),
    }
    redis_turn = OursContestant(ctx.store("otel"), p.window)
    memory_turn = MemoryContestant(MemoryStore(), p.window)
    try:
        results["memory"] = await _compare(
            ctx, modes, "memory", memory_rounds, _store_turn(modes, memory_turn, seed, user, reply)
        )
        results["redis"] = await _compare(
            ctx, modes, "redis", redis_rounds, _store_turn(modes, redis_turn, seed, user, reply)
        )
        results["streamed"] = await _compare(
            ctx, modes, "streamed", stream_rounds, _streamed_turn(modes, MemoryStore())
        )
    finally:
        modes.close()
    return results


async def _main(params: Params, url: str, runs: int) -> int:
    import redis.asyncio as aioredis

    ratios: dict[tuple[str, str], list[float]] = {}
    for i in range(runs):
        client = aioredis.Redis.from_url(url)
        prefix = new_prefix()
        ctx = Context(client, url, prefix, params, Progress(0, enabled=False))
        try:
            results = await run(ctx)
        finally:
            await delete_prefix(client, prefix)
            await client.aclose()
        if "skipped" in results:
            print(results["skipped"])
            return 1
        print(f"run {i + 1}/{runs}:")
        for name in ("memory", "redis", "streamed"):
            line = []
            for variant in VARIANTS[1:]:
                entry = results[name][variant]
                ratios.setdefault((name, variant), []).append(entry["ratio_to_off_p50"])
                line.append(
                    f"{variant} {entry['p50_us']:.1f} µs vs {entry['off']['p50_us']:.1f} "
                    f"({entry['ratio_to_off_p50']:.3f})"
                )
            print(f"  {name:8} " + ", ".join(line))
    print(f"\np50 ratio to off, median [min, max] over {runs} runs:")
    for name in ("memory", "redis", "streamed"):
        cells = []
        for variant in VARIANTS[1:]:
            values = ratios[(name, variant)]
            cells.append(
                f"{variant} {statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"
            )
        print(f"  {name:8} " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the suite's --quick sizes")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    params = Params.quick_run() if args.quick else Params.full()
    sys.exit(asyncio.run(_main(params, args.redis_url, args.runs)))
