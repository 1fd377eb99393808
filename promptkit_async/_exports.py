"""One rule for ``__module__``: a public class or function names its public home.

A class or function exported by a public namespace reports that namespace as
its ``__module__``, so reprs, tracebacks and docs say ``promptkit_async.Session``
rather than the private module it lives in. When several namespaces export
it, the most public wins: ``promptkit_async`` publishes last. Type aliases and
constants are left alone (they have no ``__module__`` of their own to set).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["publish"]


def publish(namespace: str, names: Iterable[str], scope: Mapping[str, object]) -> None:
    for name in names:
        obj = scope[name]
        # issubclass(type(obj), type), not isinstance: a generic alias such as
        # Callable[[Message], int] passes isinstance(obj, type) on Python 3.10.
        if issubclass(type(obj), type) or inspect.isfunction(obj):
            obj.__module__ = namespace
