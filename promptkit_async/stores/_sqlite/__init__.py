"""The SQLite store, as a package of rooms (see ``_store.py`` for how they compose)."""

from ._store import SQLiteStore as SQLiteStore

__all__ = ["SQLiteStore"]
