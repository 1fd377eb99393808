"""The pydantic-ai backend's Redis key schema and Lua scripts, in one place.

Every key is under ``<store prefix>:pai:``, apart from the RedisStore's own keys. A conversation's
keys share the hash tag ``{c:<escaped id>}`` (one Cluster slot): its record ``:r``, the entries
it created ``:e``, the homes pinning them ``:p``, the homes it pins ``:d`` and its write marks
``:x``. The other keys each have a tag of their own: an entry's locator ``{e:<escaped entry id>}``
and the listings, ``{l}`` for every conversation and ``{s:<escaped scope>}`` per scope.

Each script touches only the keys it declares in KEYS, all in one slot, on a Cluster and a
standalone server alike (a standalone server behind a proxy, or with strict scripting, refuses
anything else). What lives in other slots (listings, locators, another home's entries) the
client writes or reads itself, beside the script.
"""

from __future__ import annotations

from ..stores._redis._keys import encode_id
from ..stores._redis._scripts import Script

__all__ = [
    "DELETE",
    "MARK_MS",
    "PIN",
    "SETTLE",
    "UNPIN",
    "WALK",
    "WRITE",
    "Keys",
]

#: How long a write's mark (applied, or aborted by a settle) is kept: far longer than a
#: command can stay in flight.
MARK_MS = 600_000


class Keys:
    """The key names of one store's pydantic-ai data."""

    __slots__ = ("base", "home_head")

    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}:pai"
        self.home_head = f"{self.base}:{{c:"

    def home(self, home: str, kind: str) -> bytes:
        """``kind``: r (record), e (entries), p (pins), d (dependencies), x (marks)."""
        return f"{self.home_head}{home}}}:{kind}".encode()

    def locator(self, entry_id: str) -> bytes:
        return f"{self.base}:{{e:{encode_id(entry_id)}}}".encode()

    def listing(self, scope: str | None) -> bytes:
        if scope is None:
            return f"{self.base}:{{l}}".encode()
        return f"{self.base}:{{s:{encode_id(scope)}}}".encode()


_FIELD = b"""
local function field(v, pos)
  if string.byte(v, pos) == 45 then return false, pos + 1 end
  local colon = string.find(v, ':', pos, true)
  local n = tonumber(string.sub(v, pos, colon - 1))
  return string.sub(v, colon + 1, colon + n), colon + n + 1
end
"""

_MARK = b"""
local function mark(marks, member, now)
  redis.call('ZADD', marks, now, member)
  redis.call('ZREMRANGEBYSCORE', marks, '-inf', now - %d)
  redis.call('PEXPIRE', marks, %d)
end
""" % (MARK_MS, MARK_MS)

# KEYS: record, entries, deps, marks. ARGV: 1 '0' (no record may exist) or '1' .. expected
# revision, 2 new revision, 3 record, 4 homes, 5 score, 6 the scope's listing key ('' none),
# 7 this home, 8 now ms, 9-12 counts (new entries, local refs, pinned homes, foreign homes),
# then new entries (id, value), local refs, homes pinned for this write, foreign homes.
# Returns {1} written, {2} written already (a re-sent copy), {0} revision conflict,
# {-1} aborted by a settle, {-3} a local ref is not stored, {-2, home...} homes to pin first.
_WRITE = (
    _MARK
    + b"""
local rev = ARGV[2]
if redis.call('ZSCORE', KEYS[4], 'w' .. rev) then return {2} end
if redis.call('ZSCORE', KEYS[4], 'a' .. rev) then return {-1} end
local cur = redis.call('HGET', KEYS[1], 'v')
if string.sub(ARGV[1], 1, 1) == '0' then
  if cur then return {0} end
elseif cur ~= string.sub(ARGV[1], 2) then
  return {0}
end
local ne, nr = tonumber(ARGV[9]), tonumber(ARGV[10])
local np, nf = tonumber(ARGV[11]), tonumber(ARGV[12])
local ents = 13
local refs = ents + 2 * ne
local pinned = refs + nr
local foreign = pinned + np
local new = {}
for k = 0, ne - 1 do new[ARGV[ents + 2 * k]] = true end
for k = 0, nr - 1 do
  local id = ARGV[refs + k]
  if not new[id] and redis.call('HEXISTS', KEYS[2], id) == 0 then return {-3} end
end
local missing = {-2}
for k = 0, nf - 1 do
  if redis.call('SISMEMBER', KEYS[3], ARGV[foreign + k]) == 0 then
    missing[#missing + 1] = ARGV[foreign + k]
  end
end
if #missing > 1 then return missing end
for k = 0, np - 1 do redis.call('SADD', KEYS[3], ARGV[pinned + k]) end
for k = 0, ne - 1 do redis.call('HSETNX', KEYS[2], ARGV[ents + 2 * k], ARGV[ents + 2 * k + 1]) end
redis.call('HSET', KEYS[1], 'v', rev, 'd', ARGV[3], 'h', ARGV[4], 's', ARGV[6])
mark(KEYS[4], 'w' .. rev, tonumber(ARGV[8]))
return {1}
"""
)

# KEYS: marks. ARGV: token, now ms. Decides a write or delete whose reply was lost:
# 1 it was applied; 0 it was not, and now never will be (a copy still in flight is refused).
_SETTLE = (
    _MARK
    + b"""
if redis.call('ZSCORE', KEYS[1], 'w' .. ARGV[1]) then return 1 end
mark(KEYS[1], 'a' .. ARGV[1], tonumber(ARGV[2]))
return 0
"""
)

# KEYS: a home's entries, its pins. ARGV: the pinning home, then entry ids that must be stored.
# 1: pinned (the entries stay while the pin does); 0: an entry is gone.
_PIN = b"""
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then return 0 end
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""


# The end of a home nothing keeps: its entries and dependencies go, and it tells the caller
# which entries (their locators) and which homes (their pins) to release.
_RELEASE = b"""
local function release(entries, deps, out)
  local ids = redis.call('HKEYS', entries)
  local pinned = redis.call('SMEMBERS', deps)
  redis.call('DEL', entries, deps)
  out[#out + 1] = #ids
  for _, id in ipairs(ids) do out[#out + 1] = id end
  for _, h in ipairs(pinned) do out[#out + 1] = h end
  return out
end
"""

# KEYS: record, entries, pins, deps, marks. ARGV: expected revision, token, now ms.
# Returns {2} deleted already (a re-sent copy), {-1} aborted, {0} conflict,
# {1, scope listing key, -1} deleted but its entries pinned, or
# {1, scope listing key, n, n entry ids..., pinned homes...} deleted with its entries.
_DELETE = (
    _MARK
    + _RELEASE
    + b"""
if redis.call('ZSCORE', KEYS[5], 'w' .. ARGV[2]) then return {2} end
if redis.call('ZSCORE', KEYS[5], 'a' .. ARGV[2]) then return {-1} end
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return {0} end
local scope = redis.call('HGET', KEYS[1], 's') or ''
redis.call('DEL', KEYS[1])
mark(KEYS[5], 'w' .. ARGV[2], tonumber(ARGV[3]))
if redis.call('SCARD', KEYS[3]) > 0 then return {1, scope, -1} end
return release(KEYS[2], KEYS[4], {1, scope})
"""
)

# KEYS: a home's record, entries, pins, deps. ARGV: a home released that pinned this one.
# {-1}: still kept (a record or another pin); else {n, n entry ids..., pinned homes...}.
_UNPIN = (
    _RELEASE
    + b"""
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SCARD', KEYS[3]) > 0 then return {-1} end
return release(KEYS[2], KEYS[4], {})
"""
)

# KEYS: the entries of the head's home. ARGV: head id, its home, limit (0: none).
# Returns {status, next id, its home, then (id, value, home) per entry from the head back}:
# status 1 done, 2 go on at next id in its home (another slot), 0 the next id is not there.
_WALK = (
    _FIELD
    + b"""
local entries, home = KEYS[1], ARGV[2]
local limit = tonumber(ARGV[3])
local out = {1, '', ''}
local id, n = ARGV[1], 0
while id and (limit == 0 or n < limit) do
  local v = redis.call('HGET', entries, id)
  if not v then
    out[1], out[2], out[3] = 0, id, home
    return out
  end
  out[#out + 1] = id
  out[#out + 1] = v
  out[#out + 1] = home
  n = n + 1
  local pid, pos = field(v, 1)
  local phome = field(v, pos)
  id = pid
  if id and phome ~= '' then
    if limit == 0 or n < limit then out[1], out[2], out[3] = 2, id, phome end
    return out
  end
end
return out
"""
)

WRITE = Script(_WRITE)
SETTLE = Script(_SETTLE)
PIN = Script(_PIN)
DELETE = Script(_DELETE)
UNPIN = Script(_UNPIN)
WALK = Script(_WALK)
