"""A session's rolling summary on Redis: fields of its meta hash, read and written by script.

The summary lives in the session's meta hash (``sm`` the text, ``su`` the id
of the newest message it covers, ``sc`` how many it covers, ``sv`` its
version, ``st`` when it was written, ms), so it shares the session's slot and
TTL and goes with it on delete. Both scripts declare their two keys
(history, meta) and touch nothing else.

- ``LOAD_SUMMARIZED``: one round trip for a summarized turn: the summary, if
  still valid, and the newest ``longest`` records after the message it covers.
  Valid means that message is still the one with that id (one ``LINDEX``: ids
  count positions), or was dropped by retention: a rewind or a fork before it
  voids the summary without anyone having to delete it.

  On a standalone client with the hot path's lane, a load is instead two
  plain commands pipelined in one round trip (``HMGET`` of the summary's
  fields, ``LRANGE`` of the newest ``longest``), cut after the covered message
  on the client, where its header tells its id: a script costs the server
  about 20 µs more than the two commands. Only when the covered message is
  older than what was read (a summary far behind) does the load fall back to
  the script, which can look it up.
- ``WRITE_SUMMARY``: the compare-and-set. It writes only if the valid summary
  is still the version the new one extends (none for the first), the message
  it covers up to is kept with that id, and it covers further.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from ..._codec import HEADER_MARK, id_number, time_of
from ..._summary import Summary
from . import _keys
from ._errors import Failure, classify, mapped_errors, pool_exhausted
from ._load import decode_window
from ._replies import BadReply, entries, integer
from ._scripts import _STAMPS, Script

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..._messages import Message
    from ._link import Link

_T = TypeVar("_T")

__all__ = ["RedisSummaries"]

# Shared by both scripts: the summary of the meta hash `m` (HMGET n sm su sc sv st)
# if still valid, with the position after the message it covers.
_VALID = b"""
local function valid(history, m, length)
  local seq, upto = tonumber(m[1]), m[3]
  if not seq or not upto then return false, 0 end
  local num = tonumber(string.match(upto, '^(%d+)'))
  if not num then return false, 0 end
  local base = seq - length
  if num < base then return true, 0 end
  local at = position(history, seq, upto)
  if not at then return false, 0 end
  return true, at + 1
end
"""

# KEYS: history, meta. ARGV: longest (0: all; -1: the summary only).
# Returns {records} without a valid summary, else {records, text, upto,
# covered, version, ms}.
LOAD_SUMMARIZED = Script(
    _STAMPS
    + _VALID
    + b"""
local length = redis.call('LLEN', KEYS[1])
if length == 0 then return {{}} end
local m = redis.call('HMGET', KEYS[2], 'n', 'sm', 'su', 'sc', 'sv', 'st')
local ok, start = valid(KEYS[1], m, length)
local longest = tonumber(ARGV[1])
local records = {}
if longest >= 0 then
  if longest > 0 and length - start > longest then start = length - longest end
  records = redis.call('LRANGE', KEYS[1], start, -1)
end
if ok then return {records, m[2], m[3], m[4], m[5], m[6] or '0'} end
return {records}
"""
)

# KEYS: history, meta. ARGV: the version extended ('' = none), text, upto id,
# covered, new version. Returns the time written (ms), or 0 (nothing written).
WRITE_SUMMARY = Script(
    _STAMPS
    + _VALID
    + b"""
local length = redis.call('LLEN', KEYS[1])
if length == 0 then return 0 end
local m = redis.call('HMGET', KEYS[2], 'n', 'sm', 'su', 'sc', 'sv', 'st')
local seq = tonumber(m[1])
if not seq then return 0 end
local ok = valid(KEYS[1], m, length)
local current, covers = '', -1
if ok then current = m[5] or ''; covers = tonumber(string.match(m[3], '^(%d+)')) end
if current ~= ARGV[1] then return 0 end
if not position(KEYS[1], seq, ARGV[3]) then return 0 end
if tonumber(string.match(ARGV[3], '^(%d+)')) <= covers then return 0 end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], 'sm', ARGV[2], 'su', ARGV[3], 'sc', ARGV[4], 'sv', ARGV[5],
  'st', string.format('%d', ms))
return ms
"""
)


class RedisSummaries:
    """The summary scripts of one store, through its link."""

    __slots__ = ("_link", "_max_bytes")

    def __init__(self, link: Link, max_record_bytes: int) -> None:
        self._link = link
        self._max_bytes = max_record_bytes

    def _keys(self, session_id: str) -> tuple[bytes, bytes]:
        history, _, meta = _keys.stored_keys(self._link.prefix, session_id)
        return history, meta

    async def load(
        self, session_id: str, longest: int | None
    ) -> tuple[list[Message], Summary | None]:
        link = self._link
        keys = self._keys(session_id)
        with mapped_errors(session_id, f"loading session {session_id!r}"):
            found = None
            if link.lane and not link.cluster:
                found = _cut(*await _read_pipelined(link, _plain_load(keys, longest)), longest)
            if found is None:
                found = _reply(await _read_script(link, keys, longest or 0))
            records, summary = found
        return decode_window(session_id, records, None, self._max_bytes), summary

    async def read(self, session_id: str) -> Summary | None:
        with mapped_errors(session_id, f"reading the summary of session {session_id!r}"):
            reply = await _read_script(self._link, self._keys(session_id), -1)
            return _reply(reply)[1]

    async def write(self, session_id: str, summary: Summary, previous: str | None) -> bool:
        args = (previous or "", summary.text, summary.upto, summary.covered, summary.version)
        with mapped_errors(session_id, f"writing the summary of session {session_id!r}"):
            reply = await WRITE_SUMMARY(self._link, self._keys(session_id), args)
            return integer("the summary write", reply) > 0


_FIELDS = (b"n", b"sm", b"su", b"sc", b"sv", b"st")


def _plain_load(keys: tuple[bytes, bytes], longest: int | None) -> list[tuple[Any, ...]]:
    history, meta = keys
    return [("HMGET", meta, *_FIELDS), ("LRANGE", history, -longest if longest else 0, -1)]


async def _retried(link: Link, read: Callable[[], Awaitable[_T]]) -> _T:
    """``read``, retried as the link retries a read whose connection failed."""
    for attempt in range(link.retries + 1):
        try:
            return await read()
        except Exception as exc:
            if classify(exc) not in (Failure.LOST, Failure.UNREACHABLE):
                raise
            if attempt == link.retries or pool_exhausted(exc):
                raise
        await asyncio.sleep(link.backoff.compute(attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


async def _read_pipelined(link: Link, commands: list[tuple[Any, ...]]) -> tuple[Any, Any]:
    meta, records = await _retried(link, lambda: link.call_pipelined(commands, 0.0))
    return meta, records


async def _read_script(link: Link, keys: tuple[bytes, bytes], longest: int) -> Any:
    return await _retried(link, lambda: LOAD_SUMMARIZED(link, keys, (longest,)))


def _cut(
    meta: object, records: object, longest: int | None
) -> tuple[list[bytes], Summary | None] | None:
    """The pipelined load's answer, as the script would give it; None when only the
    script can tell (the covered message is older than the records read)."""
    if not isinstance(meta, list) or len(meta) != len(_FIELDS):
        raise BadReply("the summarized load", meta)
    raw = entries("the summarized load", records)
    if not raw or meta[0] is None or meta[2] is None:
        return raw, None
    upto = _text(meta[2])
    number = id_number(upto)
    first = _number_of(raw[0])
    if number is None or first is None:
        return None
    at = number - first
    if at < 0:
        # Older than the first record read: dropped by retention (valid) when
        # everything kept was read, else only the script can look it up.
        if longest is not None and len(raw) >= longest:
            return None
        return raw, _summary(meta)
    if at >= len(raw) or _id_of(raw[at]) != upto:
        return raw, None  # rewound before it: void
    return raw[at + 1 :], _summary(meta)


def _number_of(record: bytes) -> int | None:
    found = _id_of(record)
    return None if found is None else id_number(found)


def _id_of(record: bytes) -> str | None:
    """The id in a record's header (None: a record of 0.1.0, which has none)."""
    if record[:2] != HEADER_MARK:
        return None
    head = record[2 : record.find(b"\n")]
    return head.partition(b" ")[2].decode("ascii", "replace")


def _summary(meta: list[Any]) -> Summary:
    _, text, upto, covered, version, ms = (None if x is None else _text(x) for x in meta)
    try:
        assert text is not None and upto is not None and covered is not None
        assert version is not None
        return Summary(
            text=text,
            upto=upto,
            covered=int(covered),
            version=version,
            updated_at=time_of(int(ms or 0)),
        )
    except (AssertionError, TypeError, ValueError):
        raise BadReply("the summary stored", meta) from None


def _reply(reply: object) -> tuple[list[bytes], Summary | None]:
    """The script's answer: the records, and the summary if it is still valid."""
    if not isinstance(reply, list) or not reply:
        raise BadReply("the summarized load", reply)
    records = entries("the summarized load", reply[0])
    if len(reply) == 1:
        return records, None
    if len(reply) != 6:
        raise BadReply("the summarized load", reply)
    return records, _summary([None, *reply[1:]])


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise BadReply("the summary stored", value)
