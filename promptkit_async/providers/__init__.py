"""Model providers: the protocol, and clients for OpenAI-compatible and Anthropic APIs."""

from ._base import Provider as Provider
from ._base import ReplyDone as ReplyDone
from ._base import StreamEvent as StreamEvent
from ._base import TextDelta as TextDelta

__all__ = ["Provider", "ReplyDone", "StreamEvent", "TextDelta"]
