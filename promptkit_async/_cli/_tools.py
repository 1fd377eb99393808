"""``history``, ``export``, ``import``, ``delete``, ``sessions``, ``conversations``,
``fork`` and ``stats``: tools for the people who run the store."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

from .._config import check_session_id
from .._exceptions import (
    ConversationExists,
    ConversationNotFound,
    InvalidCursor,
    InvalidMessage,
    InvalidSessionId,
    MessageNotFound,
    SessionExists,
)
from .._messages import Message
from ._chat import print_history
from ._common import (
    EXIT_EXISTS,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_STORE,
    EXIT_USAGE,
    Fail,
    describe,
    open_store,
)

if TYPE_CHECKING:
    import argparse

    from .._info import ConversationInfo

__all__ = ["conversations", "delete", "export", "fork", "history", "import_", "sessions", "stats"]


async def history(args: argparse.Namespace) -> int:
    session_id = check_session_id(args.session_id)
    async with open_store(args, persistent=True) as store:
        messages = await store.load(session_id)
        if not messages:
            raise Fail(EXIT_NOT_FOUND, f"no session {session_id!r} ({describe(store)})")
        summary = await store.summary(session_id)
    if args.json:
        body = {
            "session_id": session_id,
            "summary": None if summary is None else summary.to_dict(),
            "messages": [m.to_dict() for m in messages],
        }
        sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    else:
        if summary is not None:
            sys.stdout.write(
                f"summary of the {summary.covered} messages up to {summary.upto}:\n"
                f"  {summary.text}\n\n"
            )
        print_history(messages, sys.stdout)
    return EXIT_OK


async def export(args: argparse.Namespace) -> int:
    """One JSON object per line (``Message.to_dict``): every field, ids and times included."""
    session_id = check_session_id(args.session_id)
    async with open_store(args, persistent=True) as store:
        messages = await store.load(session_id)
        if not messages:
            raise Fail(EXIT_NOT_FOUND, f"no session {session_id!r} ({describe(store)})")
    out = sys.stdout
    for m in messages:
        out.write(json.dumps(m.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n")
    return EXIT_OK


def _read_messages(lines: Any) -> list[Message]:
    messages: list[Message] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            messages.append(Message.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:  # InvalidMessage and JSONDecodeError included
            raise Fail(EXIT_USAGE, f"input line {number}: not a message: {exc}") from None
    return messages


async def import_(args: argparse.Namespace) -> int:
    """Restore a session from ``export``'s lines on stdin, in one atomic write."""
    session_id = check_session_id(args.session_id)
    messages = _read_messages(sys.stdin)
    if not messages:
        raise Fail(EXIT_USAGE, "no messages on standard input (one JSON object per line)")
    async with open_store(args, persistent=True) as store:
        try:
            stored = await store.restore(session_id, messages, replace=args.replace)
        except SessionExists:
            raise Fail(
                EXIT_EXISTS,
                f"session {session_id!r} already has history ({describe(store)}): "
                "not merged; pass --replace to overwrite it",
            ) from None
        except InvalidMessage as exc:
            raise Fail(EXIT_USAGE, f"cannot import: {exc}") from None
    sys.stdout.write(f"imported {len(stored)} messages into {session_id!r}\n")
    return EXIT_OK


async def delete(args: argparse.Namespace) -> int:
    session_id = check_session_id(args.session_id)
    async with open_store(args, persistent=True) as store:
        if not await store.delete(session_id):
            raise Fail(EXIT_NOT_FOUND, f"no session {session_id!r} ({describe(store)})")
    sys.stdout.write(f"deleted {session_id!r}\n")
    return EXIT_OK


async def sessions(args: argparse.Namespace) -> int:
    async with open_store(args, persistent=True) as store:
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


def _shown(text: str) -> str:
    """``text`` on one line: repr() for an id or title with a line break or a tab."""
    return text if text.isprintable() else repr(text)


async def conversations(args: argparse.Namespace) -> int:
    """Every conversation of an owner, newest first: the listing followed to its end.

    Text lines are written as each page arrives, so a long listing starts at once.
    """
    try:
        owner = check_session_id(args.owner)
    except InvalidSessionId as exc:
        raise Fail(EXIT_USAGE, f"invalid owner: {exc}") from None
    out = sys.stdout
    found: list[ConversationInfo] = []
    async with open_store(args, persistent=True) as store:
        cursor: str | None = None
        while True:
            try:
                page = await store.conversations(owner, limit=args.limit, cursor=cursor)
            except InvalidCursor:  # the listing's snapshot expired between two pages
                raise Fail(
                    EXIT_STORE,
                    f"the listing of {owner!r} expired while it was read ({describe(store)}): "
                    "run the command again",
                ) from None
            for info in page.items:
                if args.json:
                    found.append(info)
                else:
                    title = "-" if info.title is None else _shown(info.title)
                    when = info.updated_at.isoformat(timespec="milliseconds")
                    out.write(f"{_shown(info.id)}  {when}  {info.message_count}  {title}\n")
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    if args.json:
        out.write(json.dumps([i.to_dict() for i in found], ensure_ascii=False) + "\n")
    return EXIT_OK


async def fork(args: argparse.Namespace) -> int:
    """Copy a conversation, up to a message, into a new id (one atomic write)."""
    source_id, new_id = check_session_id(args.source), check_session_id(args.new)
    if source_id == new_id:
        raise Fail(EXIT_USAGE, "a fork needs a NEW id, not its SOURCE's")
    async with open_store(args, persistent=True) as store:
        where = describe(store)
        try:
            info = await store.fork(
                source_id, new_id, upto=args.upto, title=args.title, replace=args.replace
            )
        except ConversationNotFound:
            raise Fail(EXIT_NOT_FOUND, f"no conversation {source_id!r} ({where})") from None
        except MessageNotFound:
            raise Fail(
                EXIT_NOT_FOUND,
                f"conversation {source_id!r} keeps no message {args.upto!r} ({where})",
            ) from None
        except ConversationExists:
            raise Fail(
                EXIT_EXISTS,
                f"conversation {new_id!r} already exists ({where}): not overwritten; "
                "pass --replace to overwrite it",
            ) from None
    sys.stdout.write(f"forked {source_id!r} into {new_id!r} ({info.message_count} messages)\n")
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


async def stats(args: argparse.Namespace) -> int:
    async with open_store(args, persistent=True) as store:
        metrics = getattr(store, "metrics", None)
        if metrics is None:
            raise Fail(EXIT_USAGE, f"{type(store).__name__} does not report metrics")
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
