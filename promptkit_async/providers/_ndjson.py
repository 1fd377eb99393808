"""A sans-IO, incremental decoder for newline-delimited JSON (``application/x-ndjson``).

Feed it the raw bytes of the body in whatever chunks the network delivers; it
returns the JSON values of the lines completed so far. The rules:

- a line ends at LF; a CR right before the LF is part of the line ending
  (CRLF), so both conventions decode the same. Nothing else ends a line:
  U+2028 or a lone CR inside a line is just a character;
- lines are split as bytes and decoded only once whole. In UTF-8 the byte
  ``0x0A`` never occurs inside a multi-byte sequence, so a character split
  across chunks is complete by the time its line is decoded. One leading BOM
  is dropped;
- blank lines (empty, or only whitespace) are skipped;
- a line that is not valid UTF-8 or not one JSON value (``NaN`` and
  ``Infinity`` are not JSON) raises :class:`ProviderStreamError` naming its
  line number;
- at :meth:`close`, a last line without its LF is still decoded, so a body
  that ends without a final newline loses nothing, and a cut-off line is
  reported rather than silently dropped.

The cost is linear in the input. A partial line is kept as a list of the
chunks that make it up and joined once, when its LF arrives; each chunk is
searched for LF once. Appending every chunk to one growing string and
searching it again would be quadratic in the length of a long line.
"""

from __future__ import annotations

import json
from typing import Any, Final, NoReturn

from .._exceptions import ProviderStreamError

__all__ = ["NDJSONDecoder"]

_BOM: Final = b"\xef\xbb\xbf"
_PREVIEW: Final = 200


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


class NDJSONDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the values of the lines it completed.

    One instance decodes one stream; between calls it keeps the pieces of the
    partial line and the number of lines seen (for error messages).
    """

    __slots__ = ("_at_start", "_line", "_pieces")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._line = 0
        self._at_start = True

    @property
    def line_number(self) -> int:
        """How many lines were completed so far (blank ones included)."""
        return self._line

    def feed(self, chunk: bytes) -> list[Any]:
        """Decode one chunk of the body and return the values of the lines it completed."""
        if not chunk:
            return []
        if b"\n" not in chunk:
            self._pieces.append(chunk)
            return []
        lines = chunk.split(b"\n")
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
        tail = lines.pop()
        self._pieces = [tail] if tail else []
        values: list[Any] = []
        for line in lines:
            self._decode(line, values)
        return values

    def close(self) -> list[Any]:
        """End of the body: decode a last line that had no LF, and reset.

        Raises:
            ProviderStreamError: that last line is not one JSON value (for
                example, the body was cut off in the middle of it).
        """
        pieces, self._pieces = self._pieces, []
        values: list[Any] = []
        if pieces:
            self._decode(b"".join(pieces), values)
        return values

    def _decode(self, line: bytes, values: list[Any]) -> None:
        self._line += 1
        if self._at_start:
            self._at_start = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._malformed(line, f"not UTF-8 at byte {exc.start}") from exc
        try:
            values.append(json.loads(text, parse_constant=_reject_constant))
        except json.JSONDecodeError as exc:
            raise self._malformed(line, f"{exc.msg} at column {exc.colno}") from exc
        except ValueError as exc:  # NaN, Infinity
            raise self._malformed(line, str(exc)) from exc

    def _malformed(self, line: bytes, why: str) -> ProviderStreamError:
        preview = line[:_PREVIEW].decode("utf-8", "replace")
        more = "…" if len(line) > _PREVIEW else ""
        return ProviderStreamError(f"malformed NDJSON line {self._line}: {why}: {preview!r}{more}")
