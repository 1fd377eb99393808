"""An async bot: promptkit_async embedded in a long-running program serving many users.

Run it offline (scripted replies; in-memory store unless ``REDIS_URL`` is set)::

    python examples/bot.py                   # simulate 50 users x 3 conversations x 4 messages
    python examples/bot.py --users 5 --delay 0.05 --verbose
    printf '1 0 hi\\n1 2 hello\\n' | python examples/bot.py --stdin   # lines: USER CONV TEXT

Provider: ``OPENAI_API_KEY``/``OPENAI_BASE_URL``, ``ANTHROPIC_API_KEY``,
``GEMINI_API_KEY``/``GOOGLE_API_KEY`` or ``OLLAMA_HOST`` (model from
``PROMPTKIT_MODEL``) as in ``fastapi_chat.py``; with none, the scripted provider.

The message source is a stand-in for a chat service: an ``asyncio.Queue`` of
:class:`Incoming` events. Each user has a main conversation, session ``user-{id}``
(conversation 0), and more conversations ``user-{id}-conv-{n}``.

How it is built, and why:

- **Per-session order.** Each active session has a mailbox drained by one task,
  so a user's messages are answered in the order they arrived. (The session
  lock alone serialises turns but does not promise arrival order once a
  concurrency limit sits in front of it.) Sessions run concurrently.
- **Bounded work.** ``max_concurrency`` turns (model calls) run at once;
  ``max_pending`` bounds accepted-but-unfinished messages, so a flood waits in
  the source instead of in memory.
- **Graceful shutdown.** :meth:`Bot.stop` (first SIGINT/SIGTERM, or end of
  input) stops taking messages and lets turns in flight finish. Accepted
  messages that have not started are handed back by :meth:`Bot.run` (a real
  bot would leave them unacknowledged for redelivery). A second signal, or the
  ``grace`` period running out, calls :meth:`Bot.abort`: turns in flight are
  cancelled, and a cancelled turn writes nothing. Either way a conversation
  only ever holds whole turns: the user message and its reply are saved
  together, atomically, when the turn's ``async with`` block exits cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from promptkit_async import Conversations, PromptKitError, provider_from_env, store_from_env

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


__all__ = ["Bot", "Incoming", "main"]

logger = logging.getLogger("bot")


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message from the chat service: who, which of their conversations, what."""

    user_id: str
    conv: int
    text: str

    @property
    def session_id(self) -> str:
        if self.conv == 0:
            return f"user-{self.user_id}"
        return f"user-{self.user_id}-conv-{self.conv}"


async def _ignore(message: Incoming, reply: str) -> None:
    pass


class Bot:
    """Answers :class:`Incoming` messages from a queue, many sessions at a time.

    Args:
        chats: the store, provider and session settings.
        on_reply: awaited with each message and its reply, after the turn was saved.
        max_concurrency: turns (model calls) running at once.
        max_pending: messages accepted from the source and not finished yet.
    """

    def __init__(
        self,
        chats: Conversations,
        *,
        on_reply: Callable[[Incoming, str], Awaitable[None]] = _ignore,
        max_concurrency: int = 32,
        max_pending: int = 1024,
    ) -> None:
        self.chats = chats
        self.on_reply = on_reply
        self.completed = 0  # turns saved and replied to
        self.failed = 0  # turns that raised (nothing saved)
        self.cancelled = 0  # turns cut short by abort() (nothing saved)
        self._turns = asyncio.Semaphore(max_concurrency)
        self._slots = asyncio.Semaphore(max_pending)
        self._boxes: dict[str, deque[Incoming]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._intake: asyncio.Task[None] | None = None
        self._stopping = False
        self._abort_timer: asyncio.TimerHandle | None = None
        self._leftover: list[Incoming] = []
        self._source: asyncio.Queue[Incoming] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def in_flight(self) -> int:
        """Sessions with a turn running or messages waiting."""
        return len(self._workers)

    async def run(self, source: asyncio.Queue[Incoming]) -> list[Incoming]:
        """Serve ``source`` until :meth:`stop`; return accepted messages never started.

        ``source.task_done()`` is called once per accepted message when its
        turn is over (saved, failed, cancelled or handed back), so
        ``await source.join()`` waits until everything queued was served.
        Cancelling ``run`` aborts: turns in flight are cancelled, nothing half-done is written.
        """
        self._source = source
        self._intake = asyncio.create_task(self._take(source), name="bot-intake")
        try:
            await asyncio.wait({self._intake})
            while self._workers:
                await asyncio.wait(set(self._workers))
        except asyncio.CancelledError:
            self.abort()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._workers, return_exceptions=True)
            raise
        finally:
            if self._abort_timer is not None:
                self._abort_timer.cancel()
        leftover, self._leftover = self._leftover, []
        for _ in leftover:
            source.task_done()
        return leftover

    def stop(self, grace: float | None = None) -> None:
        """Take no more messages; let turns in flight finish (abort them after ``grace`` s)."""
        self._stopping = True
        if self._intake is not None:
            self._intake.cancel()  # Queue.get and Semaphore.acquire are cancellation-safe
        if grace is not None and self._abort_timer is None:
            self._abort_timer = asyncio.get_running_loop().call_later(grace, self.abort)

    def abort(self) -> None:
        """Cancel turns in flight now; each writes nothing."""
        self.stop()
        for task in self._workers:
            task.cancel()

    async def _take(self, source: asyncio.Queue[Incoming]) -> None:
        # Only stop() cancels this task: here a cancellation means "stop taking".
        with contextlib.suppress(asyncio.CancelledError):
            while not self._stopping:
                await self._slots.acquire()
                try:
                    message = await source.get()
                except BaseException:
                    self._slots.release()
                    raise
                self._dispatch(message)

    def _dispatch(self, message: Incoming) -> None:
        box = self._boxes.get(message.session_id)
        if box is None:
            box = self._boxes[message.session_id] = deque()
            task = asyncio.create_task(self._drain(message.session_id, box))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        box.append(message)

    async def _drain(self, session_id: str, box: deque[Incoming]) -> None:
        """Answer one session's messages in order, one at a time."""
        try:
            while box and not self._stopping:
                async with self._turns:
                    if self._stopping:  # stopped while waiting for a free slot
                        break
                    message = box.popleft()
                    try:
                        await self._turn(message)
                    finally:
                        self._finished()
        finally:
            # No await between the last check of `box` and here: no message can
            # arrive for this session unseen.
            del self._boxes[session_id]
            self._leftover.extend(box)

    def _finished(self) -> None:
        self._slots.release()
        if self._source is not None:
            self._source.task_done()

    async def _turn(self, message: Incoming) -> None:
        try:
            async with self.chats.session(message.session_id) as session:
                reply = await session.send(message.text)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except PromptKitError as exc:
            # Nothing was saved; a real bot would tell the user to try again.
            self.failed += 1
            logger.warning("%s: turn failed, nothing saved: %s", message.session_id, exc)
            return
        self.completed += 1
        await self.on_reply(message, reply.text)


# -- running it ---------------------------------------------------------------------


async def _simulate(queue: asyncio.Queue[Incoming], users: int, convs: int, messages: int) -> None:
    """Interleave every user's conversations, as a busy chat service would."""
    for n in range(messages):
        for conv in range(convs):
            for user in range(users):
                await queue.put(Incoming(str(user), conv, f"message {n} of conversation {conv}"))
    await queue.join()


def _read_stdin(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Incoming | None]) -> None:
    """A daemon thread: blocking reads never hold up the loop, nor exit."""
    for line in sys.stdin:
        parts = line.strip().split(maxsplit=2)
        if len(parts) == 3 and parts[1].isdigit():
            item = Incoming(parts[0], int(parts[1]), parts[2])
            loop.call_soon_threadsafe(queue.put_nowait, item)
        elif parts:
            print(f"ignored (expected USER CONV TEXT): {line.strip()!r}", file=sys.stderr)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def _from_stdin(queue: asyncio.Queue[Incoming]) -> None:
    lines: asyncio.Queue[Incoming | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_read_stdin, args=(loop, lines), daemon=True).start()
    while (item := await lines.get()) is not None:
        await queue.put(item)
    await queue.join()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdin", action="store_true", help="read USER CONV TEXT lines")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--convs", type=int, default=3, help="conversations per user")
    parser.add_argument("--messages", type=int, default=4, help="messages per conversation")
    parser.add_argument("--concurrency", type=int, default=32, help="turns at once")
    parser.add_argument("--delay", type=float, default=0.0, help="scripted seconds per word")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to finish on stop")
    parser.add_argument("--verbose", action="store_true", help="print every reply")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    async def show(message: Incoming, reply: str) -> None:
        if args.verbose or args.stdin:
            print(f"[{message.session_id}] {reply}", flush=True)

    chats = Conversations(
        store_from_env(), provider=provider_from_env(scripted_delay=args.delay), system="Be brief."
    )
    async with chats:
        bot = Bot(chats, on_reply=show, max_concurrency=args.concurrency)
        queue: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=1000)
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if bot.stopping:
                print("second signal: cancelling turns in flight", file=sys.stderr)
                bot.abort()
            else:
                print("stopping: finishing turns in flight (again to cancel)", file=sys.stderr)
                bot.stop(grace=args.grace)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C cancels run()
                loop.add_signal_handler(sig, on_signal)
        runner = asyncio.create_task(bot.run(queue))
        if args.stdin:
            feeder = _from_stdin(queue)
        else:
            feeder = _simulate(queue, args.users, args.convs, args.messages)
        feeding = asyncio.create_task(feeder)
        await asyncio.wait({feeding, runner}, return_when=asyncio.FIRST_COMPLETED)
        bot.stop(grace=args.grace)
        leftover = await runner
        feeding.cancel()
        print(
            f"{bot.completed} turns saved, {bot.failed} failed, {bot.cancelled} cancelled, "
            f"{len(leftover)} handed back unstarted",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
