"""Every Lua script of the Redis store, in one place.

Redis runs a script as one atomic step, like MULTI/EXEC, which is what lets a
commit check its turn id, its fence and the session's version and then write,
with no other client in between. Each script declares in KEYS the keys it is
given (the session's keys all share one hash tag, so one Cluster slot); the
one exception, the index sampling in ``INDEX_STATS``, runs only on standalone
Redis and builds its key names from parts the key schema hands it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ACQUIRE",
    "COMMIT",
    "DELETE",
    "INDEX_STATS",
    "LOAD_IF_CHANGED",
    "RELEASE",
    "RENEW",
    "RESOLVE",
    "Script",
    "TURN_STATUS",
]

# Versions. Every applied turn and every abort marker is a member of the
# session's turns set, scored by a version number counted by the set's own
# member '#v' (ZINCRBY). The member holding the current version is the
# session's version: a random turn id, never reused, that a near cache can
# compare without reading the history. Counting in '#v' rather than from the
# highest score means a member written by anyone else, whatever its score,
# can neither stop the count nor push recent turn ids out of the last ones
# kept. A turns key of 0.1.0 (no '#v') starts counting from its highest score.
_VERSIONS = b"""
local function version(turns)
  local v = redis.call('ZSCORE', turns, '#v')
  if not v then
    local last = redis.call('ZRANGE', turns, -1, -1)
    return last[1] or ''
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', turns, v, v, 'LIMIT', 0, 2)) do
    if m ~= '#v' then return m end
  end
  return ''
end
local function record(turns, member, memory)
  if not redis.call('ZSCORE', turns, '#v') then
    local last = redis.call('ZRANGE', turns, -1, -1, 'WITHSCORES')
    redis.call('ZADD', turns, tonumber(last[2]) or 0, '#v')
  end
  local v = tonumber(redis.call('ZINCRBY', turns, 1, '#v'))
  redis.call('ZADD', turns, v, member)
  redis.call('ZREMRANGEBYSCORE', turns, '-inf', '(' .. (v - memory + 1))
end
"""

# KEYS: history, turns[, lease if fenced][, index]
# ARGV: turn id, cap (0 = unlimited), ttl ms (0 = forever), turn memory,
#       fence token ('' = none), index member ('' = none), re-send ('1': an
#       earlier copy of this commit may have run), entries...
# Entries are pushed 500 at a time: Lua's unpack() has a stack limit.
# Returns {status, previous version, history length before}: 1 applied now,
# 0 already applied, -1 aborted earlier (never applies), -2 the fencing lease
# is not held, -3 not applied because it cannot tell: a re-sent commit finds
# a history whose turn ids are gone (evicted), so its first copy may have run.
_COMMIT = (
    _VERSIONS
    + b"""
local turns = KEYS[2]
local before = redis.call('LLEN', KEYS[1])
if redis.call('ZSCORE', turns, ARGV[1]) then return {0, '', before} end
if redis.call('ZSCORE', turns, '!' .. ARGV[1]) then return {-1, '', before} end
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[5] then return {-2, '', before} end
local known = redis.call('EXISTS', turns) == 1
if not known and before > 0 and ARGV[7] == '1' then return {-3, '', before} end
local prev = known and version(turns) or ''
local index = ARGV[6] ~= '' and KEYS[#KEYS] or nil
if index then
  -- The index is written last: a wrong type found there would leave the turn
  -- applied but reported as refused, so check it before the first write.
  local kind = redis.call('TYPE', index)['ok']
  if kind ~= 'zset' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE the session index is not a sorted set')
  end
end
local n = #ARGV
for i = 8, n, 500 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 499, n)))
end
local cap = tonumber(ARGV[2])
if cap > 0 then redis.call('LTRIM', KEYS[1], -cap, -1) end
record(turns, ARGV[1], tonumber(ARGV[4]))
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', turns, ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', turns)
end
if index then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  if ttl > 0 then
    -- A new index expires like its sessions; one without a TTL already holds
    -- a session kept forever, and keeps none.
    local fresh = redis.call('EXISTS', index) == 0
    redis.call('ZADD', index, now + ttl, ARGV[6])
    local left = redis.call('PTTL', index)
    if fresh or (left >= 0 and left < ttl) then redis.call('PEXPIRE', index, ttl) end
  else
    redis.call('ZADD', index, '+inf', ARGV[6])
    redis.call('PERSIST', index)
  end
end
return {1, prev, before}
"""
)

# KEYS: history, turns. ARGV: turn id, ttl in ms for a new turns key, turn memory.
# Settles a commit whose reply was lost: 1 it was applied; -1 it was not, and
# the abort marker guarantees a copy still in flight can never apply later;
# 0 it cannot tell: the history is there but its turn ids are gone (evicted).
_RESOLVE = (
    _VERSIONS
    + b"""
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
if redis.call('ZSCORE', KEYS[2], '!' .. ARGV[1]) then return -1 end
local known = redis.call('EXISTS', KEYS[2]) == 1
if not known and redis.call('LLEN', KEYS[1]) > 0 then return 0 end
record(KEYS[2], '!' .. ARGV[1], tonumber(ARGV[3]))
if not known then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return -1
"""
)

# KEYS: history, turns. ARGV: known version ('' = none), LRANGE start, known
# history length. {version, length} when the caller's copy is current (same
# version and same length: a write that went around the commit script, such
# as a foreign RPUSH, changes the length), else {version, length, entries}.
_LOAD_IF_CHANGED = (
    _VERSIONS
    + b"""
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return {'', 0, {}} end
local v = version(KEYS[2])
if v ~= '' and v == ARGV[1] and n == tonumber(ARGV[3]) then return {v, n} end
return {v, n, redis.call('LRANGE', KEYS[1], ARGV[2], -1)}
"""
)

# KEYS: history, turns[, index]. ARGV: index member.
_DELETE = b"""
local n = redis.call('DEL', KEYS[1], KEYS[2])
if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[1]) end
return n
"""

# KEYS: lease. ARGV: token, ttl ms. 1: taken. 0: held by another. A lease key
# with no TTL (left by a crashed tool, or foreign) would block every session
# forever: it is given the lease TTL, so it expires like any other lease.
_ACQUIRE = b"""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: turns. ARGV: turn id. 1 applied, -1 aborted, 0 unknown here.
_TURN_STATUS = b"""
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZSCORE', KEYS[1], '!' .. ARGV[1]) then return -1 end
return 0
"""

# KEYS: lease. ARGV: token, ttl ms. 1 if the caller still holds the lease.
_RENEW = b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: token. Only the owner may release.
_RELEASE = b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: index. ARGV: sample size, "memory" or "sum", key head, history tail,
# turns tail (from _keys.key_parts). Index members are encoded ids, so the
# script can name each sampled session's keys (the index exists on standalone
# Redis only, where that is allowed).
# Returns {live sessions, sampled, their messages, their bytes}.
_INDEX_STATS = b"""
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t[1] * 1000 + math.floor(t[2] / 1000))
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then return {0, 0, 0, 0} end
local ids = redis.call('ZRANDMEMBER', KEYS[1], ARGV[1])
local messages, bytes = 0, 0
for _, id in ipairs(ids) do
  local h = ARGV[3] .. id .. ARGV[4]
  messages = messages + redis.call('LLEN', h)
  if ARGV[2] == 'memory' then
    bytes = bytes + (redis.call('MEMORY', 'USAGE', h) or 0)
      + (redis.call('MEMORY', 'USAGE', ARGV[3] .. id .. ARGV[5]) or 0)
  else
    for _, record in ipairs(redis.call('LRANGE', h, 0, -1)) do bytes = bytes + #record end
  end
end
return {n, #ids, messages, bytes}
"""


class Script:
    """EVALSHA with an EVAL fallback: survives SCRIPT FLUSH and restarts, works on Cluster."""

    __slots__ = ("sha", "source")

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source).hexdigest()

    async def __call__(self, client: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            return await client.execute_command("EVAL", self.source, len(keys), *keys, *args)


COMMIT = Script(_COMMIT)
RESOLVE = Script(_RESOLVE)
LOAD_IF_CHANGED = Script(_LOAD_IF_CHANGED)
DELETE = Script(_DELETE)
RENEW = Script(_RENEW)
RELEASE = Script(_RELEASE)
INDEX_STATS = Script(_INDEX_STATS)
ACQUIRE = Script(_ACQUIRE)
TURN_STATUS = Script(_TURN_STATUS)
