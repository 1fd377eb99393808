"""Rolling upgrades: the scripts of this release and of the last one, on one Redis.

An old and a new process commit to the same sessions during an upgrade, each
with its own copy of the scripts (``legacy_scripts`` keeps the old sources
verbatim). Three worlds run the same random steps (commits of new, repeated
and aborted turn ids, settles, restores, cached loads, rewinds, fences,
owners, evicted and foreign-written bookkeeping, 0.1.0 turn keys): one only
on the old scripts, one only on the new, one on either, chosen step by step.
Every reply and every key must be the same in all three (times aside).
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest
import redis

from promptkit_async.stores._redis import _scripts

from . import legacy_scripts

_OLD = {
    "commit": legacy_scripts.COMMIT,
    "resolve": legacy_scripts.RESOLVE,
    "restore": legacy_scripts.RESTORE,
    "load": legacy_scripts.LOAD_IF_CHANGED,
}
_NEW = {
    "commit": _scripts._COMMIT,
    "resolve": _scripts._RESOLVE,
    "restore": _scripts._RESTORE,
    "load": _scripts._LOAD_IF_CHANGED,
}
_SESSIONS = ("s1", "s2")
_HEADER = re.compile(rb"^\x002(\d+) ([^\n]+)\n", re.S)


def _norm(value: Any) -> Any:
    """Times (13-digit ms, now or now + ttl) as 'T': the worlds run ms apart."""
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, bytes):
        value = re.sub(rb"^\x002\d+ ", b"\x002T ", value)
        return b"T" if re.fullmatch(rb"1\d{12}(\.0)?", value) else value
    if isinstance(value, (int, float)) and 1e12 <= value < 2e12:
        return "T"
    return value


class _World:
    def __init__(self, r: Any, prefix: str, scripts: dict[str, bytes] | None, seed: int) -> None:
        self.r, self.prefix, self.scripts = r, prefix, scripts
        self.mixer = random.Random(seed)  # the mixed world's choice of script
        self.sha_old = {k: r.script_load(v) for k, v in _OLD.items()}
        self.sha_new = {k: r.script_load(v) for k, v in _NEW.items()}

    def key(self, sid: str, kind: str) -> bytes:
        return f"{self.prefix}:{{w}}:{sid}:{kind}".encode()

    @property
    def index(self) -> bytes:
        return f"{self.prefix}:{{w}}:i".encode()

    def run(self, name: str, keys: list[bytes], args: list[Any]) -> Any:
        if self.scripts is None:  # the mixed world: either, step by step
            sha = (self.sha_old if self.mixer.random() < 0.5 else self.sha_new)[name]
        else:
            sha = (self.sha_old if self.scripts is _OLD else self.sha_new)[name]
        try:
            return _norm(self.r.evalsha(sha, len(keys), *keys, *args))
        except redis.ResponseError as exc:
            return ("error", str(exc).split(" script:")[0].split(" Error")[0])

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for raw in sorted(self.r.scan_iter(f"{self.prefix}:*")):
            k = raw.decode()[len(self.prefix) :]
            kind = self.r.type(raw).decode()
            if kind == "list":
                val: Any = _norm(self.r.lrange(raw, 0, -1))
            elif kind == "zset":
                pairs = self.r.zrange(raw, 0, -1, withscores=True)
                val = sorted((m, _norm(s)) for m, s in pairs)
            elif kind == "hash":
                val = sorted((f, _norm(v)) for f, v in self.r.hgetall(raw).items())
            else:
                val = self.r.get(raw)
            out[k] = (kind, val, self.r.pttl(raw))
        return out


def _same(snaps: list[dict[str, Any]], slack_ms: float) -> None:
    first = snaps[0]
    for other in snaps[1:]:
        assert sorted(first) == sorted(other)
        for k, (kind, val, pttl) in first.items():
            kind2, val2, pttl2 = other[k]
            assert (kind, val) == (kind2, val2), k
            # The same TTL, give or take the time between the worlds' steps:
            # a key set in one step and read in one snapshot differs by at
            # most the longer of the two (a loaded runner stretches both).
            assert (pttl < 0) == (pttl2 < 0) and (
                pttl < 0 and pttl == pttl2 or abs(pttl - pttl2) <= slack_ms
            ), (k, pttl, pttl2, slack_ms)


def _ids(world: _World, sid: str) -> list[str]:
    found = []
    for raw in world.r.lrange(world.key(sid, "h"), 0, -1):
        m = _HEADER.match(raw)
        if m:
            found.append(m.group(2).decode())
    return found


def _step(
    worlds: list[_World], rng: random.Random, turns: list[str], versions: dict[str, str]
) -> None:
    sid = rng.choice(_SESSIONS)
    what = rng.choices(
        ["commit", "resolve", "restore", "load", "evict", "foreign", "legacy", "lease", "index"],
        [40, 6, 3, 6, 4, 4, 2, 3, 2],
    )[0]
    probe = worlds[0]
    if what == "commit":
        pick = rng.random()
        turn = rng.choice(turns) if turns and pick < 0.25 else f"t{len(turns)}-{rng.random():.6f}"
        turns.append(turn)
        ids = _ids(probe, sid)
        after = replace = ""
        r = rng.random()
        if r < 0.08:
            after = rng.choice([*ids, "999", "0~7"]) if ids else "5"
        elif r < 0.16:
            replace = ids[-1] if ids and rng.random() < 0.7 else "nope"
        fenced = rng.random() < 0.15
        indexed = rng.random() < 0.7
        args = [
            turn,
            rng.choice([0, 4, 40]),  # cap
            rng.choice([0, 60000, 3600000, 3600000]),  # ttl
            rng.choice([64, 64, 3]),  # turn memory
            "tok" if fenced else "",
            sid if indexed else "",
            "1" if rng.random() < 0.2 else "0",  # re-send
            rng.choice(["", "", "ada", "bob"]),  # owner
            after,
            "",
            replace,
            *(f"p{rng.random():.4f}" for _ in range(rng.choice([1, 2, 2, 3]))),
        ]
        replies = []
        for w in worlds:
            keys = [w.key(sid, "h"), w.key(sid, "t"), w.key(sid, "m")]
            if fenced:
                keys.append(w.key(sid, "l"))
            if indexed:
                keys.append(w.index)
            replies.append(w.run("commit", keys, args))
        assert all(rep == replies[0] for rep in replies), replies
        if isinstance(replies[0], list) and replies[0][0] == 1:
            versions[sid] = turn
    elif what == "resolve":
        turn = rng.choice(turns) if turns and rng.random() < 0.5 else f"r{rng.random():.6f}"
        turns.append(turn)
        replies = [
            w.run("resolve", [w.key(sid, "h"), w.key(sid, "t")], [turn, 3600000, 64])
            for w in worlds
        ]
        assert all(rep == replies[0] for rep in replies), replies
    elif what == "restore":
        turn = f"x{rng.random():.6f}"
        replace = rng.choice(["0", "1"])
        stamp = rng.choice(["", "1700000000000"])
        replies = [
            w.run(
                "restore",
                [w.key(sid, "h"), w.key(sid, "t"), w.key(sid, "m"), w.index],
                [
                    replace,
                    3600000,
                    turn,
                    64,
                    sid,
                    7,
                    1,
                    stamp,
                    1,
                    "o",
                    "ada",
                    b"\x0021700000000000 5~1\nrestored",
                    b"\x0021700000000000 6~1\nmore",
                ],
            )
            for w in worlds
        ]
        assert all(rep == replies[0] for rep in replies), replies
    elif what == "load":
        known = versions.get(sid, "")
        length = probe.r.llen(probe.key(sid, "h"))
        replies = [
            w.run("load", [w.key(sid, "h"), w.key(sid, "t")], [known, 0, length]) for w in worlds
        ]
        # The version and the length: what the near cache compares (the rest of
        # the reply is the load's own business).
        assert all(rep[:2] == replies[0][:2] for rep in replies), replies
    elif what == "evict":
        kind = rng.choice(["h", "t", "m", "t", "m"])
        for w in worlds:
            w.r.delete(w.key(sid, kind))
    elif what == "foreign":
        score = rng.choice([1e300, float("inf"), 2.5, 2**53, None])
        member = rng.choice(["zz-foreign", "!a", "#v", "0-first"])
        for w in worlds:
            t = w.key(sid, "t")
            if score is None:  # a member on the current version's score
                v = w.r.zscore(t, "#v")
                if v is not None:
                    w.r.zadd(t, {member: v})
            elif member == "#v" and score in (1e300, float("inf")):
                continue  # a frozen count stays frozen: nothing more to compare
            else:
                w.r.zadd(t, {member: score})
        if rng.random() < 0.3:
            for w in worlds:  # a record of 0.1.0 (no header) pushed around the store
                w.r.rpush(w.key(sid, "h"), b"plain")
    elif what == "legacy":
        for w in worlds:  # a turns key of 0.1.0: no '#v'
            w.r.zrem(w.key(sid, "t"), "#v")
    elif what == "lease":
        token = rng.choice(["tok", "other", None])
        for w in worlds:
            if token is None:
                w.r.delete(w.key(sid, "l"))
            else:
                w.r.set(w.key(sid, "l"), token)
    elif what == "index":
        wrong, short = rng.random() < 0.5, rng.random() < 0.5
        for w in worlds:
            w.r.delete(w.index)
            if wrong:
                w.r.set(w.index, "not a zset")
            elif short:  # an index with a short TTL, and an expired member
                w.r.zadd(w.index, {"gone": 1000, "short": 1900000000000})
                w.r.pexpire(w.index, 5000)


@pytest.mark.parametrize("seed", range(6))
def test_old_and_new_scripts_write_and_answer_the_same(
    redis_url: str, prefix: str, seed: int
) -> None:
    r: Any = redis.Redis.from_url(redis_url)  # bytes replies (redis-py types them loosely)
    try:
        worlds = [
            _World(r, f"{prefix}-old", _OLD, seed),
            _World(r, f"{prefix}-new", _NEW, seed),
            _World(r, f"{prefix}-mix", None, seed),
        ]
        rng = random.Random(seed)
        turns: list[str] = []
        versions: dict[str, str] = {}
        longest_step = 0.0
        for _ in range(250):
            began = time.monotonic()
            _step(worlds, rng, turns, versions)
            stepped = time.monotonic()
            snaps = [w.snapshot() for w in worlds]
            longest_step = max(longest_step, stepped - began)
            slack = max(longest_step, time.monotonic() - stepped)
            _same(snaps, 1000 * slack + 50)
    finally:
        for key in r.scan_iter(f"{prefix}-*"):
            r.delete(key)
        r.close()


def test_the_legacy_copy_is_not_the_current_one() -> None:
    """Otherwise the test above compares a script with itself."""
    assert legacy_scripts.COMMIT != _scripts._COMMIT
