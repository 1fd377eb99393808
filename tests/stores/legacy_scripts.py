"""The commit, settle, restore and cached-load scripts as an earlier release sent
them, verbatim: what an old process on the same Redis still runs during a rolling
upgrade (see test_redis_script_upgrade.py). Never edit; add a newer copy instead."""

VERSIONS = b"""
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

# The live-session index of one slot (standalone only, see _keys): a member
# (an encoded id) scored by when the session expires. A new index expires like
# its sessions; one without a TTL already holds a session kept forever, and
# keeps none.
INDEX = b"""
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
STAMPS = b"""
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
COMMIT = (
    VERSIONS
    + INDEX
    + STAMPS
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
local known = redis.call('EXISTS', turns) == 1
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
local prev = (known and not lost) and version(turns) or ''
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
if cap > 0 and length > cap then redis.call('LTRIM', history, -cap, -1) end
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
record(turns, ARGV[1], tonumber(ARGV[4]))
local ttl = tonumber(ARGV[3])
for _, key in ipairs({history, turns, meta}) do
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
end
if index then touch(index, ARGV[6], ttl, now) end
-- Read again after the writes: a connection with CLIENT TRACKING on keeps
-- tracking the keys it just wrote (see _tracking; a write forgets who read).
redis.call('EXISTS', history, turns)
return {1, prev, before, first, now, gen}
"""
)
RESTORE = (
    VERSIONS
    + INDEX
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
if KEYS[4] then touch(KEYS[4], ARGV[5], ttl, clock()) end
return 1
"""
)

# KEYS: history, turns. ARGV: turn id, ttl in ms for a new turns key, turn memory.
# Settles a commit whose reply was lost: 1 it was applied; -1 it was not, and
# the abort marker guarantees a copy still in flight can never apply later;
# 0 it cannot tell: the history is there but its turn ids are gone (evicted).
RESOLVE = (
    VERSIONS
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
LOAD_IF_CHANGED = (
    VERSIONS
    + b"""
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return {'', 0, {}} end
local v = version(KEYS[2])
if v ~= '' and v == ARGV[1] and n == tonumber(ARGV[3]) then return {v, n} end
return {v, n, redis.call('LRANGE', KEYS[1], ARGV[2], -1)}
"""
)
