"""Area 7: serialization (stdlib json vs orjson vs msgspec) and zlib compression.

Codec: encode and decode of a 20-message window in the library's record format
(``promptkit_async._messages``: ``{"v":1,"r":...,"c":...}``), each codec timed
twice, interleaved: bare (dict <-> bytes) and whole (Message <-> bytes, the same
record building and Message construction around the codec). ``library`` is the
code the stores run today (``encode_message`` / ``decode_message``).

Compression: a long history stored with ``RedisStore(compress_above=...)`` vs
without: bytes in Redis, CPU per message, and the windowed and full loads.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any

from promptkit_async._codec import _from_record, _record, decode_message, encode_message

from ._common import Context, history
from ._harness import Variant, run_interleaved, summarize

if TYPE_CHECKING:
    from promptkit_async import Message

__all__ = ["run", "steps"]

COMPRESS_ABOVE = 512
COMPRESS_SIZES = (200, 2000)


def steps(ctx: Context) -> int:
    p = ctx.params
    return p.codec_rounds + p.warmup + len(COMPRESS_SIZES) * (p.compress_rounds + 2)


def _codecs() -> dict[str, tuple[Any, Any]]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    out: dict[str, tuple[Any, Any]] = {
        "json": (lambda o: dumps(o).encode(), json.loads),
    }
    try:
        import orjson

        out["orjson"] = (orjson.dumps, orjson.loads)
    except ImportError:
        pass
    try:
        import msgspec

        enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
        out["msgspec"] = (enc.encode, dec.decode)
    except ImportError:
        pass
    return out


def _codec_variants(window: list[Message]) -> list[Variant]:
    variants: list[Variant] = []
    records = [_record(m) for m in window]
    stored = [encode_message(m) for m in window]

    def add(name: str, fn: Any) -> None:
        async def step(_: int) -> None:
            fn()

        variants.append(Variant(name, step))

    add("library encode", lambda: [encode_message(m) for m in window])
    add(
        "library decode",
        lambda: [decode_message(b, session_id="s", index=i) for i, b in enumerate(stored)],
    )
    for name, (dumps, loads) in _codecs().items():
        add(f"{name} bare encode", lambda d=dumps: [d(r) for r in records])
        add(f"{name} bare decode", lambda lo=loads: [lo(b) for b in stored])
        add(f"{name} whole encode", lambda d=dumps: [d(_record(m)) for m in window])
        add(
            f"{name} whole decode",
            lambda lo=loads: [_from_record(lo(b), None, None) for b in stored],
        )
    return variants


async def _compression(ctx: Context, chars: int) -> dict[str, Any]:
    p = ctx.params
    seed = history(p.compress_history, chars, seed=7)
    plain = ctx.store(f"zplain{chars}")
    packed = ctx.store(f"zpacked{chars}", compress_above=COMPRESS_ABOVE)
    for store in (plain, packed):
        await store.delete("z")
        await store.append("z", seed, max_messages=None, ttl=3600)
    raw_bytes = sum(len(encode_message(m)) for m in seed)
    zip_bytes = sum(len(encode_message(m, compress_above=COMPRESS_ABOVE)) for m in seed)
    memory: dict[str, int | None] = {}
    for name, store in (("plain", plain), ("zlib", packed)):
        usage = await ctx.client.memory_usage(store.key("z"), samples=0)
        memory[name] = int(usage) if usage is not None else None

    variants = []
    for name, store in (("plain", plain), ("zlib", packed)):
        for limit in (p.window, None):

            async def load(_: int, s: Any = store, n: int | None = limit) -> None:
                await s.load("z", n)

            label = f"{name} load({limit if limit else 'all'})"
            variants.append(Variant(label, load))
    ctx.progress.section(f"compression: {p.compress_history} messages of {chars} chars", 0)
    await run_interleaved(variants, rounds=p.compress_rounds, warmup=2, progress=ctx.progress)

    one = seed[-1]
    enc = encode_message(one, compress_above=COMPRESS_ABOVE)
    plain_bytes = encode_message(one)
    cpu_variants = [
        Variant("encode plain", _sync(lambda: encode_message(one))),
        Variant("encode zlib", _sync(lambda: encode_message(one, compress_above=COMPRESS_ABOVE))),
        Variant(
            "decode plain",
            _sync(lambda: decode_message(plain_bytes, session_id="s", index=0)),
        ),
        Variant("decode zlib", _sync(lambda: decode_message(enc, session_id="s", index=0))),
        Variant(
            "zlib.compress only", _sync(lambda: zlib.compress(json.dumps(_record(one)).encode(), 6))
        ),
    ]
    await run_interleaved(cpu_variants, rounds=max(50, p.compress_rounds * 10), warmup=5)
    return {
        "messages": p.compress_history,
        "chars_per_message": chars,
        "compress_above": COMPRESS_ABOVE,
        "record_bytes_plain": raw_bytes,
        "record_bytes_zlib": zip_bytes,
        "bytes_saved_pct": 100 * (1 - zip_bytes / raw_bytes),
        "redis_memory_usage": memory,
        "load": {v.name: summarize(v.samples) for v in variants},
        "cpu_per_message": {v.name: summarize(v.samples) for v in cpu_variants},
    }


def _sync(fn: Any) -> Any:
    async def step(_: int) -> None:
        fn()

    return step


async def run(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    window = history(p.window, p.message_chars)
    variants = _codec_variants(window)
    ctx.progress.section("serialization: json vs orjson vs msgspec", p.codec_rounds)
    await run_interleaved(variants, rounds=p.codec_rounds, warmup=p.warmup, progress=ctx.progress)
    codec = {v.name: summarize(v.samples) for v in variants}
    totals: dict[str, float] = {}
    for name in ["library", *_codecs()]:
        if name == "library":
            enc, dec = codec["library encode"], codec["library decode"]
        else:
            enc, dec = codec[f"{name} whole encode"], codec[f"{name} whole decode"]
        totals[name] = enc["p50_us"] + dec["p50_us"]
    compression = {str(c): await _compression(ctx, c) for c in COMPRESS_SIZES}
    return {
        "window": p.window,
        "message_chars": p.message_chars,
        "codec": codec,
        "encode_plus_decode_p50_us": totals,
        "compression": compression,
    }
