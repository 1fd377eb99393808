"""The import layering: pure parts import no I/O, stores and providers stay apart.

Read from the source (runtime imports only: those under ``if TYPE_CHECKING:``
are for type checkers), so a new import that crosses a layer fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "promptkit_async"

#: Modules with no I/O: they may import only the standard library and each other.
PURE = [
    "_codec",
    "_config",
    "_exceptions",
    "_ids",
    "_messages",
    "_parts",
    "_trim",
    "_types",
    "providers._anthropic_wire",
    "providers._arguments",
    "providers._gemini_wire",
    "providers._ndjson",
    "providers._ollama_wire",
    "providers._openai_wire",
    "providers._responses_wire",
    "providers._sse",
]
#: Third-party packages that do I/O.
IO = ("redis", "httpx", "anyio", "hiredis")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _runtime_imports(path: Path) -> set[str]:
    """Absolute names of what ``path`` imports when it runs."""
    tree = ast.parse(path.read_text())
    here = _module_name(path).split(".") if _module_name(path) else []
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here if is_package else here[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(["promptkit_async", *base])
                    module = f"{prefix}.{node.module}" if node.module else prefix
                    found.add(module)
                    found.update(f"{module}.{alias.name}" for alias in node.names)
                elif node.module:
                    found.add(node.module)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(tree.body)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _package_modules(imports: set[str]) -> set[str]:
    return {
        name.removeprefix("promptkit_async.")
        for name in imports
        if name.startswith("promptkit_async.") and name.removeprefix("promptkit_async.") in MODULES
    }


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_and_only_pure_modules(module: str) -> None:
    imports = _runtime_imports(MODULES[module])
    assert not {i for i in imports if i.split(".")[0] in IO}
    assert _package_modules(imports) <= set(PURE), module


def test_stores_never_import_providers_and_providers_never_import_stores() -> None:
    for name, path in MODULES.items():
        imported = _package_modules(_runtime_imports(path))
        if name.startswith("stores"):
            assert not {m for m in imported if m.startswith("providers")}, name
        if name.startswith("providers"):
            assert not {m for m in imported if m.startswith("stores")}, name


def test_the_session_knows_stores_only_by_their_contract() -> None:
    for name in ("_session", "_plan", "_reply", "_settings", "_app"):
        imported = _package_modules(_runtime_imports(MODULES[name]))
        concrete = {m for m in imported if m.startswith(("stores._", "providers._"))}
        assert concrete <= {"stores._contract", "providers._base"}, (name, concrete)


def test_the_session_never_probes_its_store() -> None:
    source = (PACKAGE / "_session.py").read_text()
    assert "getattr(" not in source and "hasattr(" not in source
    assert "setattr(" not in source.replace("object.__setattr__", "")


def test_the_check_sees_imports() -> None:
    # The checker itself: it must find a known runtime import and skip typing-only ones.
    imports = _runtime_imports(MODULES["stores._redis._store"])
    assert "redis.asyncio" in imports
    assert "promptkit_async.stores._redis._commit" in imports
    assert "promptkit_async.stores._contract" not in imports  # under TYPE_CHECKING there
