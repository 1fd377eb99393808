"""Timing machinery: interleaved rounds, summary statistics, a progress line.

Nothing here knows about Redis or promptkit_async. A :class:`Variant` is an
untimed ``prepare`` (e.g. re-seeding a history) and a timed ``run``; the
runner times ``run`` with :func:`time.perf_counter_ns` and rotates the order
of the variants every round.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Progress",
    "Variant",
    "paired_ratio",
    "run_interleaved",
    "summarize",
]

Step = Callable[[int], Awaitable[Any]]


async def _nothing(_: int) -> None:
    return None


@dataclass
class Variant:
    """One contestant: ``prepare(i)`` runs untimed before each timed ``run(i)``."""

    name: str
    run: Step
    prepare: Step = _nothing
    samples: list[int] = field(default_factory=list)


def _percentile(ordered: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summarize(samples_ns: Sequence[int]) -> dict[str, float]:
    """min / p50 (median) / p90 / p99 / max / mean in microseconds, and the count."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    if n == 0:
        return {"n": 0}
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {
        "n": n,
        "min_us": ordered[0] / 1000,
        "p50_us": median / 1000,
        "p90_us": _percentile(ordered, 90) / 1000,
        "p99_us": _percentile(ordered, 99) / 1000,
        "max_us": ordered[-1] / 1000,
        "mean_us": sum(ordered) / n / 1000,
    }


def paired_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """Median of the per-round ratios a[i] / b[i] (robust to drift between rounds)."""
    ratios = sorted(x / y for x, y in zip(a, b, strict=False) if y > 0)
    if not ratios:
        return math.nan
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


async def run_interleaved(
    variants: Sequence[Variant],
    *,
    rounds: int,
    warmup: int,
    progress: Progress | None = None,
) -> None:
    """Time every variant once per round, rotating the order each round.

    The first ``warmup`` rounds are discarded. Samples land in ``variant.samples``.
    """
    gc.collect()
    k = len(variants)
    for r in range(warmup + rounds):
        for j in range(k):
            v = variants[(r + j) % k]
            await v.prepare(r)
            t0 = time.perf_counter_ns()
            await v.run(r)
            dt = time.perf_counter_ns() - t0
            if r >= warmup:
                v.samples.append(dt)
        if progress is not None:
            progress.advance()


class Progress:
    """A one-line progress indicator on stderr (only redrawn on a terminal)."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = ""
        self.enabled = enabled
        self._tty = sys.stderr.isatty()
        self._started = time.monotonic()
        self._last_draw = 0.0

    def section(self, label: str, steps: int) -> None:
        """Start a section that will call :meth:`advance` ``steps`` times."""
        self.label = label
        self._section_left = steps
        if self.enabled and not self._tty:
            print(f"[{self._elapsed():6.1f}s] {label}", file=sys.stderr, flush=True)
        self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _draw(self, force: bool = False) -> None:
        if not (self.enabled and self._tty):
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        frac = min(1.0, self.done / self.total)
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = f"\r[{bar}] {frac * 100:5.1f}% {self._elapsed():6.1f}s  {self.label}"
        sys.stderr.write(line[:120].ljust(120))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write("\r" + " " * 120 + "\r")
            sys.stderr.flush()
