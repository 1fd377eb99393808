"""promptkit_async: asyncio-native conversation state for LLM applications."""

from ._exceptions import CorruptHistory as CorruptHistory
from ._exceptions import InvalidMessage as InvalidMessage
from ._exceptions import InvalidSessionId as InvalidSessionId
from ._exceptions import PromptKitError as PromptKitError
from ._exceptions import SessionBusy as SessionBusy
from ._exceptions import StoreUnavailable as StoreUnavailable
from ._messages import Message as Message
from ._messages import ToolCall as ToolCall

__version__ = "0.1.0"
