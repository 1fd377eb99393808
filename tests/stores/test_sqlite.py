"""SQLiteStore specifics: many processes on one file, killed writers, a busy file, files that
are not ours, persistence, cancellation, and the event loop kept free of sqlite3 calls.

The contract every store shares runs on SQLite in test_contract.py, test_history.py and
test_conversations.py (the ``sqlite`` backend). Nothing here asserts a time: the loop
stall and throughput are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import (
    CommitOutcomeUnknown,
    CorruptHistory,
    MemoryStore,
    Message,
    MessageTooLarge,
    RedisStore,
    Session,
    SQLiteStore,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    Turn,
    store_from_env,
    store_from_url,
)
from promptkit_async.stores._sqlite._errors import store_error
from promptkit_async.stores._sqlite._schema import APPLICATION_ID, SCHEMA_VERSION, open_database

from ..backends import WallClock
from ..samples import a, u

if TYPE_CHECKING:
    from promptkit_async.stores._sqlite._db import Database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "chat.db")


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=10.0, isolation_level=None)


async def _children(script: str, *argvs: list[str]) -> list[bytes]:
    """Run ``script`` once per argv, all at once, each in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for argv in argvs
    ]
    # Every child is waited for before any is judged, so that one failing
    # leaves no process running and no pipe open behind the test.
    results = await asyncio.gather(*(proc.communicate() for proc in procs))
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    return [out for out, _ in results]


# -- many processes ---------------------------------------------------------------------

TURNS = r"""
import asyncio, os, sys
from promptkit_async import Message, Session, SQLiteStore

async def main(path, proc, turns, sessions):
    async with SQLiteStore(path, busy_timeout=60) as store:
        await store.ping()
        while not os.path.exists(path + ".go"):  # start together
            await asyncio.sleep(0.005)
        for i in range(turns):
            async with Session(store, f"shared-{i % sessions}") as s:
                s.add(Message.user(f"{proc}:{i}:q"), Message.assistant(f"{proc}:{i}:a"))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


async def test_many_processes_on_one_file_lose_and_duplicate_no_turn(db: str) -> None:
    procs, turns, sessions = 3, 200, 4
    async with SQLiteStore(db) as store:
        children = asyncio.ensure_future(
            _children(TURNS, *([db, f"p{n}", str(turns), str(sessions)] for n in range(procs)))
        )
        await asyncio.sleep(0.5)  # the children are up, racing to create the schema
        started = time.perf_counter()
        await asyncio.to_thread(Path(db + ".go").touch)
        await children
        elapsed = time.perf_counter() - started
        seen: dict[tuple[str, int], int] = {}
        switches = 0
        for k in range(sessions):
            stored = await store.load(f"shared-{k}")
            assert [m.id for m in stored] == [str(n) for n in range(len(stored))]
            last: dict[str, int] = {}
            previous = ""
            for q, reply in zip(stored[::2], stored[1::2], strict=True):
                proc, i, kind = q.text.split(":")
                switches += previous not in ("", proc)
                previous = proc
                assert kind == "q" and reply.text == f"{proc}:{i}:a"  # each turn whole
                assert q.created_at == reply.created_at
                assert last.get(proc, -1) < int(i)  # each process's turns in its order
                last[proc] = int(i)
                seen[proc, int(i)] = seen.get((proc, int(i)), 0) + 1
        expected = {(f"p{n}", i) for n in range(procs) for i in range(turns)}
        assert set(seen) == expected  # none lost
        assert set(seen.values()) == {1}  # none duplicated
    print(
        f"\n{procs} processes x {turns} turns on one file: {elapsed:.2f} s, "
        f"{switches} times the next turn of a session came from another process"
    )


KILLED = r"""
import asyncio, sys
from promptkit_async import Message, SQLiteStore, Turn

async def main(path, proc):
    async with SQLiteStore(path, busy_timeout=60) as store:
        i = 0
        while True:
            body = [Message.user(f"{proc}:{i}:{j}:" + "x" * 2000) for j in range(20)]
            await store.commit(Turn(session_id=f"k-{i % 3}", messages=body, turn_id=f"{proc}-{i}"))
            print(i, flush=True)
            i += 1

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_process_killed_mid_commits_leaves_every_turn_whole_or_absent(db: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acked: set[tuple[str, int]] = set()
    unacked: set[tuple[str, int]] = set()
    for round_ in range(4):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", KILLED, db, f"r{round_}", env=env, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        for _ in range(3 + round_):
            acked.add((f"r{round_}", int(await proc.stdout.readline())))
        await asyncio.sleep(random.uniform(0, 0.03))
        proc.kill()  # SIGKILL: no cleanup, wherever it was
        rest, _ = await proc.communicate()
        done = [int(line) for line in rest.split()]
        acked.update((f"r{round_}", i) for i in done)
        unacked.add((f"r{round_}", max(i for r, i in acked if r == f"r{round_}") + 1))
    conn = _connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    async with SQLiteStore(db) as store:
        present: set[tuple[str, int]] = set()
        for k in range(3):
            stored = await store.load(f"k-{k}", None)
            assert len(stored) % 20 == 0
            for start in range(0, len(stored), 20):
                parts = [m.text.split(":")[:3] for m in stored[start : start + 20]]
                proc_, i = parts[0][0], int(parts[0][1])
                assert parts == [[proc_, str(i), str(j)] for j in range(20)]  # whole
                assert len({m.created_at for m in stored[start : start + 20]}) == 1
                present.add((proc_, i))
        assert acked <= present  # every acknowledged commit survived the kill
        assert present <= acked | unacked  # at most the one in flight, and then whole
        # The file is still a working store: the next commit works.
        await store.append("k-0", [u("after the kills")])
        assert (await store.load("k-0", 1))[0].text == "after the kills"


async def test_a_forked_child_opens_the_file_anew(db: str) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    async with SQLiteStore(db) as store:
        await store.append("f", [u("parent")])  # the worker thread and connection exist

        async def child() -> None:
            await store.append("f", [u("child")])  # neither came along: new ones
            await store.aclose()

        with warnings.catch_warnings():  # 3.12+ warns of forking with threads running
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                asyncio.run(child())
                code = 0
            finally:
                os._exit(code)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert [m.text for m in await store.load("f")] == ["parent", "child"]


# -- a busy file ------------------------------------------------------------------------


async def test_a_busy_file_waits_busy_timeout_then_raises_store_unavailable(db: str) -> None:
    errors: list[str] = []

    class Errors:
        def on_error(self, operation: str, session_id: str | None, error: BaseException) -> None:
            errors.append(f"{operation}:{type(error).__name__}")

    async with SQLiteStore(db, busy_timeout=0.2, observers=[Errors()]) as store:
        await store.append("s", [u("before")])
        other = _connect(db)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held by another connection
        try:
            turn = [u("q"), a("r")]
            with pytest.raises(StoreUnavailable) as info:
                await store.append("s", turn)
            assert info.value.unsaved == tuple(turn)
            assert info.value.session_id == "s"
            assert db in str(info.value) and "busy" in str(info.value)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)  # chained only
            with pytest.raises(StoreUnavailable) as in_session:
                async with Session(store, "s") as s:
                    s.add(u("in a session"))
            assert [m.text for m in in_session.value.unsaved] == ["in a session"]
            with pytest.raises(StoreUnavailable):
                await store.delete("s")
            # Readers never wait for the writer (WAL): loads go on meanwhile.
            assert [m.text for m in await store.load("s")] == ["before"]
            assert await store.exists("s")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert errors == ["save:StoreUnavailable", "save:StoreUnavailable"]
        await store.append("s", [u("after")])
        assert [m.text for m in await store.load("s")] == ["before", "after"]  # nothing else


async def test_a_commit_queued_behind_a_busy_one_and_cancelled_never_runs(db: str) -> None:
    async with SQLiteStore(db, busy_timeout=10) as store:
        await store.ping()
        other = _connect(db)
        other.execute("BEGIN IMMEDIATE")
        first = asyncio.create_task(
            store.commit(Turn(session_id="q", messages=[u("first")], turn_id="t-1"))
        )
        await asyncio.sleep(0.05)  # the first is in the worker, waiting for the lock
        second = asyncio.create_task(
            store.commit(Turn(session_id="q", messages=[u("second")], turn_id="t-2"))
        )
        await asyncio.sleep(0.01)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        other.execute("COMMIT")
        other.close()
        await first
        assert [m.text for m in await store.load("q")] == ["first"]
        assert await store.settle_turn("q", "t-2") == "aborted"
        assert await store.settle_turn("q", "t-1") == "applied"
        with pytest.raises(StoreUnavailable, match="aborted earlier"):
            await store.commit(Turn(session_id="q", messages=[u("second")], turn_id="t-2"))
        assert [m.text for m in await store.load("q")] == ["first"]


# -- a COMMIT that fails: settled by turn id ---------------------------------------------------


class _FailingCommit:
    """A connection whose ``COMMIT`` fails (``after``: once the real one ran) ``times`` times."""

    def __init__(self, conn: sqlite3.Connection, *, after: bool, times: int) -> None:
        self._conn = conn
        self._after = after
        self.left = times

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.left:
            self.left -= 1
            if self._after:
                self._conn.execute(sql)
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)


async def _failing_commits(store: SQLiteStore, *, after: bool, times: int) -> None:
    def wrap(db_: Database) -> None:
        db_.conn = _FailingCommit(db_.conn, after=after, times=times)  # type: ignore[assignment]

    await store._run(wrap, "wrapping the connection")


def _unwrap(db_: Database) -> None:
    conn = db_.conn
    if isinstance(conn, _FailingCommit):
        db_.conn = conn._conn


async def test_a_failed_commit_that_wrote_nothing_is_aborted_for_good(db: str) -> None:
    async with SQLiteStore(db) as store:
        await store.append("s", [u("kept")])
        await _failing_commits(store, after=False, times=1)
        turn = Turn(session_id="s", messages=[u("lost")], turn_id="t-lost")
        with pytest.raises(StoreUnavailable) as info:
            await store.commit(turn)
        assert info.value.unsaved == turn.messages and db in str(info.value)
        assert await store.turn_status("s", "t-lost") == "aborted"
        with pytest.raises(StoreUnavailable, match="aborted earlier"):
            await store.commit(turn)  # never applies afterwards
        assert [m.text for m in await store.load("s")] == ["kept"]


async def test_a_failed_commit_that_did_write_is_reported_applied(db: str) -> None:
    async with SQLiteStore(db) as store:
        await _failing_commits(store, after=True, times=1)
        stored = await store.commit(Turn(session_id="s", messages=[u("x"), a("y")], turn_id="t"))
        assert [m.id for m in stored] == ["0", "1"]
        assert [m.text for m in await store.load("s")] == ["x", "y"]  # once


async def test_a_failed_commit_that_cannot_be_settled_is_outcome_unknown(db: str) -> None:
    async with SQLiteStore(db) as store:
        await store.append("s", [u("kept")])
        await _failing_commits(store, after=False, times=2)  # the settle's COMMIT fails too
        with pytest.raises(CommitOutcomeUnknown) as info:
            await store.commit(Turn(session_id="s", messages=[u("maybe")], turn_id="t-?"))
        assert info.value.turn_id == "t-?" and info.value.unsaved == (u("maybe"),)
        await store._run(_unwrap, "unwrapping")
        assert await store.settle_turn("s", "t-?") == "aborted"  # it was not written
        assert [m.text for m in await store.load("s")] == ["kept"]


def test_every_sqlite_error_maps_to_a_store_error() -> None:
    path = "/data/chat.db"
    cases: list[tuple[sqlite3.Error, type[StoreError]]] = [
        (sqlite3.OperationalError("database is locked"), StoreUnavailable),
        (sqlite3.OperationalError("disk I/O error"), StoreUnavailable),
        (sqlite3.OperationalError("unable to open database file"), StoreUnavailable),
        (sqlite3.OperationalError("something new"), StoreUnavailable),
        (sqlite3.DatabaseError("file is not a database"), StoreRejected),
        (sqlite3.DatabaseError("database disk image is malformed"), StoreRejected),
        (sqlite3.OperationalError("attempt to write a readonly database"), StoreRejected),
        (sqlite3.OperationalError("database or disk is full"), StoreRejected),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), StoreRejected),
    ]
    for exc, kind in cases:
        error = store_error(exc, path, "doing", busy_timeout=1.0, unsaved=(u("x"),))
        assert type(error) is kind, exc
        assert path in str(error) and error.unsaved == (u("x"),)  # type: ignore[attr-defined]
    readonly = sqlite3.OperationalError("attempt to write a readonly database")
    readonly.sqlite_errorcode = 8  # type: ignore[attr-defined]  # SQLITE_READONLY, 3.11+
    assert type(store_error(readonly, path, "doing", busy_timeout=1.0)) is StoreRejected


# -- files that are not ours --------------------------------------------------------------


async def test_a_file_that_is_not_a_database_is_refused_naming_its_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not an SQLite database, only text " * 100)
    before = path.read_bytes()
    async with SQLiteStore(str(path)) as store:
        with pytest.raises(StoreRejected) as info:
            await store.load("s")
        assert str(path) in str(info.value) and "not a database" in str(info.value)
        with pytest.raises(StoreRejected) as on_write:
            await store.append("s", [u("x")])
        assert on_write.value.unsaved == (u("x"),)
    assert path.read_bytes() == before


def _scramble(path: str) -> None:
    """Overwrite every page but the first (the header and the schema) with noise."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(random.Random(7).randbytes(size - 4096))


async def test_a_corrupt_store_file_is_refused_naming_its_path(db: str) -> None:
    async with SQLiteStore(db) as store:
        for i in range(40):
            await store.append(f"s{i}", [u("x" * 3000)] * 3)
    await asyncio.to_thread(_scramble, db)
    async with SQLiteStore(db) as store:
        with pytest.raises(StoreRejected) as info:
            await store.load("s3")
        assert db in str(info.value) and "corrupt" in str(info.value)
        assert info.value.session_id == "s3"


async def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _connect(str(path))
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    before = path.read_bytes()
    async with SQLiteStore(str(path)) as store:
        with pytest.raises(StoreRejected) as info:
            await store.ping()
    assert str(path) in str(info.value)
    assert "another application" in str(info.value) and "users" in str(info.value)
    assert path.read_bytes() == before  # not switched to WAL, nothing created
    assert not (tmp_path / "app.db-wal").exists()


async def test_a_newer_schema_is_refused_with_a_clear_message(db: str) -> None:
    async with SQLiteStore(db) as store:
        await store.append("s", [u("x")])
    conn = _connect(db)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    async with SQLiteStore(db) as store:
        with pytest.raises(StoreRejected, match="schema version 7, newer") as info:
            await store.load("s")
    assert db in str(info.value) and "upgrade promptkit_async" in str(info.value)


async def test_a_new_file_gets_our_schema_in_wal_mode(db: str) -> None:
    async with SQLiteStore(db) as store:
        await store.ping()
    conn = _connect(db)
    try:
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_stores_opening_a_new_file_at_once_all_take_it_as_theirs(tmp_path: Path) -> None:
    """One creates the schema; the others, reading the file meanwhile, see it whole."""
    for trial in range(20):
        path = str(tmp_path / f"race-{trial}.db")
        start = threading.Barrier(6)
        refused: list[BaseException] = []

        def open_it(
            path: str = path,
            start: threading.Barrier = start,
            refused: list[BaseException] = refused,
        ) -> None:
            start.wait()
            try:
                open_database(path, busy_timeout=10, synchronous="NORMAL").close()
            except BaseException as exc:  # collected, judged below
                refused.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert refused == [], f"trial {trial}: {refused[0]!r}"


async def test_a_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "no-such-dir" / "chat.db")
    async with SQLiteStore(path) as store:
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s", [u("x")])
    assert path in str(info.value) and info.value.unsaved == (u("x"),)


def test_bad_arguments_are_refused_at_once(db: str) -> None:
    for bad in ("", ":memory:", "file::memory:?cache=shared"):
        with pytest.raises(ValueError, match="MemoryStore"):
            SQLiteStore(bad)
    with pytest.raises(ValueError, match="max_stored"):
        SQLiteStore(db, max_stored=0)
    with pytest.raises(ValueError, match="busy_timeout"):
        SQLiteStore(db, busy_timeout=-1)
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(db, synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SQLiteStore(b"chat.db")  # type: ignore[arg-type]
    assert SQLiteStore(Path(db)).path == db  # type: ignore[arg-type]


# -- persistence ----------------------------------------------------------------------------


async def test_reopening_the_file_keeps_everything(db: str) -> None:
    clock = WallClock()
    async with SQLiteStore(db, clock=clock) as store:
        async with Session(store, "c", owner="ada", ttl=3600) as s:
            s.add(u("q1"), a("a1"))
        first = s.committed
        await store.commit(
            Turn(session_id="c", messages=[u("q2")], turn_id="turn-2", owner="ada", ttl=3600)
        )
        await store.update_info("c", title="Trip", metadata={"pin": True})
        await store.fork("c", "c-fork", upto="1")
        await store.restore("imported", [u("old"), a("reply")], ttl=None)
        info = await store.info("c")
        kept = await store.load("c")
    async with SQLiteStore(db, clock=clock) as again:
        assert await again.load("c") == kept
        assert [(m.id, m.created_at) for m in await again.load("c")] == [
            (m.id, m.created_at) for m in kept
        ]
        assert kept[:2] == list(first)
        assert await again.info("c") == info
        left = await again.ttl("c")
        assert left is not None and 3500 < left <= 3600
        assert await again.ttl("imported") is None
        assert [m.text for m in await again.load("c-fork")] == ["q1", "a1"]
        # Turn ids are in the file too: a re-sent commit does not apply twice.
        resent = await again.commit(
            Turn(session_id="c", messages=[u("q2")], turn_id="turn-2", owner="ada")
        )
        assert [m.id for m in resent] == ["2"]
        assert await again.settle_turn("c", "turn-2") == "applied"
        assert await again.count("c") == 3
        async with Session(again, "c", owner="ada") as s:
            s.add(a("a2"))
        assert s.committed[0].id == "3"
        assert [i.id for i in (await again.conversations("ada")).items] == ["c", "c-fork"]


async def test_a_closed_store_opens_the_file_again_when_used(db: str) -> None:
    store = SQLiteStore(db)
    await store.append("s", [u("one")])
    await store.aclose()
    await store.aclose()  # idempotent
    await store.append("s", [u("two")])
    assert [m.text for m in await store.load("s")] == ["one", "two"]
    await store.aclose()


# -- cancellation -----------------------------------------------------------------------------


async def test_cancelled_commits_write_their_whole_turn_or_nothing(db: str) -> None:
    async with SQLiteStore(db) as store:
        await store.ping()
        rng = random.Random(1)
        turns = [
            Turn(
                session_id=f"c-{n % 5}",
                messages=[u(f"{n}:{j}") for j in range(5)],
                turn_id=f"turn-{n}",
            )
            for n in range(200)
        ]

        async def cancelled(turn: Turn) -> None:
            task = asyncio.ensure_future(store.commit(turn))
            await asyncio.sleep(rng.uniform(0, 0.004))
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

        await asyncio.gather(*(cancelled(t) for t in turns))
        outcomes = {t.turn_id: await store.settle_turn(t.session_id, t.turn_id) for t in turns}
        present: dict[str, int] = {}
        for k in range(5):
            for m in await store.load(f"c-{k}", None):
                n = m.text.split(":")[0]
                present[f"turn-{n}"] = present.get(f"turn-{n}", 0) + 1
        assert set(present.values()) <= {5}  # whole turns only
        assert {t for t, o in outcomes.items() if o == "applied"} == set(present)
        # An aborted turn id never applies, even re-sent; the store goes on working.
        aborted = [t for t in turns if outcomes[t.turn_id] == "aborted"]
        for turn in aborted[:3]:
            with pytest.raises(StoreUnavailable):
                await store.commit(turn)
        async with Session(store, "c-0") as s:
            s.add(u("the next turn works"))
        assert (await store.load("c-0", 1))[0].text == "the next turn works"
        print(f"\n{len(present)} of {len(turns)} cancelled commits had applied, whole")


# -- the event loop ---------------------------------------------------------------------------


async def test_sqlite3_runs_only_on_the_worker_thread(db: str) -> None:
    threads: set[int] = set()

    def trace(db_: Database) -> int:
        db_.conn.set_trace_callback(lambda sql: threads.add(threading.get_ident()))
        return threading.get_ident()

    async with SQLiteStore(db) as store:
        worker = await store._run(trace, "tracing")
        async with Session(store, "t", owner="ada") as s:
            s.add(u("q"), a("r"))
        await store.load("t", before="1")
        await store.conversations("ada")
        await store.fork("t", "t2")
        await store.metrics()
        assert [x async for x in store.sessions("t")] == ["t", "t2"]
        await store.delete_owner("ada")
    assert threads == {worker}
    assert worker != threading.get_ident()


async def test_the_loop_keeps_ticking_through_1000_concurrent_turns(db: str) -> None:
    async def burst(store: SQLiteStore | MemoryStore) -> tuple[float, float, float]:
        stalls: list[float] = []
        running = True

        async def ticker() -> None:
            last = time.perf_counter()
            while running:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                stalls.append(now - last)
                last = now

        async def turn(i: int) -> None:
            async with Session(store, f"b-{i % 100}") as s:
                s.add(u(f"q{i}"), a(f"a{i}"))

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await asyncio.gather(*(turn(i) for i in range(1000)))
        elapsed = time.perf_counter() - started
        running = False
        await tick
        stalls.sort()
        return elapsed, stalls[-1], stalls[int(len(stalls) * 0.99)]

    results = {}
    stores: list[tuple[str, SQLiteStore | MemoryStore]] = [
        ("SQLite FULL", SQLiteStore(db)),
        ("SQLite NORMAL", SQLiteStore(db + "-normal", synchronous="NORMAL")),
        ("MemoryStore", MemoryStore()),
    ]
    for name, store in stores:
        async with store:
            if isinstance(store, SQLiteStore):
                await store.ping()
            results[name] = await burst(store)
            assert sum([await store.count(f"b-{k}") for k in range(100)]) == 2000
    print()
    for name, (elapsed, worst, p99) in results.items():
        print(
            f"1000 concurrent turns, {name}: {elapsed * 1000:.0f} ms "
            f"({1000 / elapsed:.0f} turns/s); loop stall max {worst * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms (a 1 ms ticker)"
        )


# -- behaviour of its own ------------------------------------------------------------------------


async def test_prefixes_are_literal_and_case_sensitive(db: str) -> None:
    ids = ["us%r", "us_r", "usXr", "User-1", "user-1", "u\\x", "\U0010ffff-a", "zz"]
    async with SQLiteStore(db) as store:
        for sid in ids:
            await store.append(sid, [u("x")])
        assert await store.list_sessions("us%") == ["us%r"]
        assert await store.list_sessions("us_") == ["us_r"]
        assert await store.list_sessions("User") == ["User-1"]
        assert await store.list_sessions("u\\") == ["u\\x"]
        assert await store.list_sessions("\U0010ffff") == ["\U0010ffff-a"]
        assert await store.list_sessions("\ud800") == []  # no id can start with it
        assert await store.list_sessions() == sorted(ids)
        assert await store.delete_prefix("us_") == 1
        assert await store.list_sessions("us") == ["us%r", "usXr", "user-1"]


async def test_sessions_pages_through_many_ids(db: str) -> None:
    async with SQLiteStore(db) as store:
        for i in range(1203):
            await store.restore(f"s-{i:05d}", [u("x")])
        found = [sid async for sid in store.sessions("s-")]
        assert found == [f"s-{i:05d}" for i in range(1203)]


async def test_expired_sessions_are_swept_by_writes_elsewhere(db: str) -> None:
    clock = WallClock()
    async with SQLiteStore(db, clock=clock) as store:
        for i in range(100):
            await store.append(f"old-{i}", [u("x")], ttl=10)
        clock.offset += 11
        await store.append("fresh", [u("x")])
        await store.append("fresh", [u("y")])  # each write sweeps a bounded batch
    conn = _connect(db)
    try:
        assert conn.execute("SELECT id FROM sessions").fetchall() == [("fresh",)]
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (2,)
        assert conn.execute("SELECT count(DISTINCT sid) FROM turns").fetchone() == (1,)
    finally:
        conn.close()


async def test_compressed_records_and_the_record_limit(db: str) -> None:
    big = Message.assistant("compressible " * 200)
    async with SQLiteStore(db, compress_above=64) as zipped:
        await zipped.append("z", [u("short"), big])
        assert await zipped.load("z") == [u("short"), big]
    conn = _connect(db)
    try:
        records = [r for (r,) in conn.execute("SELECT record FROM messages ORDER BY seq")]
    finally:
        conn.close()
    assert records[0].split(b"\n", 1)[1].startswith(b'{"')
    assert records[1].split(b"\n", 1)[1].startswith(b"\x00z")  # as the Redis store writes it
    async with SQLiteStore(db, max_record_bytes=1000) as small:
        with pytest.raises(CorruptHistory, match="inflates beyond"):
            await small.load("z")  # the limit bounds what a record may inflate to
        with pytest.raises(MessageTooLarge):
            await small.append("z", [u("fine"), a("y" * 2000)])
        assert await small.count("z") == 2  # nothing of the turn was written


async def test_the_newest_turn_ids_are_remembered(db: str) -> None:
    async with SQLiteStore(db) as store:
        for n in range(70):
            await store.append("t", [u(str(n))], turn_id=f"turn-{n}")
        await store.append("t", [u("10")], turn_id="turn-10")  # among the newest 64
        assert await store.count("t") == 70
        assert await store.turn_status("t", "turn-10") == "applied"
        assert await store.turn_status("t", "turn-2") == "unknown"  # forgotten
        conn = _connect(store.path)
        try:
            assert conn.execute("SELECT count(*) FROM turns").fetchone() == (64,)
        finally:
            conn.close()


# -- store URLs -------------------------------------------------------------------------------


async def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = store_from_url("sqlite:///data/chat.db", busy_timeout=1)
    assert isinstance(relative, SQLiteStore)
    assert relative.path == "data/chat.db" and relative.busy_timeout == 1
    absolute = store_from_url(f"sqlite:///{tmp_path}/my%20chat.db")
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/my chat.db"
    await absolute.append("s", [u("x")])
    assert (tmp_path / "my chat.db").exists()
    await absolute.aclose()
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///x.db?mode=ro"):
        with pytest.raises(ValueError):
            store_from_url(bad)
    with pytest.raises(ValueError, match="not a store URL"):
        store_from_url("postgres://user:secret@host/db")
    try:
        store_from_url("postgres://user:secret@host/db")
    except ValueError as exc:
        assert "secret" not in str(exc)
    redis = store_from_url("redis://127.0.0.1:1/0", prefix="app")
    assert isinstance(redis, RedisStore) and redis.prefix == "app"
    await redis.aclose()


async def test_store_from_env_reads_promptkit_store_first(tmp_path: Path) -> None:
    path = f"{tmp_path}/env.db"
    env = {"PROMPTKIT_STORE": f"sqlite:///{path}", "REDIS_URL": "redis://127.0.0.1:1/0"}
    store = store_from_env(env)
    assert isinstance(store, SQLiteStore) and store.path == path
    redis = store_from_env(
        {"PROMPTKIT_STORE": "redis://127.0.0.1:1/0", "PROMPTKIT_PREFIX": "p", "REDIS_URL": "x"}
    )
    assert isinstance(redis, RedisStore) and redis.prefix == "p"
    await redis.aclose()
    assert isinstance(store_from_env({"PROMPTKIT_STORE": ""}), MemoryStore)
    with pytest.raises(ValueError, match="not a store URL"):
        store_from_env({"PROMPTKIT_STORE": "mysql://x"})
    with pytest.raises(ValueError, match="not a Redis URL"):
        store_from_env({"REDIS_URL": "sqlite:///x.db"})  # REDIS_URL stays Redis only
