"""promptkit_async: asyncio-native conversation state for LLM applications.

``async with Session(store, session_id)`` locks the session, loads and trims its
history, and writes the turn's new messages back in one atomic operation.
"""

from ._app import Conversations as Conversations
from ._app import SessionSettings as SessionSettings
from ._config import DEFAULT_MAX_MESSAGES as DEFAULT_MAX_MESSAGES
from ._config import DEFAULT_TTL as DEFAULT_TTL
from ._env import DEFAULT_ANTHROPIC_MODEL as DEFAULT_ANTHROPIC_MODEL
from ._env import DEFAULT_OPENAI_MODEL as DEFAULT_OPENAI_MODEL
from ._env import provider_from_env as provider_from_env
from ._env import store_from_env as store_from_env
from ._exceptions import CommitOutcomeUnknown as CommitOutcomeUnknown
from ._exceptions import CorruptHistory as CorruptHistory
from ._exceptions import InvalidMessage as InvalidMessage
from ._exceptions import InvalidSessionId as InvalidSessionId
from ._exceptions import LockLost as LockLost
from ._exceptions import MessageTooLarge as MessageTooLarge
from ._exceptions import PromptKitError as PromptKitError
from ._exceptions import ProviderAuthError as ProviderAuthError
from ._exceptions import ProviderError as ProviderError
from ._exceptions import ProviderStatusError as ProviderStatusError
from ._exceptions import ProviderStreamError as ProviderStreamError
from ._exceptions import ProviderUnavailable as ProviderUnavailable
from ._exceptions import RateLimited as RateLimited
from ._exceptions import SessionBusy as SessionBusy
from ._exceptions import SessionError as SessionError
from ._exceptions import SessionStateError as SessionStateError
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreRejected as StoreRejected
from ._exceptions import StoreUnavailable as StoreUnavailable
from ._locks import LockRegistry as LockRegistry
from ._messages import Message as Message
from ._messages import ToolCall as ToolCall
from ._metrics import LatencySummary as LatencySummary
from ._metrics import Observer as Observer
from ._metrics import StateMetrics as StateMetrics
from ._session import ReplyStream as ReplyStream
from ._session import Session as Session
from ._trim import estimate_tokens as estimate_tokens
from ._trim import trim as trim
from .providers import AnthropicProvider as AnthropicProvider
from .providers import OpenAIProvider as OpenAIProvider
from .providers import Provider as Provider
from .providers import ReplyDone as ReplyDone
from .providers import ScriptedProvider as ScriptedProvider
from .providers import StreamEvent as StreamEvent
from .providers import TextDelta as TextDelta
from .stores import MemoryStore as MemoryStore
from .stores import RedisStore as RedisStore
from .stores import Store as Store

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "AnthropicProvider",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_TTL",
    "CommitOutcomeUnknown",
    "Conversations",
    "CorruptHistory",
    "InvalidMessage",
    "InvalidSessionId",
    "LatencySummary",
    "LockLost",
    "LockRegistry",
    "MemoryStore",
    "Message",
    "MessageTooLarge",
    "Observer",
    "OpenAIProvider",
    "PromptKitError",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderStreamError",
    "ProviderUnavailable",
    "RateLimited",
    "RedisStore",
    "ReplyDone",
    "ReplyStream",
    "ScriptedProvider",
    "Session",
    "SessionBusy",
    "SessionError",
    "SessionSettings",
    "SessionStateError",
    "StateMetrics",
    "Store",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "estimate_tokens",
    "provider_from_env",
    "store_from_env",
    "trim",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj) and hasattr(_obj, "__module__"):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover - aliases such as StreamEvent
            pass
del _name, _obj
