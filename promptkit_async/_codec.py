"""The stored format of a message, and its encoder and decoder (pure, no I/O).

Format 2: a stored element is a header the store writes at commit time, then
the message's payload::

    \\x002<created_at, ms since the epoch> <id>\\n<payload>

The header is added inside the store's atomic commit (on Redis, by the commit
script, from the server's clock), so ids and times never depend on which
instance wrote them. The payload is one compact JSON object::

    {"v":2,"r":"assistant","c":"...","tc":[["call_1","get_weather","{...}"]],
     "ti":"call_1","n":"name","m":{...},"e":1}

``c`` is the text, or a list of parts: ``{"t":"x","x":text}``, an image
``{"t":"i","u":url}`` or ``{"t":"i","d":base64,"y":media_type}`` (``"l"``:
detail), a file ``{"t":"f",...,"n":filename}``, audio ``{"t":"a","d":...,"y":...}``,
thinking ``{"t":"k","x":text,"s":signature}`` or ``{"t":"k","r":redacted}``.
Inline media is base64 once, here, and reused as is on the wire. Keys other
than ``v``/``r``/``c`` are omitted when empty; ``e`` marks a tool error.

Unknown keys are ignored, so a record written by a newer minor version still
loads; a record whose known keys cannot be read raises :class:`CorruptHistory`.
A payload larger than a store's compression threshold may be zlib-compressed,
marked by a leading ``\\x00z`` (JSON never starts with a NUL byte), and is
inflated with a bound whatever the setting at read time.

Format 1 (0.1.0) elements are the JSON object alone (``{"v":1,...}``, parts
never), with no header: they still load, with the id and time the store gives
them (see :func:`decode_message`).

With the optional ``fast`` extra (msgspec), the record a load decodes most (a
header, then ``{"v","r","c"}`` with text) is parsed by msgspec's JSON decoder;
any record it refuses, or that is not that shape, takes the stdlib path as
without it, so what decodes (and every error) is the same. Records are always
written by the stdlib encoder: the bytes stored do not depend on the extra.
"""

from __future__ import annotations

import json
import re
import zlib
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, cast

from ._exceptions import CorruptHistory, InvalidMessage, MessageTooLarge
from ._messages import Message, ToolCall, stored_text
from ._parts import AudioPart, FilePart, ImagePart, Part, TextPart, ThinkingPart

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "EPOCH",
    "FORMAT_VERSION",
    "HEADER_MARK",
    "decode_message",
    "decode_records",
    "encode_message",
    "header",
    "id_number",
    "message_id",
    "ms_of",
    "time_of",
]

FORMAT_VERSION: Final = 2
#: The largest payload a store writes, and inflates when reading (bytes).
DEFAULT_MAX_RECORD_BYTES: Final = 16 << 20
#: How a format 2 element starts (a NUL, then the version).
HEADER_MARK: Final = b"\x002"
#: The time of a format 1 record, which kept none.
EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_COMPRESSED_MARK: Final = b"\x00z"


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
# The decoder's scanner (C-accelerated), with json.loads' default settings.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _fast_decoder() -> Callable[[bytes], Any] | None:
    """msgspec's JSON decoder when the ``fast`` extra is installed, else None."""
    try:
        import msgspec
    except ImportError:
        return None
    decode: Callable[[bytes], Any] = msgspec.json.Decoder().decode
    return decode


#: The hot path's parser (see the module docstring); None: the stdlib scanner.
_fast_loads: Callable[[bytes], Any] | None = _fast_decoder()


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


@lru_cache(maxsize=4096)
def time_of(ms: int) -> datetime:
    """The aware UTC time of a stamp in ms (cached: one commit's messages share one)."""
    return EPOCH + timedelta(milliseconds=ms)


def ms_of(when: datetime) -> int:
    """A time as whole ms since the epoch (the precision stored), exactly."""
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def header(created_ms: int, message_id: str) -> bytes:
    """The header of a format 2 element (the Redis commit script builds the same)."""
    return b"%s%d %s\n" % (HEADER_MARK, created_ms, message_id.encode())


_STORE_ID = re.compile(r"(\d{1,15})(?:~[0-9a-z]{1,16})?")


def message_id(number: int, generation: int) -> str:
    """The id a store gives the message at ``number`` (its position from the session's
    first message), with the history's generation once it was rewound."""
    return f"{number}~{generation}" if generation > 0 else str(number)


def id_number(message_id: str) -> int | None:
    """The count in an id a store gave (``"41"``, or ``"41~2"``), None for any other id."""
    match = _STORE_ID.fullmatch(message_id)
    return None if match is None else int(match.group(1))


# -- parts ------------------------------------------------------------------------


def _part_record(part: Part) -> dict[str, Any]:
    if type(part) is TextPart:
        return {"t": "x", "x": part.text}
    if type(part) is ThinkingPart:
        rec: dict[str, Any] = {"t": "k"}
        if part.redacted is not None:
            rec["r"] = part.redacted
        else:
            rec["x"] = part.text
        if part.signature is not None:
            rec["s"] = part.signature
        return rec
    assert isinstance(part, (ImagePart, FilePart, AudioPart))
    rec = {"t": {ImagePart: "i", FilePart: "f", AudioPart: "a"}[type(part)]}
    if part.url is not None:
        rec["u"] = part.url
    else:
        rec["d"] = part.base64
    if part.media_type is not None:
        rec["y"] = part.media_type
    if type(part) is ImagePart and part.detail is not None:
        rec["l"] = part.detail
    if type(part) is FilePart and part.filename is not None:
        rec["n"] = part.filename
    return rec


def _part_from_record(rec: dict[str, Any]) -> Part:
    kind = rec["t"]
    if kind == "x":
        return TextPart(rec["x"])
    if kind == "k":
        return ThinkingPart(rec.get("x", ""), signature=rec.get("s"), redacted=rec.get("r"))
    media = {"url": rec.get("u"), "_base64": rec.get("d"), "media_type": rec.get("y")}
    if kind == "i":
        return ImagePart(detail=rec.get("l"), **media)
    if kind == "f":
        return FilePart(filename=rec.get("n"), **media)
    if kind == "a":
        return AudioPart(_base64=media["_base64"], media_type=media["media_type"])
    raise ValueError(f"unknown part type {kind!r}")


# -- messages -----------------------------------------------------------------------


def _record(message: Message) -> dict[str, Any]:
    content = message.content
    rec: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "r": message.role,
        "c": content if isinstance(content, str) else [_part_record(p) for p in content],
    }
    if message.tool_calls:
        rec["tc"] = [[c.id, c.name, c.arguments] for c in message.tool_calls]
    if message.tool_call_id is not None:
        rec["ti"] = message.tool_call_id
    if message.is_error:
        rec["e"] = 1
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
    """Encode one message's payload (compressed when above the threshold).

    The id and time are not part of it: the store's commit adds the header.

    Raises:
        MessageTooLarge: the payload would exceed ``max_bytes`` (before
            compression, so that it can always be read back under the same limit).
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


@lru_cache(maxsize=4096)
def _time_of_stamp(ms: bytes) -> datetime:
    return time_of(int(ms))


def _split_header(raw: bytes) -> tuple[str, datetime, bytes]:
    # The payload has no newline before the header's (JSON escapes them; a
    # compressed payload comes after it), and the id has neither a space nor one.
    head, _, payload = raw.partition(b"\n")
    ms, _, message_id = head.partition(b" ")
    if not message_id or not ms[2:].isdigit():
        raise ValueError("the record's header is not <ms> <id>")
    return message_id.decode("ascii"), _time_of_stamp(ms[2:]), payload


def decode_message(
    raw: bytes | str,
    *,
    session_id: str,
    index: int | None,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    id: str | None = None,
    created_at: datetime | None = None,
) -> Message:
    """Decode a stored element, raising :class:`CorruptHistory` naming where it failed.

    A format 2 element carries its id and time; a headerless one (format 1,
    or a bare payload) gets ``id`` and ``created_at`` from the caller. A
    compressed payload is inflated to at most ``max_bytes``.
    """
    if type(raw) is bytes and raw[:2] == HEADER_MARK:
        message = _decode_common(raw)
        if message is not None:
            return message
    message_id, when = id, created_at
    try:
        if isinstance(raw, bytes):
            if raw[:2] == HEADER_MARK:
                message_id, when, raw = _split_header(raw)
            if raw[:2] == _COMPRESSED_MARK:
                raw = _inflate(raw[2:], max_bytes)
        elif raw[:2] == HEADER_MARK.decode():  # a text client (decode_responses=True)
            message_id, when, payload = _split_header(raw.encode("utf-8", "surrogatepass"))
            raw = payload.decode("utf-8", "surrogatepass")
        rec = _loads(raw)
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; RecursionError: nested too deep.
    except (ValueError, zlib.error, RecursionError, OverflowError, OSError) as exc:
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
        return _from_record(cast("dict[str, Any]", rec), message_id, when)
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


_set = object.__setattr__


def _decode_common(raw: bytes) -> Message | None:
    """The element a store writes most: a header, then ``{"v","r","c"}`` with text content.

    Inlined for speed (a window decodes 20 of them per turn); None for
    anything else, and for anything invalid, which the general path then
    decodes or reports.
    """
    head, _, payload = raw.partition(b"\n")
    if payload[:2] != b'{"':
        return None
    ms, _, message_id = head.partition(b" ")
    fast = _fast_loads
    try:
        if fast is not None:
            # It refuses all the stdlib accepts beyond strict JSON (NaN, lone
            # surrogates, ...): those go the general path, as without it.
            rec = fast(payload)
        else:
            text = payload.decode("utf-8", "surrogatepass")
            rec, end = _scan_once(text, 0)
            if end != len(text):
                return None
        if type(rec) is not dict or len(rec) != 3 or "v" not in rec:
            return None
        content = rec["c"]
        if type(content) is not str or not message_id or not ms[2:].isdigit():
            return None
        return stored_text(rec["r"], content, message_id.decode("ascii"), _time_of_stamp(ms[2:]))
    except (ValueError, StopIteration, LookupError, RecursionError, OverflowError, TypeError):
        return None  # InvalidMessage is a ValueError: the general path says what is wrong


def decode_records(
    raws: Sequence[bytes | str], *, session_id: str, first_index: int, max_bytes: int
) -> list[Message]:
    """``[decode_message(raw, index=first_index + i) for i, raw in enumerate(raws)]``,
    with its common case called directly: a window is 20 records a turn.

    A record :func:`_decode_common` declines is decoded by :func:`decode_message`
    (which says what is wrong), so the result and every error are those of the
    plain loop.
    """
    out: list[Message] = []
    append = out.append
    common = _decode_common
    for i, raw in enumerate(raws):
        message = common(raw) if type(raw) is bytes and raw[:2] == HEADER_MARK else None
        if message is None:
            message = decode_message(
                raw, session_id=session_id, index=first_index + i, max_bytes=max_bytes
            )
        append(message)
    return out


def _from_record(rec: dict[str, Any], message_id: str | None, when: datetime | None) -> Message:
    content = rec["c"]
    if type(content) is list:
        content = tuple(_part_from_record(p) for p in content)
    if len(rec) == 3 and "v" in rec:
        # The common record {"v","r","c"}: no optional keys to look up, and the
        # id and time, parsed from our own header, set without re-checking.
        message = Message(rec["r"], content)
        if message_id is not None:
            _set(message, "id", message_id)
            _set(message, "created_at", when)
        return message
    tool_calls: tuple[ToolCall, ...] = ()
    raw_calls = rec.get("tc")
    if raw_calls:
        tool_calls = tuple(ToolCall(c[0], c[1], c[2]) for c in raw_calls)
    metadata = rec.get("m") or {}
    if not isinstance(metadata, dict):
        raise TypeError("metadata is not an object")
    return Message(
        rec["r"],
        content,
        tool_calls=tool_calls,
        tool_call_id=rec.get("ti"),
        name=rec.get("n"),
        metadata=metadata,
        is_error=rec.get("e") == 1,
        id=message_id,
        created_at=when,
    )
