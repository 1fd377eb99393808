"""Pure trimming of a history to the window sent to the model.

The window must be something every chat API accepts: it never starts with a
``tool`` result, because the assistant message holding its ``tool_calls`` would
have been cut off and the API rejects an orphan result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._messages import Message

__all__ = ["TokenCounter", "estimate_tokens", "trim"]

TokenCounter = Callable[[Message], int]


def estimate_tokens(message: Message) -> int:
    """A tokenizer-free estimate: about 4 characters per token, plus framing.

    Real tokenizers need vocabulary files that cannot be fetched at run time, so
    the default errs on the generous side (a quarter of the characters, rounded
    up, plus 4 tokens of per-message overhead). Pass your own counter for exact
    budgets.
    """
    chars = len(message.text)
    for call in message.tool_calls:
        chars += len(call.name) + len(call.arguments) + len(call.id)
    return -(-chars // 4) + 4


def trim(
    messages: Sequence[Message],
    max_messages: int | None,
    *,
    max_tokens: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> list[Message]:
    """Keep the newest messages within both limits, with no orphan tool result first."""
    start = 0
    n = len(messages)
    if max_messages is not None and n > max_messages:
        start = n - max_messages
    if max_tokens is not None:
        budget = max_tokens
        i = n
        while i > start:
            cost = count_tokens(messages[i - 1])
            if cost > budget:
                break
            budget -= cost
            i -= 1
        start = i
    while start < n and messages[start].role == "tool":
        start += 1
    return list(messages[start:]) if start else list(messages)
