"""The Redis key schema, in one place.

Every key of a session is ``<prefix>:{<encoded id>}:<kind>``. The encoded id
is the whole hash tag, so all keys of a session live in one Cluster slot and
can be written in one atomic step. The encoding is percent-escaping of ``%``,
``{`` and ``}`` only: injective (distinct ids never share a key), readable in
``redis-cli``, and it guarantees the first ``}`` after the ``{`` closes the tag.

The keys outside a session are the live-session index, ``<prefix>:index``
(standalone Redis only), and each owner's listing, ``<prefix>:owner:{<owner>}``
(with its paging snapshots), in a slot of its own. A script that must name a session's keys from an
index member gets the parts from :func:`key_parts`, so that no key name is
spelled anywhere but here.
"""

from __future__ import annotations

import re

__all__ = [
    "HISTORY",
    "LEASE",
    "META",
    "TURNS",
    "decode_id",
    "encode_id",
    "glob_escape",
    "index_key",
    "key",
    "key_parts",
    "owner_key",
    "parse_key",
    "session_keys",
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


def index_key(prefix: str) -> bytes:
    return f"{prefix}:index".encode()


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
