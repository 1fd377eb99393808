"""Strict scripting: every script declares every key it touches, all in one slot.

Two checks, both of which fail a test loudly (:class:`StrictScriptViolation`,
an ``AssertionError``, which the store never maps to one of its own errors):

- **The server's own.** The ``strict`` backend is a standalone client on a
  one-node ``cluster-enabled`` server that serves all 16,384 slots, the shape
  of a Cluster proxy: it answers CROSSSLOT to any command, a script's declared
  KEYS included, whose keys span slots, whoever the client. On Redis 7+ and
  Valkey the scripts also carry the ``#!lua`` shebang without
  ``allow-cross-slot-keys``, so the server refuses a script that touches a key
  of another slot than its KEYS', declared or not.
- **A guard in the script.** Every script is sent with a Lua prelude, and each
  of its ``redis.call`` goes through it: a key the command touches that is not
  in KEYS, or a command the guard does not know the keys of, is an error
  (``STRICT ...``). Before sending, the KEYS are checked to share one slot.

The ``strict`` backend turns both on for its tests; ``PROMPTKIT_STRICT_SCRIPTS=1``
turns the guard on for every script of a whole run, on every backend that
runs Lua (fakeredis, a plain server, a Cluster).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
from redis.crc import key_slot

from promptkit_async.stores._redis import _scripts

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "STRICT_SCRIPTS",
    "StrictScriptViolation",
    "StrictServer",
    "guarded",
    "redis_server_binary",
    "server_binary_version",
    "strict_scripts",
]

#: ``PROMPTKIT_STRICT_SCRIPTS=1``: the guard on every script of the run.
STRICT_SCRIPTS = os.environ.get("PROMPTKIT_STRICT_SCRIPTS") == "1"


class StrictScriptViolation(AssertionError):
    """A script touched a key it did not declare, or keys of two slots."""


def redis_server_binary() -> str | None:
    """``$PROMPTKIT_REDIS_SERVER`` (the server matrix), else ``redis-server`` on PATH."""
    return os.environ.get("PROMPTKIT_REDIS_SERVER") or shutil.which("redis-server")


def server_binary_version(binary: str) -> tuple[int, ...]:
    """``(major, minor, patch)`` of a redis-server or valkey-server binary."""
    out = subprocess.run([binary, "--version"], capture_output=True, timeout=10, check=True)
    found = re.search(rb"v=(\d+)\.(\d+)\.(\d+)", out.stdout)
    if found is None:
        raise RuntimeError(f"{binary} --version says no version: {out.stdout!r}")
    return tuple(int(n) for n in found.groups())


# -- the guard --------------------------------------------------------------------------

# Commands whose first argument is their only key, and the other shapes.
_FIRST_KEY = (
    "GET SET SETNX GETDEL INCR INCRBY DECR STRLEN TYPE EXPIRE PEXPIRE PEXPIREAT PERSIST TTL "
    "PTTL LLEN LINDEX LRANGE LTRIM LSET LREM RPUSH RPOP LPUSH LPOP HGET HMGET HSET HSETNX "
    "HDEL HEXISTS HGETALL HKEYS HLEN HINCRBY SADD SREM SCARD SISMEMBER SMEMBERS ZADD ZCARD "
    "ZCOUNT ZINCRBY ZRANGE ZRANGEBYSCORE ZREVRANGE ZREVRANGEBYSCORE ZREM ZREMRANGEBYRANK "
    "ZREMRANGEBYSCORE ZSCORE ZRANK ZRANDMEMBER"
).split()
_GUARD = (
    (
        """
local __declared = {}
for _, k in ipairs(KEYS) do __declared[k] = true end
local __first = {FIRST_KEY}
local function __keys_of(name, args)
  if __first[name] then return {args[1]} end
  if name == 'DEL' or name == 'EXISTS' or name == 'UNLINK' then return args end
  if name == 'TIME' then return {} end
  if name == 'MEMORY' and string.upper(tostring(args[1])) == 'USAGE' then return {args[2]} end
  if name == 'ZUNIONSTORE' or name == 'ZINTERSTORE' then
    local out = {args[1]}
    for i = 1, tonumber(args[2]) do out[#out + 1] = args[2 + i] end
    return out
  end
  return nil
end
local function __strict(call, cmd, ...)
  local name = string.upper(tostring(cmd))
  local keys = __keys_of(name, {...})
  if keys == nil then
    error('STRICT the guard does not know which arguments of ' .. name .. ' are keys')
  end
  for _, key in ipairs(keys) do
    if not __declared[key] then
      error('STRICT ' .. name .. ' touched ' .. tostring(key) .. ', not in KEYS')
    end
  end
  return call(cmd, ...)
end
local function __call(cmd, ...) return __strict(redis.call, cmd, ...) end
local function __pcall(cmd, ...) return __strict(redis.pcall, cmd, ...) end
"""
    )
    .replace("FIRST_KEY", ", ".join(f"{name} = true" for name in _FIRST_KEY))
    .encode()
)


def guarded(source: bytes, *, shebang: bool = False) -> bytes:
    """``source`` with every ``redis.call``/``redis.pcall`` going through the guard."""
    body = source.replace(b"redis.call(", b"__call(").replace(b"redis.pcall(", b"__pcall(")
    return (b"#!lua\n" if shebang else b"") + _GUARD + body


#: The guard's errors, CROSSSLOT (whose code redis-py strips: "Keys in request don't
#: hash to the same slot"), and the script flags' own ("... do not hash to the same slot").
_REFUSALS = ("STRICT", "CROSSSLOT", "hash to the same slot", "non local key")


def _violation(exc: BaseException) -> StrictScriptViolation | None:
    text = str(exc)
    if isinstance(exc, redis.ResponseError) and any(r in text for r in _REFUSALS):
        return StrictScriptViolation(f"a script broke strict scripting: {text}")
    return None


def _one_slot(script: Any, keys: Sequence[bytes]) -> None:
    slots = {key_slot(k) for k in keys}
    if len(slots) > 1:
        first = script.source.lstrip()[:60]
        raise StrictScriptViolation(f"a script was given keys of slots {sorted(slots)}: {first!r}")


def _loaded_scripts() -> list[Any]:
    """Every Script of the package's modules loaded so far."""
    found: list[Any] = []
    for name, module in list(sys.modules.items()):
        if name.startswith("promptkit_async") and module is not None:
            found += (v for v in vars(module).values() if isinstance(v, _scripts.Script))
    return found


@contextlib.contextmanager
def strict_scripts(*, shebang: bool = False) -> Iterator[None]:
    """Every script of the package guarded (and its KEYS checked for one slot) inside:
    those of every module loaded now, and any other the moment it is first called."""
    if getattr(_scripts.Script, "_strict", False):  # already on (the whole run)
        yield
        return
    originals: dict[int, tuple[Any, bytes, str]] = {}

    def guard(script: Any) -> None:
        if id(script) not in originals:
            originals[id(script)] = (script, script.source, script.sha)
            script.source = guarded(script.source, shebang=shebang)
            script.sha = _sha(script.source)

    for script in _loaded_scripts():
        guard(script)
    call, each = _scripts.Script.__call__, getattr(_scripts.Script, "each", None)

    async def strict_call(self: Any, target: Any, keys: Any, args: Any) -> Any:
        guard(self)
        _one_slot(self, keys)
        try:
            return await call(self, target, keys, args)
        except redis.ResponseError as exc:
            raise (_violation(exc) or exc) from exc

    async def strict_each(self: Any, client: Any, calls: Any) -> Any:
        guard(self)
        for keys, _ in calls:
            _one_slot(self, keys)
        assert each is not None
        try:
            return await each(self, client, calls)
        except redis.ResponseError as exc:
            raise (_violation(exc) or exc) from exc

    _scripts.Script.__call__ = strict_call  # type: ignore[method-assign]
    if each is not None:
        _scripts.Script.each = strict_each  # type: ignore[method-assign]
    _scripts.Script._strict = True  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _scripts.Script.__call__ = call  # type: ignore[method-assign]
        if each is not None:
            _scripts.Script.each = each  # type: ignore[method-assign]
        del _scripts.Script._strict  # type: ignore[attr-defined]
        for script, source, sha in originals.values():
            script.source, script.sha = source, sha


def _sha(source: bytes) -> str:
    import hashlib

    return hashlib.sha1(source).hexdigest()


# -- the server -------------------------------------------------------------------------


class StrictServer:
    """A one-node cluster-enabled server serving every slot, reached by a plain client."""

    def __init__(self) -> None:
        from .cluster import cluster_node

        self.node = cluster_node()
        self.version: tuple[int, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.node.port}/0"

    @property
    def shebang(self) -> bool:
        """Whether the server checks a script's keys against its flags (7.0+, Valkey)."""
        return self.version >= (7,)

    def start(self) -> StrictServer:
        self.node.start()
        try:
            with redis.Redis(port=self.node.port, socket_timeout=5) as r:
                text = str(r.info("server").get("redis_version", "0"))
                self.version = tuple(int(n) for n in re.findall(r"\d+", text)[:3])
                r.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
                deadline = time.monotonic() + 20
                while b"cluster_state:ok" not in r.execute_command("CLUSTER", "INFO"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the one-node cluster did not become ready")
                    time.sleep(0.05)
        except BaseException:
            self.node.stop()
            raise
        return self

    def stop(self) -> None:
        self.node.stop()


@pytest.fixture(scope="session")
def strict_server() -> Iterator[StrictServer]:
    """The one-node cluster-enabled server of the ``strict`` backend, for the session."""
    from .conftest import skip_or_fail

    if redis_server_binary() is None:
        skip_or_fail("NO REDIS SERVER to start a strict one: strict scripting is untested")
    server = StrictServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError, redis.RedisError) as exc:
        skip_or_fail(f"NO STRICT SERVER: could not start one ({exc}); strict scripting untested")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def strict_scripts_everywhere() -> Iterator[None]:
    """With ``PROMPTKIT_STRICT_SCRIPTS=1``, the guard on every script of the run."""
    if not STRICT_SCRIPTS:
        yield
        return
    with strict_scripts():
        yield
