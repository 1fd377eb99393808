"""The Redis key schema, in one place.

Every key of a session is ``<prefix>:{<encoded id>}:<kind>``. The encoded id
is the whole hash tag, so all keys of a session live in one Cluster slot and
can be written in one atomic step. The encoding is percent-escaping of ``%``,
``{`` and ``}`` only: injective (distinct ids never share a key), readable in
``redis-cli``, and it guarantees the first ``}`` after the ``{`` closes the tag.
"""

from __future__ import annotations

import re

__all__ = [
    "HISTORY",
    "LEASE",
    "TURNS",
    "decode_id",
    "encode_id",
    "glob_escape",
    "key",
    "parse_key",
]

HISTORY = "h"  # list of encoded messages, oldest first
TURNS = "t"  # sorted set of recent turn ids (exactly-once commits)
LEASE = "l"  # distributed lease token

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
