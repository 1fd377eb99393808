"""Content parts: what a message holds besides plain text (images, files, audio, thinking).

A message's content is a str, or a sequence of these parts. Inline bytes are
kept in base64, the form every store record and every provider's wire format
needs, so media is encoded once (when the part is built from bytes) and never
again: ``part.data`` decodes on demand, ``part.base64`` is what is stored and
sent. Parts are immutable values.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from ._exceptions import InvalidMessage

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AudioPart",
    "FilePart",
    "ImagePart",
    "Part",
    "TextPart",
    "ThinkingPart",
    "part_from_dict",
]


def _text(value: object, what: str) -> str:
    from ._messages import check_text  # the one check for every text field

    if not isinstance(value, str):
        raise InvalidMessage(f"{what} must be a str, got {type(value).__name__}")
    check_text(value, what)
    return value


def _b64(data: object, what: str) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(data)).decode("ascii")
    raise InvalidMessage(f"{what} must be bytes, got {type(data).__name__}")


class _Part:
    """Immutable, compared and hashed by value (see each subclass's fields)."""

    __slots__ = ()
    kind: str = ""

    def _key(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see :func:`part_from_dict`)."""
        raise NotImplementedError


_set = object.__setattr__


class TextPart(_Part):
    """Plain text."""

    __slots__ = ("text",)
    kind = "text"
    text: str

    def __init__(self, text: str) -> None:
        _set(self, "text", _text(text, "TextPart.text"))

    def _key(self) -> tuple[Any, ...]:
        return (self.text,)

    def __repr__(self) -> str:
        return f"TextPart({self.text!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


class _Media(_Part):
    """Media given by URL or by inline bytes (kept as base64)."""

    __slots__ = ("base64", "media_type", "url")
    base64: str | None
    media_type: str | None
    url: str | None

    def _init_media(
        self,
        url: str | None,
        data: bytes | None,
        media_type: str | None,
        *,
        b64: str | None = None,
        require_type: bool = True,
    ) -> None:
        name = type(self).__name__
        given = sum(x is not None for x in (url, data, b64))
        if given != 1:
            raise InvalidMessage(f"{name} needs exactly one of url= or data= (bytes)")
        if b64 is not None:
            try:
                base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise InvalidMessage(f"{name}: the stored data is not valid base64") from None
        elif data is not None:
            b64 = _b64(data, f"{name}.data")
        if url is not None:
            url = _text(url, f"{name}.url")
        if media_type is not None:
            media_type = _text(media_type, f"{name}.media_type")
        elif require_type and url is None:
            raise InvalidMessage(f"{name} with inline data needs media_type (e.g. image/png)")
        _set(self, "url", url)
        _set(self, "base64", b64)
        _set(self, "media_type", media_type)

    @property
    def data(self) -> bytes | None:
        """The inline bytes (decoded from base64 on each access), or None for a URL."""
        return None if self.base64 is None else base64.b64decode(self.base64)

    @property
    def size(self) -> int:
        """Bytes of inline data (0 for a URL): what the size limits count."""
        b64 = self.base64
        return 0 if b64 is None else len(b64) * 3 // 4 - b64[-2:].count("=")

    def _media_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.url is not None:
            out["url"] = self.url
        else:
            out["data"] = self.base64
        if self.media_type is not None:
            out["media_type"] = self.media_type
        return out

    def __repr__(self) -> str:
        where = f"url={self.url!r}" if self.url is not None else f"data=<{self.size} bytes>"
        return f"{type(self).__name__}({where}, media_type={self.media_type!r})"


class ImagePart(_Media):
    """An image, by URL or inline (``data=bytes`` with ``media_type="image/png"``)."""

    __slots__ = ("detail",)
    kind = "image"
    detail: str | None

    def __init__(
        self,
        *,
        url: str | None = None,
        data: bytes | None = None,
        media_type: str | None = None,
        detail: str | None = None,
        _base64: str | None = None,
    ) -> None:
        self._init_media(url, data, media_type, b64=_base64)
        _set(self, "detail", None if detail is None else _text(detail, "ImagePart.detail"))

    def _key(self) -> tuple[Any, ...]:
        return (self.url, self.base64, self.media_type, self.detail)

    def to_dict(self) -> dict[str, Any]:
        out = self._media_dict()
        if self.detail is not None:
            out["detail"] = self.detail
        return out


class FilePart(_Media):
    """A document (a PDF, a text file), by URL or inline, with an optional filename."""

    __slots__ = ("filename",)
    kind = "file"
    filename: str | None

    def __init__(
        self,
        *,
        url: str | None = None,
        data: bytes | None = None,
        media_type: str | None = None,
        filename: str | None = None,
        _base64: str | None = None,
    ) -> None:
        self._init_media(url, data, media_type, b64=_base64)
        _set(self, "filename", None if filename is None else _text(filename, "FilePart.filename"))

    def _key(self) -> tuple[Any, ...]:
        return (self.url, self.base64, self.media_type, self.filename)

    def to_dict(self) -> dict[str, Any]:
        out = self._media_dict()
        if self.filename is not None:
            out["filename"] = self.filename
        return out


class AudioPart(_Media):
    """Audio, inline (``data=bytes``, ``media_type="audio/wav"`` or ``"audio/mpeg"``)."""

    __slots__ = ()
    kind = "audio"

    def __init__(
        self,
        *,
        data: bytes | None = None,
        media_type: str | None = None,
        _base64: str | None = None,
    ) -> None:
        self._init_media(None, data, media_type, b64=_base64)

    def _key(self) -> tuple[Any, ...]:
        return (self.base64, self.media_type)

    def to_dict(self) -> dict[str, Any]:
        return self._media_dict()


class ThinkingPart(_Part):
    """A model's reasoning, which some providers require back unchanged with a tool loop.

    ``signature`` is the provider's proof that the text is its own (Anthropic's
    thinking blocks, Gemini's thought signatures). A redacted block carries
    only the provider's opaque ``redacted`` data and no text. Thinking is never
    part of :attr:`Message.text`.
    """

    __slots__ = ("redacted", "signature", "text")
    kind = "thinking"
    text: str
    signature: str | None
    redacted: str | None

    def __init__(
        self, text: str = "", *, signature: str | None = None, redacted: str | None = None
    ) -> None:
        _set(self, "text", _text(text, "ThinkingPart.text"))
        _set(
            self,
            "signature",
            None if signature is None else _text(signature, "ThinkingPart.signature"),
        )
        _set(
            self, "redacted", None if redacted is None else _text(redacted, "ThinkingPart.redacted")
        )
        if redacted is not None and text:
            raise InvalidMessage("a redacted ThinkingPart carries no text")

    def _key(self) -> tuple[Any, ...]:
        return (self.text, self.signature, self.redacted)

    def __repr__(self) -> str:
        if self.redacted is not None:
            return "ThinkingPart(redacted=...)"
        return f"ThinkingPart({self.text!r}, signature={'...' if self.signature else None})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "thinking"}
        if self.redacted is not None:
            out["redacted"] = self.redacted
        else:
            out["text"] = self.text
        if self.signature is not None:
            out["signature"] = self.signature
        return out


Part: TypeAlias = TextPart | ImagePart | FilePart | AudioPart | ThinkingPart
PART_TYPES: Final = (TextPart, ImagePart, FilePart, AudioPart, ThinkingPart)


def part_from_dict(data: Mapping[str, Any]) -> Part:
    """A part from its :meth:`to_dict` form.

    Raises:
        InvalidMessage: an unknown type, or fields a part of that type cannot take.
    """
    kind = data.get("type")
    try:
        if kind == "text":
            return TextPart(data["text"])
        if kind == "thinking":
            return ThinkingPart(
                data.get("text", ""), signature=data.get("signature"), redacted=data.get("redacted")
            )
        media: dict[str, Any] = {
            "url": data.get("url"),
            "_base64": data.get("data"),
            "media_type": data.get("media_type"),
        }
        if kind == "image":
            return ImagePart(detail=data.get("detail"), **media)
        if kind == "file":
            return FilePart(filename=data.get("filename"), **media)
        if kind == "audio":
            return AudioPart(_base64=media["_base64"], media_type=media["media_type"])
    except KeyError as exc:
        raise InvalidMessage(f"a {kind} part needs {exc.args[0]!r}") from None
    raise InvalidMessage(f"unknown content part type {kind!r}")
