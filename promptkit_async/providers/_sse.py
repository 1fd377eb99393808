"""A sans-IO, incremental Server-Sent Events decoder.

Feed it the raw bytes of a ``text/event-stream`` body in whatever chunks the
network delivers; it returns the events completed so far. It follows the
WHATWG "event stream interpretation" rules:

- bytes are decoded as UTF-8 incrementally, so a character split across two
  chunks is decoded once both halves arrived; one leading BOM is dropped;
- lines end at CRLF, a lone CR or a lone LF, and a CR ending one chunk followed
  by an LF starting the next is a single line ending. Nothing else ends a line
  (``str.splitlines`` would also split on U+2028, U+0085, ...);
- ``:`` starts a comment; ``field:value`` drops one space after the colon; a
  line without a colon is a field with an empty value;
- ``data`` lines are joined with ``\\n``; a blank line dispatches the event,
  unless no ``data`` line was seen; an event left incomplete at the end of the
  stream is discarded.

It does no I/O, so the same decoder serves the HTTP providers and the scripted
provider, and it is tested by feeding payloads split at every byte offset.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    ``id`` is the stream's last event id at dispatch time (ids persist across
    events, as the spec says); ``retry`` is the reconnection time in
    milliseconds if this event's block set one.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the events it completed.

    One instance decodes one stream; it keeps the partial line, the partial
    UTF-8 sequence and the fields of the event being built between calls.
    """

    __slots__ = (
        "_buffer",
        "_data",
        "_decoder",
        "_event",
        "_last_id",
        "_pending_cr",
        "_retry",
    )

    def __init__(self) -> None:
        # utf-8-sig drops exactly one leading BOM, even one split across chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
        self._buffer: list[str] = []  # the pieces of a line not yet ended
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str:
        """The last event id seen, for a ``Last-Event-ID`` reconnection header."""
        return self._last_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk of the stream and return the events it completed.

        Linear in the input however it is split: a line arriving in many
        pieces is kept as a list of them and joined once, when it ends.
        """
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._pending_cr:
            # The previous chunk ended with CR: an LF here belongs to that line ending.
            self._pending_cr = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if "\r" in text:
            self._pending_cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._buffer.append(text)
            return []
        lines = text.split("\n")
        if self._buffer:
            self._buffer.append(lines[0])
            lines[0] = "".join(self._buffer)
            self._buffer.clear()
        last = lines.pop()
        if last:
            self._buffer.append(last)
        events: list[ServerSentEvent] = []
        for line in lines:
            if line:
                self._field(line)
            else:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
        return events

    def close(self) -> None:
        """End of stream: drop any incomplete event, as the spec requires."""
        self._decoder.decode(b"", final=True)
        self._buffer.clear()
        self._pending_cr = False
        self._data.clear()
        self._event = ""
        self._retry = None

    def _field(self, line: str) -> None:
        if line.startswith("data:"):
            # The hot path: nearly every line of a model stream is a data line.
            value = line[5:]
            self._data.append(value[1:] if value[:1] == " " else value)
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            self._retry = None
            return None
        event = ServerSentEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self._last_id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        self._retry = None
        return event
