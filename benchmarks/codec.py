"""Area 7: serialization (stdlib json vs orjson vs msgspec) and zlib compression.

Codec: encode and decode of a 20-message window in the library's record format
(``promptkit_async._messages``: ``{"v":1,"r":...,"c":...}``), each codec timed
twice, interleaved: bare (dict <-> bytes) and whole (Message <-> bytes, the same
record building and Message construction around the codec). ``library`` is the
code the stores run today (``encode_message`` / ``decode_message``).

Compression: a long history stored with ``RedisStore(compress_above=...)`` vs
without: bytes in Redis, CPU per message, and the windowed and full loads.

Codec inside real turns (:func:`turns_by_codec`): the standard RedisStore turn
(re-seeded, 20 of 40 loaded, a pair saved) with the stdlib json, and the same
turn with orjson and with msgspec put into ``promptkit_async._codec``,
interleaved with the floor in one set (see :data:`HOOK` for how). Each swap is
installed in the variant's untimed prepare (after the re-seed, which always
writes with the stdlib) and stays until the next variant's prepare; the stdlib
is put back after the set. Before timing,
:func:`codec_identity` checks that every codec writes the same bytes and
decodes the same messages, on the turn's own data, on stored records from a
real turn, and on an edge-case corpus.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from typing import TYPE_CHECKING, Any

from promptkit_async import Message, ToolCall
from promptkit_async import _codec as codec_module
from promptkit_async._codec import _from_record, _record, decode_message, encode_message, header

from ._common import Context, history
from ._contestants import Contestant, FloorContestant, OursContestant
from ._harness import Variant, paired_ratio, run_interleaved, summarize
from .turns import turn_messages, variant

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "codec_identity",
    "json_swaps",
    "library_codec",
    "run",
    "steps",
    "turns_by_codec",
    "use_codec",
]

COMPRESS_ABOVE = 512
COMPRESS_SIZES = (200, 2000)

#: A turn ratio must move by this much (lower) for a codec to be adopted.
ADOPT_THRESHOLD = 0.03

#: How a variant swaps its JSON library in: through ``_codec._fast_loads`` (the
#: hot path's parser, the ``fast`` extra) when the library has it, the stdlib
#: encoder kept (the bytes stored are the library's whatever the extra); else
#: by replacing ``_dumps``, ``_scan_once`` and ``_loads`` (encoder and decoder).
HOOK = "_fast_loads"
METHOD = (
    "decoder: promptkit_async._codec._fast_loads (the hot path's parser); encoder: the stdlib"
    if hasattr(codec_module, HOOK)
    else "promptkit_async._codec._dumps, _scan_once and _loads replaced (encoder and decoder)"
)
_SWAPPED = ("_dumps", "_scan_once", "_loads")
_STDLIB: dict[str, Any] = {name: getattr(codec_module, name) for name in _SWAPPED}
if hasattr(codec_module, HOOK):
    _STDLIB[HOOK] = None


def steps(ctx: Context) -> int:
    p = ctx.params
    return (
        p.codec_rounds
        + p.warmup
        + len(COMPRESS_SIZES) * (p.compress_rounds + 2)
        + turns_by_codec_steps(ctx)
    )


def turns_by_codec_steps(ctx: Context) -> int:
    return ctx.params.codec_turn_rounds + ctx.params.warmup


def json_swaps() -> dict[str, dict[str, Any]]:
    """Codec name -> the ``promptkit_async._codec`` attributes its variant sets.

    ``json`` is the stdlib throughout (and no fast parser); orjson and msgspec
    only where installed. See :data:`HOOK` for the two ways a codec is put in.
    """
    hook = hasattr(codec_module, HOOK)
    out: dict[str, dict[str, Any]] = {"json": dict(_STDLIB)}
    try:
        import orjson
    except ImportError:
        pass
    else:
        o_dumps, o_loads = orjson.dumps, orjson.loads
        if hook:
            out["orjson"] = {**_STDLIB, HOOK: o_loads}
        else:

            def o_scan(text: str, _: int) -> tuple[Any, int]:
                return o_loads(text), len(text)

            out["orjson"] = {
                "_dumps": lambda obj: o_dumps(obj).decode("utf-8"),
                "_scan_once": o_scan,
                "_loads": o_loads,
            }
    try:
        import msgspec
    except ImportError:
        pass
    else:
        m_enc, m_dec = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode
        if hook:
            out["msgspec"] = {**_STDLIB, HOOK: m_dec}
        else:

            def m_scan(text: str, _: int) -> tuple[Any, int]:
                return m_dec(text), len(text)

            out["msgspec"] = {
                "_dumps": lambda obj: m_enc(obj).decode("utf-8"),
                "_scan_once": m_scan,
                "_loads": m_dec,
            }
    return out


@contextlib.contextmanager
def library_codec() -> Iterator[None]:
    """Put ``promptkit_async._codec`` back as it was (its own parser, extra or not)."""
    names = (*_SWAPPED, HOOK) if hasattr(codec_module, HOOK) else _SWAPPED
    saved = {name: getattr(codec_module, name) for name in names}
    try:
        yield
    finally:
        use_codec(saved)


def use_codec(swap: dict[str, Any]) -> None:
    """Install one of :func:`json_swaps`' entries into ``promptkit_async._codec``."""
    for name, fn in swap.items():
        setattr(codec_module, name, fn)


def _edge_cases() -> dict[str, Message]:
    """Records whose bytes a different JSON library might write differently."""
    return {
        "ascii": Message.user("hello there"),
        "non-ascii": Message.user("café naïve Ünïcödé 日本語 ελληνικά"),
        "emoji": Message.assistant("ok \U0001f600 \U0001f44d\U0001f3fd"),
        "quotes and backslashes": Message.user('say "hi" \\ C:\\path\\'),
        "control characters": Message.user("a\nb\tc\rd\x00e\x01f\x1fg\x7fh\bi\fj"),
        "line separators": Message.user("a\u2028b\u2029c"),
        "tool call": Message.assistant(
            "", tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')]
        ),
        "tool result": Message.tool("42", tool_call_id="call_1", is_error=True),
        "name": Message.user("hi", name="alice"),
        "metadata ints and strings": Message.user("hi", meta={"a": 1, "b": "x", "c": [1, 2]}),
        "metadata floats": Message.user("hi", f={"a": 0.1, "b": 1e16, "c": 1.5e-7, "d": -0.0}),
        "metadata big int": Message.user("hi", big=2**70),
        "metadata nested": Message.user("hi", n={"x": {"y": [True, False, None]}}),
    }


def _same(a: Message, b: Message) -> bool:
    return a == b and a.id == b.id and a.created_at == b.created_at


def _compare(swaps: dict[str, dict[str, Any]], corpus: dict[str, Message]) -> dict[str, Any]:
    """Per codec: the cases whose encoded bytes differ from the stdlib's, and the
    cases whose stdlib-written record decodes to a different message (or fails)."""
    now = time.time_ns() // 1_000_000
    use_codec(swaps["json"])
    reference = {k: encode_message(m) for k, m in corpus.items()}
    stored = {k: header(now, str(i)) + b for i, (k, b) in enumerate(reference.items())}
    decoded = {k: decode_message(r, session_id="s", index=0) for k, r in stored.items()}
    out: dict[str, Any] = {}
    try:
        for name, swap in swaps.items():
            if name == "json":
                continue
            use_codec(swap)
            bytes_differ: dict[str, str] = {}
            decode_differs: dict[str, str] = {}
            for k, m in corpus.items():
                try:
                    got = encode_message(m)
                except Exception as exc:
                    bytes_differ[k] = f"raises {type(exc).__name__}: {exc}"
                else:
                    if got != reference[k]:
                        bytes_differ[k] = f"{got!r} != {reference[k]!r}"
                try:
                    back = decode_message(stored[k], session_id="s", index=0)
                except Exception as exc:
                    decode_differs[k] = f"raises {type(exc).__name__}: {exc}"
                else:
                    if not _same(back, decoded[k]):
                        decode_differs[k] = f"{back!r} != {decoded[k]!r}"
            out[name] = {
                "cases": len(corpus),
                "bytes_identical": not bytes_differ,
                "decoded_identical": not decode_differs,
                "bytes_differ": bytes_differ,
                "decoded_differ": decode_differs,
            }
    finally:
        use_codec(swaps["json"])
    return out


async def codec_identity(
    ctx: Context,
    swaps: dict[str, dict[str, Any]],
    seed: list[Message],
    user: Message,
    reply: Message,
) -> dict[str, Any]:
    """Do the swapped codecs write the bytes and read the messages the stdlib does?

    ``turn_data``: the benchmark turn's 42 messages. ``real_turn``: one turn per
    codec on a fresh RedisStore session, the stored payloads (headers aside:
    they hold the server's time) compared with the stdlib turn's, and each
    turn's stored records decoded under the stdlib and under the codec.
    ``edge_cases``: :func:`_edge_cases`.
    """
    data = {f"message {i}": m for i, m in enumerate([*seed, user, reply])}
    result: dict[str, Any] = {
        "turn_data": _compare(swaps, data),
        "edge_cases": _compare(swaps, _edge_cases()),
    }
    payloads: dict[str, list[bytes]] = {}
    records: dict[str, list[bytes]] = {}
    try:
        for name, swap in swaps.items():
            c = OursContestant(ctx.store(f"codec-check-{name}"), ctx.params.window)
            use_codec(swaps["json"])
            await c.reseed(["check"], seed)
            use_codec(swap)
            await c.turn("check", user, reply)
            store = c.store
            assert hasattr(store, "key")
            raw = await ctx.client.lrange(store.key("check", "h"), 0, -1)
            records[name] = [r if isinstance(r, bytes) else r.encode() for r in raw]
            payloads[name] = [r.partition(b"\n")[2] for r in records[name]]
            await store.delete("check")
    finally:
        use_codec(swaps["json"])
    real: dict[str, Any] = {}
    for name, swap in swaps.items():
        if name == "json":
            continue
        same_decode = True
        for r in records[name]:
            use_codec(swaps["json"])
            a = decode_message(r, session_id="s", index=0)
            use_codec(swap)
            b = decode_message(r, session_id="s", index=0)
            same_decode = same_decode and _same(a, b)
        use_codec(swaps["json"])
        real[name] = {
            "records": len(payloads[name]),
            "payloads_identical": payloads[name] == payloads["json"],
            "decoded_identical": same_decode,
        }
    result["real_turn"] = real
    return result


async def turns_by_codec(ctx: Context) -> dict[str, Any]:
    """The standard RedisStore turn under each codec, with the floor, interleaved."""
    seed, user, reply = turn_messages(ctx)
    with library_codec():
        return await _turns_by_codec(ctx, seed, user, reply)


async def _turns_by_codec(
    ctx: Context, seed: list[Message], user: Message, reply: Message
) -> dict[str, Any]:
    p = ctx.params
    swaps = json_swaps()
    identity = await codec_identity(ctx, swaps, seed, user, reply)
    found: list[Contestant] = [FloorContestant(ctx.client, f"{ctx.prefix}:ctfloor", p.window)]
    variants = [variant(found[0], "ct-floor", seed, user, reply)]
    for name, swap in swaps.items():
        c = OursContestant(ctx.store(f"ct-{name}"), p.window, name=name)
        found.append(c)
        v = variant(c, f"ct-{name}", seed, user, reply)

        async def prepare(i: int, reseed: Any = v.prepare, swap: dict[str, Any] = swap) -> None:
            use_codec(swaps["json"])  # the re-seed always writes with the stdlib
            await reseed(i)
            use_codec(swap)

        v.prepare = prepare
        variants.append(v)
    ctx.progress.section(
        "serialization: the RedisStore turn with json, orjson, msgspec (interleaved)",
        p.codec_turn_rounds,
    )
    try:
        await run_interleaved(
            variants, rounds=p.codec_turn_rounds, warmup=p.warmup, progress=ctx.progress
        )
    finally:
        use_codec(swaps["json"])
    floor = variants[0].samples
    floor_p50 = summarize(floor)["p50_us"]
    stdlib = variants[1].samples
    latency: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = summarize(v.samples)
        entry["ratio_to_floor_p50"] = entry["p50_us"] / floor_p50
        entry["paired_ratio_to_floor"] = paired_ratio(v.samples, floor)
        latency["floor" if v is variants[0] else v.name] = entry
    base = latency["json"]["paired_ratio_to_floor"]
    change = {
        name: {
            "paired_ratio_to_floor": latency[name]["paired_ratio_to_floor"],
            "difference_to_json": latency[name]["paired_ratio_to_floor"] - base,
            "paired_ratio_to_json": paired_ratio(variants[i + 1].samples, stdlib),
        }
        for i, name in enumerate(swaps)
        if name != "json"
    }
    return {
        "definition": (
            "the standard RedisStore turn (re-seeded; load 20 of 40, save a pair) with the "
            "stdlib json, and with orjson / msgspec put into promptkit_async._codec (see "
            "method), interleaved with the floor"
        ),
        "rule": (
            f"adopt a codec if it lowers the paired turn ratio to the floor by "
            f"{ADOPT_THRESHOLD} or more (median over >= 5 runs)"
        ),
        "method": METHOD,
        "identity": identity,
        "latency": latency,
        "by_codec": change,
    }


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
        "turns": await turns_by_codec(ctx),
    }
