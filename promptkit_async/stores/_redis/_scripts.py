"""Every Lua script of the Redis store, in one place.

Redis runs a script as one atomic step, like MULTI/EXEC, which is what lets a
commit check its turn id, its fence and the session's version and then write,
with no other client in between. Every script declares in KEYS every key it
reads or writes, and no script touches keys of two hash slots, on any client:
Dragonfly refuses undeclared keys by default, managed services forbid them,
and Cluster proxies (ElastiCache Serverless, Azure's multi-shard policy) refuse
a script whose keys span slots, even behind a standalone client. A session's
keys share one hash tag; what lives elsewhere (an owner's listing, the
registry of indexed slots) is written beside, in a call of its own.
``tests/strict.py`` runs the suite with a guard that holds every script here
to this.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

from ._link import Link

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._tracking import Ticket

__all__ = [
    "ACQUIRE",
    "ADOPT",
    "COMMIT",
    "DELETE",
    "FORK_READ",
    "INFO",
    "LEGACY_POP",
    "LIST",
    "LIST_IN",
    "LOAD_IF_CHANGED",
    "PAGE",
    "REGISTER",
    "RELEASE",
    "RENEW",
    "RESOLVE",
    "RESTORE",
    "Script",
    "TURN_STATUS",
    "UNLIST",
    "UPDATE_INFO",
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
-- `v`: the score of '#v' as ZSCORE gave it (false: none); a commit reads it once.
local function version_at(turns, v)
  if not v then
    local last = redis.call('ZRANGE', turns, -1, -1)
    return last[1] or ''
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', turns, v, v, 'LIMIT', '0', '2')) do
    if m ~= '#v' then return m end
  end
  return ''
end
local function version(turns)
  return version_at(turns, redis.call('ZSCORE', turns, '#v'))
end
-- One ZADD sets '#v' and the member to v + 1: what ZINCRBY then ZADD wrote, one
-- call fewer. Numbers are given to redis.call as the text Redis would make of
-- them (%.17g) or as ARGV gave them: Redis's own conversion costs more.
local function record_at(turns, member, memory, v)
  if v then
    v = tonumber(v)
  else
    local last = redis.call('ZRANGE', turns, -1, -1, 'WITHSCORES')
    v = tonumber(last[2]) or 0
  end
  v = v + 1
  local score = string.format('%.17g', v)
  redis.call('ZADD', turns, score, '#v', score, member)
  redis.call('ZREMRANGEBYSCORE', turns, '-inf', '(' .. (v - memory + 1))
end
local function record(turns, member, memory)
  record_at(turns, member, memory, redis.call('ZSCORE', turns, '#v'))
end
"""

# The live-session index of one slot (standalone only, see _keys): a member
# (an encoded id) scored by when the session expires. A new index expires like
# its sessions; one without a TTL already holds a session kept forever, and
# keeps none.
_INDEX = b"""
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- `ttltext`: ttl as the caller's ARGV gave it.
local function touch(index, member, ttl, now, ttltext)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', string.format('%.17g', now))
  if ttl > 0 then
    -- PTTL before the ZADD, which keeps a TTL: -2 says fresh, without an EXISTS.
    local left = redis.call('PTTL', index)
    redis.call('ZADD', index, string.format('%.17g', now + ttl), member)
    if left == -2 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', index, ttltext) end
  else
    redis.call('ZADD', index, '+inf', member)
    redis.call('PERSIST', index)
  end
end
"""

# Message ids and times. Every stored element is the payload the client sent
# behind a header the commit adds: "\0" "2" <ms> " " <id> "\n" (see _codec).
# An id is the message's number (its position counted from the first message
# the session ever had), with "~<generation>" once the history was rewound:
# numbers after a rewind are reused, so the generation keeps each id unique.
# The meta hash keeps 'n' (the next number), 'g' (the generation), 't' (the
# last commit's time, which the next never goes below: a failover to a node
# whose clock is behind cannot reorder a conversation), 'c' (the first
# commit's time), 'lt'/'lf'/'lg' (the last turn's id, first number and
# generation: what a re-sent copy of that turn answers with), and the
# conversation's 'o' (owner), 'ti' (title), 'f' (forked from) and 'x:<key>'
# (custom metadata, JSON values). A meta hash that is gone while the history
# is not (evicted) is rebuilt from the newest element's header; a history of
# 0.1.0 (format 1, no headers) is given them once: ids by position, time 0.
_STAMPS = b"""
local MARK = string.char(0) .. '2'
local function stamp(raw)
  if raw and string.sub(raw, 1, 2) == MARK then
    local ms, seq, gen = string.match(raw, '^(%d+) (%d+)~?(%w*)', 3)
    if seq then return tonumber(seq), tonumber(ms), tonumber(gen) or 0 end
  end
  return nil
end
local function recover(history, length)
  local seq, ms, gen = stamp(redis.call('LINDEX', history, -1))
  if seq then return seq + 1, ms, gen end
  local old = redis.call('LRANGE', history, 0, -1)
  local out = {}
  for i, raw in ipairs(old) do
    if stamp(raw) then out[i] = raw else out[i] = MARK .. '0 ' .. (i - 1) .. '\\n' .. raw end
  end
  redis.call('DEL', history)
  for i = 1, #out, 500 do redis.call('RPUSH', history, unpack(out, i, math.min(i + 499, #out))) end
  return length, 0, 0
end
-- Where the message with id `wanted` is in the history (0-based), or nil: one
-- LINDEX, since numbers count positions (`seq` is the next number).
local function position(history, seq, wanted)
  local num = tonumber(string.match(wanted, '^(%d+)'))
  if not num then return nil end
  local length = redis.call('LLEN', history)
  local at = num - (seq - length)
  if at < 0 or at >= length then return nil end
  local raw = redis.call('LINDEX', history, at)
  if raw and string.match(raw, '^%d+ ([^\\n]+)\\n', 3) == wanted then return at end
  return nil
end
local function id_of(seq, gen)
  if gen > 0 then return seq .. '~' .. gen end
  return tostring(seq)
end
"""

# An owner's conversations, newest first: a sorted set of encoded session ids
# scored by the time of their last commit (ms). It expires like its longest-
# lived member, and holds ghosts (a conversation deleted or expired since)
# only until the next listing, which drops those it finds.
_OWNERS = b"""
local function list_in(oidx, member, now, ttl)
  local fresh = redis.call('EXISTS', oidx) == 0
  redis.call('ZADD', oidx, now, member)
  if ttl > 0 then
    local left = redis.call('PTTL', oidx)
    if fresh or (left >= 0 and left < ttl) then redis.call('PEXPIRE', oidx, ttl) end
  else
    redis.call('PERSIST', oidx)
  end
end
"""

# KEYS: history, turns, meta[, lease if fenced][, the session's slot's index]
# ARGV: turn id, cap (0 = unlimited), ttl ms (0 = forever), turn memory,
#       fence token ('' = none), index member ('' = none), re-send ('1': an
#       earlier copy of this commit may have run), owner ('' = unchecked),
#       after (a message id: drop what follows it first; '' = none), '' (kept
#       in place of the owner's listing, which lives in another slot and is
#       written beside the commit), replace last (a
#       message id: drop the newest message first, which must be that one;
#       '' = none), payloads...
# Entries are pushed 500 at a time: Lua's unpack() has a stack limit.
# Returns {status, previous version, history length before, first number,
# ms, generation}: status 1 applied now (the previous version is '' when the
# session's bookkeeping was gone while its history was there: its turn ids,
# or a meta hash behind records that had one; evicted, or deleted around the
# store); 0 already applied (the first number,
# time and generation are those of that copy when it was the session's last
# turn, else -1); -1 aborted earlier (never applies); -2 the fencing lease is
# not held; -3 not applied because it cannot tell: a re-sent commit finds a
# history whose turn ids are gone (evicted), so its first copy may have run;
# -4 the conversation has another owner; -5 no kept message has the id
# `after`, or the newest is not `replace last` (a compare-and-set on the
# tail). Nothing is written unless the status is 1.
_COMMIT = (
    _VERSIONS
    + _INDEX
    + _STAMPS
    + b"""
local history, turns, meta = KEYS[1], KEYS[2], KEYS[3]
local before = redis.call('LLEN', history)
if redis.call('ZSCORE', turns, ARGV[1]) then
  local last = redis.call('HMGET', meta, 'lt', 'lf', 't', 'lg')
  if last[1] == ARGV[1] then
    return {0, '', before, tonumber(last[2]), tonumber(last[3]), tonumber(last[4]) or 0}
  end
  return {0, '', before, -1, -1, -1}
end
if redis.call('ZSCORE', turns, '!' .. ARGV[1]) then return {-1, '', before, -1, -1, -1} end
local k = 4
if ARGV[5] ~= '' then
  if redis.call('GET', KEYS[k]) ~= ARGV[5] then return {-2, '', before, -1, -1, -1} end
  k = k + 1
end
-- Read once for the version and the count (false: none); a '#v' says the key exists.
local v = redis.call('ZSCORE', turns, '#v')
local known = v and true or redis.call('EXISTS', turns) == 1
if not known and before > 0 and ARGV[7] == '1' then return {-3, '', before, -1, -1, -1} end
local m = redis.call('HMGET', meta, 'n', 't', 'g', 'o', 'c')
if ARGV[8] ~= '' and m[4] and m[4] ~= ARGV[8] then return {-4, '', before, -1, -1, -1} end
local index = nil
if ARGV[6] ~= '' then index = KEYS[k] end
-- The index is written last: a wrong type found there would leave the turn
-- applied but reported as refused, so check it before the first write.
if index then
  local kind = redis.call('TYPE', index)['ok']
  if kind ~= 'zset' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE a session index is not a sorted set')
  end
end
local seq, last, gen = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]) or 0
local lost = not known and before > 0
if not seq then
  if before > 0 then
    lost = lost or stamp(redis.call('LINDEX', history, -1)) ~= nil
    seq, last, gen = recover(history, before)
  else
    seq, last = 0, 0
  end
end
local length = before
if ARGV[9] ~= '' then
  local at = position(history, seq, ARGV[9])
  if not at then return {-5, '', before, -1, -1, -1} end
  if at + 1 < before then
    redis.call('LTRIM', history, 0, at)
    seq = seq - (before - at - 1)
    gen = gen + 1
    length = at + 1
  end
end
if ARGV[11] ~= '' then
  local raw = redis.call('LINDEX', history, -1)
  if not raw or string.match(raw, '^%d+ ([^\\n]+)\\n', 3) ~= ARGV[11] then
    return {-5, '', before, -1, -1, -1}
  end
  redis.call('RPOP', history)
  seq = seq - 1
  gen = gen + 1
  length = before - 1
end
local prev = (known and not lost) and version_at(turns, v) or ''
local now = clock()
if last and now < last then now = last end
local first = seq
local nowtext = string.format('%d', now)
local head = MARK .. nowtext .. ' '
local n = #ARGV
local batch = {}
for i = 12, n do
  batch[#batch + 1] = head .. id_of(seq, gen) .. '\\n' .. ARGV[i]
  seq = seq + 1
  if #batch == 500 or i == n then
    redis.call('RPUSH', history, unpack(batch))
    batch = {}
  end
end
length = length + (n - 11)
local cap = tonumber(ARGV[2])
if cap > 0 and length > cap then
  redis.call('LTRIM', history, string.format('%.17g', -cap), '-1')
end
redis.call('HSET', meta, 'n', seq, 't', nowtext, 'g', gen, 'lt', ARGV[1], 'lf', first, 'lg', gen)
if not m[5] then
  -- The first commit's time; for a history older than this field, its oldest message's.
  local created = now
  if before > 0 then
    local _, ms = stamp(redis.call('LINDEX', history, 0))
    if ms and ms > 0 and ms < now then created = ms end
  end
  redis.call('HSET', meta, 'c', string.format('%d', created))
end
if ARGV[8] ~= '' and not m[4] then redis.call('HSET', meta, 'o', ARGV[8]) end
record_at(turns, ARGV[1], tonumber(ARGV[4]), v)  -- nothing wrote '#v' since it was read
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', history, ARGV[3])
  redis.call('PEXPIRE', turns, ARGV[3])
  redis.call('PEXPIRE', meta, ARGV[3])
else
  redis.call('PERSIST', history)
  redis.call('PERSIST', turns)
  redis.call('PERSIST', meta)
end
if index then touch(index, ARGV[6], ttl, now, ARGV[3]) end
-- Read again after the writes: a connection with CLIENT TRACKING on keeps
-- tracking the keys it just wrote (see _tracking; a write forgets who read).
redis.call('EXISTS', history, turns)
return {1, prev, before, first, now, gen}
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

# KEYS: history, turns, meta[, the session's slot's index]. ARGV: replace ('1'
# or '0'), ttl ms (0 = forever), turn id (the new version), turn memory, index
# member ('' = none), next number, generation, last ms ('' = now), count of
# meta field/value pairs, the pairs, elements (with their headers)... A
# restore (an import) and a fork's copy: the whole conversation in one step,
# so a half-written one is never visible (the owner's listing, another slot,
# is written before it). 1 written; 0 the session exists and replace is '0'.
_RESTORE = (
    _VERSIONS
    + _INDEX
    + b"""
local history, turns, meta = KEYS[1], KEYS[2], KEYS[3]
if ARGV[1] ~= '1' and redis.call('EXISTS', history) == 1 then return 0 end
if KEYS[4] then
  local kind = redis.call('TYPE', KEYS[4])['ok']
  if kind ~= 'zset' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE a session index is not a sorted set')
  end
end
redis.call('DEL', history, meta)
local pairs_at = 10
local first = pairs_at + 2 * tonumber(ARGV[9])
local n = #ARGV
for i = first, n, 500 do
  redis.call('RPUSH', history, unpack(ARGV, i, math.min(i + 499, n)))
end
local stamp = ARGV[8]
if stamp == '' then stamp = string.format('%d', clock()) end
redis.call('HSET', meta, 'n', ARGV[6], 'g', ARGV[7], 't', stamp, 'c', stamp)
for i = pairs_at, first - 1, 2 do redis.call('HSET', meta, ARGV[i], ARGV[i + 1]) end
record(turns, ARGV[3], tonumber(ARGV[4]))
local ttl = tonumber(ARGV[2])
for _, k in ipairs({history, turns, meta}) do
  if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end
end
if KEYS[4] then touch(KEYS[4], ARGV[5], ttl, clock(), ARGV[2]) end
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
# history length. {version, length, pttl} when the caller's copy is current
# (same version and same length: a write that went around the commit script,
# such as a foreign RPUSH, changes the length), else {version, length, entries,
# pttl}; pttl is the history's PTTL (-1: no expiry, -2: no history).
_LOAD_IF_CHANGED = (
    _VERSIONS
    + b"""
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return {'', 0, {}, -2} end
local v = version(KEYS[2])
-- The history's time to live: the near cache serves no entry from memory past it.
local ttl = redis.call('PTTL', KEYS[1])
if v ~= '' and v == ARGV[1] and n == tonumber(ARGV[3]) then return {v, n, ttl} end
return {v, n, redis.call('LRANGE', KEYS[1], ARGV[2], -1), ttl}
"""
)

# KEYS: history, turns, meta[, the session's slot's index]. ARGV: index member,
# owner ('' = any).
# Returns {keys deleted, owner or ''}: the caller drops it from that listing.
# A conversation of another owner than the one given is left alone: {0, owner}.
_DELETE = b"""
local owner = redis.call('HGET', KEYS[3], 'o') or ''
if ARGV[2] and ARGV[2] ~= '' and owner ~= ARGV[2] then return {0, owner} end
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[1]) end
return {n, owner}
"""

# KEYS: owner index. ARGV: member, ttl ms (0 = forever). Puts a conversation
# on top of its owner's listing (on a Cluster, beside the commit).
_LIST_IN = (
    _INDEX
    + _OWNERS
    + b"""
list_in(KEYS[1], ARGV[1], clock(), tonumber(ARGV[2]))
return 1
"""
)

# KEYS: history, meta (one conversation: conversations live in other slots,
# so a listing sends one call per item, pipelined). ARGV: owner ('' = any).
# What ConversationInfo needs: {} for no conversation (or another owner's),
# else {message count, owner, title, created ms, updated ms, forked from,
# custom field, value, ...} ('' = none).
_INFO = b"""
local count = redis.call('LLEN', KEYS[1])
if count == 0 then return {} end
local m = redis.call('HMGET', KEYS[2], 'o', 'ti', 'c', 't', 'f')
if ARGV[1] ~= '' and m[1] ~= ARGV[1] then return {} end
local out = {count, m[1] or '', m[2] or '', m[3] or '', m[4] or '', m[5] or ''}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'x:' then
    out[#out + 1] = string.sub(all[i], 3)
    out[#out + 1] = all[i + 1]
  end
end
return out
"""

# KEYS: history, meta. ARGV: owner ('' = any), title ('\0' = unchanged, '' =
# removed), then field, value pairs of custom metadata (value '' = removed).
# 1 done; 0 no such conversation (nothing is created: an expired or deleted
# one is never brought back); -4 another owner's.
_UPDATE_INFO = b"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[2], 'o')
if ARGV[1] ~= '' and owner ~= ARGV[1] then return -4 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[2], 'ti')
elseif ARGV[2] ~= string.char(0) then redis.call('HSET', KEYS[2], 'ti', ARGV[2]) end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[2], 'x:' .. ARGV[i])
  else redis.call('HSET', KEYS[2], 'x:' .. ARGV[i], ARGV[i + 1]) end
end
return 1
"""

# KEYS: owner index, snapshot. ARGV: offset, limit, snapshot ttl ms, '1' to
# take a snapshot for the pages after this one. Returns {total, members...}
# newest first, read from the snapshot when offset > 0 (-1: it expired), and
# from the live index for a first page, which is copied into the snapshot
# when more pages follow (ZUNIONSTORE: a set of its own, which later commits
# to the listing leave as it was), so they keep the order the first one had.
_LIST = b"""
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local source = KEYS[1]
if offset > 0 then
  source = KEYS[2]
  if redis.call('EXISTS', source) == 0 then return {-1} end
end
local total = redis.call('ZCARD', source)
local out = {total}
for _, m in ipairs(redis.call('ZREVRANGE', source, offset, offset + limit - 1)) do
  out[#out + 1] = m
end
if offset == 0 and ARGV[4] == '1' and total > limit then
  redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[1])  -- a copy of its own (replacing any)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
elseif offset > 0 and offset + limit >= total then
  redis.call('DEL', KEYS[2])
end
return out
"""

# KEYS: owner index. ARGV: members to drop (ghosts a listing found).
_UNLIST = b"""
return redis.call('ZREM', KEYS[1], unpack(ARGV))
"""

# KEYS: history, meta. ARGV: owner ('' = any), up to (a message id; '' =
# all). The source of a fork, read in one step: {status, pttl, next number,
# generation, meta fields..., '', elements...}; status 1, 0 no conversation,
# -4 another owner's, -5 no such message.
_FORK_READ = (
    _STAMPS
    + b"""
local length = redis.call('LLEN', KEYS[1])
if length == 0 then return {0} end
local m = redis.call('HMGET', KEYS[2], 'o', 'n', 'g')
if ARGV[1] ~= '' and m[1] ~= ARGV[1] then return {-4} end
-- The source keeps its owner, title and custom metadata in the copy.
local seq, gen = tonumber(m[2]), tonumber(m[3]) or 0
if not seq then
  local found, _, g = recover(KEYS[1], length)
  seq, gen = found, g
end
local last = length - 1
if ARGV[2] ~= '' then
  last = position(KEYS[1], seq, ARGV[2])
  if not last then return {-5} end
end
local out = {1, redis.call('PTTL', KEYS[1]), seq - (length - 1 - last), gen}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local f = all[i]
  if f == 'o' or f == 'ti' or string.sub(f, 1, 2) == 'x:' then
    out[#out + 1] = f
    out[#out + 1] = all[i + 1]
  end
end
out[#out + 1] = ''
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, last)) do out[#out + 1] = raw end
return out
"""
)

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

# KEYS: the registry of indexed slots. ARGV: slot, how long from now (ms) its
# index may hold a live session ('' = forever). Scores only ever grow (GT),
# lapsed slots are dropped, and the registry lives as long as its last slot.
_REGISTER = (
    _INDEX
    + b"""
local now = clock()
local upto = '+inf'
if ARGV[2] ~= '' then upto = string.format('%d', now + tonumber(ARGV[2])) end
redis.call('ZADD', KEYS[1], 'GT', upto, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] == 'inf' then
  redis.call('PERSIST', KEYS[1])
elseif top[2] then
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(top[2])))
end
return 1
"""
)

# KEYS: the index of an older version (every session in one key). ARGV: how
# many. Takes that many members out of it, soonest to expire first: {now ms,
# member, expiry ms ('inf' = forever), ...}; {now ms} when it is gone.
_LEGACY_POP = (
    _INDEX
    + b"""
local now = clock()
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return {now} end
if kind ~= 'zset' then
  return redis.error_reply('WRONGTYPE the session index of an older version is not a sorted set')
end
local out = {now}
local last = tonumber(ARGV[1]) - 1
for _, v in ipairs(redis.call('ZRANGE', KEYS[1], 0, last, 'WITHSCORES')) do out[#out + 1] = v end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, last)
return out
"""
)

# KEYS: one slot's index, then the history key of each session to adopt (all
# in that slot). ARGV: member, expiry ms ('inf' = forever), ... Puts into the
# slot's index the sessions an older version indexed that still have a
# history and have not expired, never lowering an expiry a commit wrote since.
# Returns how many were adopted.
_ADOPT = (
    _INDEX
    + b"""
local index = KEYS[1]
local kind = redis.call('TYPE', index)['ok']
if kind ~= 'zset' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE a session index is not a sorted set')
end
local now = clock()
local adopted = 0
for i = 2, #KEYS do
  local member, at = ARGV[2 * i - 3], ARGV[2 * i - 2]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if at == 'inf' then
      redis.call('ZADD', index, 'GT', '+inf', member)
      redis.call('PERSIST', index)
      adopted = adopted + 1
    elseif tonumber(at) > now then
      local ttl = tonumber(at) - now
      local fresh = redis.call('EXISTS', index) == 0
      redis.call('ZADD', index, 'GT', at, member)
      local left = redis.call('PTTL', index)
      if fresh or (left >= 0 and left < ttl) then redis.call('PEXPIRE', index, ttl) end
      adopted = adopted + 1
    end
  end
end
return adopted
"""
)


class Script:
    """EVALSHA with an EVAL fallback: survives SCRIPT FLUSH and restarts, works on Cluster."""

    __slots__ = ("sha", "source")

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source).hexdigest()

    async def __call__(self, target: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """Run on ``target``: a client, or a store's Link (the hot path's own lane)."""
        send = target.call if isinstance(target, Link) else target.execute_command
        try:
            return await send("EVALSHA", self.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            return await send("EVAL", self.source, len(keys), *keys, *args)

    async def tracked(
        self, link: Link, session_id: str, keys: Sequence[bytes], args: Sequence[Any]
    ) -> tuple[Any, Ticket | None]:
        """Run through ``link``'s tracked lane (see ``Link.call_tracked``): the reply,
        and the ticket that gives the near cache's token for the keys it read."""
        try:
            return await link.call_tracked(session_id, "EVALSHA", self.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            return await link.call_tracked(session_id, "EVAL", self.source, len(keys), *keys, *args)

    async def each(
        self, client: Any, calls: Sequence[tuple[Sequence[bytes], Sequence[Any]]]
    ) -> list[Any]:
        """Run once per ``(keys, args)`` on a standalone client, pipelined in one round
        trip: one call per slot, where one call over every slot's keys would span
        slots. The replies in order; the first error reply is raised (after all ran)."""
        if not calls:
            return []
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, rexc.NoScriptError)]
        if missing:
            pipe = client.pipeline(transaction=False)
            for i in missing:
                keys, args = calls[i]
                pipe.execute_command("EVAL", self.source, len(keys), *keys, *args)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


COMMIT = Script(_COMMIT)
RESOLVE = Script(_RESOLVE)
LOAD_IF_CHANGED = Script(_LOAD_IF_CHANGED)
DELETE = Script(_DELETE)
RENEW = Script(_RENEW)
RELEASE = Script(_RELEASE)
REGISTER = Script(_REGISTER)
LEGACY_POP = Script(_LEGACY_POP)
ADOPT = Script(_ADOPT)
ACQUIRE = Script(_ACQUIRE)
TURN_STATUS = Script(_TURN_STATUS)
PAGE = Script(_PAGE)
RESTORE = Script(_RESTORE)
LIST_IN = Script(_LIST_IN)
INFO = Script(_INFO)
UPDATE_INFO = Script(_UPDATE_INFO)
LIST = Script(_LIST)
UNLIST = Script(_UNLIST)
FORK_READ = Script(_FORK_READ)
