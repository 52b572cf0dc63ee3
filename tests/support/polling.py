"""Waiting for a condition that another thread or task makes true: polls ``check`` until it holds or time is up."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

INTERVAL_S = 0.05


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Awaits until ``check()`` is true, yielding to the event loop between checks; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(INTERVAL_S)


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Blocks until ``check()`` is true; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(INTERVAL_S)
