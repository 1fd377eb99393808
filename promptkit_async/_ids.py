"""Turn ids: unique across processes, cheap enough to make one per commit.

A turn id is the idempotency key of a commit, and on Redis the newest one is
also the session's version, so it must never repeat, in any process, ever. It
need not be secret: whoever can write to the store can do worse than guess
one. So it is a random per-process prefix and a counter, which costs a
fraction of ``secrets.token_hex`` per id; a forked child draws a new prefix.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["new_turn_id"]

_prefix = ""
_counter = itertools.count(1)


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(1)


_reseed()
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reseed)


def new_turn_id() -> str:
    """A new id: 16 hex digits of process prefix, a dot, a hex counter."""
    return f"{_prefix}.{next(_counter):x}"
