"""promptkit_async: asyncio-native conversation state for LLM applications.

``async with Session(store, session_id)`` locks the session, loads and trims its
history, and writes the turn's new messages back in one atomic operation.
"""

from ._app import Conversations as Conversations
from ._config import DEFAULT_MAX_MESSAGES as DEFAULT_MAX_MESSAGES
from ._config import DEFAULT_MAX_STORED as DEFAULT_MAX_STORED
from ._config import DEFAULT_TTL as DEFAULT_TTL
from ._env import DEFAULT_ANTHROPIC_MODEL as DEFAULT_ANTHROPIC_MODEL
from ._env import DEFAULT_GEMINI_MODEL as DEFAULT_GEMINI_MODEL
from ._env import DEFAULT_OLLAMA_MODEL as DEFAULT_OLLAMA_MODEL
from ._env import DEFAULT_OPENAI_MODEL as DEFAULT_OPENAI_MODEL
from ._env import ProviderName as ProviderName
from ._env import provider_from_env as provider_from_env
from ._env import store_from_env as store_from_env
from ._env import store_from_url as store_from_url
from ._exceptions import CommitNotReplicated as CommitNotReplicated
from ._exceptions import CommitOutcomeUnknown as CommitOutcomeUnknown
from ._exceptions import ConversationExists as ConversationExists
from ._exceptions import ConversationNotFound as ConversationNotFound
from ._exceptions import CorruptHistory as CorruptHistory
from ._exceptions import InvalidCursor as InvalidCursor
from ._exceptions import InvalidMessage as InvalidMessage
from ._exceptions import InvalidSessionId as InvalidSessionId
from ._exceptions import LockLost as LockLost
from ._exceptions import MessageNotFound as MessageNotFound
from ._exceptions import MessageTooLarge as MessageTooLarge
from ._exceptions import OwnerMismatch as OwnerMismatch
from ._exceptions import PromptKitError as PromptKitError
from ._exceptions import ProviderAuthError as ProviderAuthError
from ._exceptions import ProviderError as ProviderError
from ._exceptions import ProviderStatusError as ProviderStatusError
from ._exceptions import ProviderStreamError as ProviderStreamError
from ._exceptions import ProviderUnavailable as ProviderUnavailable
from ._exceptions import RateLimited as RateLimited
from ._exceptions import SessionBusy as SessionBusy
from ._exceptions import SessionError as SessionError
from ._exceptions import SessionExists as SessionExists
from ._exceptions import SessionStateError as SessionStateError
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreProtocolError as StoreProtocolError
from ._exceptions import StoreRejected as StoreRejected
from ._exceptions import StoreUnavailable as StoreUnavailable
from ._exceptions import UnsupportedServer as UnsupportedServer
from ._exports import publish as _publish
from ._info import ConversationInfo as ConversationInfo
from ._info import ConversationPage as ConversationPage
from ._locks import LockRegistry as LockRegistry
from ._messages import Message as Message
from ._messages import ToolCall as ToolCall
from ._metrics import LatencySummary as LatencySummary
from ._metrics import Observer as Observer
from ._metrics import StateMetrics as StateMetrics
from ._parts import AudioPart as AudioPart
from ._parts import FilePart as FilePart
from ._parts import ImagePart as ImagePart
from ._parts import Part as Part
from ._parts import TextPart as TextPart
from ._parts import ThinkingPart as ThinkingPart
from ._reply import ReplyStream as ReplyStream
from ._reply import RunOutcome as RunOutcome
from ._reply import RunStop as RunStop
from ._session import Session as Session
from ._settings import SessionOptions as SessionOptions
from ._settings import SessionSettings as SessionSettings
from ._summaries import flush_summaries as flush_summaries
from ._summary import DEFAULT_SUMMARY_PROMPT as DEFAULT_SUMMARY_PROMPT
from ._summary import LLMSummarizer as LLMSummarizer
from ._summary import Summarizer as Summarizer
from ._summary import SummarizerLike as SummarizerLike
from ._summary import Summary as Summary
from ._tools import Tool as Tool
from ._tools import tool as tool
from ._trim import TokenCounter as TokenCounter
from ._trim import estimate_tokens as estimate_tokens
from ._trim import trim as trim
from ._types import TTL as TTL
from ._types import JSONValue as JSONValue
from ._types import OnError as OnError
from ._types import OnLoadError as OnLoadError
from ._types import Role as Role
from .providers import AnthropicProvider as AnthropicProvider
from .providers import GeminiProvider as GeminiProvider
from .providers import OllamaProvider as OllamaProvider
from .providers import OpenAIProvider as OpenAIProvider
from .providers import OpenAIResponsesProvider as OpenAIResponsesProvider
from .providers import Provider as Provider
from .providers import ReplyDone as ReplyDone
from .providers import ScriptedCall as ScriptedCall
from .providers import ScriptedProvider as ScriptedProvider
from .providers import ScriptedReply as ScriptedReply
from .providers import StreamEvent as StreamEvent
from .providers import TextDelta as TextDelta
from .stores import BaseStore as BaseStore
from .stores import Lease as Lease
from .stores import MemoryStore as MemoryStore
from .stores import RedisStore as RedisStore
from .stores import SQLiteStore as SQLiteStore
from .stores import Store as Store
from .stores import SupportsHistory as SupportsHistory
from .stores import SupportsLeases as SupportsLeases
from .stores import SupportsLocks as SupportsLocks
from .stores import SupportsSummaries as SupportsSummaries
from .stores import SupportsTurns as SupportsTurns
from .stores import Turn as Turn
from .stores import TurnOutcome as TurnOutcome
from .stores import TurnStatus as TurnStatus

__version__ = "0.1.0"

__all__ = [
    "AnthropicProvider",
    "AudioPart",
    "BaseStore",
    "CommitNotReplicated",
    "CommitOutcomeUnknown",
    "ConversationExists",
    "ConversationInfo",
    "ConversationNotFound",
    "ConversationPage",
    "Conversations",
    "CorruptHistory",
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_GEMINI_MODEL",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_STORED",
    "DEFAULT_OLLAMA_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "DEFAULT_SUMMARY_PROMPT",
    "DEFAULT_TTL",
    "FilePart",
    "GeminiProvider",
    "ImagePart",
    "InvalidCursor",
    "InvalidMessage",
    "InvalidSessionId",
    "JSONValue",
    "LLMSummarizer",
    "LatencySummary",
    "Lease",
    "LockLost",
    "LockRegistry",
    "MemoryStore",
    "Message",
    "MessageNotFound",
    "MessageTooLarge",
    "Observer",
    "OllamaProvider",
    "OnError",
    "OnLoadError",
    "OpenAIProvider",
    "OpenAIResponsesProvider",
    "OwnerMismatch",
    "Part",
    "PromptKitError",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProviderName",
    "ProviderStatusError",
    "ProviderStreamError",
    "ProviderUnavailable",
    "RateLimited",
    "RedisStore",
    "ReplyDone",
    "ReplyStream",
    "Role",
    "RunOutcome",
    "RunStop",
    "SQLiteStore",
    "ScriptedCall",
    "ScriptedProvider",
    "ScriptedReply",
    "Session",
    "SessionBusy",
    "SessionError",
    "SessionExists",
    "SessionOptions",
    "SessionSettings",
    "SessionStateError",
    "StateMetrics",
    "Store",
    "StoreError",
    "StoreProtocolError",
    "StoreRejected",
    "StoreUnavailable",
    "StreamEvent",
    "Summarizer",
    "SummarizerLike",
    "Summary",
    "SupportsHistory",
    "SupportsLeases",
    "SupportsLocks",
    "SupportsSummaries",
    "SupportsTurns",
    "TTL",
    "TextDelta",
    "TextPart",
    "ThinkingPart",
    "TokenCounter",
    "Tool",
    "ToolCall",
    "Turn",
    "TurnOutcome",
    "TurnStatus",
    "UnsupportedServer",
    "estimate_tokens",
    "flush_summaries",
    "provider_from_env",
    "store_from_env",
    "store_from_url",
    "tool",
    "trim",
]

_publish(__name__, __all__, globals())
