"""The ``promptkit-async`` command line: a demo, a terminal chat, and store tools.

User errors (a bad URL, an unknown session, Redis down) end with one line on
stderr and an exit status, never a traceback; the statuses are listed in
``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from ._app import Conversations
from ._config import check_session_id
from ._env import ProviderName, detect_provider, provider_from_env
from ._exceptions import (
    InvalidMessage,
    InvalidSessionId,
    ProviderError,
    StoreError,
    StoreUnavailable,
)
from ._session import Session
from .providers import ScriptedProvider
from .stores import MemoryStore, RedisStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._messages import Message
    from .providers import Provider
    from .stores import Store

__all__ = ["main"]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_PROVIDER = 4
EXIT_INTERRUPTED = 130

_DEMO_TURNS = ("Hi! My name is Ada and I like Redis.", "What did I tell you my name was?")

_EPILOG = """\
stores:
  --store is "memory" (in this process only, so for chat) or a Redis URL:
  redis://[[user]:password@]host:port/db, rediss://... (TLS), unix:///path/redis.sock,
  redis+cluster://host:port (a Redis Cluster). It defaults to $REDIS_URL.
  --key-prefix picks the key namespace (default $PROMPTKIT_PREFIX, else "promptkit").

providers (chat):
  OPENAI_API_KEY and/or OPENAI_BASE_URL (any OpenAI-compatible server), or
  ANTHROPIC_API_KEY; the model is --model, else $PROMPTKIT_MODEL. With no key,
  chat uses the offline scripted provider (it echoes, showing what it remembers).

exit status:
  0    success
  1    unknown session (history, delete)
  2    usage error: bad arguments, bad store URL, invalid session id, missing key
  3    store unavailable or failing (Redis unreachable or timing out, corrupt data)
  4    provider error (chat)
  130  interrupted (Ctrl-C)

examples:
  promptkit-async chat                                        offline, in memory
  printf 'hi\\nwhat did I say?\\n' | promptkit-async chat --store redis://localhost:6379
  promptkit-async history user-42 --store redis://localhost:6379 --json
  promptkit-async sessions --prefix user-42- --store redis://localhost:6379
  promptkit-async delete user-42 --store redis://localhost:6379
  promptkit-async stats --store redis://localhost:6379
"""


class _Fail(Exception):
    """A user error: printed as one line, then exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _err(message: str) -> None:
    sys.stderr.write(f"promptkit-async: {message}\n")
    sys.stderr.flush()


# -- demo ------------------------------------------------------------------------------


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


# -- stores and providers ----------------------------------------------------------------


def _open_store(args: argparse.Namespace, *, persistent: bool) -> MemoryStore | RedisStore:
    url: str | None = args.store or os.environ.get("REDIS_URL") or None
    if url is None or url == "memory":
        if persistent:
            raise _Fail(
                EXIT_USAGE,
                f"{args.command} needs a Redis store: pass --store redis://HOST:PORT "
                "or set REDIS_URL (a memory store is empty in a new process)",
            )
        return MemoryStore()
    prefix = args.key_prefix or os.environ.get("PROMPTKIT_PREFIX") or "promptkit"
    try:
        return RedisStore.from_url(url, prefix=prefix)
    except (ValueError, TypeError) as exc:
        raise _Fail(EXIT_USAGE, f"bad store URL: {exc}") from None


def _describe(store: Store) -> str:
    if isinstance(store, RedisStore):
        return f"Redis, key prefix {store.prefix!r}"
    return "in memory (this process only)"


def _provider(args: argparse.Namespace, interactive: bool) -> Provider:
    choice: ProviderName | None = args.provider
    if choice is None:
        choice = detect_provider()
        if choice == "scripted":
            _err(
                "note: no OPENAI_API_KEY, OPENAI_BASE_URL or ANTHROPIC_API_KEY set: "
                "using the offline scripted provider (echo replies)"
            )
    delay = args.delay if args.delay is not None else (0.03 if interactive else 0.0)
    try:
        return provider_from_env(choice, model=args.model, scripted_delay=delay)
    except ValueError as exc:
        raise _Fail(EXIT_USAGE, f"--provider {choice}: {exc}") from None


# -- chat --------------------------------------------------------------------------------


def _read_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Blocking reads in a daemon thread: the loop stays free, and Ctrl-C never waits on it."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
    finally:
        loop.call_soon_threadsafe(lines.put_nowait, None)


def _print_history(messages: Sequence[Message], out: TextIO) -> None:
    for m in messages:
        text = m.content
        for call in m.tool_calls:
            text += f"{' ' if text else ''}[tool call {call.name}({call.arguments})]"
        indent = "\n" + " " * (len(m.role) + 2)
        out.write(f"{m.role}: {indent.join(text.splitlines()) or text}\n")


async def _chat(args: argparse.Namespace) -> int:
    out = sys.stdout
    interactive = sys.stdin.isatty()
    session_id = check_session_id(args.session or _default_session())
    store = _open_store(args, persistent=False)
    try:
        provider = _provider(args, interactive)
    except BaseException:
        await store.aclose()
        raise
    async with Conversations(store, provider=provider, system=args.system) as chats:
        if isinstance(store, RedisStore):
            await store.ping()  # fail now, not after the first message was typed
        if interactive:
            _err(
                f"session {session_id!r}, store {_describe(store)}, {provider!r}; "
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
                _print_history(await chats.history(session_id), out)
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
                _err(f"{_kind(exc)}: {exc} (this turn was not saved)")
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


# -- store tools -------------------------------------------------------------------------


async def _history(args: argparse.Namespace) -> int:
    session_id = check_session_id(args.session_id)
    async with _open_store(args, persistent=True) as store:
        messages = await store.load(session_id)
        if not messages:
            raise _Fail(EXIT_NOT_FOUND, f"no session {session_id!r} ({_describe(store)})")
    if args.json:
        body = {"session_id": session_id, "messages": [m.to_dict() for m in messages]}
        sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    else:
        _print_history(messages, sys.stdout)
    return EXIT_OK


async def _delete(args: argparse.Namespace) -> int:
    session_id = check_session_id(args.session_id)
    async with _open_store(args, persistent=True) as store:
        if not await store.delete(session_id):
            raise _Fail(EXIT_NOT_FOUND, f"no session {session_id!r} ({_describe(store)})")
    sys.stdout.write(f"deleted {session_id!r}\n")
    return EXIT_OK


async def _sessions(args: argparse.Namespace) -> int:
    async with _open_store(args, persistent=True) as store:
        assert isinstance(store, RedisStore)
        seen: set[str] = set()  # SCAN may return an id twice while the keyspace rehashes
        found: list[str] = []
        async for session_id in store.sessions(args.prefix):
            if session_id not in seen:
                seen.add(session_id)
                found.append(session_id)
                if not args.json:
                    # repr() keeps an id with a line break on one line.
                    line = session_id if session_id.isprintable() else repr(session_id)
                    sys.stdout.write(line + "\n")
    if args.json:
        sys.stdout.write(json.dumps(sorted(found), ensure_ascii=False) + "\n")
    return EXIT_OK


def _flatten(value: Any, name: str = "") -> list[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif not isinstance(value, (dict, str, int, float, bool, type(None))) and hasattr(
        value, "__dict__"
    ):
        value = {k: v for k, v in vars(value).items() if not k.startswith("_")}
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = []
        for key, item in value.items():
            items += _flatten(item, f"{name}.{key}" if name else str(key))
        return items
    return [(name, value)]


async def _stats(args: argparse.Namespace) -> int:
    async with _open_store(args, persistent=True) as store:
        metrics = getattr(store, "metrics", None)
        if metrics is None:
            raise _Fail(EXIT_USAGE, f"{type(store).__name__} does not report metrics")
        snapshot = await metrics()
    items = _flatten(snapshot)
    if args.json:
        sys.stdout.write(json.dumps(dict(items)) + "\n")
    else:
        width = max((len(k) for k, _ in items), default=0)
        for key, value in items:
            shown = "-" if value is None else f"{value:.6f}" if isinstance(value, float) else value
            sys.stdout.write(f"{key:<{width}}  {shown}\n")
    return EXIT_OK


# -- arguments -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="promptkit-async",
        description="Conversation state for LLM applications: a demo, a terminal chat, "
        "and tools for the people who operate the store.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="two turns on the in-memory store, streamed, remembered")
    demo.add_argument(
        "--delay", type=float, default=0.04, help="seconds between streamed words (default 0.04)"
    )

    store = _Parser(add_help=False)
    store.add_argument(
        "--store", metavar="URL", help='"memory" or a Redis URL (default: $REDIS_URL)'
    )
    store.add_argument(
        "--key-prefix",
        metavar="P",
        help="Redis key namespace (default: $PROMPTKIT_PREFIX, else promptkit)",
    )

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=description,
            parents=[store],
            epilog="exit status: see `promptkit-async --help`",
        )

    chat = command(
        "chat",
        "chat in the terminal (reads lines from a pipe too)",
        "Chat in the terminal, the reply streamed as it arrives. With stdin not a "
        "terminal, each input line is one message, each reply one output line, and "
        "the command ends at end of input. Without a provider key it uses the offline "
        "scripted provider.",
    )
    chat.add_argument("--session", metavar="ID", help="session id (default: cli-<user name>)")
    chat.add_argument(
        "--provider",
        choices=("scripted", "openai", "anthropic"),
        help="default: from the keys set in the environment",
    )
    chat.add_argument("--model", metavar="M", help="model name (default: $PROMPTKIT_MODEL)")
    chat.add_argument("--system", metavar="S", help="system prompt (sent, never stored)")
    chat.add_argument(
        "--delay", type=float, help="scripted provider: seconds between words (default 0.03)"
    )

    history = command(
        "history", "print a session's messages", "Print a session's stored messages, oldest first."
    )
    history.add_argument("session_id", metavar="ID")
    history.add_argument("--json", action="store_true", help='{"session_id":..., "messages":[...]}')

    delete = command("delete", "erase a session", "Erase a session's history.")
    delete.add_argument("session_id", metavar="ID")

    sessions = command(
        "sessions",
        "list session ids",
        "List the ids of stored sessions, page by page (SCAN, never KEYS; every primary "
        "of a Cluster). The prefix is literal: * ? [ ] in it match only themselves.",
    )
    sessions.add_argument("--prefix", default="", metavar="P", help="only ids starting with P")
    sessions.add_argument("--json", action="store_true", help="print a sorted JSON array")

    stats = command(
        "stats",
        "print store metrics",
        "Print the store's metrics: active sessions, average history size, storage used, "
        "and this process's load/save latencies (none yet in a fresh process).",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


_COMMANDS = {
    "chat": _chat,
    "history": _history,
    "delete": _delete,
    "sessions": _sessions,
    "stats": _stats,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return asyncio.run(_demo(args.delay))
        return asyncio.run(_COMMANDS[args.command](args))
    except _Fail as exc:
        _err(str(exc))
        return exc.code
    except InvalidSessionId as exc:
        _err(f"invalid session id: {exc}")
        return EXIT_USAGE
    except StoreUnavailable as exc:
        _err(f"store unavailable: {exc}")
        return EXIT_STORE
    except StoreError as exc:
        _err(f"store error: {exc}")
        return EXIT_STORE
    except ProviderError as exc:
        _err(f"provider error: {exc}")
        return EXIT_PROVIDER
    except InvalidMessage as exc:
        _err(f"invalid message: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted (a turn in progress was not saved)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `promptkit-async sessions | head`
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
