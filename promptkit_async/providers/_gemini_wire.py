"""The Gemini API ``generateContent`` wire format, sans-IO.

Request building (neutral :class:`Message` list -> ``systemInstruction`` and
``contents``) and the assembly of a reply from the chunks of
``streamGenerateContent?alt=sse``. No I/O here: ``_gemini.py`` sends what this
builds.

Three things have no field in :class:`Message` and travel in the assistant
message's metadata, so that the next request can send them back unchanged:

- ``gemini_signatures``: the ``thoughtSignature`` of each part that carried
  one, ``{"text": sig, "calls": {call_id: sig}}``. Gemini 3 rejects a function
  call sent back without its signature. Text arrives in many parts but is
  kept as one string, so one signature (the last) is kept for it;
- ``gemini_call_ids``: the call ids Gemini itself assigned. Gemini often
  gives none; such calls get ids ``call_1``, ``call_2``, ... in reply order,
  which are ours and never sent to Gemini;
- ``blocked``: true when Gemini stopped the reply for a reason other than
  ``STOP`` or ``MAX_TOKENS`` (safety, recitation, a blocklist, a malformed
  function call, ...) or refused the prompt (``promptFeedback.blockReason``);
  ``finish_reason`` then holds that reason, lowercased.

Tool results become ``functionResponse`` parts, which need the function's
name: it is looked up by ``tool_call_id`` in the nearest preceding assistant
message that made the call.

A user's media goes as ``inlineData`` (the stored base64, as is) or, by URL,
as ``fileData`` (which needs a ``mimeType``): images, PDFs and audio alike.
Gemini's own thoughts are never parts here (their signatures ride in the
metadata above), so a :class:`ThinkingPart`, always another provider's, is
left out.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import InvalidMessage, ProviderStreamError
from .._messages import Message, ToolCall, text_only, with_article
from .._parts import AudioPart, FilePart, ImagePart, TextPart
from ._arguments import arguments_object, arguments_text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._parts import Part
    from .._types import JSONValue
    from ._sse import ServerSentEvent

__all__ = [
    "CALL_IDS_METADATA",
    "SIGNATURES_METADATA",
    "GeminiChunkParser",
    "to_gemini_contents",
]

SIGNATURES_METADATA: Final = "gemini_signatures"
CALL_IDS_METADATA: Final = "gemini_call_ids"

# Our names for the two normal endings; every other reason marks the reply blocked.
_FINISHED: Final = {"STOP": "stop", "MAX_TOKENS": "length"}


# -- request ---------------------------------------------------------------------
# One function per part kind. Part shapes (camelCase, as the REST API takes them):
# text, inlineData {mimeType, data}, fileData {mimeType, fileUri}, functionCall,
# functionResponse (https://ai.google.dev/api/caching#Part, #Blob, #FileData).


def _text_part(text: str, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_call_part(
    call: ToolCall, *, wire_id: bool, signature: str | None = None
) -> dict[str, Any]:
    function: dict[str, Any] = {"name": call.name, "args": arguments_object(call.arguments)}
    if wire_id:
        function["id"] = call.id
    part: dict[str, Any] = {"functionCall": function}
    if signature:
        part["thoughtSignature"] = signature
    return part


def _media_part(part: ImagePart | FilePart | AudioPart) -> dict[str, Any]:
    """Inline bytes as ``inlineData`` (the stored base64, not encoded again); a URL as
    ``fileData`` (a Files API URI, or a URL Gemini fetches).

    Raises:
        InvalidMessage: a URL without ``media_type``, which ``fileData`` requires.
    """
    if part.base64 is not None:
        return {"inlineData": {"mimeType": part.media_type, "data": part.base64}}
    name = type(part).__name__
    if part.media_type is None:
        raise InvalidMessage(
            f"gemini cannot carry {with_article(name)} by URL without a media type (fileData needs "
            f"its mimeType): pass {name}(url=..., media_type=...)"
        )
    return {"fileData": {"mimeType": part.media_type, "fileUri": part.url}}


def _function_response_part(name: str, result: Message, wire_id: str | None) -> dict[str, Any]:
    output = text_only(
        result, "gemini", "a functionResponse carries JSON: send media in a user message"
    )
    function: dict[str, Any] = {"name": name, "response": _response_object(output)}
    if wire_id is not None:
        function["id"] = wire_id
    return {"functionResponse": function}


def _response_object(content: str) -> dict[str, Any]:
    """``functionResponse.response`` must be an object: a JSON object result is sent as
    itself, anything else under ``"output"`` (the key the API documents for it)."""
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"output": content}


def _user_part(part: Part) -> dict[str, Any] | None:
    """One part of a user turn (None: nothing to send; empty text is refused by the API)."""
    if type(part) is TextPart:
        return _text_part(part.text) if part.text else None
    if isinstance(part, (ImagePart, FilePart, AudioPart)):
        return _media_part(part)
    return None  # ThinkingPart


def _user_parts(message: Message) -> list[dict[str, Any]]:
    content = message.content
    if isinstance(content, str):
        return [_text_part(content)] if content else []
    return [out for part in content if (out := _user_part(part)) is not None]


def _signatures(message: Message) -> tuple[str | None, Mapping[str, Any]]:
    stored = message.metadata.get(SIGNATURES_METADATA)
    if not isinstance(stored, dict):
        return None, {}
    text = stored.get("text")
    calls = stored.get("calls")
    return (text if isinstance(text, str) else None), (calls if isinstance(calls, dict) else {})


def _gemini_ids(message: Message) -> set[str]:
    stored = message.metadata.get(CALL_IDS_METADATA)
    return {i for i in stored if isinstance(i, str)} if isinstance(stored, list) else set()


def _model_parts(message: Message) -> list[dict[str, Any]]:
    text_signature, call_signatures = _signatures(message)
    gemini_ids = _gemini_ids(message)
    parts = []
    text = text_only(message, "gemini", "Gemini takes media in user turns only")
    if text:
        parts.append(_text_part(text, text_signature))
    for call in message.tool_calls:
        signature = call_signatures.get(call.id)
        parts.append(
            _function_call_part(
                call,
                wire_id=call.id in gemini_ids,
                signature=signature if isinstance(signature, str) else None,
            )
        )
    if text_signature and not text:
        # A signature that came on an empty text part (Gemini streams it last).
        parts.append(_text_part("", text_signature))
    return parts


def to_gemini_contents(
    messages: Sequence[Message], system: str | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Convert a neutral history to ``(systemInstruction, contents)``.

    - ``system`` and every system-role message are joined (blank line apart)
      into ``systemInstruction``: contents know only the roles user and model.
    - Assistant messages become ``model`` turns: the text part, then one
      ``functionCall`` part per tool call (arguments parsed into ``args``;
      arguments that are not a JSON object are sent as ``{}``), each with
      the ``thoughtSignature`` it came with.
    - User parts become ``text``, ``inlineData`` and ``fileData`` parts, in
      their order; thinking is left out, and media on any other role (or a URL
      without a media type) is refused before anything is sent.
    - Tool results become ``functionResponse`` parts in a ``user`` turn. A
      result whose call is not in the window is dropped: without the call
      there is no function name to send.
    - Consecutive turns of the same role are merged, function responses first,
      so the responses to parallel calls travel together, as the API wants.
    - Empty text is left out, and a turn left with no parts is dropped.
    """
    system_parts = [system] if system else []
    contents: list[dict[str, Any]] = []
    calls: dict[str, tuple[str, bool]] = {}  # call id -> (name, id came from Gemini)
    for m in messages:
        if m.role == "system":
            text = text_only(m, "gemini", "systemInstruction is text")
            if text:
                system_parts.append(text)
            continue
        if m.role == "assistant":
            role = "model"
            parts = _model_parts(m)
            gemini_ids = _gemini_ids(m)
            for call in m.tool_calls:
                calls[call.id] = (call.name, call.id in gemini_ids)
        elif m.role == "tool":
            role = "user"
            found = calls.get(m.tool_call_id or "")
            if found is None:
                continue
            name, from_gemini = found
            parts = [_function_response_part(name, m, m.tool_call_id if from_gemini else None)]
        else:
            role = "user"
            parts = _user_parts(m)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    for content in contents:
        if content["role"] == "user":
            # Stable sort: function responses first, each group keeps its order.
            content["parts"].sort(key=lambda p: "functionResponse" not in p)
    system_text = "\n\n".join(system_parts)
    instruction = {"parts": [_text_part(system_text)]} if system_text else None
    return instruction, contents


# -- reply -----------------------------------------------------------------------


class GeminiChunkParser:
    """Assembles one reply from ``GenerateContentResponse`` chunks.

    ``feed`` returns the text a chunk carried ("" if none; thought summaries
    are not reply text) and raises :class:`ProviderStreamError` on an error
    chunk or malformed data. The stream has no terminator of its own: ``done``
    turns true once a chunk carried a ``finishReason`` or the prompt was
    blocked, and a stream that ends before that was cut off.
    """

    def __init__(self, *, provider: str = "gemini") -> None:
        self.provider = provider
        self.done = False
        self._text: list[str] = []
        self._calls: list[ToolCall] = []
        self._gemini_ids: list[str] = []
        self._text_signature: str | None = None
        self._call_signatures: dict[str, str] = {}
        self._finish_reason: str | None = None
        self._block_reason: str | None = None
        self._finish_message: str | None = None
        self._usage: JSONValue = None
        self._model: str | None = None
        self._id: str | None = None

    def feed(self, event: ServerSentEvent) -> str:
        try:
            chunk = json.loads(event.data)
        except ValueError as exc:
            raise ProviderStreamError(
                f"{self.provider}: malformed stream chunk: {event.data[:200]!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise ProviderStreamError(f"{self.provider}: stream chunk is not an object")
        if "error" in chunk:
            raise ProviderStreamError(_error_message(self.provider, chunk["error"]))
        if isinstance(chunk.get("responseId"), str):
            self._id = chunk["responseId"]
        if isinstance(chunk.get("modelVersion"), str):
            self._model = chunk["modelVersion"]
        if isinstance(chunk.get("usageMetadata"), dict):
            self._usage = chunk["usageMetadata"]  # cumulative: the last one counts
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str):
            self._block_reason = feedback["blockReason"]
            message = feedback.get("blockReasonMessage")
            if isinstance(message, str):
                self._finish_message = message
            self.done = True
        candidates = chunk.get("candidates")
        if not isinstance(candidates, list):
            return ""
        text = ""
        for candidate in candidates:
            # candidateCount > 1 is not supported: a session keeps one reply per turn.
            if isinstance(candidate, dict) and candidate.get("index", 0) == 0:
                text += self._candidate(candidate)
        if text:
            self._text.append(text)
        return text

    def _candidate(self, candidate: Mapping[str, Any]) -> str:
        text = ""
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict):
                text += self._part(part)
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            self._finish_reason = reason
            self.done = True
        message = candidate.get("finishMessage")
        if isinstance(message, str) and message:
            self._finish_message = message
        return text

    def _part(self, part: Mapping[str, Any]) -> str:
        signature = part.get("thoughtSignature")
        signature = signature if isinstance(signature, str) and signature else None
        function = part.get("functionCall")
        if isinstance(function, dict):
            self._function_call(function, signature)
            return ""
        if signature is not None:
            # On a text part, an empty one, or a thought summary: all of it is the text.
            self._text_signature = signature
        text = part.get("text")
        if part.get("thought") is True or not isinstance(text, str):
            return ""
        return text

    def _function_call(self, function: Mapping[str, Any], signature: str | None) -> None:
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ProviderStreamError(f"{self.provider}: functionCall without a name")
        given = function.get("id")
        if isinstance(given, str) and given:
            call_id = given
            self._gemini_ids.append(given)
        else:
            call_id = f"call_{len(self._calls) + 1}"
        if signature is not None:
            self._call_signatures[call_id] = signature
        self._calls.append(ToolCall(call_id, name, arguments_text(function.get("args"))))

    def message(self) -> Message:
        """The assistant message assembled so far (call once ``done``)."""
        metadata: dict[str, JSONValue] = {
            "finish_reason": None,
            "usage": self._usage,
            "model": self._model,
            "provider": self.provider,
            "id": self._id,
        }
        reason = self._block_reason or self._finish_reason
        if reason is not None:
            blocked = self._block_reason is not None or reason not in _FINISHED
            metadata["finish_reason"] = _FINISHED.get(reason, reason.lower())
            if blocked:
                metadata["blocked"] = True
        if self._finish_message is not None:
            metadata["finish_message"] = self._finish_message
        signatures: dict[str, JSONValue] = {}
        if self._text_signature is not None:
            signatures["text"] = self._text_signature
        if self._call_signatures:
            signatures["calls"] = dict(self._call_signatures)
        if signatures:
            metadata[SIGNATURES_METADATA] = signatures
        if self._gemini_ids:
            metadata[CALL_IDS_METADATA] = list(self._gemini_ids)
        try:
            return Message.assistant("".join(self._text), tool_calls=self._calls, **metadata)
        except InvalidMessage as exc:  # e.g. a non-finite number in usage
            raise ProviderStreamError(f"{self.provider}: unusable reply: {exc}") from exc


def _error_message(provider: str, error: object) -> str:
    """From the google.rpc.Status shape: ``{"code", "message", "status"}``."""
    detail: Mapping[str, Any] = error if isinstance(error, dict) else {}
    message = detail.get("message")
    if not isinstance(message, str) or not message:
        message = error if isinstance(error, str) and error else "unknown error"
    kind = detail.get("status") or detail.get("code")
    suffix = f" ({kind})" if isinstance(kind, (str, int)) and kind != "" else ""
    return f"{provider}: error in stream: {message}{suffix}"
