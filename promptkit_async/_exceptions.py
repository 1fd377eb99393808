"""The whole error tree of promptkit_async.

Every error the library raises on purpose derives from :class:`PromptKitError`,
so ``except PromptKitError`` catches all of them and nothing from redis-py or
httpx escapes unmapped. Each store error says what was written: *not stored*
(``StoreUnavailable``, ``StoreRejected``, ``LockLost``: retrying is safe) is a
different class from *maybe stored* (``CommitOutcomeUnknown``: reload before
retrying) and from *stored but not replicated* (``CommitNotReplicated``: do not
retry; it may be lost on a failover)::

    PromptKitError
    ├── InvalidSessionId (+ValueError)       empty, non-string, oversize session id
    ├── InvalidMessage (+ValueError)         unknown role, non-string content, ...
    │   └── MessageTooLarge                  one message or one turn over the limit
    ├── MessageNotFound (+LookupError)       a message id the session does not hold
    ├── SessionExists                        an import into a session that has history
    │   └── ConversationExists               a fork onto an id that is taken
    ├── OwnerMismatch                        the conversation belongs to another owner
    ├── ConversationNotFound (+LookupError)  a fork of a conversation that does not exist
    ├── InvalidCursor (+ValueError)          a listing cursor that is malformed or expired
    ├── SessionError
    │   ├── SessionStateError (+RuntimeError)  used outside ``async with``, reused
    │   ├── SessionBusy (+TimeoutError)        lock not acquired within lock_timeout
    │   └── LockLost                           lease lost: NOT stored (.unsaved)
    ├── StoreError
    │   ├── StoreUnavailable                 unreachable / timed out: NOT stored (.unsaved)
    │   ├── CommitOutcomeUnknown             reply lost, unsettled: MAYBE stored (.turn_id)
    │   ├── CommitNotReplicated              stored on the primary, too few replicas acknowledged
    │   ├── StoreRejected                    the store refused: NOT stored (.unsaved)
    │   ├── StoreProtocolError               a reply of the wrong shape (nothing concluded)
    │   ├── UnsupportedServer                the server is older than the store needs
    │   └── CorruptHistory                   a stored record cannot be decoded
    └── ProviderError
        ├── ProviderUnavailable              network failure, connect/read timeout
        ├── ProviderStatusError              non-2xx reply (.status_code, .body, ...)
        │   ├── ProviderAuthError            401 / 403
        │   └── RateLimited                  429 (.retry_after)
        └── ProviderStreamError              error event mid-stream, bad SSE/NDJSON, no terminator
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._messages import Message

__all__ = [
    "CommitNotReplicated",
    "CommitOutcomeUnknown",
    "ConversationExists",
    "ConversationNotFound",
    "CorruptHistory",
    "InvalidCursor",
    "InvalidMessage",
    "InvalidSessionId",
    "LockLost",
    "MessageNotFound",
    "MessageTooLarge",
    "OwnerMismatch",
    "PromptKitError",
    "ProviderAuthError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderStreamError",
    "ProviderUnavailable",
    "RateLimited",
    "SessionBusy",
    "SessionError",
    "SessionExists",
    "SessionStateError",
    "StoreError",
    "StoreProtocolError",
    "StoreRejected",
    "StoreUnavailable",
    "UnsupportedServer",
]


def _restore(
    cls: type[PromptKitError], args: tuple[object, ...], state: dict[str, object]
) -> PromptKitError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class PromptKitError(Exception):
    """Root of every error raised by promptkit_async."""

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes are not in ``args``: pickle the state instead,
        # so errors cross process boundaries (multiprocessing, task queues).
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class InvalidSessionId(PromptKitError, ValueError):
    """The session id is not a non-empty string the stores can key on."""


class InvalidMessage(PromptKitError, ValueError):
    """A message is malformed: unknown role, wrong types, missing tool_call_id."""


class MessageTooLarge(InvalidMessage):
    """One message, or all messages of one turn, exceed the configured size limit."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class MessageNotFound(PromptKitError, LookupError):
    """No message with that id is kept in the session (trimmed, expired, or never stored).

    Raised for a paging cursor (``load(..., before=id)``) rather than
    returning an empty page, which would look like the start of the
    conversation.
    """

    def __init__(self, session_id: str, message_id: str) -> None:
        super().__init__(f"session {session_id!r} holds no message with id {message_id!r}")
        self.session_id = session_id
        self.message_id = message_id


class SessionExists(PromptKitError):
    """A restore (import) was asked to write into a session that already has history.

    Nothing was written; pass ``replace=True`` to overwrite it.
    """

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} already has history: not merged (replace=True overwrites it)"
        )
        self.session_id = session_id


class ConversationExists(SessionExists):
    """A fork (or copy) was asked to write onto an id that already holds a conversation.

    Nothing was written; pass ``replace=True`` to overwrite it.
    """

    def __init__(self, session_id: str) -> None:
        PromptKitError.__init__(
            self,
            f"conversation {session_id!r} already exists: not overwritten (replace=True does)",
        )
        self.session_id = session_id


class OwnerMismatch(PromptKitError):
    """The conversation belongs to another owner; nothing was written or read.

    The message names neither owner, so that it can be shown to the caller
    without telling them whose conversation it is.
    """

    def __init__(self, session_id: str) -> None:
        super().__init__(f"conversation {session_id!r} belongs to another owner")
        self.session_id = session_id


class ConversationNotFound(PromptKitError, LookupError):
    """No conversation has that id (a fork's source, say): nothing was written."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no conversation {session_id!r}")
        self.session_id = session_id


class InvalidCursor(PromptKitError, ValueError):
    """A listing cursor that this store did not hand out, or that has expired."""


class SessionError(PromptKitError):
    """A session was used in a way its lifecycle does not allow."""


class SessionStateError(SessionError, RuntimeError):
    """The session is used outside its ``async with`` block, or entered twice."""


class SessionBusy(SessionError, TimeoutError):
    """The per-session lock was not acquired within ``lock_timeout``."""

    def __init__(self, session_id: str, timeout: float) -> None:
        super().__init__(f"session {session_id!r} is busy: lock not acquired within {timeout:g}s")
        self.session_id = session_id
        self.timeout = timeout


class LockLost(SessionError):
    """The distributed lease on the session expired or was taken over mid-turn.

    Nothing was written: the commit was fenced out. ``unsaved`` holds the
    turn's messages.
    """

    def __init__(self, message: str, *, session_id: str, unsaved: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.unsaved: tuple[Message, ...] = tuple(unsaved)


class StoreError(PromptKitError):
    """A store failed to load or save (each subclass says what was written)."""


class StoreUnavailable(StoreError):
    """The store could not be reached or did not answer in time.

    Nothing was written. On a failed save, ``unsaved`` holds the messages that
    were not written, so that the caller can retry them (safely: they are not
    stored) or report them instead of losing them silently.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        unsaved: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.unsaved: tuple[Message, ...] = tuple(unsaved)


class CommitOutcomeUnknown(StoreError):
    """A commit was sent but its reply was lost, and settling it by turn id failed.

    The turn may or may not be stored; it is never stored twice. Do not
    re-send it blindly: reload the history, or settle it later by ``turn_id``
    (``store.settle_turn`` / ``RedisStore.turn_status``). ``unsaved`` holds the
    turn's messages, which may be the ones stored.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: str,
        turn_id: str,
        unsaved: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.turn_id = turn_id
        self.unsaved: tuple[Message, ...] = tuple(unsaved)


class CommitNotReplicated(StoreError):
    """A commit was applied on the primary, but fewer replicas than required acknowledged it.

    Raised by a store with ``min_replicas`` set: the turn IS stored (on the
    primary, with its ids and times: ``messages``), exactly once, and readers
    see it; it is not a failure to retry. Only ``acknowledged`` of the
    ``required`` replicas confirmed it within the timeout, so a failover
    before replication catches up may lose it. Re-sending the messages would
    store them twice; after a failover, ``store.turn_status(session_id,
    turn_id)`` tells whether the turn survived ("applied") or was lost
    ("unknown"). ``unsaved`` holds the same messages as ``messages``: they are
    not durably saved. Not a subclass of ``StoreUnavailable`` (which means
    "not stored, retry") nor of ``CommitOutcomeUnknown`` (which means "maybe
    stored"): ``except StoreError`` catches it.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: str,
        turn_id: str,
        acknowledged: int,
        required: int,
        messages: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.turn_id = turn_id
        self.acknowledged = acknowledged
        self.required = required
        self.messages: tuple[Message, ...] = tuple(messages)
        self.unsaved: tuple[Message, ...] = self.messages

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(session_id={self.session_id!r}, turn_id={self.turn_id!r}, "
            f"acknowledged={self.acknowledged}, required={self.required})"
        )


class StoreRejected(StoreError):
    """The store answered but refused the operation (out of memory, wrong key type, ACL).

    Nothing was written; on a failed save ``unsaved`` holds the messages.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        unsaved: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.unsaved: tuple[Message, ...] = tuple(unsaved)


class StoreProtocolError(StoreError):
    """The store answered, but not with the reply its command promises.

    A server or proxy that is not fully Redis-compatible, or a connection out
    of step. Nothing is concluded from such a reply: a read fails with this
    error, and a commit is settled by its turn id as if its reply were lost
    (``CommitOutcomeUnknown`` if that fails too), never reported as saved.
    """

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id


class UnsupportedServer(StoreError):
    """The server is older than the store needs; nothing was sent but the version check.

    ``version`` is what the server reports, ``required`` the oldest the store
    supports.
    """

    def __init__(self, message: str, *, version: str, required: str) -> None:
        super().__init__(message)
        self.version = version
        self.required = required


class CorruptHistory(StoreError):
    """A stored record cannot be decoded into a :class:`Message` (a read: nothing written)."""

    def __init__(self, message: str, *, session_id: str, index: int | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.index = index


class ProviderError(PromptKitError):
    """A model provider call failed."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, or a connect/read timeout expired."""


class ProviderStatusError(ProviderError):
    """The provider answered with a non-2xx HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, message={str(self)!r})"


class ProviderAuthError(ProviderStatusError):
    """The provider rejected the credentials (401 / 403)."""


class RateLimited(ProviderStatusError):
    """The provider answered 429 after every allowed retry, or at once for a spent quota."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        body: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, body=body, request_id=request_id)
        self.retry_after = retry_after


class ProviderStreamError(ProviderError):
    """The reply stream broke: an error event, malformed data, or no terminator."""
