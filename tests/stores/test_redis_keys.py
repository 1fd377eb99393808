"""The Redis key schema: injective, one hash tag per session, literal globs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from promptkit_async.stores._redis import _keys

from ..samples import IDS

if TYPE_CHECKING:
    from ..backends import RedisBackend


ids = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80)


@given(ids, ids)
def test_distinct_ids_never_share_a_key(a: str, b: str) -> None:
    if a != b:
        assert _keys.key("pk", a, "h") != _keys.key("pk", b, "h")


@given(ids)
def test_key_round_trips_and_hash_tag_is_the_whole_id(sid: str) -> None:
    raw = _keys.key("pk", sid, "h")
    assert _keys.parse_key("pk", raw) == sid
    text = raw.decode()
    start = text.index("{")
    end = text.index("}", start)
    assert text[start + 1 : end] == _keys.encode_id(sid)
    assert key_slot(raw) == key_slot(_keys.key("pk", sid, "t"))


def test_glob_escape() -> None:
    assert _keys.glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


def test_parse_key_rejects_foreign_keys() -> None:
    assert _keys.parse_key("pk", b"other:{x}:h") is None
    assert _keys.parse_key("pk", b"pk:{x}:t") is None
    assert _keys.parse_key("pk", b"pk:{x}y}:h") is None
    assert _keys.parse_key("pk", b"\xff") is None


async def test_all_keys_of_a_session_share_one_hash_tag(redis_backend: RedisBackend) -> None:
    from redis.crc import key_slot

    store = redis_backend.redis
    for sid in IDS:
        slots = {key_slot(store.key(sid, kind)) for kind in ("h", "t", "l")}
        assert len(slots) == 1, sid
    assert len({store.key(sid) for sid in IDS}) == len(IDS)
