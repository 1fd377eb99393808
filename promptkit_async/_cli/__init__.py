"""The ``promptkit-async`` command line: a demo, a terminal chat, and store tools.

User errors (a bad URL, an unknown session, Redis down) end with one line on
stderr and an exit status, never a traceback; the statuses are listed in
``--help``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

from .._exceptions import (
    InvalidMessage,
    InvalidSessionId,
    ProviderError,
    StoreError,
    StoreUnavailable,
)
from . import _chat, _tools
from ._args import parser
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROVIDER,
    EXIT_STORE,
    EXIT_USAGE,
    Fail,
    err,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

_COMMANDS = {
    "chat": _chat.chat,
    "history": _tools.history,
    "export": _tools.export,
    "import": _tools.import_,
    "delete": _tools.delete,
    "sessions": _tools.sessions,
    "conversations": _tools.conversations,
    "fork": _tools.fork,
    "stats": _tools.stats,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "demo":
            return asyncio.run(_chat.demo(args.delay))
        return asyncio.run(_COMMANDS[args.command](args))
    except Fail as exc:
        err(str(exc))
        return exc.code
    except InvalidSessionId as exc:
        err(f"invalid session id: {exc}")
        return EXIT_USAGE
    except StoreUnavailable as exc:
        err(f"store unavailable: {exc}")
        return EXIT_STORE
    except StoreError as exc:
        err(f"store error: {exc}")
        return EXIT_STORE
    except ProviderError as exc:
        err(f"provider error: {exc}")
        return EXIT_PROVIDER
    except InvalidMessage as exc:
        err(f"invalid message: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err("interrupted (a turn in progress was not saved)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `promptkit-async sessions | head`
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
