"""AgentsSession: openai-agents' Session protocol over every promptkit store.

Each behaviour runs on MemoryStore, a real Redis server, a real Redis Cluster
and an SQLite file: items of every type round-trip exactly, limits follow the
framework's rules, concurrent writers (tasks and processes) lose and
duplicate nothing, pops race safely, a cancellation leaves a call done or not
done, and the framework's own Runner remembers across runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import framework

framework("agents", "agents")

from agents import Agent, RunConfig, Runner, function_tool  # noqa: E402
from agents.items import ModelResponse  # noqa: E402
from agents.memory import Session, SessionSettings  # noqa: E402
from agents.models.interface import Model, ModelTracing  # noqa: E402
from agents.usage import Usage  # noqa: E402
from openai.types.responses import (  # noqa: E402
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
)
from openai.types.responses.response_reasoning_item import Summary  # noqa: E402

from promptkit_async import (  # noqa: E402
    Message,
    MessageNotFound,
    OwnerMismatch,
    RedisStore,
    ToolCall,
)
from promptkit_async import Session as PromptSession  # noqa: E402
from promptkit_async._codec import decode_message, encode_message  # noqa: E402
from promptkit_async.integrations._agents_items import items_of, to_message  # noqa: E402
from promptkit_async.integrations.openai_agents import AgentsSession  # noqa: E402

from ..backends import SQLiteBackend  # noqa: E402
from ..conftest import _backend, through  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from agents import Handoff, ModelSettings, Tool
    from agents.agent_output import AgentOutputSchemaBase
    from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
    from openai.types.responses.response_prompt_param import ResponsePromptParam

    from promptkit_async import BaseStore

    from ..backends import Backend
    from ..faults import FaultProxy

Item = dict[str, Any]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
PDF = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZGJvYgp0cmFpbGVyCjw8Pj4KJSVFT0YK"

#: One item of every kind a Responses conversation holds, in the shapes the
#: framework writes them (model output dumped with its ids and statuses).
EVERY_ITEM: list[Item] = [
    {"content": "What is in these?", "role": "user"},
    {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Look: "},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
            {
                "type": "input_file",
                "file_data": f"data:application/pdf;base64,{PDF}",
                "filename": "q3.pdf",
            },
            {"type": "input_file", "file_url": "https://example.com/report.pdf"},
            {"type": "input_file", "file_id": "file-abc123"},
        ],
    },
    {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "Be brief."}],
    },
    {"role": "system", "content": "You are terse."},
    {
        "id": "rs_1",
        "summary": [{"text": "The user wants pictures described.", "type": "summary_text"}],
        "type": "reasoning",
        "encrypted_content": "gAAAAAB-opaque",
    },
    {
        "arguments": '{"city":"Paris"}',
        "call_id": "call_1",
        "name": "weather",
        "type": "function_call",
        "id": "fc_1",
        "status": "completed",
    },
    {"call_id": "call_1", "output": '{"temp": 21}', "type": "function_call_output"},
    {
        "call_id": "call_2",
        "output": [
            {"type": "input_text", "text": "chart:"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "high"},
        ],
        "type": "function_call_output",
    },
    {
        "id": "msg_1",
        "content": [
            {
                "annotations": [{"type": "url_citation", "url": "https://x", "start_index": 0}],
                "text": "A cat and a report. ",
                "type": "output_text",
                "logprobs": [],
            },
            {"type": "refusal", "refusal": "I will not read the file id."},
        ],
        "role": "assistant",
        "status": "completed",
        "type": "message",
    },
    {"role": "assistant", "content": "plain assistant text"},
    {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"query": "cats"}},
    {"type": "item_reference", "id": "msg_0"},
    # An item type from a future API version, with every JSON type in it.
    {
        "type": "hologram_call",
        "id": "hg_1",
        "payload": {"n": 1, "x": 1.0, "ok": True, "none": None, "list": [1, "two", [3.5]]},
        "ünïcödé": "✓ 🎉",
    },
]


def strict(items: list[Any]) -> list[str]:
    """Items as exact JSON (types and values; 1, 1.0 and true all differ)."""
    return [json.dumps(i, sort_keys=True) for i in items]


def said(prefix: str, i: int) -> Item:
    return {"content": f"{prefix}-{i}", "role": "user"}


# -- the stores ---------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "cluster", "sqlite"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Backend]:
    """The adapter's stores: MemoryStore, a real Redis, a real Cluster, an SQLite file."""
    async with _backend(request, request.param, prefix) as b:
        yield b


@pytest.fixture
def session(store: BaseStore) -> AgentsSession:
    return AgentsSession("agents-1", store)


def store_url(backend: Backend) -> str | None:
    """Where another process reaches the same data (None: in this process only)."""
    if isinstance(backend, SQLiteBackend):
        return f"sqlite:///{backend.path}"
    return backend.url


# -- the protocol -------------------------------------------------------------------------


def test_it_is_an_agents_session_with_the_framework_attributes(store: BaseStore) -> None:
    s: Session = AgentsSession("a", store)
    assert isinstance(s, Session)
    assert s.session_id == "a"
    assert s.session_settings == SessionSettings()
    assert AgentsSession("a", store, session_settings={"limit": 3}).session_settings == (
        SessionSettings(limit=3)
    )
    assert "AgentsSession('a'" in repr(s)


class CoreStore:
    """A store with only the four core coroutines: no exactly-once commits."""

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        return []

    async def append(self, session_id: str, messages: Any, **options: Any) -> None:
        pass

    async def delete(self, session_id: str) -> bool:
        return False

    async def aclose(self) -> None:
        pass


def test_a_store_without_exactly_once_commits_is_refused() -> None:
    with pytest.raises(TypeError, match="SupportsTurns"):
        AgentsSession("a", CoreStore())
    with pytest.raises(TypeError, match="store"):
        AgentsSession("a", object())  # type: ignore[arg-type]


async def test_every_item_type_round_trips_exactly(store: BaseStore) -> None:
    await AgentsSession("rt", store).add_items(cast("list[TResponseInputItem]", EVERY_ITEM))
    got = await AgentsSession("rt", store).get_items()  # a new instance: all from the store
    assert got == EVERY_ITEM
    assert strict(got) == strict(EVERY_ITEM)
    # One stored message per item, in order.
    assert await store.count("rt") == len(EVERY_ITEM)


async def test_each_item_alone_round_trips_and_pops_back_exactly(store: BaseStore) -> None:
    s = AgentsSession("one", store)
    for item in EVERY_ITEM:
        await s.add_items([cast("TResponseInputItem", item)])
        assert strict(await s.get_items(limit=1)) == strict([item])
        popped = await s.pop_item()
        assert strict([popped]) == strict([item])
        assert await s.get_items() == []


async def test_items_are_copied_in_and_out(session: AgentsSession) -> None:
    item: Item = {"type": "hologram_call", "payload": {"list": [1]}}
    message: Item = {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    await session.add_items(cast("list[TResponseInputItem]", [item, message]))
    item["payload"]["list"].append(2)  # the caller's objects change after the write
    message["content"][0]["text"] = "changed"
    got = await session.get_items()
    assert got == [
        {"type": "hologram_call", "payload": {"list": [1]}},
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    ]
    cast("Item", got[0])["payload"]["list"].append(3)  # and the items returned are the caller's
    assert (await session.get_items())[0] == {"type": "hologram_call", "payload": {"list": [1]}}


async def test_promptkit_shows_the_conversation_as_messages(store: BaseStore) -> None:
    s = AgentsSession("shown", store)
    await s.add_items(cast("list[TResponseInputItem]", EVERY_ITEM))
    messages = await store.load("shown")
    by_role = [(m.role, m.text) for m in messages]
    assert by_role[0] == ("user", "What is in these?")
    assert by_role[1][0] == "user" and by_role[1][1].startswith("Look: ")
    assert by_role[3] == ("system", "You are terse.")
    assert messages[5].tool_calls == (ToolCall("call_1", "weather", '{"city":"Paris"}'),)
    assert (messages[6].role, messages[6].tool_call_id, messages[6].text) == (
        "tool",
        "call_1",
        '{"temp": 21}',
    )
    assert by_role[8] == ("assistant", "A cat and a report. ")
    assert by_role[9] == ("assistant", "plain assistant text")
    # Plain items are plain messages: nothing kept beside them.
    assert messages[0] == Message.user("What is in these?")
    assert messages[9] == Message.assistant("plain assistant text")
    assert messages[6] == Message.tool('{"temp": 21}', tool_call_id="call_1")


async def test_a_promptkit_session_and_the_adapter_share_one_conversation(
    store: BaseStore,
) -> None:
    async with PromptSession(store, "shared") as ps:
        ps.add(
            Message.user("weather?"),
            Message.assistant(
                "Let me look.",
                tool_calls=[ToolCall("c1", "weather", "{}"), ToolCall("c2", "time", "{}")],
            ),
            Message.tool("sunny", tool_call_id="c1"),
            Message.tool("noon", tool_call_id="c2"),
        )
    s = AgentsSession("shared", store)
    items = await s.get_items()
    assert items == [
        {"content": "weather?", "role": "user"},
        {"content": "Let me look.", "role": "assistant"},
        {"arguments": "{}", "call_id": "c1", "name": "weather", "type": "function_call"},
        {"arguments": "{}", "call_id": "c2", "name": "time", "type": "function_call"},
        {"call_id": "c1", "output": "sunny", "type": "function_call_output"},
        {"call_id": "c2", "output": "noon", "type": "function_call_output"},
    ]
    # Limits count items, also when one message stands for several.
    assert await s.get_items(limit=4) == items[-4:]
    assert await s.get_items(limit=5) == items[-5:]
    # Popping inside such a message removes that item and keeps the others in place.
    await s.pop_item()
    await s.pop_item()
    assert await s.pop_item() == items[3]
    assert await s.get_items() == items[:3]
    await s.add_items([cast("TResponseInputItem", {"content": "thanks", "role": "user"})])
    async with PromptSession(store, "shared", max_messages=None) as ps:
        assert [m.text for m in ps.history] == ["weather?", "Let me look.", "", "thanks"]


# -- the mapping, for any item ------------------------------------------------------------

_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_extra = st.dictionaries(
    st.sampled_from(["id", "status", "type", "x", "role", "n"]), _json, max_size=3
)
_text_block = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "refusal"]), "text": st.text(max_size=8)}
)
_image_block = st.fixed_dictionaries(
    {
        "type": st.just("input_image"),
        "image_url": st.sampled_from(
            [f"data:image/png;base64,{PNG}", "https://x/y.png", "data:image/png;base64,!!", ""]
        ),
    },
    optional={"detail": st.sampled_from(["auto", "low", None, 3])},
)
_file_block = st.fixed_dictionaries(
    {"type": st.just("input_file")},
    optional={
        "file_data": st.sampled_from([f"data:application/pdf;base64,{PDF}", PDF]),
        "file_url": st.just("https://x/a.pdf"),
        "file_id": st.just("file-1"),
        "filename": st.sampled_from(["a.pdf", None]),
    },
)
_blocks = st.lists(
    st.builds(lambda b, e: {**b, **e}, _text_block | _image_block | _file_block, _extra),
    max_size=3,
)
_message = st.builds(
    lambda role, content, extra: {"role": role, "content": content, **extra},
    st.sampled_from(["user", "assistant", "system", "developer", "critic"]),
    st.text(max_size=8) | _blocks,
    _extra,
)
_call = st.builds(
    lambda c, n, a, e: {"type": "function_call", "call_id": c, "name": n, "arguments": a, **e},
    st.text(max_size=4), st.text(max_size=4), st.text(max_size=4) | st.integers(), _extra,
)  # fmt: skip
_output = st.builds(
    lambda c, o, e: {**e, "type": "function_call_output", "call_id": c, "output": o},
    st.text(max_size=4), st.text(max_size=8) | _blocks, _extra,
)  # fmt: skip
_other = st.builds(
    lambda t, e: {"type": t, **e},
    st.sampled_from(["reasoning", "web_search_call", "item_reference", "hologram"]),
    st.dictionaries(st.text(max_size=6), _json, max_size=4),
)
ANY_ITEM = _message | _call | _output | _other


@given(ANY_ITEM)
def test_any_item_comes_back_exactly_through_a_stored_record(item: Item) -> None:
    message = to_message(item)
    record = encode_message(message)
    stored = decode_message(record, session_id="s", index=0)
    assert strict(items_of(stored)) == strict([item])
    assert stored == message


@given(st.lists(ANY_ITEM, max_size=4))
def test_several_items_are_several_messages(items: list[Item]) -> None:
    assert [len(items_of(to_message(i))) for i in items] == [1] * len(items)


# -- limits -------------------------------------------------------------------------------


async def test_limit_returns_exactly_the_newest_items_oldest_first(session: AgentsSession) -> None:
    items = [said("m", i) for i in range(7)]
    await session.add_items(cast("list[TResponseInputItem]", items))
    assert await session.get_items() == items
    assert await session.get_items(None) == items
    for n in range(1, 10):
        assert await session.get_items(limit=n) == items[-n:]
    assert await session.get_items(limit=0) == []
    with pytest.raises(ValueError, match=">= 0"):
        await session.get_items(limit=-1)
    with pytest.raises(TypeError, match="int"):
        await session.get_items(limit="2")  # type: ignore[arg-type]


async def test_session_settings_limit_applies_unless_a_limit_is_given(store: BaseStore) -> None:
    items = [said("m", i) for i in range(6)]
    s = AgentsSession("lim", store, session_settings=SessionSettings(limit=2))
    await s.add_items(cast("list[TResponseInputItem]", items))
    assert await s.get_items() == items[-2:]
    assert await s.get_items(limit=4) == items[-4:]  # an explicit limit wins
    assert await s.get_items(limit=0) == []
    s.session_settings = SessionSettings(limit=None)
    assert await s.get_items() == items
    s.session_settings = None
    assert await s.get_items() == items
    assert (
        await AgentsSession("lim", store, session_settings={"limit": 5}).get_items() == (items[-5:])
    )


# -- writes -------------------------------------------------------------------------------


async def test_an_empty_add_writes_nothing(backend: Backend) -> None:
    await AgentsSession("other", backend.store).add_items(
        [cast("TResponseInputItem", said("m", 0))]
    )
    await AgentsSession("empty", backend.store).add_items([])
    assert not await backend.holds("empty")


async def test_an_add_with_a_bad_item_writes_none_of_them(session: AgentsSession) -> None:
    await session.add_items([cast("TResponseInputItem", said("ok", 0))])
    bad: list[Any] = [said("a", 1), {"role": "user", "content": "x", "n": float("nan")}]
    with pytest.raises(ValueError, match=r"items\[1\] is not JSON"):
        await session.add_items(bad)
    with pytest.raises(TypeError, match=r"items\[1\] is str"):
        await session.add_items([said("a", 1), "not an item"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"items\[0\] cannot be stored"):
        await session.add_items([cast("TResponseInputItem", {"type": "x", "text": "\ud800"})])
    assert await session.get_items() == [said("ok", 0)]


async def test_clear_session_deletes_the_session(backend: Backend) -> None:
    s = AgentsSession("gone", backend.store)
    await s.add_items(cast("list[TResponseInputItem]", [said("m", 0), said("m", 1)]))
    await s.clear_session()
    assert await s.get_items() == []
    assert await s.pop_item() is None
    assert not await backend.holds("gone")
    await s.clear_session()  # nothing to delete: no error
    await s.add_items([cast("TResponseInputItem", said("again", 0))])
    assert await s.get_items() == [said("again", 0)]


async def test_the_owner_is_recorded_and_another_owner_is_refused(store: BaseStore) -> None:
    mine = AgentsSession("owned", store, owner="ada", ttl=60)
    await mine.add_items([cast("TResponseInputItem", said("m", 0))])
    page = await store.conversations("ada")
    assert [info.id for info in page.items] == ["owned"]
    ttl = await store.ttl("owned")
    assert ttl is not None and 0 < ttl <= 60
    theirs = AgentsSession("owned", store, owner="bob")
    with pytest.raises(OwnerMismatch):
        await theirs.add_items([cast("TResponseInputItem", said("intruder", 0))])
    with pytest.raises(OwnerMismatch):
        await theirs.pop_item()
    assert await mine.get_items() == [said("m", 0)]


# -- concurrency --------------------------------------------------------------------------


def assert_batches_whole(items: list[Any], batches: dict[str, int]) -> None:
    """Every batch is there exactly once, each one's items together and in order."""
    texts = [str(i["content"]) for i in items]
    assert len(texts) == len(set(texts)) == sum(batches.values())
    for name, size in batches.items():
        at = texts.index(f"{name}-0")
        assert texts[at : at + size] == [f"{name}-{i}" for i in range(size)], name


async def test_concurrent_adds_from_many_tasks_lose_and_duplicate_nothing(
    store: BaseStore,
) -> None:
    sessions = [AgentsSession("busy", store) for _ in range(4)]
    batches = {f"t{t}": 1 + t % 5 for t in range(40)}
    await asyncio.gather(
        *(
            sessions[t % 4].add_items(
                cast("list[TResponseInputItem]", [said(name, i) for i in range(size)])
            )
            for t, (name, size) in enumerate(batches.items())
        )
    )
    assert_batches_whole(await sessions[0].get_items(), batches)


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from promptkit_async import store_from_url
    from promptkit_async.integrations.openai_agents import AgentsSession

    async def main(url, options, session_id, job, tag, calls):
        async with store_from_url(url, **options) as store:
            s = AgentsSession(session_id, store)
            print("ready", flush=True)
            sys.stdin.readline()
            for c in range(calls):
                if job == "add":
                    batch = [{"content": f"{tag}{c}-{i}", "role": "user"} for i in range(3)]
                    await s.add_items(batch)
                else:
                    print(json.dumps(await s.pop_item()), flush=True)

    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:6], int(sys.argv[6])))
    """
)


async def in_processes(
    backend: Backend,
    prefix: str,
    session_id: str,
    jobs: list[tuple[str, str, int]],
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> list[list[str]]:
    """Run ``(job, tag, calls)`` in processes of their own, all at once (and ``meanwhile``
    here); what each printed."""
    url = store_url(backend)
    if url is None:
        pytest.skip(f"the {backend.name} store lives in one process")
    options = {} if isinstance(backend, SQLiteBackend) else {"prefix": prefix}
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, url, json.dumps(options), session_id, job, tag,
            str(calls), stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
        )
        for job, tag, calls in jobs
    ]  # fmt: skip
    for child in children:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"ready\n"
    for child in children:  # all start at once
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    if meanwhile is not None:
        await meanwhile()
    printed = []
    for child in children:
        out, _ = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == 0
        printed.append(out.decode().splitlines())
    return printed


async def test_concurrent_adds_from_two_processes_lose_and_duplicate_nothing(
    backend: Backend, prefix: str
) -> None:
    calls = 25
    await in_processes(backend, prefix, "two", [("add", "p", calls), ("add", "q", calls)])
    items = await AgentsSession("two", backend.store).get_items()
    assert_batches_whole(items, {f"{tag}{c}": 3 for tag in "pq" for c in range(calls)})


async def test_pops_in_two_processes_racing_adds_here_lose_and_duplicate_nothing(
    backend: Backend, prefix: str
) -> None:
    seed = [said("seed", i) for i in range(30)]
    here = AgentsSession("popped", backend.store)
    await here.add_items(cast("list[TResponseInputItem]", seed))
    added = list(seed)

    async def add() -> None:
        for t in range(10):
            batch = [said(f"a{t}", i) for i in range(2)]
            await here.add_items(cast("list[TResponseInputItem]", batch))
            added.extend(batch)

    printed = await in_processes(
        backend, prefix, "popped", [("pop", "p", 12), ("pop", "q", 12)], meanwhile=add
    )
    popped = [json.loads(line) for lines in printed for line in lines]
    assert len(popped) == 24 and None not in popped  # 24 pops of at least 30 items
    left = await here.get_items()
    assert sorted(strict(popped + left)) == sorted(strict(added))  # none lost, none twice


async def test_concurrent_pops_return_distinct_items_and_empty_the_session(
    store: BaseStore,
) -> None:
    items = [said("m", i) for i in range(12)]
    await AgentsSession("pops", store).add_items(cast("list[TResponseInputItem]", items))
    popped = await asyncio.gather(*(AgentsSession("pops", store).pop_item() for _ in range(15)))
    got = [p for p in popped if p is not None]
    assert sorted(strict(got)) == sorted(strict(items))
    assert popped.count(None) == 3
    assert await AgentsSession("pops", store).get_items() == []


async def test_pops_racing_adds_never_lose_or_duplicate_an_item(store: BaseStore) -> None:
    s = AgentsSession("race", store)
    seed = [said("seed", i) for i in range(10)]
    await s.add_items(cast("list[TResponseInputItem]", seed))
    added = list(seed)

    async def add(t: int) -> None:
        batch = [said(f"a{t}", i) for i in range(2)]
        await AgentsSession("race", store).add_items(cast("list[TResponseInputItem]", batch))
        added.extend(batch)

    async def pop() -> TResponseInputItem | None:
        return await AgentsSession("race", store).pop_item()

    jobs: list[Awaitable[Any]] = []
    for t in range(12):
        jobs += [add(t), pop(), pop()]
    results = await asyncio.gather(*jobs)
    popped = [r for r in results if isinstance(r, dict)]
    left = await s.get_items()
    assert sorted(strict(popped + left)) == sorted(strict(added))  # none lost, none twice
    # What is left keeps the order it was written in: the seed's, and each batch's.
    texts = [str(cast("Item", i)["content"]) for i in left]
    for head in ["seed-", *(f"a{t}-" for t in range(12))]:
        mine = [int(x.removeprefix(head)) for x in texts if x.startswith(head)]
        assert mine == sorted(mine), head


async def test_a_record_written_around_the_store_is_never_popped_by_mistake(
    backend: Backend,
) -> None:
    raw = backend.need_raw()
    s = AgentsSession("around", backend.store)
    await s.add_items([cast("TResponseInputItem", said("mine", 0))])
    await raw.push("around", b'{"v":1,"r":"user","c":"foreign"}')  # no id, no time
    before = await s.get_items()
    assert before == [said("mine", 0), {"content": "foreign", "role": "user"}]
    try:
        popped = await s.pop_item()
    except MessageNotFound as exc:  # its id cannot be checked: nothing removed
        assert "gave up" in str(exc)
        assert await s.get_items() == before
    else:
        assert popped == before[-1]
        assert await s.get_items() == before[:-1]


# -- cancellation -------------------------------------------------------------------------


#: Where a call is cancelled: after n event loop turns, then after a delay (seconds).
POINTS: list[tuple[str, float]] = [("turns", n) for n in range(12)] + [
    ("delay", d) for d in (1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3e-3, 6e-3, 0.012, 0.025, 0.2)
]


async def test_a_cancelled_call_leaves_the_store_as_before_or_as_after(
    store: BaseStore,
) -> None:
    base = [said("base", i) for i in range(3)]
    extra = [said("new", 0), said("new", 1)]
    outcomes: dict[str, set[str]] = {"add": set(), "pop": set(), "clear": set()}
    settled: list[tuple[str, list[Any]]] = []

    calls: dict[str, tuple[Callable[[AgentsSession], Awaitable[Any]], list[Any]]] = {
        "add": (lambda s: s.add_items(cast("list[TResponseInputItem]", extra)), base + extra),
        "pop": (lambda s: s.pop_item(), base[:-1]),
        "clear": (lambda s: s.clear_session(), []),
    }
    for op, (call, after) in calls.items():
        for n, (how, amount) in enumerate(POINTS):
            sid = f"cancel-{op}-{n}"
            s = AgentsSession(sid, store)
            await s.add_items(cast("list[TResponseInputItem]", base))
            task = asyncio.ensure_future(call(s))
            if how == "turns":
                for _ in range(int(amount)):
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(amount)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            got = await s.get_items()
            assert got in (base, after), (op, how, amount, got)
            outcomes[op].add("after" if got == after else "before")
            settled.append((sid, got))
    await asyncio.sleep(0.05)  # nothing a cancelled call sent lands later
    for sid, got in settled:
        assert await AgentsSession(sid, store).get_items() == got, sid
    # Both outcomes were reached: the cancellations landed before and after the writes.
    for op, seen in outcomes.items():
        assert seen == {"before", "after"}, (op, seen)


async def test_a_cancellation_mid_commit_is_settled_before_it_is_raised(
    redis_url: str, prefix: str, proxy: FaultProxy
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix) as store:
        s = AgentsSession("slow", store)
        await s.add_items([cast("TResponseInputItem", said("base", 0))])  # scripts loaded
        # Commits (and settlements) are held 200 ms on their way to the server; loads pass.
        proxy.delay_match, proxy.request_delay = b"EVALSHA", 0.2
        calls: list[tuple[Awaitable[Any], list[list[Any]]]] = [
            (s.add_items([cast("TResponseInputItem", said("new", 0))]),
             [[said("base", 0)], [said("base", 0), said("new", 0)]]),
        ]  # fmt: skip
        for call, allowed in calls:
            task = asyncio.ensure_future(call)
            await asyncio.sleep(0.05)  # the commit is on its way
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            decided = await s.get_items()  # the cancellation came back once it was decided
            assert decided in allowed
            await asyncio.sleep(0.4)  # the held copy reached the server meanwhile
            assert await s.get_items() == decided
        before = await s.get_items()
        task = asyncio.ensure_future(s.pop_item())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        decided = await s.get_items()
        assert decided in (before, before[:-1])
        await asyncio.sleep(0.4)
        assert await s.get_items() == decided


# -- lost replies -------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 2])
async def test_a_lost_reply_never_duplicates_an_add_or_a_pop(
    proxy: FaultProxy, redis_url: str, prefix: str, retries: int
) -> None:
    async with RedisStore.from_url(
        through(proxy, redis_url), prefix=prefix, retries=retries
    ) as store:
        s = AgentsSession("lost", store)
        await s.add_items([cast("TResponseInputItem", said("warm", 0))])
        proxy.drop_reply(b"EVALSHA")
        await s.add_items(cast("list[TResponseInputItem]", [said("m", 0), said("m", 1)]))
        assert proxy.dropped_replies == 1
        assert await s.get_items() == [said("warm", 0), said("m", 0), said("m", 1)]
        proxy.drop_reply(b"EVALSHA")
        assert await s.pop_item() == said("m", 1)
        assert proxy.dropped_replies == 2
        assert await s.get_items() == [said("warm", 0), said("m", 0)]


# -- the framework's runner ---------------------------------------------------------------


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _text(text: str, n: int) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{n}",
        role="assistant",
        status="completed",
        type="message",
        content=[ResponseOutputText(text=text, type="output_text", annotations=[])],
    )


class ScriptedModel(Model):
    """Replies from a script, one list of output items per model call; records its inputs."""

    def __init__(self, replies: list[list[TResponseOutputItem]]) -> None:
        self.replies = list(replies)
        self.inputs: list[list[Item]] = []

    def _next(self, given: str | list[TResponseInputItem]) -> list[TResponseOutputItem]:
        self.inputs.append(json.loads(json.dumps(given)) if isinstance(given, list) else [])
        return self.replies.pop(0)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        return ModelResponse(output=self._next(input), usage=Usage(), response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        response = Response(
            id="resp_1",
            created_at=0,
            model="scripted",
            object="response",
            output=self._next(input),
            parallel_tool_calls=False,
            tool_choice="auto",
            tools=[],
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=0
        )


def _script() -> list[list[TResponseOutputItem]]:
    return [
        [
            ResponseReasoningItem(
                id="rs_1", type="reasoning", summary=[Summary(text="a tool", type="summary_text")]
            ),
            ResponseFunctionToolCall(
                id="fc_1", call_id="call_1", name="weather", arguments='{"city":"Paris"}',
                type="function_call", status="completed",
            ),
        ],
        [_text("It is sunny in Paris.", 1)],
        [_text("You asked about the weather in Paris.", 2)],
    ]  # fmt: skip


NO_TRACES = RunConfig(tracing_disabled=True)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
async def test_the_runner_remembers_across_two_runs(store: BaseStore, streamed: bool) -> None:
    model = ScriptedModel(_script())
    agent: Agent[None] = Agent(name="assistant", model=model, tools=[weather])

    async def run(text: str) -> str:
        session = AgentsSession("runner", store)  # a new one per request, as a server would
        if streamed:
            streaming = Runner.run_streamed(agent, text, session=session, run_config=NO_TRACES)
            async for _ in streaming.stream_events():
                pass
            return str(streaming.final_output)
        result = await Runner.run(agent, text, session=session, run_config=NO_TRACES)
        return str(result.final_output)

    assert await run("Weather in Paris?") == "It is sunny in Paris."
    first = await AgentsSession("runner", store).get_items()
    assert [i.get("type", "message") for i in first] == [
        "message", "reasoning", "function_call", "function_call_output", "message",
    ]  # fmt: skip
    assert await run("What did I ask?") == "You asked about the weather in Paris."
    # The second run's model input is the first run's items, then the new question.
    assert model.inputs[2] == [*first, {"content": "What did I ask?", "role": "user"}]
    every = await AgentsSession("runner", store).get_items()
    assert every[: len(first)] == first
    assert every[len(first) :] == [
        {"content": "What did I ask?", "role": "user"},
        {
            "id": "msg_2",
            "content": [
                {
                    "annotations": [],
                    "text": "You asked about the weather in Paris.",
                    "type": "output_text",
                }
            ],
            "role": "assistant",
            "status": "completed",
            "type": "message",
        },
    ]
    # promptkit sees the same conversation: the question, the call, its result, the answers.
    texts = [(m.role, m.text) for m in await store.load("runner")]
    assert ("tool", "sunny in Paris") in texts
    assert texts[-1] == ("assistant", "You asked about the weather in Paris.")


async def test_the_runner_follows_a_limit_from_the_run_config(store: BaseStore) -> None:
    seed = [said("old", i) for i in range(5)]
    await AgentsSession("limited", store).add_items(cast("list[TResponseInputItem]", seed))
    model = ScriptedModel([[_text("ok", 1)], [_text("ok", 2)]])
    agent: Agent[None] = Agent(name="assistant", model=model)
    session = AgentsSession("limited", store, session_settings=SessionSettings(limit=3))
    await Runner.run(agent, "now", session=session, run_config=NO_TRACES)
    assert model.inputs[0] == [*seed[-3:], {"content": "now", "role": "user"}]
    # The run's settings override the session's.
    config = RunConfig(tracing_disabled=True, session_settings=SessionSettings(limit=1))
    await Runner.run(agent, "again", session=session, run_config=config)
    assert model.inputs[1][:-1] == [cast("Item", (await session.get_items(limit=3))[0])]


# -- the optional dependency --------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_importing_promptkit_never_imports_agents() -> None:
    done = _python(
        "import sys, promptkit_async, promptkit_async.integrations\n"
        "assert 'agents' not in sys.modules, 'agents was imported'\n"
        "print('ok')"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_without_agents_the_import_error_names_the_extra() -> None:
    done = _python(
        "import sys\n"
        "sys.modules['agents'] = None  # as if openai-agents were not installed\n"
        "try:\n"
        "    import promptkit_async.integrations.openai_agents\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported')\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'promptkit_async[agents]'" in done.stdout
