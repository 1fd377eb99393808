"""Area 8: the stream decoders on hostile input, linear in their input.

A peer can send one enormous line, in pieces as small as it likes. The SSE
and NDJSON decoders must cost the same per byte whatever the line length and
the chunking: each case is timed on a line of N and 4N bytes, and the ratio
of the two (4.0 for a linear decoder; 16 for a quadratic one) is reported
with the throughput. The 40 MiB line is fed in 64 KiB chunks; the 1-byte
chunks use smaller lines (a Python call per byte is slow, but linear).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from promptkit_async.providers._ndjson import NDJSONDecoder
from promptkit_async.providers._sse import SSEDecoder

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._common import Context

__all__ = ["run", "steps"]

#: (chunk size, line sizes): each line size n is also run at 4n.
CASES = ((64 * 1024, (10 << 20,)), (1, (1 << 20,)))
QUICK = ((64 * 1024, (1 << 20,)), (1, (64 << 10,)))


def steps(ctx: Context) -> int:
    cases = QUICK if ctx.params.quick else CASES
    return 2 * 2 * sum(len(sizes) for _, sizes in cases)


def _feed(make: Callable[[], Any], payload: bytes, chunk: int) -> float:
    """The best of three runs (one when fed a byte at a time: those take seconds)."""
    best = float("inf")
    for _ in range(1 if chunk == 1 else 3):
        decoder = make()
        view = memoryview(payload)
        started = time.perf_counter()
        for i in range(0, len(payload), chunk):
            decoder.feed(bytes(view[i : i + chunk]))
        best = min(best, time.perf_counter() - started)
    return best


def _payloads(size: int) -> dict[str, tuple[Callable[[], Any], bytes]]:
    return {
        "sse": (SSEDecoder, b"data: " + b"x" * size + b"\n\n"),
        "ndjson": (NDJSONDecoder, b'{"a":"' + b"x" * size + b'"}\n'),
    }


async def run(ctx: Context) -> dict[str, Any]:
    cases = QUICK if ctx.params.quick else CASES
    ctx.progress.section("stream decoders on one long line", steps(ctx))
    rows: list[dict[str, Any]] = []
    for chunk, sizes in cases:
        for size in sizes:
            for name in ("sse", "ndjson"):
                make, small = _payloads(size)[name]
                _, large = _payloads(4 * size)[name]
                t_small = _feed(make, small, chunk)
                ctx.progress.advance()
                t_large = _feed(make, large, chunk)
                ctx.progress.advance()
                rows.append(
                    {
                        "decoder": name,
                        "chunk_bytes": chunk,
                        "line_bytes": 4 * size,
                        "seconds": round(t_large, 4),
                        "mib_per_s": round(4 * size / t_large / (1 << 20), 1),
                        "ratio_4x_input": round(t_large / t_small, 2),
                    }
                )
    return {"cases": rows}
