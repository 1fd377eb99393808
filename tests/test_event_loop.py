"""The suite runs on the event loop CI asks for (``PROMPTKIT_LOOP``): checked, not assumed."""

from __future__ import annotations

import asyncio

from .conftest import LOOP


async def test_the_tests_run_on_the_chosen_loop() -> None:
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.startswith("uvloop") == (LOOP == "uvloop"), type(loop)
