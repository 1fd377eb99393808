"""The stored format of a message, and its encoder and decoder (pure, no I/O).

Stored format (version 1), one compact JSON object per message::

    {"v":1,"r":"assistant","c":"...","tc":[["call_1","get_weather","{...}"]],
     "ti":"call_1","n":"name","m":{...}}

Keys other than ``v``/``r``/``c`` are omitted when empty. Unknown keys are
ignored, so a record written by a newer minor version still loads; a record
whose known keys cannot be read raises :class:`CorruptHistory`. Records larger
than a store's compression threshold may be stored zlib-compressed, marked by a
leading ``\\x00z`` (JSON never starts with a NUL byte), and are read back
whatever the setting is at read time.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any, cast

from ._exceptions import CorruptHistory, InvalidMessage, MessageTooLarge
from ._messages import Message, ToolCall

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_MAX_RECORD_BYTES", "FORMAT_VERSION", "decode_message", "encode_message"]

FORMAT_VERSION = 1
#: The largest record a store writes or inflates when reading (bytes).
DEFAULT_MAX_RECORD_BYTES = 16 << 20
_COMPRESSED_MARK = b"\x00z"


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
# The decoder's scanner (C-accelerated), with json.loads' default settings.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(raw: bytes | str) -> Any:
    """``json.loads``, minus its per-call overhead for the records we write.

    ``json.loads(bytes)`` sniffs the encoding, decodes, and strips whitespace
    with two regex matches: about two thirds of its time on a 200-character
    record. A record we wrote starts with ``{"`` (so ``json.loads`` would pick
    UTF-8) and has nothing after the object: scan it directly. Anything else,
    and any error, goes through ``json.loads`` itself, so results and
    exceptions are exactly those of ``json.loads``.
    """
    if type(raw) is bytes and raw[:2] == b'{"':
        try:
            text = raw.decode("utf-8", "surrogatepass")
            obj, end = _scan_once(text, 0)
        except (ValueError, StopIteration):
            return json.loads(raw)
        if end == len(text):
            return obj
    return json.loads(raw)


def _record(message: Message) -> dict[str, Any]:
    rec: dict[str, Any] = {"v": FORMAT_VERSION, "r": message.role, "c": message.content}
    if message.tool_calls:
        rec["tc"] = [[c.id, c.name, c.arguments] for c in message.tool_calls]
    if message.tool_call_id is not None:
        rec["ti"] = message.tool_call_id
    if message.name is not None:
        rec["n"] = message.name
    if message.metadata:
        rec["m"] = message.metadata
    return rec


def encode_message(
    message: Message,
    *,
    compress_above: int | None = None,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> bytes:
    """Encode one message as stored bytes (compressed when above the threshold).

    Raises:
        MessageTooLarge: the record would exceed ``max_bytes`` (before compression,
            so that it can always be read back under the same limit).
    """
    try:
        data = _dumps(_record(message)).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            "message text contains a lone surrogate, which cannot be stored as UTF-8"
        ) from exc
    if len(data) > max_bytes:
        raise MessageTooLarge(
            f"a {message.role} message's record is {len(data)} bytes, over the store's "
            f"max_record_bytes={max_bytes}",
            size=len(data),
            limit=max_bytes,
        )
    if compress_above is not None and len(data) > compress_above:
        packed = _COMPRESSED_MARK + zlib.compress(data, 6)
        if len(packed) < len(data):
            return packed
    return data


def _inflate(data: bytes, limit: int) -> bytes:
    """Decompress a record, refusing to grow past ``limit`` bytes (a zlib bomb
    of a few hundred KB would otherwise inflate to gigabytes)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise ValueError(f"the record inflates beyond {limit} bytes")
    if not inflater.eof:
        if inflater.decompress(b"", 1):
            raise ValueError(f"the record inflates beyond {limit} bytes")
        raise zlib.error("incomplete or truncated stream")
    return out


def decode_message(
    raw: bytes | str,
    *,
    session_id: str,
    index: int | None,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Message:
    """Decode stored bytes, raising :class:`CorruptHistory` naming where it failed.

    A compressed record is inflated to at most ``max_bytes``.
    """
    try:
        if isinstance(raw, bytes) and raw[:2] == _COMPRESSED_MARK:
            raw = _inflate(raw[2:], max_bytes)
        rec = _loads(raw)
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; RecursionError: nested too deep.
    except (ValueError, zlib.error, RecursionError) as exc:
        raise CorruptHistory(
            f"session {session_id!r}: stored record {index} is not a valid message record "
            f"({type(exc).__name__}: {exc})",
            session_id=session_id,
            index=index,
        ) from exc
    if not isinstance(rec, dict):
        raise CorruptHistory(
            f"session {session_id!r}: stored record {index} is {type(rec).__name__}, "
            "not a message object",
            session_id=session_id,
            index=index,
        )
    try:
        # A JSON escape can smuggle in a lone surrogate, which the Message
        # refuses in every text field: it is refused here, where it is found.
        return _from_record(cast("dict[str, Any]", rec))
    except (InvalidMessage, LookupError, TypeError, ValueError) as exc:
        version = rec.get("v")
        newer = (
            f" (written by format version {version}; this library reads {FORMAT_VERSION})"
            if isinstance(version, int) and version > FORMAT_VERSION
            else ""
        )
        raise CorruptHistory(
            f"session {session_id!r}: stored record {index} is not a valid message{newer}: {exc}",
            session_id=session_id,
            index=index,
        ) from exc


def _from_record(rec: dict[str, Any]) -> Message:
    if len(rec) == 3 and "v" in rec:
        # The common record {"v","r","c"}: no optional keys to look up.
        return Message(rec["r"], rec["c"])
    tool_calls: tuple[ToolCall, ...] = ()
    raw_calls = rec.get("tc")
    if raw_calls:
        tool_calls = tuple(ToolCall(c[0], c[1], c[2]) for c in raw_calls)
    metadata = rec.get("m") or {}
    if not isinstance(metadata, dict):
        raise TypeError("metadata is not an object")
    return Message(
        rec["r"],
        rec["c"],
        tool_calls=tool_calls,
        tool_call_id=rec.get("ti"),
        name=rec.get("n"),
        metadata=metadata,
    )
