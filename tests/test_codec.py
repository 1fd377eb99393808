"""The stored record format: compact, versioned, forward-compatible, corrupt records named."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tracemalloc
import zlib
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptkit_async import (
    CorruptHistory,
    InvalidMessage,
    Message,
    MessageTooLarge,
    ToolCall,
    _codec,
)
from promptkit_async._codec import (
    FORMAT_VERSION,
    decode_message,
    decode_records,
    encode_message,
    header,
)

if TYPE_CHECKING:
    from collections.abc import Callable


def roundtrip(m: Message, **kw: Any) -> Message:
    return decode_message(encode_message(m, **kw), session_id="s", index=0)


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


def test_stored_format_is_compact_and_versioned() -> None:
    raw = encode_message(Message.user("hi"))
    assert raw == b'{"v":2,"r":"user","c":"hi"}'
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


def test_a_decompression_bomb_is_corrupt_history_without_inflating_it() -> None:
    # 256 MiB of text compresses to a quarter of a megabyte; it must never be inflated.
    bomb = b"\x00z" + zlib.compress(b'{"v":1,"r":"user","c":"' + b"a" * (256 << 20) + b'"}', 9)
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        with pytest.raises(CorruptHistory, match="inflates beyond"):
            decode_message(bomb, session_id="s", index=0, max_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peaked at {peak} bytes"
    # Within the limit it reads back, and a truncated stream is still corrupt.
    small = encode_message(Message.user("x" * 5000), compress_above=100)
    assert decode_message(small, session_id="s", index=0, max_bytes=1 << 20).content == "x" * 5000
    with pytest.raises(CorruptHistory):
        decode_message(small[:-5], session_id="s", index=0)


def test_a_record_over_the_limit_is_refused_when_written() -> None:
    with pytest.raises(MessageTooLarge) as info:
        encode_message(Message.user("x" * 2000), max_bytes=1000)
    assert info.value.limit == 1000


@pytest.mark.parametrize(
    "record",
    [
        b'{"v":1,"r":"user","c":"hi","n":"\\ud800"}',
        b'{"v":1,"r":"tool","c":"42","ti":"\\udc00"}',
        b'{"v":1,"r":"assistant","c":"","tc":[["call_1","f","{\\"a\\":\\"\\ud800\\"}"]]}',
        b'{"v":1,"r":"assistant","c":"","tc":[["\\ud800","f","{}"]]}',
        b'{"v":1,"r":"user","c":"hi","m":{"k":"\\ud800"}}',
        b'{"v":1,"r":"user","c":"hi","m":{"\\ud800":1}}',
    ],
    ids=["name", "tool_call_id", "arguments", "call id", "metadata value", "metadata key"],
)
def test_a_lone_surrogate_in_any_stored_text_field_is_corrupt_history(record: bytes) -> None:
    with pytest.raises(CorruptHistory, match="lone surrogate"):
        decode_message(record, session_id="s", index=0)


def test_a_lone_surrogate_in_any_text_field_is_refused_when_built() -> None:
    bad = "\ud800"
    builds: list[Callable[[], Message]] = [
        lambda: Message.user("hi", name=bad),
        lambda: Message.tool("42", tool_call_id=bad),
        lambda: Message.assistant("", tool_calls=[ToolCall("c", "f", bad)]),
        lambda: Message.assistant("", tool_calls=[ToolCall(bad, "f", "{}")]),
        lambda: Message.user("hi", k=bad),
        lambda: Message.user("hi", meta={bad: 1}),
    ]
    for build in builds:
        with pytest.raises(InvalidMessage, match="lone surrogate"):
            build()


# -- the optional fast decoder (the ``fast`` extra: msgspec) --------------------------

_FAST = importlib.util.find_spec("msgspec") is not None


def _decoders() -> list[Any]:
    params: list[Any] = [pytest.param(None, id="stdlib")]
    if _FAST:
        import msgspec

        params.append(pytest.param(msgspec.json.Decoder().decode, id="msgspec"))
    else:
        params.append(pytest.param(None, id="msgspec", marks=pytest.mark.skip("no msgspec")))
    return params


@pytest.fixture(params=_decoders())
def fast_loads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each decoding path: the stdlib scanner, and msgspec's decoder (when installed)."""
    monkeypatch.setattr(_codec, "_fast_loads", request.param)
    return request.param


def _stored(payload: bytes, ms: int = 1_700_000_000_123, mid: str = "41") -> bytes:
    return header(ms, mid) + payload


def test_the_fast_extra_is_used_when_installed() -> None:
    if _FAST:
        assert _codec._fast_loads is not None
    else:
        assert _codec._fast_loads is None


def test_without_msgspec_the_library_imports_and_uses_the_stdlib() -> None:
    code = (
        "import sys; sys.modules['msgspec'] = None\n"
        "import promptkit_async\n"
        "from promptkit_async import _codec, Message\n"
        "assert _codec._fast_loads is None\n"
        "raw = _codec.header(5, '3') + _codec.encode_message(Message.user('h\\u00e9'))\n"
        "m = _codec.decode_message(raw, session_id='s', index=0)\n"
        "assert m == Message.user('h\\u00e9') and m.id == '3', m\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "message",
    [
        Message.user("hi"),
        Message.assistant("café 日本語 \U0001f600"),
        Message.system('quote " backslash \\ newline \n tab \t nul \x00 del \x7f'),
        Message.user("a\u2028b"),
        Message.user("x", meta={"f": 1.5e-7, "big": 2**70}),
        Message.assistant("", tool_calls=[ToolCall("c1", "f", '{"a": 1}')]),
    ],
    ids=["ascii", "non-ascii", "escapes", "separator", "metadata", "tool call"],
)
def test_both_paths_write_the_same_bytes_and_read_the_same_message(
    fast_loads: Any, message: Message
) -> None:
    data = encode_message(message)
    assert data == _codec._dumps(_codec._record(message)).encode()  # the stdlib encoder
    back = decode_message(_stored(data), session_id="s", index=0)
    assert back == message
    assert back.id == "41"
    assert back.created_at is not None and _codec.ms_of(back.created_at) == 1_700_000_000_123


@pytest.mark.parametrize(
    ("payload", "content"),
    [
        (b'{"v":2,"r":"user","c":"\\ud83d\\ude00"}', "\U0001f600"),  # an escaped pair
        (b'{"v":2,"r":"user","c":"a","c":"b"}', "b"),  # the last duplicate wins
        (b'{"v":2,"r":"user","c":"x"} ', "x"),  # trailing whitespace
        (b'{"v":NaN,"r":"user","c":"x"}', "x"),  # NaN: the stdlib reads it
        (b'{"v":1e400,"r":"user","c":"x"}', "x"),  # out of a double's range
    ],
)
def test_what_the_stdlib_reads_both_paths_read_alike(
    fast_loads: Any, payload: bytes, content: str
) -> None:
    assert decode_message(_stored(payload), session_id="s", index=0).content == content


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"v":2,"r":"user","c":"a\\ud800b"}', "surrogate"),
        (b'{"v":2,"r":"user","c":"\xed\xa0\x80"}', "surrogate"),  # an encoded surrogate
        (b'{"v":2,"r":"user","c":"\xff"}', "UnicodeDecodeError"),
        (b'{"v":2,"r":"user","c":"a\x01"}', "JSONDecodeError"),
        (b'{"v":2,"r":"user","c":"x"} x', "JSONDecodeError"),
        (b'{"v":2,"r":"user","c":5}', "not a valid message"),
        (b'{"v":2,"r":"robot","c":"x"}', "not a valid message"),
    ],
)
def test_what_the_stdlib_refuses_both_paths_refuse_alike(
    fast_loads: Any, payload: bytes, match: str
) -> None:
    with pytest.raises(CorruptHistory, match=match) as info:
        decode_message(_stored(payload), session_id="sess", index=4)
    assert info.value.index == 4


@given(
    st.one_of(
        st.binary(max_size=80),
        st.builds(lambda t: t.encode("utf-8", "surrogatepass"), st.text(max_size=80)),
        st.builds(
            lambda r, c, extra: json.dumps(
                {"v": 2, "r": r, "c": c, **extra}, ensure_ascii=False
            ).encode("utf-8", "surrogatepass"),
            st.sampled_from(["user", "assistant", "system", "tool", "x"]),
            st.one_of(st.text(max_size=40), st.integers()),
            st.dictionaries(st.sampled_from(["c", "v", "n"]), st.text(max_size=5), max_size=1),
        ),
    )
)
def test_the_fast_decoder_agrees_with_the_stdlib_path(payload: bytes) -> None:
    if not _FAST:
        pytest.skip("msgspec is not installed")
    import msgspec

    raw = _stored(b'{"' + payload if not payload.startswith(b'{"') else payload)
    results: list[tuple[object, ...]] = []
    for loads in (None, msgspec.json.Decoder().decode):
        _codec._fast_loads = loads
        try:
            m = decode_message(raw, session_id="s", index=0)
            results.append(("ok", repr(m), m.id, m.created_at))
        except CorruptHistory as exc:
            results.append(("corrupt", exc.index, None, None))
        finally:
            _codec._fast_loads = _FAST_DEFAULT
    assert results[0] == results[1]


_FAST_DEFAULT = _codec._fast_loads


# -- a window's records decoded in one loop -------------------------------------------

_RECORDS = st.one_of(
    # what a store writes most: header + {"v","r","c"}
    st.builds(
        lambda r, c, ms, mid: _stored(encode_message(Message(r, c)), ms, mid),
        st.sampled_from(["user", "assistant", "system"]),
        st.text(max_size=30),
        st.sampled_from([1_700_000_000_123, 1_700_000_000_124, 0]),
        st.sampled_from(["41", "7~2", "x"]),
    ),
    # other messages, headerless and compressed records, text records
    st.sampled_from(
        [
            _stored(encode_message(Message.assistant("", tool_calls=[ToolCall("c", "f", "{}")]))),
            _stored(encode_message(Message.user("m", meta={"k": 1}))),
            _stored(encode_message(Message.user("z" * 300), compress_above=10)),
            encode_message(Message.user("format 1")),
            _stored(encode_message(Message.user("text"))).decode(),
        ]
    ),
    # damage: every way the common path must step aside
    st.sampled_from(
        [
            b'\x002170 41\n{"v":2,"r":"robot","c":"x"}',
            b'\x002170 41\n{"v":2,"r":"user","c":"a\\ud800b"}',
            b'\x002170 41\n{"v":2,"r":"user","c":5}',
            b'\x002170 41\n{"v":2,"c":"x","n":1}',
            b'\x002170 41\n{"v":2,"r":"user","c":"x"} x',
            b'\x0021x0 41\n{"v":2,"r":"user","c":"x"}',
            b'\x002170 \n{"v":2,"r":"user","c":"x"}',
            b'\x002170 41\n["v",2]',
            b"\x002170 41\n",
            b"\xff\xfe",
        ]
    ),
    st.binary(max_size=40),
)


def _outcome(decode: Any) -> tuple[object, ...]:
    try:
        return ("ok", [(repr(m), m.id, m.created_at) for m in decode()])
    except CorruptHistory as exc:
        return ("corrupt", exc.index, str(exc))


@given(st.lists(_RECORDS, max_size=8), st.sampled_from([0, -8]))
def test_a_window_decodes_as_each_record_would_alone(
    records: list[bytes | str], first: int
) -> None:
    def one_by_one() -> list[Message]:
        return [
            decode_message(r, session_id="s", index=first + i, max_bytes=1 << 20)
            for i, r in enumerate(records)
        ]

    def together() -> list[Message]:
        return decode_records(records, session_id="s", first_index=first, max_bytes=1 << 20)

    decoders: list[Any] = [None]
    if _FAST:
        import msgspec

        decoders.append(msgspec.json.Decoder().decode)
    for loads in decoders:  # both paths: the stdlib scanner and msgspec's decoder
        _codec._fast_loads = loads
        try:
            assert _outcome(together) == _outcome(one_by_one)
        finally:
            _codec._fast_loads = _FAST_DEFAULT
