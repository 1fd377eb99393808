"""What every benchmark area shares: parameters, test data, the key prefix, the turns.

The turn (issue 4): load the newest ``window`` messages of a ``history``-message
session, add a user and an assistant message of about 200 characters each,
save. Fairness: before every timed turn the session is re-seeded, untimed, to
exactly ``history`` messages, for every contestant alike (promptkit_async's
commit caps storage to the window, so without it later turns would load a
shorter history than the first).
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from promptkit_async import Message, RedisStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    import redis.asyncio as aioredis

    from ._harness import Progress

__all__ = [
    "TTL",
    "Context",
    "Params",
    "delete_prefix",
    "floor_record",
    "history",
    "new_prefix",
    "text",
]

TTL = 24 * 60 * 60  # seconds, the library default: every contestant sets a TTL

_WORDS = (
    "the a model user session history message reply token stream window redis cache "
    "latency request answer question context system prompt assistant tool call result "
    "weather city paris temperature today please could you tell me about how what why "
    "when where which is are was were be been being have has had do does did will would "
    "shall should may might must can and or but if then else for while with without into"
).split()


def text(n_chars: int, seed: int) -> str:
    """English-like filler of about ``n_chars`` characters (compresses like prose)."""
    rnd = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n_chars:
        w = rnd.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


def history(n: int, chars: int = 200, seed: int = 0) -> list[Message]:
    """``n`` alternating user / assistant messages of ``chars`` characters."""
    return [
        Message.user(text(chars, seed + i))
        if i % 2 == 0
        else Message.assistant(text(chars, seed + i))
        for i in range(n)
    ]


def new_prefix() -> str:
    return f"pkbench-{uuid.uuid4().hex[:10]}"


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    """SCAN + DEL of every key starting with ``prefix`` (never KEYS or FLUSHDB)."""
    count = 0
    batch: list[bytes] = []
    async for k in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(k)
        if len(batch) >= 500:
            count += await client.delete(*batch)
            batch = []
    if batch:
        count += await client.delete(*batch)
    return count


@dataclass
class Params:
    """Sizes of a run; ``quick()`` is the under-a-minute smoke run."""

    quick: bool = False
    warmup: int = 100
    turn_rounds: int = 3000
    ping_rounds: int = 3000
    memory_rounds: int = 20000
    concurrency: tuple[int, ...] = (1, 10, 100, 1000)
    turns_per_level: int = 3000
    min_rounds_per_level: int = 5
    one_session_requests: int = 50
    one_session_rounds: int = 30
    # 40 and 10,000 stored: a turn costs what its window costs, not what is kept.
    histories: tuple[int, ...] = (40, 1000, 10_000)
    windows: tuple[int, ...] = (10, 20, 100)
    grid_rounds: int = 300
    #: Sessions of these many kept messages, in steady state (see scaling.py).
    retention: tuple[int, ...] = (40, 10_000)
    stream_rounds: int = 200
    stream_tokens: tuple[int, ...] = (10, 200)
    peer_rounds: int = 1000
    correctness_turns: int = 50
    codec_rounds: int = 3000
    compress_history: int = 1000
    compress_rounds: int = 200
    #: The codec-in-real-turns set (codec.turns_by_codec): rounds of 4 variants.
    codec_turn_rounds: int = 3000
    #: Goal runs (``--runs N``; see goals.py) and the concurrency goal 4 is measured at.
    goal_runs: int = 1
    goal_concurrency: int = 100
    message_chars: int = 200
    history_len: int = 40
    window: int = 20
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def full(cls) -> Params:
        return cls()

    @classmethod
    def quick_run(cls) -> Params:
        return cls(
            quick=True,
            warmup=30,
            turn_rounds=400,
            ping_rounds=400,
            memory_rounds=3000,
            turns_per_level=300,
            min_rounds_per_level=2,
            one_session_rounds=4,
            histories=(40, 10_000),
            windows=(20,),
            grid_rounds=40,
            stream_rounds=30,
            peer_rounds=150,
            correctness_turns=20,
            codec_rounds=400,
            codec_turn_rounds=400,
            compress_history=300,
            compress_rounds=20,
        )

    @classmethod
    def tiny(cls) -> Params:
        """For the smoke test: every code path, a handful of samples each."""
        return cls(
            quick=True,
            warmup=1,
            turn_rounds=3,
            ping_rounds=3,
            memory_rounds=3,
            concurrency=(1, 3),
            turns_per_level=3,
            min_rounds_per_level=1,
            one_session_requests=3,
            one_session_rounds=1,
            histories=(10, 30),
            windows=(5, 20),
            retention=(40, 100),
            grid_rounds=2,
            stream_rounds=2,
            stream_tokens=(2, 5),
            peer_rounds=2,
            correctness_turns=4,
            codec_rounds=3,
            codec_turn_rounds=3,
            goal_concurrency=3,
            compress_history=20,
            compress_rounds=2,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What a benchmark area gets: the Redis client, its own key prefix, the sizes."""

    client: aioredis.Redis
    url: str
    prefix: str
    params: Params
    progress: Progress
    peers: Sequence[str] = ()
    notes: list[str] = field(default_factory=list)

    def store(self, name: str, **kwargs: Any) -> RedisStore:
        return RedisStore(self.client, prefix=f"{self.prefix}:{name}", **kwargs)

    def key(self, *parts: str) -> bytes:
        return ":".join((self.prefix, *parts)).encode()


# -- the floor: the minimal correct turn written by hand -----------------------------


_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def floor_record(role: str, content: str) -> bytes:
    """The same compact record the library stores (so both move the same bytes)."""
    return _json_dumps({"v": 1, "r": role, "c": content}).encode()
