"""AsyncResource: ``async with x:`` closes ``x`` with its ``aclose()``.

Shared by everything that owns a connection or a stream (stores, providers,
the app object, a reply stream), so that each only writes ``aclose``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["AsyncResource"]


class AsyncResource(ABC):
    """An object closed by ``await x.aclose()`` or by leaving ``async with x:``."""

    __slots__ = ()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the object owns; safe to call more than once."""
