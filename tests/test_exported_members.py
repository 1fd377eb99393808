"""The public surface: what promptkit_async exports and how it names it."""

from __future__ import annotations

import builtins
import collections.abc
import inspect
import re
import typing
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

import promptkit_async
from promptkit_async import (
    PromptKitError,
)

if TYPE_CHECKING:
    from promptkit_async import TTL


def test_public_names() -> None:
    for name in [
        "Session",
        "Message",
        "MemoryStore",
        "RedisStore",
        "PromptKitError",
        "StoreUnavailable",
        "CorruptHistory",
        "SessionBusy",
        "InvalidSessionId",
        "InvalidMessage",
    ]:
        assert name in promptkit_async.__all__
        assert getattr(promptkit_async, name).__module__ == "promptkit_async"
    for name in promptkit_async.__all__:
        obj = getattr(promptkit_async, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, PromptKitError)


def test_ttl_alias_is_exported_for_typing() -> None:
    t: TTL = 5
    assert t == 5


NAMESPACES = [promptkit_async, promptkit_async.providers, promptkit_async.stores]


@pytest.mark.parametrize("namespace", NAMESPACES, ids=lambda m: m.__name__)
def test_all_is_sorted_and_is_exactly_the_public_names(namespace: ModuleType) -> None:
    exported = list(namespace.__all__)
    assert exported == sorted(exported)
    public = {
        name
        for name, value in vars(namespace).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public == set(exported)


@pytest.mark.parametrize("namespace", NAMESPACES, ids=lambda m: m.__name__)
def test_public_classes_and_functions_name_their_most_public_home(namespace: ModuleType) -> None:
    for name in namespace.__all__:
        obj = getattr(namespace, name)
        if issubclass(type(obj), type) or inspect.isfunction(obj):
            home = "promptkit_async" if name in promptkit_async.__all__ else namespace.__name__
            assert obj.__module__ == home, name


# Names a public signature may use without their being ours to export.
_FOREIGN = (
    set(dir(builtins))
    | set(typing.__all__)
    | set(collections.abc.__all__)
    | {
        "annotations",
        "Self",
        "Unpack",
        "TracebackType",
        "timedelta",
        "datetime",
        "aioredis",
        "Redis",
        "RedisCluster",
        "Sentinel",
        "httpx",
        "AsyncClient",
        "Headers",
        "Response",
    }
)


def _annotation_names(obj: object) -> set[str]:
    """The identifiers in the (string) annotations of a public class or function."""
    texts: list[str] = []
    targets: list[object] = [obj]
    if issubclass(type(obj), type):
        texts += [
            a.__forward_arg__ if isinstance(a, typing.ForwardRef) else str(a)
            for a in vars(obj).get("__annotations__", {}).values()
        ]
        targets += [
            member
            for attr, member in vars(obj).items()
            if not attr.startswith("_") or attr == "__init__"
        ]
    for target in targets:
        function = target.fget if isinstance(target, property) else target
        if isinstance(function, (classmethod, staticmethod)):
            function = function.__func__
        if not callable(function):
            continue
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            continue
        for parameter in signature.parameters.values():
            if parameter.annotation is not inspect.Parameter.empty:
                texts.append(str(parameter.annotation))
        if signature.return_annotation is not inspect.Signature.empty:
            texts.append(str(signature.return_annotation))
    names: set[str] = set()
    for text in texts:
        # Skip string literals (Literal["discard", ...]) and dotted module paths.
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "", text)
        names |= {m.split(".")[-1] for m in re.findall(r"[A-Za-z_][\w.]*", text)}
    return names


def test_every_type_in_a_public_signature_is_exported() -> None:
    exported = set(promptkit_async.__all__)
    missing: dict[str, set[str]] = {}
    for name in promptkit_async.__all__:
        obj = getattr(promptkit_async, name)
        if issubclass(type(obj), type) or inspect.isfunction(obj):
            unknown = _annotation_names(obj) - exported - _FOREIGN
            if unknown:
                missing[name] = unknown
    assert missing == {}
