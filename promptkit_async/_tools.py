"""Tools a model may call in ``session.run()``: a name, a description, a JSON schema, a function.

A :class:`Tool` is what every provider needs to describe a function to a
model (name, description, JSON-schema parameters) plus the Python callable
that answers the call. ``@tool`` builds one from a function's signature for
the simple cases (str, int, float, bool, list, dict parameters, and
``Optional`` / defaults), with no schema library: anything richer is passed
as ``parameters=`` by hand.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union, overload

__all__ = ["Tool", "tool"]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call.

    Args:
        name: what the model calls it by (letters, digits, ``_`` and ``-``, at
            most 64: the rule every provider shares).
        fn: the function, sync or async, called with the model's arguments as
            keywords. Its return value is the result the model reads: a str as
            is, anything else as JSON. A sync function runs in a worker thread,
            so that it cannot stall the event loop.
        description: what it does, for the model.
        parameters: the JSON schema of its arguments (an ``object`` schema).

    Raises:
        ValueError: a name a provider would refuse, or a schema that is not an
            object schema.
        TypeError: ``fn`` is not callable.
    """

    name: str
    fn: Callable[..., Any]
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"tool name must be 1-64 letters, digits, '_' or '-', got {self.name!r}"
            )
        if not callable(self.fn):
            raise TypeError(f"tool {self.name!r}: fn must be callable, got {self.fn!r}")
        if not isinstance(self.description, str):
            raise TypeError(f"tool {self.name!r}: description must be a str")
        params = self.parameters
        if not isinstance(params, Mapping) or params.get("type") != "object":
            raise ValueError(
                f"tool {self.name!r}: parameters must be a JSON schema of type 'object', "
                f"got {params!r}"
            )

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        """Run the function with ``arguments`` (a sync one in a worker thread)."""
        fn = self.fn
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 (an object with an async __call__)
        ):
            return await fn(**arguments)
        import asyncio

        result = await asyncio.to_thread(fn, **arguments)
        if inspect.isawaitable(result):  # a sync function that returned an awaitable
            return await result
        return result


_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
}


def _schema_of(annotation: Any, where: str) -> tuple[dict[str, Any], bool]:
    """The JSON schema of a parameter's annotation, and whether it may be None."""
    origin = typing.get_origin(annotation)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _schema_of(args[0], where)[0], True
        raise TypeError(f"{where}: a union of several types needs parameters= by hand")
    if origin is typing.Literal:
        values = list(typing.get_args(annotation))
        return {"enum": values}, False
    base = origin if origin is not None else annotation
    if base in _JSON_TYPES:
        schema: dict[str, Any] = {"type": _JSON_TYPES[base]}
        item_args = typing.get_args(annotation)
        if base in (list, tuple) and len(item_args) == 1:
            schema["items"] = _schema_of(item_args[0], where)[0]
        return schema, False
    raise TypeError(
        f"{where}: cannot describe {annotation!r} as JSON schema; pass parameters= by hand"
    )


def _parameters_of(fn: Callable[..., Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: *args and **kwargs cannot be described to a model")
        if name not in hints:
            raise TypeError(f"{fn.__name__}: parameter {name!r} needs a type annotation")
        schema, optional = _schema_of(hints[name], f"{fn.__name__}({name})")
        properties[name] = schema
        if param.default is param.empty and not optional:
            required.append(name)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


@overload
def tool(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a function: ``@tool``, ``@tool(name=..., description=...)``
    or ``tool(fn, name=...)``.

    The name defaults to the function's, the description to the first
    paragraph of its docstring, the parameters to a schema built from its
    annotations.

    Raises:
        TypeError: an annotation with no JSON-schema counterpart (pass
            ``parameters=``), a parameter without one, ``*args``/``**kwargs``.
    """

    def make(f: Callable[..., Any]) -> Tool:
        doc = inspect.getdoc(f) or ""
        return Tool(
            name=name or f.__name__,
            fn=f,
            description=description if description is not None else doc.split("\n\n")[0],
            parameters=parameters if parameters is not None else _parameters_of(f),
        )

    if fn is not None:
        return make(fn)
    return make
