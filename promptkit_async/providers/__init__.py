"""Model providers: the protocol, and clients for the OpenAI, Anthropic, Gemini and Ollama APIs."""

from .._exports import publish as _publish
from ._anthropic import AnthropicProvider as AnthropicProvider
from ._base import Provider as Provider
from ._base import ReplyDone as ReplyDone
from ._base import StreamEvent as StreamEvent
from ._base import TextDelta as TextDelta
from ._gemini import GeminiProvider as GeminiProvider
from ._ndjson import NDJSONDecoder as NDJSONDecoder
from ._ollama import OllamaProvider as OllamaProvider
from ._openai import OpenAIProvider as OpenAIProvider
from ._responses import OpenAIResponsesProvider as OpenAIResponsesProvider
from ._scripted import ScriptedCall as ScriptedCall
from ._scripted import ScriptedProvider as ScriptedProvider
from ._scripted import ScriptedReply as ScriptedReply
from ._sse import ServerSentEvent as ServerSentEvent
from ._sse import SSEDecoder as SSEDecoder

__all__ = [
    "AnthropicProvider",
    "GeminiProvider",
    "NDJSONDecoder",
    "OllamaProvider",
    "OpenAIProvider",
    "OpenAIResponsesProvider",
    "Provider",
    "ReplyDone",
    "SSEDecoder",
    "ScriptedCall",
    "ScriptedProvider",
    "ScriptedReply",
    "ServerSentEvent",
    "StreamEvent",
    "TextDelta",
]

_publish(__name__, __all__, globals())
