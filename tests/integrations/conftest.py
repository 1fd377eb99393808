"""The frameworks' adapters: their tests need the framework, from the adapter's extra.

A missing framework skips its tests, loudly; with ``PROMPTKIT_REQUIRE_INTEGRATIONS=1``
(as CI sets where it installs the extras) it fails them instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

REQUIRE_INTEGRATIONS = os.environ.get("PROMPTKIT_REQUIRE_INTEGRATIONS") == "1"


def framework(module: str, extra: str, *, python: tuple[int, int] = (3, 10)) -> ModuleType:
    """Import ``module``, or skip (fail when required) naming the extra to install.

    On a Python older than the framework supports (``python``), always skip.
    """
    if sys.version_info < python:
        pytest.skip(
            f"{module} needs Python {python[0]}.{python[1]} or newer", allow_module_level=True
        )
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed ({exc}): pip install -e '.[test,{extra}]'"
        if REQUIRE_INTEGRATIONS:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
