"""The command line's arguments and help."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ._common import EXIT_USAGE, PAGE_SIZE

__all__ = ["parser"]

_EPILOG = """\
stores:
  --store is "memory" (in this process only, so for chat), an SQLite file
  (sqlite:///relative/chat.db or sqlite:////absolute/chat.db: no server, survives
  restarts) or a Redis URL: redis://[[user]:password@]host:port/db, rediss://... (TLS),
  unix:///path/redis.sock, redis+cluster://host:port (a Redis Cluster). It defaults to
  $PROMPTKIT_STORE, then $REDIS_URL.
  --key-prefix picks the key namespace (default $PROMPTKIT_PREFIX, else "promptkit").

providers (chat):
  OPENAI_API_KEY and/or OPENAI_BASE_URL (any OpenAI-compatible server), else
  ANTHROPIC_API_KEY, else GEMINI_API_KEY or GOOGLE_API_KEY, else OLLAMA_HOST;
  --provider responses uses the OpenAI Responses API with the OpenAI variables,
  --provider ollama a local server even without OLLAMA_HOST. The model is
  --model, else $PROMPTKIT_MODEL. With none set, chat uses the offline scripted
  provider (it echoes, showing what it remembers).

exit status:
  0    success (conversations of an unknown owner: none listed)
  1    unknown session (history, export, delete), fork source or --upto message
  2    usage error: bad arguments, bad store URL, invalid session id, missing key
  3    store unavailable or failing (Redis unreachable or timing out, corrupt data)
  4    provider error (chat)
  5    import into a session that has history, fork onto an existing id (pass --replace)
  130  interrupted (Ctrl-C)

examples:
  promptkit-async chat                                        offline, in memory
  printf 'hi\\nwhat did I say?\\n' | promptkit-async chat --store redis://localhost:6379
  promptkit-async history user-42 --store redis://localhost:6379 --json
  promptkit-async export user-42 --store redis://localhost:6379 > user-42.jsonl
  promptkit-async import user-42 --store redis://localhost:6379 < user-42.jsonl
  promptkit-async sessions --prefix user-42- --store redis://localhost:6379
  promptkit-async conversations ada --store redis://localhost:6379 --json
  promptkit-async fork chat-7 chat-7b --upto 3 --title "Take two" --store redis://localhost:6379
  promptkit-async delete user-42 --store redis://localhost:6379
  promptkit-async stats --store redis://localhost:6379
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _page_size(text: str) -> int:
    if not (text.isdigit() and 1 <= int(text) <= 1000):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 1000, got {text!r}")
    return int(text)


def _text(text: str) -> str:
    """A non-empty argument the store can encode (argv may carry undecodable bytes)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid UTF-8") from None
    return text


def parser() -> argparse.ArgumentParser:
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
        "--store",
        metavar="URL",
        help='"memory", sqlite:///FILE.db or a Redis URL (default: $PROMPTKIT_STORE, $REDIS_URL)',
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
        choices=("scripted", "openai", "responses", "anthropic", "gemini", "ollama"),
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

    export = command(
        "export",
        "write a session as JSON Lines",
        "Write a session's stored messages as JSON Lines, one message per line with every "
        "field (content parts, tool calls, metadata, id, created_at): what import reads.",
    )
    export.add_argument("session_id", metavar="ID")

    restore = command(
        "import",
        "restore a session from JSON Lines",
        "Restore a session from export's JSON Lines on standard input, in one atomic "
        "write, keeping ids and times. A session that already has history is left as "
        "it is unless --replace is given.",
    )
    restore.add_argument("session_id", metavar="ID")
    restore.add_argument(
        "--replace", action="store_true", help="overwrite the session if it has history"
    )

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

    conversations = command(
        "conversations",
        "list an owner's conversations, newest first",
        "List every conversation of OWNER, the most recently active first, one line each: "
        "id, last update, message count and title (- for none). The listing is read page "
        "by page to its end; each conversation is printed once, in the order they had when "
        "it started. An owner with no conversations lists none (exit status 0).",
    )
    conversations.add_argument("owner", metavar="OWNER")
    conversations.add_argument(
        "--limit",
        type=_page_size,
        default=PAGE_SIZE,
        metavar="N",
        help=f"conversations read per round trip, 1-1000 (default {PAGE_SIZE}); all are listed",
    )
    conversations.add_argument(
        "--json", action="store_true", help="print a JSON array of info objects"
    )

    fork = command(
        "fork",
        "copy a conversation into a new id",
        "Copy conversation SOURCE into NEW, up to and including message --upto (default: "
        "all of it), in one atomic write. The messages keep their ids and times, and NEW "
        "keeps SOURCE's owner, title (unless --title), metadata and expiry. An existing NEW "
        "is left as it is unless --replace is given.",
    )
    fork.add_argument("source", metavar="SOURCE")
    fork.add_argument("new", metavar="NEW")
    fork.add_argument(
        "--upto",
        type=_text,
        metavar="MESSAGE_ID",
        help="the id of the last message copied (history --json shows them)",
    )
    fork.add_argument("--title", type=_text, metavar="T", help="NEW's title (default: SOURCE's)")
    fork.add_argument("--replace", action="store_true", help="overwrite NEW if it exists")

    stats = command(
        "stats",
        "print store metrics",
        "Print the store's metrics: active sessions, average history size, storage used, "
        "and this process's load/save latencies (none yet in a fresh process).",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    return parser
