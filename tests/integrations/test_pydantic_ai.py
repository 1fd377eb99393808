"""ConversationStoreBackend: pydantic-ai's ConversationStore over MemoryStore, Redis and Cluster."""

from __future__ import annotations

from .conftest import framework

framework("pydantic_ai", "pydantic-ai", python=(3, 11))

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import pytest  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import redis.asyncio.connection as rconn  # noqa: E402
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.conversation import Conversation  # noqa: E402
from pydantic_ai.conversation_store import (  # noqa: E402
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
)
from pydantic_ai.messages import (  # noqa: E402
    BinaryContent,
    ImageUrl,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    RetryFeedbackPart,
    RetryInfo,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402
from pydantic_ai.usage import RequestUsage  # noqa: E402
from redis import exceptions as rexc  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402

from promptkit_async import (  # noqa: E402
    CommitOutcomeUnknown,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    StoreError,
    StoreUnavailable,
)
from promptkit_async.integrations.pydantic_ai import ConversationStoreBackend  # noqa: E402

from ..conftest import _delete_prefix, cluster_client, free_port  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from ..cluster import ClusterServers

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + bytes(
    range(256)
)


@dataclasses.dataclass
class Env:
    """The store under test, and how to reach it again (another client, another process)."""

    kind: str
    store: MemoryStore | RedisStore
    url: str | None = None
    clients: list[aioredis.Redis | RedisCluster] = dataclasses.field(default_factory=list)

    def backend(self) -> ConversationStoreBackend:
        return ConversationStoreBackend(self.store)

    def other_client(self) -> ConversationStoreBackend:
        """A backend over a store with a client of its own (memory: the same store)."""
        if not isinstance(self.store, RedisStore):
            return self.backend()
        assert self.url is not None
        client: aioredis.Redis | RedisCluster
        if self.store.cluster:
            client = RedisCluster.from_url(self.url)
        else:
            client = aioredis.Redis.from_url(self.url)
        self.clients.append(client)
        return ConversationStoreBackend(RedisStore(client, prefix=self.store.prefix))


@contextlib.asynccontextmanager
async def make_env(request: pytest.FixtureRequest, kind: str, prefix: str) -> AsyncIterator[Env]:
    if kind == "memory":
        yield Env(kind, MemoryStore())
        return
    client: aioredis.Redis | RedisCluster
    if kind == "cluster":
        servers: ClusterServers = request.getfixturevalue("redis_cluster")
        client = cluster_client(servers)
        url = f"redis://127.0.0.1:{servers.ports[0]}"
    else:
        url = request.getfixturevalue("redis_url")
        client = aioredis.Redis.from_url(url)
    found = Env(kind, RedisStore(client, prefix=prefix), url, [client])
    try:
        yield found
    finally:
        await _delete_prefix(client, prefix)
        for c in found.clients:
            await c.aclose()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def env(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Env]:
    async with make_env(request, request.param, prefix) as found:
        yield found


@pytest.fixture(params=["redis", "cluster"])
async def redis_only(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Env]:
    async with make_env(request, request.param, prefix) as found:
        yield found


def every_kind_of_message() -> list[ModelMessage]:
    """A history with every part pydantic-ai's agents write."""
    return [
        ModelRequest(
            parts=[
                SystemPromptPart("Be exact.", timestamp=T0),
                UserPromptPart(
                    [
                        "What is in these? ünïcödé ✓ \u2028 {braces} %25",
                        ImageUrl("https://example.com/cat.png"),
                        BinaryContent(PNG, media_type="image/png"),
                        BinaryContent(b"%PDF-1.4 \x00\xff", media_type="application/pdf"),
                    ],
                    timestamp=T0,
                ),
            ],
            instructions="Answer briefly.",
            timestamp=T0,
        ),
        ModelResponse(
            parts=[
                ThinkingPart(
                    "Let me look.", id="th_1", signature="c2lnbmF0dXJl", provider_name="anthropic"
                ),
                TextPart("Calling a tool.", id="msg_1"),
                ToolCallPart(
                    "lookup", {"city": "Paris", "n": [1, 2.5, None]}, tool_call_id="call_1"
                ),
                ToolCallPart("raw", '{"q": "text args"}', tool_call_id="call_2"),
            ],
            usage=RequestUsage(input_tokens=12, output_tokens=34, details={"reasoning_tokens": 5}),
            model_name="test-model",
            timestamp=T0,
            provider_name="anthropic",
            provider_details={"stop": "tool_use", "nested": {"a": [1, "b"]}},
            provider_response_id="resp_1",
            finish_reason="tool_call",
        ),
        ModelRequest(
            parts=[
                ToolReturnPart(
                    "lookup", {"temp": 21.5, "ok": True}, tool_call_id="call_1", timestamp=T0
                ),
                ToolReturnPart(
                    "raw",
                    "bad arguments: q must be short",
                    tool_call_id="call_2",
                    outcome="retried",
                    retry=RetryInfo("validation_error", attempt=1, max_retries=3),
                    timestamp=T0,
                ),
                RetryFeedbackPart(
                    [{"type": "missing", "loc": ("q",), "msg": "Field required", "input": {}}],
                    retry=RetryInfo("validation_error", attempt=2, max_retries=3),
                    timestamp=T0,
                ),
                RetryFeedbackPart(
                    "Please answer in text.", retry=RetryInfo("no_output"), timestamp=T0
                ),
            ],
            timestamp=T0,
        ),
        ModelResponse(
            parts=[TextPart("It is 21.5 °C in Paris.")], model_name="test-model", timestamp=T0
        ),
    ]


def dumped(messages: list[ModelMessage]) -> bytes:
    return ModelMessagesTypeAdapter.dump_json(messages)


def user(text: str) -> ModelRequest:
    return ModelRequest(parts=[UserPromptPart(text, timestamp=T0)], timestamp=T0)


def reply(text: str) -> ModelResponse:
    return ModelResponse(parts=[TextPart(text)], timestamp=T0)


def texts(conversation: Conversation | None) -> list[str]:
    assert conversation is not None
    out = []
    for message in conversation.messages:
        part = message.parts[0]
        assert isinstance(part, (UserPromptPart, TextPart))
        assert isinstance(part.content, str)
        out.append(part.content)
    return out


async def save_new(
    backend: ConversationStoreBackend, cid: str, *words: str, scope: str | None = None
) -> Conversation:
    conversation = Conversation(
        conversation_id=cid,
        messages=[user(w) if i % 2 == 0 else reply(w) for i, w in enumerate(words)],
    )
    await backend.save(conversation, scope=scope)
    return conversation


#: What a new connection sends before its first command: its own setup, not the operation's.
HANDSHAKE = (b"HELLO", b"CLIENT", b"AUTH", b"SELECT", b"READONLY")


def _first_word(command: Any) -> bytes:
    raw = command if isinstance(command, (bytes, bytearray)) else bytes(command[0])
    parts = bytes(raw[:64]).split(b"\r\n")
    return parts[2].upper() if len(parts) > 2 else b""


@contextlib.contextmanager
def counted_sends() -> Iterator[list[int]]:
    """Count round trips: every packed send on any redis.asyncio connection (Cluster too),
    but a new connection's handshake."""
    counter = [0]
    cls: Any = rconn.AbstractConnection
    original = cls.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        if _first_word(command) not in HANDSHAKE:
            counter[0] += 1
        await original(self, command, check_health)

    cls.send_packed_command = counting
    try:
        yield counter
    finally:
        cls.send_packed_command = original


# -- round trips of every message type --------------------------------------------------


async def test_every_message_type_round_trips_exactly(env: Env) -> None:
    messages = every_kind_of_message()
    conversation = Conversation(conversation_id="all-parts", messages=messages)
    entries = await env.backend().save(conversation)
    assert [e.message for e in entries] == messages

    loaded = await env.other_client().load("all-parts")
    assert loaded is not None
    assert loaded.messages == messages
    assert dumped(loaded.messages) == dumped(messages)  # every field, not only those == compares
    request = loaded.messages[0]
    assert isinstance(request, ModelRequest)
    part = request.parts[1]
    assert isinstance(part, UserPromptPart) and isinstance(part.content, list)
    content = part.content
    assert type(content[2]) is BinaryContent  # as given, not narrowed to BinaryImage
    assert isinstance(content[2], BinaryContent)
    assert content[2].data == PNG and content[2].media_type == "image/png"
    history = await env.other_client().load_entries("all-parts")
    assert history is not None
    assert [e.id for e in history] == [e.id for e in entries]
    assert [e.parent_id for e in history] == [None, *[e.id for e in entries[:-1]]]
    assert await env.other_client().read_entry(entries[2].id) == entries[2]


async def test_the_record_round_trips_with_usage_and_scope(env: Env) -> None:
    backend = env.backend()
    conversation = await save_new(backend, "rec", "hi", "hello", scope="user-1")
    conversation.usage.input_tokens = 7
    record = await env.other_client().read_record("rec")
    assert record is not None
    assert record.scope == "user-1" and record.revision == conversation.revision
    assert record.head_id is not None
    again = await env.other_client().read_record("rec")
    assert again == record
    assert await backend.read_record("nothing-here") is None


# -- revisions ----------------------------------------------------------------------------


async def test_a_stale_revision_conflicts_and_writes_nothing(env: Env) -> None:
    backend = env.backend()
    await save_new(backend, "c", "one", "two")
    first = await backend.load("c")
    second = await env.other_client().load("c")
    assert first is not None and second is not None
    first.messages.append(user("from first"))
    await backend.save(first)
    record_before = await backend.read_record("c")
    listed_before = await backend.list_conversations()

    second.messages.append(user("from second"))
    with pytest.raises(ConversationConflict):
        await env.other_client().save(second)
    # Straight to the primitive, with an entry of its own: none of it may be stored.
    assert record_before is not None
    stale = ConversationEntry(parent_id=record_before.head_id, message=user("stale"))
    with pytest.raises(ConversationConflict):
        await backend.write_record(
            dataclasses.replace(record_before, head_id=stale.id, revision="r-stale"),
            new_entries=[stale],
            expected_revision="not-the-revision",
        )
    with pytest.raises(ConversationConflict):  # None: it must not exist yet
        await backend.write_record(
            dataclasses.replace(record_before, head_id=stale.id, revision="r-new"),
            new_entries=[stale],
            expected_revision=None,
        )
    with pytest.raises(KeyError):
        await env.other_client().read_entry(stale.id)
    assert texts(await env.other_client().load("c")) == ["one", "two", "from first"]
    assert await backend.read_record("c") == record_before
    assert await backend.list_conversations() == listed_before


async def test_a_record_pointing_at_an_unknown_entry_conflicts(env: Env) -> None:
    backend = env.backend()
    record = ConversationRecord(conversation_id="dangling", head_id="no-such-entry")
    with pytest.raises(ConversationConflict):
        await backend.write_record(record, expected_revision=None)
    assert await backend.read_record("dangling") is None


async def test_concurrent_saves_from_many_tasks_have_one_winner_per_revision(env: Env) -> None:
    await save_new(env.backend(), "busy", "start")
    backends = [env.other_client() for _ in range(3)]
    won: list[str | None] = []
    conflicts = 0

    async def writer(i: int) -> None:
        nonlocal conflicts
        backend = backends[i % len(backends)]
        while True:
            conversation = await backend.load("busy")
            assert conversation is not None
            base = conversation.revision
            conversation.messages.append(user(f"task-{i}"))
            try:
                await backend.save(conversation)
            except ConversationConflict:
                conflicts += 1
                continue
            won.append(base)
            return

    await asyncio.gather(*(writer(i) for i in range(12)))
    final = texts(await env.backend().load("busy"))
    assert final[0] == "start"
    assert sorted(final[1:]) == sorted(f"task-{i}" for i in range(12))  # none lost, none twice
    assert len(set(won)) == len(won) == 12  # each revision was won by exactly one save
    if env.kind != "memory":
        assert conflicts > 0  # they did race (memory saves never suspend mid-way)


WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from pydantic_ai.conversation_store import ConversationConflict
    from pydantic_ai.messages import ModelRequest, UserPromptPart
    from promptkit_async import RedisStore
    from promptkit_async.integrations.pydantic_ai import ConversationStoreBackend

    url, cluster, prefix, name, count, start = sys.argv[1:7]

    async def main():
        client = RedisCluster.from_url(url) if cluster == "1" else aioredis.Redis.from_url(url)
        backend = ConversationStoreBackend(RedisStore(client, prefix=prefix))
        time.sleep(max(0.0, float(start) - time.time()))
        wins, conflicts = [], 0
        for i in range(int(count)):
            while True:
                conversation = await backend.load("shared")
                base = conversation.revision
                conversation.messages.append(ModelRequest(parts=[UserPromptPart(f"{name}-{i}")]))
                try:
                    await backend.save(conversation)
                except ConversationConflict:
                    conflicts += 1
                    continue
                wins.append(base)
                break
        await client.aclose()
        print(" ".join(wins), conflicts)

    asyncio.run(main())
    """
)


async def test_two_processes_saving_one_conversation_never_both_win(redis_only: Env) -> None:
    env = redis_only
    assert isinstance(env.store, RedisStore) and env.url is not None
    await save_new(env.backend(), "shared", "start")
    start = time.time() + 2.0
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            env.url,
            "1" if env.store.cluster else "0",
            env.store.prefix,
            name,
            "25",
            repr(start),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("p1", "p2")
    ]
    outputs = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        outputs.append(out.decode().split())
    wins = [w for out in outputs for w in out[:-1]]
    assert len(wins) == len(set(wins)) == 50  # no revision was won twice
    final = texts(await env.backend().load("shared"))
    assert final[0] == "start"
    assert sorted(final[1:]) == sorted(f"{p}-{i}" for p in ("p1", "p2") for i in range(25))
    for p in ("p1", "p2"):  # each process's saves kept their order
        mine = [t for t in final if t.startswith(p)]
        assert mine == [f"{p}-{i}" for i in range(25)]


# -- listing ----------------------------------------------------------------------------------


async def test_list_conversations_newest_first_by_scope(env: Env) -> None:
    backend = env.backend()
    for cid, scope in [("a", "u1"), ("b", "u2"), ("c", "u1"), ("d", None), ("e", "u1")]:
        await save_new(backend, cid, f"hello {cid}", scope=scope)
    reader = env.other_client()
    assert [r.conversation_id for r in await reader.list_conversations()] == [
        "e",
        "d",
        "c",
        "b",
        "a",
    ]
    assert [r.conversation_id for r in await reader.list_conversations(scope="u1")] == [
        "e",
        "c",
        "a",
    ]
    assert [r.conversation_id for r in await reader.list_conversations(scope="u1", limit=2)] == [
        "e",
        "c",
    ]
    assert [r.conversation_id for r in await reader.list_conversations(scope="nobody")] == []
    assert await reader.list_conversations(limit=0) == []

    a = await backend.load("a")
    assert a is not None
    a.messages.append(user("later"))
    await backend.save(a)  # moves to the top
    listed = await reader.list_conversations()
    assert [r.conversation_id for r in listed] == ["a", "e", "d", "c", "b"]
    assert [r.updated_at for r in listed] == sorted((r.updated_at for r in listed), reverse=True)
    with pytest.raises(ConversationConflict):  # a saved conversation keeps its scope
        await backend.save(a, scope="u2")
    await backend.delete("c")
    assert [r.conversation_id for r in await reader.list_conversations(scope="u1")] == ["a", "e"]
    assert [r.conversation_id for r in await reader.list_conversations(limit=3)] == ["a", "e", "d"]


async def test_listing_many_conversations_pages_through_them(env: Env) -> None:
    backend = env.backend()
    for i in range(230):
        record = ConversationRecord(
            conversation_id=f"m{i:03}",
            head_id=None,
            scope="many" if i % 2 else None,
            updated_at=datetime(2025, 1, 1, tzinfo=timezone.utc).replace(
                second=i % 60, minute=i // 60
            ),
        )
        await backend.write_record(record, expected_revision=None)
    listed = await backend.list_conversations()
    assert [r.conversation_id for r in listed] == [f"m{i:03}" for i in reversed(range(230))]
    scoped = await backend.list_conversations(scope="many", limit=101)
    assert [r.conversation_id for r in scoped] == [
        f"m{i:03}" for i in reversed(range(230)) if i % 2
    ][:101]


# -- forks, branches, deletes ---------------------------------------------------------------


async def test_forks_share_entries_and_outlive_their_source(env: Env) -> None:
    backend = env.backend()
    await save_new(backend, "src", "q1", "a1", "q2", "a2")
    source = await backend.load_entries("src")
    assert source is not None
    fork = await backend.fork("src", at=2, new_conversation_id="fork")
    assert texts(fork) == ["q1", "a1"]
    fork.messages += [user("fq"), reply("fa")]
    await backend.save(fork)
    forked = await env.other_client().load_entries("fork")
    assert forked is not None
    assert [e.id for e in forked[:2]] == [e.id for e in source[:2]]  # shared, not copied
    assert texts(await backend.load("src")) == ["q1", "a1", "q2", "a2"]
    record = await backend.read_record("fork")
    assert record is not None and record.forked_from == "src" and record.forked_at == source[1].id

    fork_of_fork = await env.other_client().fork("fork", at=3, new_conversation_id="fork2")
    assert texts(fork_of_fork) == ["q1", "a1", "fq"]
    await backend.delete("src")
    await backend.delete("fork")
    assert await backend.load("src") is None and await backend.load("fork") is None
    assert texts(await env.other_client().load("fork2")) == ["q1", "a1", "fq"]
    fork2 = await backend.load("fork2")
    assert fork2 is not None
    fork2.messages.append(reply("more"))
    await backend.save(fork2)
    assert texts(await env.other_client().load("fork2")) == ["q1", "a1", "fq", "more"]

    await backend.delete("fork2")  # the last one: every entry goes
    for entry in [*source, *forked]:
        with pytest.raises(KeyError):
            await env.other_client().read_entry(entry.id)
    if isinstance(env.store, RedisStore):
        left = await keys_under(env)
        assert all(k.endswith(b":x") for k in left), left  # only the short-lived write marks


async def keys_under(env: Env) -> list[bytes]:
    assert isinstance(env.store, RedisStore)
    return [k async for k in env.store.client.scan_iter(match=f"{env.store.prefix}:*")]


async def test_branches_keep_the_history_they_leave(env: Env) -> None:
    backend = env.backend()
    saved = await save_new(backend, "br", "q1", "a1", "q2", "a2")
    old = await backend.load_entries("br")
    assert old is not None
    branched = await backend.branch("br", at=2, expected_revision=saved.revision)
    branched.messages += [user("q2 edited"), reply("a2 new")]
    await backend.save(branched)
    record = await env.other_client().read_record("br")
    assert record is not None and record.branches == [old[-1].id]
    assert texts(await env.other_client().load("br")) == ["q1", "a1", "q2 edited", "a2 new"]
    current = await backend.load("br")
    assert current is not None
    back = await env.other_client().branch(
        "br", from_entry=old[-1].id, expected_revision=current.revision
    )
    assert texts(back) == ["q1", "a1", "q2", "a2"]
    with pytest.raises(ConversationConflict):  # the revision branched from is gone
        await backend.branch("br", at=1, expected_revision=current.revision)
    # A rewritten history saved without an index branches off what both share.
    rewritten = Conversation(
        conversation_id="br", messages=[user("q1"), reply("a1 rewritten")], revision=back.revision
    )
    await backend.save(rewritten)
    after = await backend.read_record("br")
    assert after is not None and len(after.branches) == 2
    assert texts(await backend.load("br")) == ["q1", "a1 rewritten"]


async def test_delete(env: Env) -> None:
    backend = env.backend()
    old = await save_new(backend, "gone", "hi", "hello", scope="u1")
    entries = await backend.load_entries("gone")
    assert entries is not None
    await backend.delete("gone", scope="u2")  # another's scope: left as it is
    assert texts(await backend.load("gone")) == ["hi", "hello"]
    await env.other_client().delete("gone", scope="u1")
    assert await backend.load("gone") is None
    assert await backend.list_conversations(scope="u1") == []
    for entry in entries:
        with pytest.raises(KeyError):
            await backend.read_entry(entry.id)
    await backend.delete("gone")  # nothing to delete: no error
    old.messages.append(user("resurrect?"))
    with pytest.raises(ConversationConflict):  # a copy loaded before the delete
        await backend.save(old)
    again = await save_new(backend, "gone", "new life")
    assert again.revision != old.revision
    assert texts(await backend.load("gone")) == ["new life"]
    with pytest.raises(ConversationConflict):
        await backend.delete_record("gone", expected_revision="stale")


# -- round trips ------------------------------------------------------------------------


async def test_read_history_is_one_round_trip(redis_only: Env) -> None:
    env = redis_only
    words = [f"m{i}" for i in range(40)]
    await save_new(env.backend(), "long", *words)
    # Warm up: a node runs a script by its hash once it was sent the script (EVAL) once, and a
    # Cluster client learns the slots on its first command.
    await env.other_client().load("long")
    fresh = env.other_client()
    await fresh.read_record("other")
    with counted_sends() as sends:
        record = await fresh.read_record("long")
    assert sends[0] == 1 and record is not None
    with counted_sends() as sends:
        history = await fresh.read_history(record.head_id)
    assert sends[0] == 1
    assert [e.message for e in history] == [
        user(w) if i % 2 == 0 else reply(w) for i, w in enumerate(words)
    ]
    with counted_sends() as sends:
        window = await fresh.read_history(record.head_id, limit=5)
    assert sends[0] == 1 and window == history[-5:]
    with counted_sends() as sends:
        loaded = await fresh.load("long")
    assert sends[0] == 2 and texts(loaded) == words
    cold = env.other_client()
    await cold.read_record("other")
    with counted_sends() as sends:
        entry = await cold.read_entry(history[7].id)  # by id alone: its locator
    assert entry == history[7]
    assert sends[0] == 2  # the locator, then the entry (another slot: its own script)


async def test_a_turn_costs_six_steps_one_slot_per_script(
    redis_only: Env,
) -> None:
    env = redis_only
    backend = env.backend()
    await save_new(backend, "turn", "q", "a")

    async def turn() -> None:
        conversation = await backend.load("turn")
        assert conversation is not None
        conversation.messages += [user("q2"), reply("a2")]
        await backend.save(conversation)

    await turn()  # warm: scripts loaded on every node they run on
    with counted_sends() as sends:
        await turn()
    # load: record + history; save: record + one script, with two pipelines (every script
    # keeps to one slot, on any client): the listings and locators before the script and
    # the listings' scores after it. On a Cluster, one send per node they reach.
    if env.kind == "cluster":
        assert 6 <= sends[0] <= 9
    else:
        assert sends[0] == 6


# -- cancellation -----------------------------------------------------------------------------


async def snapshot(
    backend: ConversationStoreBackend, cid: str
) -> tuple[list[str] | None, str | None]:
    conversation = await backend.load(cid)
    if conversation is None:
        return None, None
    return texts(conversation), conversation.revision


async def cancel_after(steps: int, call: Any) -> bool:
    """Run ``call()`` and cancel it after ``steps`` loop iterations; True if it finished."""
    task = asyncio.ensure_future(call())
    for _ in range(steps):
        if task.done():
            break
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return False
    return True


async def test_cancelled_saves_leave_the_store_as_before_or_after(env: Env) -> None:
    backend = env.backend()
    await save_new(backend, "cx", "start")
    finished = cancelled = 0
    for steps in range(0, 40, 2):
        before = await snapshot(backend, "cx")
        conversation = await backend.load("cx")
        assert conversation is not None
        conversation.messages.append(user(f"s{steps}"))
        done = await cancel_after(steps, lambda c=conversation: backend.save(c))
        after = await snapshot(env.other_client(), "cx")
        assert before[0] is not None and after[0] is not None
        if after[0] == before[0]:
            assert after[1] == before[1] and not done
            cancelled += 1
        else:
            assert after[0] == [*before[0], f"s{steps}"]
            finished += 1
        # whatever happened, the history reads whole and the listing has it once
        listed = [r.conversation_id for r in await backend.list_conversations()]
        assert listed == ["cx"]
    assert finished > 0
    assert env.kind == "memory" or cancelled > 0


async def test_cancelled_forks_deletes_and_loads_are_decided(env: Env) -> None:
    backend = env.backend()
    await save_new(backend, "root", "q", "a")
    for steps in range(0, 24, 3):
        done = await cancel_after(
            steps, lambda s=steps: backend.fork("root", new_conversation_id=f"f{s}")
        )
        got = await snapshot(env.other_client(), f"f{steps}")
        assert got[0] in (None, ["q", "a"])
        assert done <= (got[0] is not None)
    for steps in range(0, 24, 3):
        cid = f"f{steps}"
        exists = await backend.read_record(cid) is not None
        await cancel_after(steps, lambda c=cid: backend.delete(c))
        if exists:
            got = await snapshot(env.other_client(), cid)
            assert got[0] in (None, ["q", "a"])
    before = await snapshot(backend, "root")
    for steps in range(0, 12):
        await cancel_after(steps, lambda: backend.load("root"))
    assert await snapshot(backend, "root") == before
    for record in await backend.list_conversations():  # every listed one loads whole
        assert texts(await backend.load(record.conversation_id)) == ["q", "a"]


# -- failures ----------------------------------------------------------------------------------


async def test_an_unreachable_redis_is_store_unavailable() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    backend = ConversationStoreBackend(RedisStore(client, prefix="nowhere"))
    try:
        with pytest.raises(StoreUnavailable):
            await backend.load("c")
        with pytest.raises(StoreUnavailable):
            await backend.write_record(
                ConversationRecord(conversation_id="c", head_id=None), expected_revision=None
            )
        with pytest.raises(StoreUnavailable):
            await backend.list_conversations()
    finally:
        await client.aclose()


async def test_a_lost_reply_is_settled_by_the_revision(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    original: Any = client.execute_command
    mode = {"lose": ""}

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if args[0] in ("EVALSHA", "EVAL") and mode["lose"] == "after":
            mode["lose"] = ""
            await original(*args, **kwargs)
            raise rexc.ConnectionError("Connection reset by peer")
        if args[0] in ("EVALSHA", "EVAL") and mode["lose"] == "before-settle":
            mode["lose"] = "settle"
            raise rexc.TimeoutError("Timeout reading from socket")
        if args[0] in ("EVALSHA", "EVAL") and mode["lose"] == "settle":
            raise rexc.ConnectionError("Connection reset by peer")
        return await original(*args, **kwargs)

    client.execute_command = flaky  # type: ignore[method-assign]
    backend = ConversationStoreBackend(RedisStore(client, prefix=prefix))
    try:
        mode["lose"] = "after"  # applied, reply lost: settled as applied
        saved = await save_new(backend, "lost", "q", "a")
        assert texts(await backend.load("lost")) == ["q", "a"]
        saved.messages.append(user("again"))
        mode["lose"] = "before-settle"  # lost, then the settle fails too
        with pytest.raises(CommitOutcomeUnknown) as caught:
            await backend.save(saved)
        assert isinstance(caught.value, StoreError) and caught.value.turn_id
        mode["lose"] = ""
        assert texts(await backend.load("lost")) == ["q", "a"]
    finally:
        await _delete_prefix(client, prefix)
        await client.aclose()


async def test_an_undecodable_record_is_corrupt_history(redis_url: str, prefix: str) -> None:
    from promptkit_async import CorruptHistory

    client = aioredis.Redis.from_url(redis_url)
    backend = ConversationStoreBackend(RedisStore(client, prefix=prefix))
    try:
        await client.hset(f"{prefix}:pai:{{c:bad}}:r", mapping={"v": "x", "d": b"not json"})
        with pytest.raises(CorruptHistory):
            await backend.load("bad")
    finally:
        await _delete_prefix(client, prefix)
        await client.aclose()


def test_other_stores_are_refused_by_name(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "x.db"))
    with pytest.raises(TypeError, match="MemoryStore and RedisStore"):
        ConversationStoreBackend(store)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got dict"):
        ConversationStoreBackend({})  # type: ignore[arg-type]


def test_memory_backends_share_their_store_and_only_it() -> None:
    async def main() -> None:
        one, two = MemoryStore(), MemoryStore()
        await save_new(ConversationStoreBackend(one), "x", "hi")
        assert texts(await ConversationStoreBackend(one).load("x")) == ["hi"]
        assert await ConversationStoreBackend(two).load("x") is None

    asyncio.run(main())


# -- an agent that remembers -----------------------------------------------------------------


async def test_an_agent_remembers_across_runs_through_the_store(env: Env) -> None:
    seen: list[int] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(len(messages))
        prompts = [
            p.content
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, UserPromptPart) and isinstance(p.content, str)
        ]
        name = next(
            (
                p.removeprefix("My name is ").rstrip(".")
                for p in prompts
                if p.startswith("My name is")
            ),
            None,
        )
        return ModelResponse(parts=[TextPart(f"You are {name}." if name else "Who are you?")])

    agent = Agent(FunctionModel(model), instructions="Be brief.")
    store = env.backend()
    first = await agent.run("My name is Ada.", conversation=Conversation(conversation_id="chat"))
    await store.save(first)

    conversation = await env.other_client().load("chat")
    assert conversation is not None
    second = await agent.run("What is my name?", conversation=conversation)
    assert second.output == "You are Ada."
    assert seen == [1, 3]  # the second run was sent the first run's messages
    await env.other_client().save(second)
    stored = await store.load("chat")
    assert stored is not None and len(stored.messages) == 4
    assert dumped(stored.messages) == dumped(second.all_messages())


# -- packaging --------------------------------------------------------------------------------


def test_importing_the_library_never_imports_pydantic_ai() -> None:
    code = "import sys, promptkit_async; assert 'pydantic_ai' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_without_pydantic_ai_the_import_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pydantic_ai"] = None  # unimportable, as if not installed
        import promptkit_async
        try:
            import promptkit_async.integrations.pydantic_ai
        except ImportError as exc:
            assert "pip install 'promptkit_async[pydantic-ai]'" in str(exc), str(exc)
            print("ok")
        else:
            raise SystemExit("imported without pydantic_ai")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_a_text_client_reads_the_same(redis_url: str, prefix: str) -> None:
    """A client built with decode_responses=True gets str replies: the same conversations."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    backend = ConversationStoreBackend(RedisStore(client, prefix=prefix))
    try:
        messages = every_kind_of_message()
        await backend.save(Conversation(conversation_id="text", messages=messages), scope="s")
        loaded = await ConversationStoreBackend(RedisStore(client, prefix=prefix)).load("text")
        assert loaded is not None and dumped(loaded.messages) == dumped(messages)
        fork = await backend.fork("text", at=2, new_conversation_id="text-fork")
        assert dumped(fork.messages) == dumped(messages[:2])
        listed = await backend.list_conversations(scope="s")
        assert [r.conversation_id for r in listed] == ["text-fork", "text"]
        await backend.delete("text")
        await backend.delete("text-fork")
        assert await backend.list_conversations() == []
    finally:
        await _delete_prefix(client, prefix)
        await client.aclose()
