"""``demo`` and ``chat``: conversations in the terminal."""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from .._app import Conversations
from .._config import check_session_id
from .._env import ProviderName, detect_provider, provider_from_env
from .._exceptions import InvalidMessage, ProviderError, StoreError
from .._session import Session
from ..providers import ScriptedProvider
from ..stores import MemoryStore, RedisStore
from ._common import EXIT_OK, EXIT_USAGE, Fail, describe, err, open_store

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from .._messages import Message
    from ..providers import Provider

__all__ = ["chat", "demo", "print_history"]

_DEMO_TURNS = ("Hi! My name is Ada and I like Redis.", "What did I tell you my name was?")


async def demo(delay: float) -> int:
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
            out.write(f"  {m.role:>9}: {m.text}\n")
    return 0


def _provider(args: argparse.Namespace, interactive: bool) -> Provider:
    choice: ProviderName | None = args.provider
    if choice is None:
        choice = detect_provider()
        if choice == "scripted":
            err(
                "note: no OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, GEMINI_API_KEY, "
                "GOOGLE_API_KEY or OLLAMA_HOST set: using the offline scripted provider "
                "(echo replies)"
            )
    delay = args.delay if args.delay is not None else (0.03 if interactive else 0.0)
    try:
        return provider_from_env(choice, model=args.model, scripted_delay=delay)
    except ValueError as exc:
        raise Fail(EXIT_USAGE, f"--provider {choice}: {exc}") from None


def _read_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Blocking reads in a daemon thread: the loop stays free, and Ctrl-C never waits on it."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
    finally:
        loop.call_soon_threadsafe(lines.put_nowait, None)


def print_history(messages: Sequence[Message], out: TextIO) -> None:
    for m in messages:
        text = m.text
        for call in m.tool_calls:
            text += f"{' ' if text else ''}[tool call {call.name}({call.arguments})]"
        indent = "\n" + " " * (len(m.role) + 2)
        out.write(f"{m.role}: {indent.join(text.splitlines()) or text}\n")


async def chat(args: argparse.Namespace) -> int:
    out = sys.stdout
    interactive = sys.stdin.isatty()
    session_id = check_session_id(args.session or _default_session())
    store = open_store(args, persistent=False)
    try:
        provider = _provider(args, interactive)
    except BaseException:
        await store.aclose()
        raise
    async with Conversations(store, provider=provider, system=args.system) as chats:
        if isinstance(store, RedisStore):
            await store.ping()  # fail now, not after the first message was typed
        if interactive:
            err(
                f"session {session_id!r}, store {describe(store)}, {provider!r}; "
                "/history shows it, /quit or Ctrl-D ends"
            )
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=_read_lines, args=(loop, lines), daemon=True).start()
        while True:
            if interactive:
                out.write("you> ")
                out.flush()
            line = await lines.get()
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if interactive and text in ("/quit", "/exit"):
                break
            if interactive and text == "/history":
                print_history(await chats.history(session_id), out)
                continue
            try:
                async with chats.session(session_id) as session:
                    if interactive:
                        out.write("bot> ")
                    async for piece in session.stream(text):
                        out.write(piece)
                        out.flush()
                out.write("\n")
                out.flush()
            except (ProviderError, StoreError, InvalidMessage) as exc:
                if not interactive:
                    raise
                out.write("\n")
                err(f"{_kind(exc)}: {exc} (this turn was not saved)")
        if interactive:
            out.write("\n")
    return EXIT_OK


def _default_session() -> str:
    try:
        return f"cli-{getpass.getuser()}"
    except Exception:  # no user name in this environment (some containers)
        return "cli"


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return "provider error"
    if isinstance(exc, StoreError):
        return "store error"
    return "error"
