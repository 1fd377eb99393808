"""What every command shares: exit statuses, user errors, opening the store."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .._env import store_from_url
from ..stores import MemoryStore, RedisStore, SQLiteStore

if TYPE_CHECKING:
    import argparse

    from ..stores import Store

__all__ = [
    "EXIT_EXISTS",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PROVIDER",
    "EXIT_STORE",
    "EXIT_USAGE",
    "PAGE_SIZE",
    "Fail",
    "describe",
    "err",
    "open_store",
]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_PROVIDER = 4
EXIT_EXISTS = 5
EXIT_INTERRUPTED = 130

#: Conversations read per round trip when listing (``conversations --limit``).
PAGE_SIZE = 100


class Fail(Exception):
    """A user error: printed as one line, then exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    sys.stderr.write(f"promptkit-async: {message}\n")
    sys.stderr.flush()


def open_store(
    args: argparse.Namespace, *, persistent: bool
) -> MemoryStore | RedisStore | SQLiteStore:
    """The store ``--store`` names, else ``$PROMPTKIT_STORE``, else ``$REDIS_URL`` (a memory
    store only for commands that can use one)."""
    url: str | None = (
        args.store or os.environ.get("PROMPTKIT_STORE") or os.environ.get("REDIS_URL") or None
    )
    if url is None or url == "memory":
        if persistent:
            raise Fail(
                EXIT_USAGE,
                f"{args.command} needs a persistent store: pass --store sqlite:///FILE.db or "
                "--store redis://HOST:PORT, or set PROMPTKIT_STORE or REDIS_URL (a memory "
                "store is empty in a new process)",
            )
        return MemoryStore()
    options: dict[str, object] = {}
    if not url.lower().startswith("sqlite:"):
        options["prefix"] = args.key_prefix or os.environ.get("PROMPTKIT_PREFIX") or "promptkit"
    try:
        return store_from_url(url, **options)
    except (ValueError, TypeError) as exc:
        raise Fail(EXIT_USAGE, f"bad store URL: {exc}") from None


def describe(store: Store) -> str:
    """How a store is named in messages."""
    if isinstance(store, RedisStore):
        return f"Redis, key prefix {store.prefix!r}"
    if isinstance(store, SQLiteStore):
        return f"SQLite file {store.path!r}"
    return "in memory (this process only)"
