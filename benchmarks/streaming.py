"""Area 5: streaming overhead of ``session.stream()`` vs reading the same stream with httpx.

A local OpenAI-compatible SSE server (``benchmarks._sse_server``, its own
process) streams a reply of N tokens. Two clients, interleaved, on identical
``httpx.AsyncClient`` settings and the same request body:

- ``httpx``: POST, ``aiter_lines``, ``json.loads`` of each ``data:`` line, the
  delta text collected (the least a correct client does);
- ``promptkit_async``: ``async with Session(MemoryStore, ...,
  provider=OpenAIProvider(...))`` then ``async for text in session.stream(...)``,
  which also stages the user message and the assembled reply and commits them.

Measured: time to first token and total time. With two token counts, the
difference splits into a fixed cost per turn and a cost per token.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx

from promptkit_async import MemoryStore, Message, Session

from ._common import Context, history
from ._harness import Variant, run_interleaved, summarize

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["run", "sse_server", "steps"]


def steps(ctx: Context) -> int:
    p = ctx.params
    return len(p.stream_tokens) * (p.stream_rounds + max(1, p.warmup // 5))


@contextlib.contextmanager
def sse_server() -> Iterator[int]:
    """Start the SSE server process; yield its port; stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._sse_server"],
        stdout=subprocess.PIPE,
        cwd=_root(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the SSE server did not start")
        yield int(line)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent)


class _Timed:
    """Time to first token and total, per round."""

    def __init__(self) -> None:
        self.ttft: list[int] = []
        self.recording = False


async def _one_size(
    ctx: Context, provider: Any, raw_client: httpx.AsyncClient, tokens: int
) -> dict[str, Any]:
    """Interleaved rounds of the plain httpx client and session.stream() for one reply size."""
    p = ctx.params
    window = history(p.window, p.message_chars)
    question = "What is the weather in Paris today?"
    store = MemoryStore()
    raw_t, lib_t = _Timed(), _Timed()
    body = provider.build_body([*window, Message.user(question)], None)
    # The same body the provider sends; the same headers.
    headers = {
        "Accept": "text/event-stream",
        "Authorization": "Bearer x",
    }
    url = f"{provider.base_url}/chat/completions"
    expected = "".join(f"tok{i} " for i in range(tokens))

    async def raw_turn(_: int) -> None:
        t0 = time.perf_counter_ns()
        first = 0
        parts: list[str] = []
        async with raw_client.stream("POST", url, json=body, headers=headers) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if not first:
                            first = time.perf_counter_ns()
                        parts.append(piece)
        if "".join(parts) != expected:
            raise AssertionError("httpx client read a different reply")
        if raw_t.recording:
            raw_t.ttft.append(first - t0)

    async def lib_prepare(_: int) -> None:
        await store.delete("s")
        await store.append("s", window, max_messages=None)

    async def lib_turn(_: int) -> None:
        t0 = time.perf_counter_ns()
        first = 0
        async with Session(store, "s", max_messages=p.window + 1, provider=provider) as session:
            reply = session.stream(question)
            async for _piece in reply:
                if not first:
                    first = time.perf_counter_ns()
        if reply.message is None or reply.message.content != expected:
            raise AssertionError("session.stream() read a different reply")
        if lib_t.recording:
            lib_t.ttft.append(first - t0)

    variants = [
        Variant("httpx", raw_turn),
        Variant("promptkit_async", lib_turn, lib_prepare),
    ]
    ctx.progress.section(f"streaming: {tokens} tokens", p.stream_rounds)
    warm = max(1, p.warmup // 5)
    await run_interleaved(variants, rounds=warm, warmup=0, progress=ctx.progress)
    for v in variants:
        v.samples.clear()
    raw_t.recording = lib_t.recording = True
    await run_interleaved(variants, rounds=p.stream_rounds, warmup=0, progress=ctx.progress)
    raw_total, lib_total = (
        summarize(variants[0].samples),
        summarize(variants[1].samples),
    )
    raw_first, lib_first = summarize(raw_t.ttft), summarize(lib_t.ttft)
    return {
        "httpx": {"ttft": raw_first, "total": raw_total},
        "promptkit_async": {"ttft": lib_first, "total": lib_total},
        "added_ttft_p50_us": lib_first["p50_us"] - raw_first["p50_us"],
        "added_total_p50_us": lib_total["p50_us"] - raw_total["p50_us"],
    }


async def run(ctx: Context) -> dict[str, Any]:
    try:
        from promptkit_async.providers import OpenAIProvider
    except ImportError as exc:  # pragma: no cover - the providers package is optional here
        return {"skipped": f"promptkit_async.providers.OpenAIProvider unavailable: {exc}"}

    p = ctx.params
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_keepalive_connections=4)
    with sse_server() as port:
        async with (
            httpx.AsyncClient(timeout=30, limits=limits) as raw_client,
            httpx.AsyncClient(timeout=30, limits=limits) as lib_client,
        ):
            for tokens in p.stream_tokens:
                provider = OpenAIProvider(
                    "bench",
                    base_url=f"http://127.0.0.1:{port}/t{tokens}/v1",
                    api_key="x",
                    client=lib_client,
                )
                out[str(tokens)] = await _one_size(ctx, provider, raw_client, tokens)
    ns = sorted(p.stream_tokens)
    if len(ns) >= 2:
        lo, hi = str(ns[0]), str(ns[-1])
        per_token = (out[hi]["added_total_p50_us"] - out[lo]["added_total_p50_us"]) / (
            ns[-1] - ns[0]
        )
        out["added_per_token_us"] = per_token
        out["added_per_turn_us"] = out[lo]["added_total_p50_us"] - per_token * ns[0]
    out["session_setup"] = "MemoryStore, 20-message history re-seeded each round"
    return out
