"""Area: the pydantic-ai turn on ConversationStoreBackend, against its peers.

A framework turn: load the stored conversation (``store.load``: the record, then its
history), add a user and an assistant message, save it (``store.save``: the record is read
again, then one atomic write). Four contestants, interleaved in one set:

- ``ConversationStoreBackend (RedisStore)``: the integration over a RedisStore on the
  benchmark's Redis;
- ``pydantic-ai InMemoryConversationStore``: pydantic-ai's own store (no I/O: the framework's
  own cost per turn, the part no backend can remove);
- ``ConversationStoreBackend (MemoryStore)``: the integration with no I/O (its encoding cost);
- ``promptkit RedisStore load + commit``: the plain promptkit round trip on the same Redis,
  ``store.load`` of the whole history and one ``store.commit`` of the two messages.

Each round seeds a fresh conversation of exactly ``history_len`` messages, untimed, for every
contestant alike. Then one turn of each Redis contestant is replayed to count its round trips
(every packed send on a redis.asyncio connection, the same counter as the turns area) and the
commands Redis executed for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptkit_async import MemoryStore, Message
from promptkit_async._ids import new_turn_id
from promptkit_async.stores import Turn

from ._common import TTL, Context, history, text
from ._contestants import OursContestant
from ._harness import Variant, paired_ratio, run_interleaved, summarize
from .turns import _count_sends, _server_stats

if TYPE_CHECKING:
    from pydantic_ai.conversation_store import ConversationStore
    from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse

    from promptkit_async import RedisStore

__all__ = ["run", "steps"]

BACKEND = "ConversationStoreBackend (RedisStore)"
IN_MEMORY = "pydantic-ai InMemoryConversationStore"
BACKEND_MEMORY = "ConversationStoreBackend (MemoryStore)"
PLAIN = "promptkit RedisStore load + commit"


def _rounds(ctx: Context) -> int:
    return max(1, ctx.params.turn_rounds // 3)


def steps(ctx: Context) -> int:
    return ctx.params.warmup + _rounds(ctx) + 2 * 5  # two contestants replayed 5 times


def _messages(ctx: Context) -> tuple[list[ModelMessage], ModelRequest, ModelResponse]:
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

    n = ctx.params.message_chars
    seed: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart(m.text)])
        if m.role == "user"
        else ModelResponse(parts=[TextPart(m.text)])
        for m in history(ctx.params.history_len, n)
    ]
    return (
        seed,
        ModelRequest(parts=[UserPromptPart(text(n, 1001))]),
        ModelResponse(parts=[TextPart(text(n, 1002))]),
    )


def _framework_variant(
    name: str,
    store: ConversationStore,
    seed: list[ModelMessage],
    user: ModelRequest,
    reply: ModelResponse,
) -> Variant:
    from pydantic_ai.conversation import Conversation

    expected = len(seed)

    async def prepare(i: int) -> None:
        await store.save(Conversation(conversation_id=f"{name}:{i}", messages=list(seed)))

    async def turn(i: int) -> None:
        conversation = await store.load(f"{name}:{i}")
        if conversation is None or len(conversation.messages) != expected:
            raise AssertionError(f"{name} loaded the wrong history")
        conversation.messages += [user, reply]
        await store.save(conversation)

    return Variant(name, turn, prepare)


def _plain_variant(
    store: RedisStore, seed: list[Message], user: Message, reply: Message
) -> Variant:
    seeder = OursContestant(store, len(seed))
    sid = "plain"

    async def prepare(_: int) -> None:
        await seeder.reseed([sid], seed)

    async def turn(_: int) -> None:
        loaded = await store.load(sid)
        if len(loaded) != len(seed):
            raise AssertionError("the plain turn loaded the wrong history")
        await store.commit(
            Turn(session_id=sid, messages=(user, reply), turn_id=new_turn_id(), ttl=TTL)
        )

    return Variant(PLAIN, turn, prepare)


async def _round_trips(ctx: Context, variant: Variant) -> dict[str, int]:
    """Round trips, server commands and server µs of one turn (min of 5: the server is shared)."""
    best: dict[str, int] | None = None
    for i in range(5):
        key = 1_000_000 + i
        await variant.prepare(key)
        calls0, usec0 = await _server_stats(ctx)
        with _count_sends() as sends:
            await variant.run(key)
        calls1, usec1 = await _server_stats(ctx)
        got = {
            "round_trips": sends[0],
            "server_commands": calls1 - calls0 - 1,  # the first INFO counts itself
            "server_us": usec1 - usec0,
        }
        if best is None or got["server_commands"] < best["server_commands"]:
            best = got
        ctx.progress.advance()
    assert best is not None
    return best


async def run(ctx: Context) -> dict[str, Any]:
    # Imported here: the area is skipped, not the whole suite, without the pydantic-ai extra.
    try:
        from pydantic_ai.conversation_store import InMemoryConversationStore

        from promptkit_async.integrations.pydantic_ai import ConversationStoreBackend
    except ImportError as exc:
        return {"skipped": f"{exc}"}
    p = ctx.params
    seed, user, reply = _messages(ctx)
    plain_seed = history(p.history_len, p.message_chars)
    plain_user, plain_reply = (
        Message.user(text(p.message_chars, 1001)),
        Message.assistant(text(p.message_chars, 1002)),
    )
    backend = ConversationStoreBackend(ctx.store("pydantic"))
    variants = [
        _framework_variant(BACKEND, backend, seed, user, reply),
        _framework_variant(IN_MEMORY, InMemoryConversationStore(), seed, user, reply),
        _framework_variant(
            BACKEND_MEMORY, ConversationStoreBackend(MemoryStore()), seed, user, reply
        ),
        _plain_variant(ctx.store("pydantic-plain"), plain_seed, plain_user, plain_reply),
    ]
    rounds = _rounds(ctx)
    ctx.progress.section("pydantic-ai turns: backend, in-memory, plain (interleaved)", rounds)
    await run_interleaved(variants, rounds=rounds, warmup=p.warmup, progress=ctx.progress)

    by_name = {v.name: v for v in variants}
    p50 = {v.name: summarize(v.samples)["p50_us"] for v in variants}
    latency: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = summarize(v.samples)
        entry["ratio_to_plain_p50"] = p50[v.name] / p50[PLAIN]
        entry["paired_ratio_to_plain"] = paired_ratio(v.samples, by_name[PLAIN].samples)
        entry["ratio_to_in_memory_p50"] = p50[v.name] / p50[IN_MEMORY]
        latency[v.name] = entry
    trips = {name: await _round_trips(ctx, by_name[name]) for name in (BACKEND, PLAIN)}
    return {
        "definition": (
            f"load a stored conversation of {p.history_len} messages, add a user and an "
            f"assistant message of {p.message_chars} characters, save; a fresh conversation "
            "per round (seeded untimed)"
        ),
        "latency": latency,
        "backend_minus_in_memory_p50_us": p50[BACKEND] - p50[IN_MEMORY],
        "round_trips": trips,
        "round_trips_counted": "packed sends on redis.asyncio connections during one turn",
    }
