"""The ``promptkit-async`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from ._session import Session
from .providers import ScriptedProvider
from .stores import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

_DEMO_TURNS = ("Hi! My name is Ada and I like Redis.", "What did I tell you my name was?")


async def _demo(delay: float) -> int:
    """Two turns on the embedded store: the second reply shows the first was remembered."""
    out = sys.stdout
    async with MemoryStore() as store, ScriptedProvider(delay=delay) as provider:
        for text in _DEMO_TURNS:
            async with Session(store, "demo-user", provider=provider, system="Be brief.") as s:
                out.write(f"\nyou> {text}\nbot> ")
                out.flush()
                async for piece in s.stream(text):
                    out.write(piece)
                    out.flush()
                out.write("\n")
        history = await store.load("demo-user")
        out.write(f"\nstored history of 'demo-user': {len(history)} messages\n")
        for m in history:
            out.write(f"  {m.role:>9}: {m.content}\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptkit-async",
        description="Conversation state for LLM applications: demo and store tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="two turns on the in-memory store, streamed, remembered")
    demo.add_argument(
        "--delay", type=float, default=0.04, help="seconds between streamed words (default 0.04)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return asyncio.run(_demo(args.delay))
    raise AssertionError(args.command)  # pragma: no cover - argparse rejects others


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
