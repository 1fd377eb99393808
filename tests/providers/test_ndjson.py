"""The NDJSON decoder: line rules, every split offset, any chunking, and very long lines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptkit_async._exceptions import ProviderStreamError
from promptkit_async.providers import NDJSONDecoder


def decode(*chunks: bytes) -> list[Any]:
    decoder = NDJSONDecoder()
    values = [value for chunk in chunks for value in decoder.feed(chunk)]
    values.extend(decoder.close())
    return values


# One payload with every awkward feature; its expected values are spelled out below.
TRICKY = (
    "\ufeff"  # BOM, dropped
    '{"n": 1, "text": "plain"}\n'
    '{"n": 2, "text": "crlf"}\r\n'
    "\n"  # blank lines are skipped
    "   \t \r\n"
    '{"n": 3,\r"text": "line\u2028still one line"}\n'  # a lone CR is only whitespace
    '{"n": 4, "text": "emoji 😀, é, 漢字"}\n'
    "[1, 2]\n"  # any JSON value, not only objects
    '"a string"\n'
    '{"n": 5, "text": "no final newline"}'
).encode()

EXPECTED = [
    {"n": 1, "text": "plain"},
    {"n": 2, "text": "crlf"},
    {"n": 3, "text": "line\u2028still one line"},
    {"n": 4, "text": "emoji 😀, é, 漢字"},
    [1, 2],
    "a string",
    {"n": 5, "text": "no final newline"},
]


def test_tricky_payload_in_one_chunk() -> None:
    assert decode(TRICKY) == EXPECTED


def test_tricky_payload_split_at_every_offset() -> None:
    for offset in range(len(TRICKY) + 1):
        assert decode(TRICKY[:offset], TRICKY[offset:]) == EXPECTED, offset


def test_tricky_payload_byte_by_byte() -> None:
    assert decode(*(TRICKY[i : i + 1] for i in range(len(TRICKY)))) == EXPECTED


def test_values_come_out_as_soon_as_their_line_ends() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a": ') == []
    assert decoder.feed(b"1}") == []
    assert decoder.feed(b'\n{"b"') == [{"a": 1}]
    assert decoder.feed(b": 2}\r") == []
    assert decoder.feed(b"\n") == [{"b": 2}]
    assert decoder.feed(b"") == []
    assert decoder.close() == []
    assert decoder.line_number == 2


def test_multibyte_characters_split_across_chunks() -> None:
    for char in ("é", "☃", "😀"):
        encoded = f'{{"t": "{char}"}}\n'.encode()
        start = encoded.index(char.encode())
        for cut in range(start + 1, start + len(char.encode())):
            assert decode(encoded[:cut], encoded[cut:]) == [{"t": char}]


def test_bom_only_dropped_at_start() -> None:
    bom = "\ufeff".encode()
    assert decode(bom[:1], bom[1:2], bom[2:] + b"{}\n") == [{}]
    with pytest.raises(ProviderStreamError, match="line 2"):
        decode(b"{}\n" + bom + b"{}\n")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"ok": 1}\nnot json\n', r"malformed NDJSON line 2: Expecting value at column 1"),
        (b'\n\n{"a": 1} {"b": 2}\n', r"line 3: Extra data at column 10"),
        (b'{"a": NaN}\n', r"line 1: NaN is not valid JSON"),
        (b'{"a": "\xff"}\n', r"line 1: not UTF-8 at byte 7"),
        (b'{"ok": 1}\n{"cut": "off', r"line 2: Unterminated string"),
    ],
)
def test_a_malformed_line_raises_naming_it(payload: bytes, match: str) -> None:
    with pytest.raises(ProviderStreamError, match=match):
        decode(payload)


def test_a_long_malformed_line_is_quoted_briefly() -> None:
    with pytest.raises(ProviderStreamError) as info:
        decode(b"x" * 10_000 + b"\n")
    assert len(str(info.value)) < 300
    assert str(info.value).endswith("…")


def test_close_resets() -> None:
    decoder = NDJSONDecoder()
    decoder.feed(b'{"partial": ')
    with pytest.raises(ProviderStreamError):
        decoder.close()
    assert decoder.close() == []


# 40 MB in one line: with a decoder that re-scans its buffer on every chunk,
# the small-chunk run below would not finish in any reasonable time.
_BIG_TEXT = "abcé" * (40_000_000 // 5)  # é is two bytes: chunk ends fall inside some
_BIG_LINE = json.dumps({"text": _BIG_TEXT}, ensure_ascii=False).encode() + b"\n"


@pytest.mark.parametrize("size", [64 * 1024, 997, 61])
def test_a_40_mb_line_in_chunks(size: int) -> None:
    assert len(_BIG_LINE) > 40_000_000
    decoder = NDJSONDecoder()
    values: list[Any] = []
    for start in range(0, len(_BIG_LINE), size):
        values.extend(decoder.feed(_BIG_LINE[start : start + size]))
    values.extend(decoder.close())
    assert len(values) == 1
    assert values[0]["text"] == _BIG_TEXT


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


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.lists(
        st.tuples(_json_values, st.sampled_from(["\n", "\r\n", "\n\n", "\r\n \n"])), max_size=15
    ),
    st.data(),
)
def test_any_chunking_gives_the_values_back(
    lines: list[tuple[Any, str]], data: st.DataObject
) -> None:
    payload = "".join(json.dumps(v, ensure_ascii=False) + eol for v, eol in lines).encode()
    chunks = data.draw(_chunkings(payload))
    assert decode(*chunks) == [v for v, _ in lines]
