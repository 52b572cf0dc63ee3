"""One asyncio lock per stream id: whatever opens, replaces or closes a stream (its peer, its engine and pipeline
stream, its viewers) holds it, so concurrent requests for one id take turns and never see half a stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator


class KeyedLocks:
    """``async with locks.hold(key)``: one holder per key at a time; a key's lock is dropped when nobody holds or
    waits for it, so the table does not grow with every id ever seen."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> (lock, holders and waiters)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def held(self, key: str) -> bool:
        return key in self._locks

    def __len__(self) -> int:
        return len(self._locks)
