"""The SSE decoder: spec cases, every split offset, and any chunking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from promptkit_async.providers import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    decoder.close()
    return events


# One payload with every awkward feature; its expected events are spelled out below.
TRICKY = (
    "\ufeff"  # BOM, dropped
    ": keep-alive\r\n"  # comment
    "data: first\r\n"
    "\r\n"  # CRLF blank line dispatches
    "event: update\r"  # lone CR endings
    "data:no-space\r"
    "data:  two spaces\r"
    "\r"
    "id: 7\n"
    "data: line one\n"
    "data\n"  # a field name alone: empty value
    "data: line\u2028still one line\n"  # U+2028 is not a line break
    "\n"
    "retry: 1500\n"
    "data: emoji 😀 and é\r\n"
    "\r\n"
    "data\n"
    "\n"
    "id\n"  # resets the last event id
    "event: ignored-without-data\n"
    "\n"
    "unknown: field\n"
    "data: last\n"
    "\n"
    "data: never dispatched, no blank line\n"
).encode()

EXPECTED = [
    ServerSentEvent(data="first"),
    ServerSentEvent(event="update", data="no-space\n two spaces"),
    ServerSentEvent(data="line one\n\nline\u2028still one line", id="7"),
    ServerSentEvent(data="emoji 😀 and é", id="7", retry=1500),
    ServerSentEvent(data="", id="7"),
    ServerSentEvent(data="last", id=""),
]


def test_tricky_payload_in_one_chunk() -> None:
    assert decode(TRICKY) == EXPECTED


def test_tricky_payload_split_at_every_offset() -> None:
    for offset in range(len(TRICKY) + 1):
        assert decode(TRICKY[:offset], TRICKY[offset:]) == EXPECTED, offset


def test_tricky_payload_byte_by_byte() -> None:
    assert decode(*(TRICKY[i : i + 1] for i in range(len(TRICKY)))) == EXPECTED


def test_cr_then_lf_in_next_chunk_is_one_line_ending() -> None:
    # If CR|LF counted twice, the LF would be a blank line dispatching early.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [ServerSentEvent(data="a\nb")]
    assert decode(b"data: a\r", b"", b"\n", b"\r", b"\n") == [ServerSentEvent(data="a")]


def test_cr_then_lf_with_split_utf8_between() -> None:
    snowman = "☃".encode()
    chunks = [b"data: x\r", b"\ndata: " + snowman[:1], snowman[1:] + b"\r\n\r\n"]
    assert decode(*chunks) == [ServerSentEvent(data="x\n☃")]


def test_bom_only_dropped_at_start() -> None:
    bom = "\ufeff".encode()
    assert decode(bom[:1], bom[1:], b"data: a\n\n") == [ServerSentEvent(data="a")]
    assert decode(b"data: \xef\xbb\xbfa\n\n") == [ServerSentEvent(data="\ufeffa")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode(b"data: \xff\n\n") == [ServerSentEvent(data="\ufffd")]


def test_id_with_nul_is_ignored_and_retry_must_be_digits() -> None:
    events = decode(b"id: 1\n\nid: a\x00b\nretry: 1x\ndata: d\n\n")
    assert events == [ServerSentEvent(data="d", id="1")]


def test_incomplete_event_at_end_is_discarded() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: partial\n") == []
    decoder.close()
    assert decoder.feed(b"\n") == []


def test_last_event_id_property() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 42\ndata: x\n\n")
    assert decoder.last_event_id == "42"


def _chunkings(payload: bytes) -> st.SearchStrategy[list[bytes]]:
    cuts = st.lists(st.integers(min_value=0, max_value=len(payload)), max_size=20)
    return cuts.map(
        lambda points: [
            payload[a:b]
            for a, b in zip([0, *sorted(points)], [*sorted(points), len(payload)], strict=True)
        ]
    )


@given(st.data())
def test_any_chunking_of_the_tricky_payload(data: st.DataObject) -> None:
    assert decode(*data.draw(_chunkings(TRICKY))) == EXPECTED


_line_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=12,
)
_line = st.one_of(
    st.builds(lambda t: f"data:{t}", _line_text),
    st.builds(lambda t: f"data: {t}", _line_text),
    st.builds(lambda t: f"event: {t}", _line_text),
    st.builds(lambda t: f": {t}", _line_text),
    st.builds(lambda t: f"id: {t}", _line_text),
    st.just(""),
    st.just("retry: 10"),
)
_eol = st.sampled_from(["\n", "\r", "\r\n"])


@given(st.lists(st.tuples(_line, _eol), max_size=25), st.data())
def test_any_chunking_gives_the_same_events(
    lines: list[tuple[str, str]], data: st.DataObject
) -> None:
    payload = "".join(line + eol for line, eol in lines).encode()
    chunks = data.draw(_chunkings(payload))
    assert decode(*chunks) == decode(payload)


def test_a_long_line_in_many_pieces_is_one_event() -> None:
    # Kept as a list of pieces and joined once: linear however it is split.
    payload = b"data: " + b"x" * 300_000 + b"\r\n\r\n"
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(payload), 7):
        events += decoder.feed(payload[i : i + 7])
    assert [e.data for e in events] == ["x" * 300_000]
