"""The stored record format: compact, versioned, forward-compatible, corrupt records named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptkit_async import CorruptHistory, InvalidMessage, Message, ToolCall
from promptkit_async._codec import FORMAT_VERSION, decode_message, encode_message


def roundtrip(m: Message, **kw: Any) -> Message:
    return decode_message(encode_message(m, **kw), session_id="s", index=0)


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


def test_stored_format_is_compact_and_versioned() -> None:
    raw = encode_message(Message.user("hi"))
    assert raw == b'{"v":1,"r":"user","c":"hi"}'
    assert json.loads(raw)["v"] == FORMAT_VERSION


def test_tool_calls_round_trip() -> None:
    m = Message.assistant(
        "", tool_calls=[ToolCall("a", "f", '{"x":1}'), ToolCall("b", "g", "not json")]
    )
    assert roundtrip(m) == m


def test_compression_only_above_threshold_and_always_readable() -> None:
    small = Message.user("short")
    assert encode_message(small, compress_above=100) == encode_message(small)
    big = Message.user("lorem ipsum " * 1000)
    packed = encode_message(big, compress_above=100)
    assert packed.startswith(b"\x00z") and len(packed) < len(encode_message(big)) // 5
    assert roundtrip(big, compress_above=100) == big
    # written compressed, read by a store configured without compression
    assert decode_message(packed, session_id="s", index=0) == big


def test_unknown_fields_from_a_newer_version_are_ignored() -> None:
    raw = b'{"v":2,"r":"user","c":"hi","x-new":[1,2],"m":{"a":1}}'
    assert decode_message(raw, session_id="s", index=0) == Message.user("hi", a=1)


def test_newer_version_that_cannot_be_read_says_so() -> None:
    with pytest.raises(CorruptHistory, match="format version 9"):
        decode_message(b'{"v":9,"role":"user"}', session_id="s", index=3)


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b"42", b"\xff", b'{"v":1}', b'{"v":1,"r":"user","c":5}', b"\x00zxx"],
)
def test_corrupt_records(raw: bytes) -> None:
    with pytest.raises(CorruptHistory) as info:
        decode_message(raw, session_id="sess", index=7)
    assert info.value.session_id == "sess"
    assert info.value.index == 7
    assert "'sess'" in str(info.value) and "7" in str(info.value)


def test_a_stored_lone_surrogate_is_corrupt_history() -> None:
    with pytest.raises(CorruptHistory, match="surrogate"):
        decode_message(b'{"v":1,"r":"user","c":"a\\ud800b"}', session_id="s", index=0)
    ok = decode_message(b'{"v":1,"r":"user","c":"\\ud83d\\ude00"}', session_id="s", index=0)
    assert ok.content == "\U0001f600"  # an escaped surrogate pair is one emoji


def test_lone_surrogate_is_rejected_at_encode() -> None:
    with pytest.raises(InvalidMessage, match="surrogate"):
        encode_message(Message.user("\ud800"))


@given(
    role=st.sampled_from(["system", "user", "assistant"]),
    content=text,
    meta=st.dictionaries(text, st.one_of(st.none(), st.booleans(), st.integers(), text)),
    compress=st.sampled_from([None, 0, 64]),
)
def test_any_content_round_trips(
    role: str, content: str, meta: dict[str, Any], compress: int | None
) -> None:
    m = Message(role, content, metadata=meta)  # type: ignore[arg-type]
    assert roundtrip(m, compress_above=compress) == m


@given(
    st.one_of(
        st.binary(max_size=60),
        st.builds(
            lambda t: b'{"' + t.encode("utf-8", "surrogatepass"),
            st.text(max_size=60),
        ),
        st.builds(
            lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            st.dictionaries(st.text(max_size=8), st.one_of(st.text(), st.integers())),
        ),
    )
)
def test_the_fast_decoder_agrees_with_json_loads(raw: bytes) -> None:
    from promptkit_async._codec import _loads

    try:
        expected: object = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            _loads(raw)
        return
    assert repr(_loads(raw)) == repr(expected)  # repr: NaN equals itself
