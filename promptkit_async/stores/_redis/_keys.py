"""The Redis key schema, in one place.

Every key of a session is ``<prefix>:{<encoded id>}:<kind>``. The encoded id
is the whole hash tag, so all keys of a session live in one Cluster slot and
can be written in one atomic step. The encoding is percent-escaping of ``%``,
``{`` and ``}`` only: injective (distinct ids never share a key), readable in
``redis-cli``, and it guarantees the first ``}`` after the ``{`` closes the tag.

The keys outside a session are each owner's listing, ``<prefix>:owner:{<owner>}``
(with its paging snapshots), in a slot of its own, and the live-session index
(standalone Redis only). No script ever touches keys of two slots, so that
index is kept per Cluster slot: ``<prefix>:index:{<tag>}`` holds the sessions
whose keys live in that slot, where ``<tag>`` is four letters chosen to hash to
it (:func:`slot_tag`), and the commit that writes a session writes its slot's
index in the same atomic step. ``<prefix>:index:slots`` lists the slots whose
index may hold live sessions, so that ``metrics()`` reads those alone.
``<prefix>:index`` is the single index older versions kept (folded into the
per-slot ones by ``metrics()``, see ``_index``).
"""

from __future__ import annotations

import binascii
import functools
import re

__all__ = [
    "HISTORY",
    "LEASE",
    "META",
    "SLOTS",
    "TURNS",
    "decode_id",
    "encode_id",
    "glob_escape",
    "key",
    "key_parts",
    "legacy_index_key",
    "owner_key",
    "parse_key",
    "session_keys",
    "slot_index_key",
    "slot_of",
    "slot_registry_key",
    "slot_tag",
    "stored_keys",
]

HISTORY = "h"  # list of encoded messages, oldest first
TURNS = "t"  # sorted set of recent turn ids (exactly-once commits)
LEASE = "l"  # distributed lease token
META = "m"  # hash: the next message id, the last commit's time and turn (see _scripts)

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


def encode_id(session_id: str) -> str:
    if "%" in session_id or "{" in session_id or "}" in session_id:
        return session_id.translate(_ESCAPES)
    return session_id


_UNESCAPES = {"%25": "%", "%7B": "{", "%7D": "}"}
_ESCAPED = re.compile("%25|%7B|%7D")


def decode_id(encoded: str) -> str:
    if "%" not in encoded:
        return encoded
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group()], encoded)


def key(prefix: str, session_id: str, kind: str) -> bytes:
    return f"{prefix}:{{{encode_id(session_id)}}}:{kind}".encode()


def session_keys(prefix: str, session_id: str) -> tuple[bytes, bytes]:
    """The history and turns keys of a session: the two every commit touches."""
    head = f"{prefix}:{{{encode_id(session_id)}}}:"
    return (head + HISTORY).encode(), (head + TURNS).encode()


def stored_keys(prefix: str, session_id: str) -> tuple[bytes, bytes, bytes]:
    """The history, turns and meta keys: what a commit writes and a delete erases."""
    head = f"{prefix}:{{{encode_id(session_id)}}}:"
    return (head + HISTORY).encode(), (head + TURNS).encode(), (head + META).encode()


def owner_key(prefix: str, owner: str, snapshot: str = "") -> bytes:
    """An owner's listing, ``<prefix>:owner:{<encoded owner>}`` (or one of its paging
    snapshots): its own hash tag, so it is one slot whatever its members' slots."""
    tail = f":s:{snapshot}" if snapshot else ""
    return f"{prefix}:owner:{{{encode_id(owner)}}}{tail}".encode()


def legacy_index_key(prefix: str) -> bytes:
    """The one live-session index of older versions (every session in one key)."""
    return f"{prefix}:index".encode()


#: Cluster slots, and CRC16/XMODEM (binascii.crc_hqx with 0) as Redis hashes keys.
SLOTS = 16384


def slot_of(encoded_id: str) -> int:
    """The Cluster slot of every key of the session with this encoded id (its hash tag)."""
    return binascii.crc_hqx(encoded_id.encode(), 0) & (SLOTS - 1)


# Four characters in 0x40-0x4F ("@" to "O") leave sixteen free bits, and a
# CRC with a zero start is linear over GF(2) for messages of one length: the
# tag for a slot is the base "@@@@" plus the free bits that move its CRC to
# that slot, solved once with a basis of what each free bit moves.
_TAG_BASE = b"@@@@"


@functools.cache
def _tag_basis() -> tuple[tuple[int, int], ...]:
    basis: list[tuple[int, int]] = []  # (CRC bits moved, free bits set): distinct top bits
    for bit in range(16):
        unit = bytearray(4)
        unit[bit // 4] = 1 << (bit % 4)
        moved, used = binascii.crc_hqx(bytes(unit), 0) & (SLOTS - 1), 1 << bit
        for b_moved, b_used in basis:
            if moved ^ b_moved < moved:  # moved has b_moved's top bit
                moved, used = moved ^ b_moved, used ^ b_used
        if moved:
            basis.append((moved, used))
            basis.sort(reverse=True)
    return tuple(basis)


@functools.cache
def slot_tag(slot: int) -> str:
    """Four letters whose hash tag is ``slot``: the per-slot index's tag."""
    want = (slot ^ binascii.crc_hqx(_TAG_BASE, 0)) & (SLOTS - 1)
    free = 0
    for moved, used in _tag_basis():
        if want ^ moved < want:
            want, free = want ^ moved, free ^ used
    if want:  # pragma: no cover - the basis spans every slot (tested)
        raise AssertionError(f"no tag for slot {slot}")
    return bytes(_TAG_BASE[i] | ((free >> (4 * i)) & 15) for i in range(4)).decode()


def slot_index_key(prefix: str, slot: int) -> bytes:
    """The index of the live sessions whose keys live in ``slot``, in that slot."""
    return f"{prefix}:index:{{{slot_tag(slot)}}}".encode()


def slot_registry_key(prefix: str) -> bytes:
    """Which slots' indexes may hold live sessions, and until when (a sorted set)."""
    return f"{prefix}:index:slots".encode()


def key_parts(prefix: str, kind: str) -> tuple[str, str]:
    """``(head, tail)`` such that ``head + encode_id(id) + tail`` is that key of ``id``."""
    return f"{prefix}:{{", f"}}:{kind}"


def glob_escape(text: str) -> str:
    """Escape text so a SCAN MATCH pattern matches it literally."""
    out = []
    for ch in text:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def parse_key(prefix: str, raw: bytes | str, kind: str = HISTORY) -> str | None:
    """The session id of a key of this schema, or None if it is not one."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return None
    head = f"{prefix}:{{"
    tail = f"}}:{kind}"
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    encoded = text[len(head) : len(text) - len(tail)]
    if not encoded or "}" in encoded:
        return None
    return decode_id(encoded)
