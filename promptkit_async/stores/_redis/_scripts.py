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
    "PAGE",
    "RELEASE",
    "RENEW",
    "RESOLVE",
    "RESTORE",
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

# The live-session index (standalone only): a member scored by when it
# expires. A new index expires like its sessions; one without a TTL already
# holds a session kept forever, and keeps none.
_INDEX = b"""
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function touch(index, member, ttl, now)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  if ttl > 0 then
    local fresh = redis.call('EXISTS', index) == 0
    redis.call('ZADD', index, now + ttl, member)
    local left = redis.call('PTTL', index)
    if fresh or (left >= 0 and left < ttl) then redis.call('PEXPIRE', index, ttl) end
  else
    redis.call('ZADD', index, '+inf', member)
    redis.call('PERSIST', index)
  end
end
"""

# Message ids and times. Every stored element is the payload the client sent
# behind a header the commit adds: "\0" "2" <ms> " " <id> "\n" (see _codec).
# Ids count up from 0 per session, kept in the meta hash as 'n' (the next
# id); 't' is the last commit's time, which the next one never goes below (a
# failover to a node whose clock is behind cannot reorder a conversation);
# 'lt' and 'lf' are the last turn's id and first message id, what a re-sent
# copy of that turn answers with.
# A meta hash that is gone while the history is not (evicted) is rebuilt from
# the newest element's header; a history of 0.1.0 (format 1, no headers) is
# given them once: ids by position, time 0.
_STAMPS = b"""
local MARK = string.char(0) .. '2'
local function stamp(raw)
  if raw and string.sub(raw, 1, 2) == MARK then
    local ms, seq = string.match(raw, '^(%d+) (%d+)', 3)
    if seq then return tonumber(seq), tonumber(ms) end
  end
  return nil
end
local function recover(history, length)
  local seq, ms = stamp(redis.call('LINDEX', history, -1))
  if seq then return seq + 1, ms end
  local old = redis.call('LRANGE', history, 0, -1)
  local out = {}
  for i, raw in ipairs(old) do
    if stamp(raw) then out[i] = raw else out[i] = MARK .. '0 ' .. (i - 1) .. '\\n' .. raw end
  end
  redis.call('DEL', history)
  for i = 1, #out, 500 do redis.call('RPUSH', history, unpack(out, i, math.min(i + 499, #out))) end
  return length, 0
end
"""

# KEYS: history, turns, meta[, lease if fenced][, index]
# ARGV: turn id, cap (0 = unlimited), ttl ms (0 = forever), turn memory,
#       fence token ('' = none), index member ('' = none), re-send ('1': an
#       earlier copy of this commit may have run), payloads...
# Entries are pushed 500 at a time: Lua's unpack() has a stack limit.
# Returns {status, previous version, history length before, first id, ms}:
# status 1 applied now; 0 already applied (the first id and time are those
# of that copy when it was the session's last turn, else -1); -1 aborted
# earlier (never applies); -2 the fencing lease is not held; -3 not applied
# because it cannot tell: a re-sent commit finds a history whose turn ids
# are gone (evicted), so its first copy may have run.
_COMMIT = (
    _VERSIONS
    + _INDEX
    + _STAMPS
    + b"""
local history, turns, meta = KEYS[1], KEYS[2], KEYS[3]
local before = redis.call('LLEN', history)
if redis.call('ZSCORE', turns, ARGV[1]) then
  local last = redis.call('HMGET', meta, 'lt', 'lf', 't')
  if last[1] == ARGV[1] then return {0, '', before, tonumber(last[2]), tonumber(last[3])} end
  return {0, '', before, -1, -1}
end
if redis.call('ZSCORE', turns, '!' .. ARGV[1]) then return {-1, '', before, -1, -1} end
if ARGV[5] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[5] then
  return {-2, '', before, -1, -1}
end
local known = redis.call('EXISTS', turns) == 1
if not known and before > 0 and ARGV[7] == '1' then return {-3, '', before, -1, -1} end
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
local m = redis.call('HMGET', meta, 'n', 't')
local seq, last = tonumber(m[1]), tonumber(m[2])
if not seq then
  if before > 0 then seq, last = recover(history, before) else seq, last = 0, 0 end
end
local now = clock()
if last and now < last then now = last end
local first = seq
local stamp = string.format('%d', now)
local head = MARK .. stamp .. ' '
local n = #ARGV
local batch = {}
for i = 8, n do
  batch[#batch + 1] = head .. seq .. '\\n' .. ARGV[i]
  seq = seq + 1
  if #batch == 500 or i == n then
    redis.call('RPUSH', history, unpack(batch))
    batch = {}
  end
end
local cap = tonumber(ARGV[2])
if cap > 0 then redis.call('LTRIM', history, -cap, -1) end
redis.call('HSET', meta, 'n', seq, 't', stamp, 'lt', ARGV[1], 'lf', first)
record(turns, ARGV[1], tonumber(ARGV[4]))
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', history, ttl)
  redis.call('PEXPIRE', turns, ttl)
  redis.call('PEXPIRE', meta, ttl)
else
  redis.call('PERSIST', history)
  redis.call('PERSIST', turns)
  redis.call('PERSIST', meta)
end
if index then touch(index, ARGV[6], ttl, now) end
return {1, prev, before, first, now}
"""
)

# KEYS: history, meta. ARGV: the id's number, how many older to return
# (0: all). The elements from the newest `limit` older than the position that
# id has if ids are contiguous, through that position itself, for the caller
# to check that it is the message asked for ({} if no such position).
_PAGE = (
    _STAMPS
    + b"""
local length = redis.call('LLEN', KEYS[1])
if length == 0 then return {} end
local nextseq = tonumber(redis.call('HGET', KEYS[2], 'n'))
local base
if nextseq then base = nextseq - length else
  base = stamp(redis.call('LINDEX', KEYS[1], 0)) or 0
end
local at = tonumber(ARGV[1]) - base
if at < 0 or at >= length then return {} end
local limit = tonumber(ARGV[2])
local from = 0
if limit > 0 then from = math.max(0, at - limit) end
return redis.call('LRANGE', KEYS[1], from, at)
"""
)

# KEYS: history, turns, meta[, index]. ARGV: replace ('1' or '0'), ttl ms (0 =
# forever), turn id (the new version), turn memory, index member ('' = none),
# next id, last ms, elements (with their headers)...
# 1 restored; 0 the session exists and replace is '0'.
_RESTORE = (
    _VERSIONS
    + _INDEX
    + b"""
local history, turns, meta = KEYS[1], KEYS[2], KEYS[3]
if ARGV[1] ~= '1' and redis.call('EXISTS', history) == 1 then return 0 end
redis.call('DEL', history, meta)
local n = #ARGV
for i = 8, n, 500 do
  redis.call('RPUSH', history, unpack(ARGV, i, math.min(i + 499, n)))
end
redis.call('HSET', meta, 'n', ARGV[6], 't', ARGV[7])
record(turns, ARGV[3], tonumber(ARGV[4]))
local ttl = tonumber(ARGV[2])
for _, k in ipairs({history, turns, meta}) do
  if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end
end
if ARGV[5] ~= '' then touch(KEYS[4], ARGV[5], ttl, clock()) end
return 1
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

# KEYS: history, turns, meta[, index]. ARGV: index member.
_DELETE = b"""
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[1]) end
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
PAGE = Script(_PAGE)
RESTORE = Script(_RESTORE)
