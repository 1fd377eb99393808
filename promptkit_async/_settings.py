"""SessionSettings: the one definition of a session's options, validated once.

``Session(store, id, **options)``, ``Conversations(store, **options)`` and the
README's options table all come from this dataclass (a test holds the README
to it). A settings object is immutable and validated when built, so an
application builds it once and every session reuses it for free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Final, TypedDict

from ._compact import DEFAULT_TOOL_OUTPUT_THRESHOLD
from ._config import DEFAULT_MAX_MESSAGES, DEFAULT_TTL, check_limit, check_owner, ttl_seconds
from ._exceptions import InvalidMessage, MessageTooLarge
from ._messages import Message, message_bytes
from ._summary import SummarizerLike, as_summarizer
from ._trim import TokenCounter, estimate_tokens

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._types import TTL, OnError, OnLoadError

__all__ = [
    "DEFAULT_COMMIT_GRACE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_TURN_BYTES",
    "DEFAULT_SETTINGS",
    "SessionOptions",
    "SessionSettings",
]

#: Default limits on what one turn may write (UTF-8 bytes of text).
DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20
DEFAULT_MAX_TURN_BYTES: Final = 4 << 20
#: How long a cancelled block keeps waiting for its in-flight commit.
DEFAULT_COMMIT_GRACE: Final = 10.0
#: How long a summarizer call may take before it counts as failed.
DEFAULT_SUMMARY_TIMEOUT: Final = 120.0


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionSettings:
    """How a session loads, trims, calls the model and commits.

    Attributes:
        max_messages: the window a turn loads and sends (newest kept; None: all).
            It deletes nothing: what a session keeps is its store's ``max_stored``.
        ttl: sliding expiry, refreshed by each write: seconds or a timedelta,
            normalised to seconds (None keeps the session forever).
        system: system prompt: sent first on every call, never trimmed, never stored.
        lock_timeout: seconds to wait for the session lock (None: wait forever),
            then ``SessionBusy``.
        on_error: ``"discard"`` writes nothing when the block raises or is
            cancelled; ``"commit"`` writes what was staged anyway.
        on_load_error: ``"raise"`` raises StoreUnavailable when the history
            cannot be loaded; ``"empty"`` logs a warning and goes on with an
            empty history (the turn is still saved if the store is back).
        lazy: do not load on entry; load on the first ``await session.load()``,
            ``send`` or ``stream``. A block that only appends costs one round trip.
        max_tokens: optional token budget for the window (newest messages that fit).
        token_counter: counts a message's tokens (default: a ~4 chars/token estimate).
        save_unanswered: also save the user message when the provider fails
            (default: a turn is saved whole or not at all).
        max_message_bytes: size limit of one staged message (UTF-8 bytes of text).
        max_turn_bytes: size limit of everything one turn writes.
        commit_grace: seconds a cancelled block waits for its commit to be decided.
        owner: who the conversation belongs to: its first commit records it, and
            a commit naming another owner is refused (``OwnerMismatch``),
            writing nothing. None: not recorded, not checked.
        keep_tool_turns: compaction of stale tool output in what is sent (off
            when None, the default): tool results from before the last
            ``keep_tool_turns`` turns and over ``tool_output_threshold`` bytes
            are sent as a placeholder naming their size. Storage keeps them whole.
        tool_output_threshold: bytes above which an old tool result is compacted.
        summarizer: folds what leaves the window into a rolling summary, sent
            after the system prompt (a :class:`Summarizer` such as
            :class:`LLMSummarizer`, or an async function of ``(previous,
            messages)``). It runs in the background after the commit; the
            window is then the messages after the summary, from
            ``max_messages`` to ``3 * max_messages`` while it catches up.
        summary_lag: messages older than the window that may stay unsummarized
            before a summary is written (0: fold after every turn that needs it;
            more: fewer, larger summarizer calls).
        summary_timeout: seconds a summarizer call may take before it counts
            as failed (and is tried again later).

    Raises:
        TypeError, ValueError: a setting of the wrong type or out of range,
            naming it.
    """

    max_messages: int | None = DEFAULT_MAX_MESSAGES
    ttl: TTL = DEFAULT_TTL
    system: str | None = None
    lock_timeout: float | None = None
    on_error: OnError = "discard"
    on_load_error: OnLoadError = "raise"
    lazy: bool = False
    max_tokens: int | None = None
    token_counter: TokenCounter = field(default=estimate_tokens)
    save_unanswered: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_turn_bytes: int = DEFAULT_MAX_TURN_BYTES
    commit_grace: float = DEFAULT_COMMIT_GRACE
    owner: str | None = None
    keep_tool_turns: int | None = None
    tool_output_threshold: int = DEFAULT_TOOL_OUTPUT_THRESHOLD
    summarizer: SummarizerLike | None = None
    summary_lag: int = 0
    summary_timeout: float = DEFAULT_SUMMARY_TIMEOUT

    def __post_init__(self) -> None:
        check_limit("max_messages", self.max_messages)
        if self.owner is not None:
            object.__setattr__(self, "owner", check_owner(self.owner))
        object.__setattr__(self, "ttl", ttl_seconds(self.ttl))
        if self.system is not None and not isinstance(self.system, str):
            raise TypeError(f"system must be a str or None, got {type(self.system).__name__}")
        timeout = self.lock_timeout
        if timeout is not None and not (_is_number(timeout) and timeout >= 0):
            raise ValueError(f"lock_timeout must be >= 0 seconds or None, got {timeout!r}")
        if self.on_error not in ("discard", "commit"):
            raise ValueError(f"on_error must be 'discard' or 'commit', got {self.on_error!r}")
        if self.on_load_error not in ("raise", "empty"):
            raise ValueError(
                f"on_load_error must be 'raise' or 'empty', got {self.on_load_error!r}"
            )
        for flag in ("lazy", "save_unanswered"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        check_limit("max_tokens", self.max_tokens)
        if not callable(self.token_counter):
            raise TypeError(f"token_counter must be callable, got {self.token_counter!r}")
        for limit in ("max_message_bytes", "max_turn_bytes"):
            value = getattr(self, limit)
            if value is None:
                raise TypeError(f"{limit} must be an int, got None")
            check_limit(limit, value)
        check_limit("keep_tool_turns", self.keep_tool_turns)
        if self.tool_output_threshold is None:
            raise TypeError("tool_output_threshold must be an int, got None")
        check_limit("tool_output_threshold", self.tool_output_threshold, minimum=0)
        if self.summarizer is not None:
            as_summarizer(self.summarizer)
            if self.max_messages is None:
                raise ValueError(
                    "a summarizer folds what leaves the window: it needs max_messages (an int)"
                )
        if self.summary_lag is None:
            raise TypeError("summary_lag must be an int, got None")
        check_limit("summary_lag", self.summary_lag, minimum=0)
        patience = self.summary_timeout
        if not (_is_number(patience) and 0 < patience < math.inf):
            raise ValueError(f"summary_timeout must be > 0 seconds, got {patience!r}")
        grace = self.commit_grace
        if not (_is_number(grace) and 0 <= grace < math.inf):
            raise ValueError(f"commit_grace must be >= 0 seconds, got {grace!r}")

    def check_turn_size(self, size: int, messages: Iterable[Message]) -> int:
        """``size`` (bytes staged so far) plus ``messages``, checked against the limits.

        Raises:
            InvalidMessage: an item that is not a Message.
            MessageTooLarge: a message, or the turn, over its limit.
        """
        for m in messages:
            if type(m) is not Message and not isinstance(m, Message):
                raise InvalidMessage(
                    f"session.add() takes Message objects, got {type(m).__name__}; "
                    "use Message.user(...) etc."
                )
            content = m.content
            if type(content) is str and not m.tool_calls and content.isascii():
                n = len(content)  # message_bytes' common case, without the call
            else:
                n = message_bytes(m)
            if n > self.max_message_bytes:
                raise MessageTooLarge(
                    f"a {m.role} message of {n} bytes exceeds max_message_bytes="
                    f"{self.max_message_bytes}",
                    size=n,
                    limit=self.max_message_bytes,
                )
            size += n
        if size > self.max_turn_bytes:
            raise MessageTooLarge(
                f"this turn would write {size} bytes, over max_turn_bytes={self.max_turn_bytes}",
                size=size,
                limit=self.max_turn_bytes,
            )
        return size

    def replace(self, **changes: Any) -> SessionSettings:
        """A copy with ``changes`` applied (and validated).

        Raises:
            TypeError: an unknown option, or one of the wrong type.
            ValueError: an option out of range.
        """
        unknown = set(changes) - _NAMES
        if unknown:
            raise TypeError(
                f"unknown session option(s) {', '.join(sorted(unknown))}; "
                f"the options are: {', '.join(sorted(_NAMES))}"
            )
        return replace(self, **changes)

    def with_options(self, options: Mapping[str, Any]) -> SessionSettings:
        """:meth:`replace`, remembered: the same options on the same settings are
        validated once, however many sessions are opened with them."""
        global _last_derived
        last = _last_derived
        try:
            # The settings derived last, checked first: opening session after
            # session with the same options, this is a dict comparison and
            # nothing else (no key tuple to build and hash).
            if last[0] is self and last[1] == options:
                return last[2]
        except Exception:  # an option value that cannot be compared: look it up below
            pass
        try:
            key = (id(self), *options.items())
            hit = _derived.get(key)
        except TypeError:  # an unhashable option value: nothing to remember it by
            return self.replace(**options)
        if hit is not None and hit[0] is self:
            derived = hit[1]
        else:
            derived = self.replace(**options)
            if len(_derived) >= _DERIVED_MAX:
                _derived.clear()
            _derived[key] = (self, derived)
        # A copy of the options: the caller's mapping may change afterwards.
        _last_derived = (self, dict(options), derived)
        return derived


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_NAMES: Final = frozenset(f.name for f in fields(SessionSettings))

# Settings derived by with_options(), keyed by the base's id and the options. The
# entry holds the base, so its id cannot be reused while the entry lives.
_derived: dict[tuple[object, ...], tuple[SessionSettings, SessionSettings]] = {}
_DERIVED_MAX: Final = 256

#: The settings of ``Session(store, id)`` with no options.
DEFAULT_SETTINGS: Final = SessionSettings()

# The last (base, options, derived) of with_options(), which it checks first.
_last_derived: tuple[object, Mapping[str, Any], SessionSettings] = (None, {}, DEFAULT_SETTINGS)


class SessionOptions(TypedDict, total=False):
    """The keyword options of ``Session`` and ``Conversations``: SessionSettings' fields.

    Only a typing aid (so that ``Session(store, id, max_mesages=5)`` fails type
    checks); a test keeps it equal to :class:`SessionSettings`.
    """

    max_messages: int | None
    ttl: TTL
    system: str | None
    lock_timeout: float | None
    on_error: OnError
    on_load_error: OnLoadError
    lazy: bool
    max_tokens: int | None
    token_counter: TokenCounter
    save_unanswered: bool
    max_message_bytes: int
    max_turn_bytes: int
    commit_grace: float
    owner: str | None
    keep_tool_turns: int | None
    tool_output_threshold: int
    summarizer: SummarizerLike | None
    summary_lag: int
    summary_timeout: float
