"""A streamed reply body, decoded with bounds: size, decompression and time.

A provider peer can be broken or hostile: a reply that never ends, a huge
one, a small gzip body that inflates to gigabytes. The body is read raw and
decoded here, so every byte is counted once it exists, before the next one
is read: past ``max_bytes`` (decompressed) or ``deadline`` the reply is
abandoned at once and the caller closes the response. Only ``gzip`` and
``deflate`` are accepted (what the providers send, and what is asked for).
"""

from __future__ import annotations

import zlib
from typing import Final

__all__ = ["ACCEPT_ENCODING", "BodyDecoder", "BodyTooLarge", "UnsupportedEncoding"]

#: What the providers are asked for: encodings decoded here with a bound.
ACCEPT_ENCODING: Final = "gzip, deflate"
_CHUNK: Final = 64 * 1024


class BodyTooLarge(Exception):
    """The decoded body passed its size limit."""


class UnsupportedEncoding(Exception):
    """The body is encoded in a way that cannot be decoded with a bound."""


class BodyDecoder:
    """Raw response bytes in, decoded bytes out, never more than ``max_bytes`` in all."""

    __slots__ = ("_inflater", "_left", "max_bytes")

    def __init__(self, content_encoding: str, max_bytes: int) -> None:
        encodings = [e.strip().lower() for e in content_encoding.split(",") if e.strip()]
        encodings = [e for e in encodings if e != "identity"]
        if len(encodings) > 1 or (encodings and encodings[0] not in ("gzip", "x-gzip", "deflate")):
            raise UnsupportedEncoding(content_encoding)
        # wbits 47: zlib or gzip, by the header. A raw deflate stream is retried below.
        self._inflater = zlib.decompressobj(47) if encodings else None
        self.max_bytes = max_bytes
        self._left = max_bytes

    def feed(self, raw: bytes) -> list[bytes]:
        """The decoded pieces of ``raw``, each at most 64 KiB.

        Raises:
            BodyTooLarge: the body decoded so far is over ``max_bytes``.
            zlib.error: the compressed data is corrupt.
        """
        if self._inflater is None:
            return [self._take(raw)] if raw else []
        pieces: list[bytes] = []
        data = raw
        while data:
            try:
                piece = self._inflater.decompress(data, min(_CHUNK, self._left + 1))
            except zlib.error:
                if self._left != self.max_bytes or pieces:
                    raise
                # Not zlib nor gzip: a server that sends raw deflate for "deflate".
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                piece = self._inflater.decompress(data, min(_CHUNK, self._left + 1))
            data = self._inflater.unconsumed_tail
            if piece:
                pieces.append(self._take(piece))
            elif not data:
                break
        return pieces

    def _take(self, piece: bytes) -> bytes:
        self._left -= len(piece)
        if self._left < 0:
            raise BodyTooLarge(f"the reply body passed {self.max_bytes} bytes")
        return piece
