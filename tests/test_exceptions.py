"""The error tree: what each error carries, and that errors cross process boundaries."""

from __future__ import annotations

import pickle

from promptkit_async import (
    CommitOutcomeUnknown,
    CorruptHistory,
    LockLost,
    Message,
    MessageTooLarge,
    SessionBusy,
    StoreUnavailable,
)


def test_errors_survive_pickling() -> None:
    errors: list[Exception] = [
        SessionBusy("s", 1.5),
        CorruptHistory("bad", session_id="s", index=3),
        CommitOutcomeUnknown("lost", session_id="s", turn_id="t", unsaved=[Message.user("x")]),
        LockLost("lost", session_id="s"),
        MessageTooLarge("big", size=10, limit=5),
        StoreUnavailable("down", session_id="s", unsaved=[Message.user("y")]),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__ == error.__dict__
