"""Conversation stores: the contract, an in-memory store, a Redis store and an SQLite store."""

from .._exports import publish as _publish
from ._contract import Lease as Lease
from ._contract import Store as Store
from ._contract import SupportsHistory as SupportsHistory
from ._contract import SupportsLeases as SupportsLeases
from ._contract import SupportsLocks as SupportsLocks
from ._contract import SupportsSummaries as SupportsSummaries
from ._contract import SupportsTurns as SupportsTurns
from ._contract import Turn as Turn
from ._contract import TurnOutcome as TurnOutcome
from ._contract import TurnStatus as TurnStatus
from ._memory import MemoryStore as MemoryStore
from ._redis import RedisStore as RedisStore
from ._shared import BaseStore as BaseStore
from ._sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "BaseStore",
    "Lease",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "SupportsHistory",
    "SupportsLeases",
    "SupportsLocks",
    "SupportsSummaries",
    "SupportsTurns",
    "Turn",
    "TurnOutcome",
    "TurnStatus",
]

_publish(__name__, __all__, globals())
