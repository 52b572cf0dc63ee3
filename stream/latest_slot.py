"""Bounded per-stream queues where the newest item wins (docs/design.md#newest-frame-wins).

A model slower than the camera must lower the frame rate, never raise the latency: when a queue is full
the oldest item is dropped and counted.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Iterable, TypeVar

T = TypeVar("T")


class LatestSlots(Generic[T]):
    """One bounded deque per key, guarded by one condition variable that wakes the consumer."""

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self._queues: dict[str, deque[T]] = {}
        self._dropped: dict[str, int] = {}
        self._closed = False
        self.changed = threading.Condition()

    def put(self, key: str, item: T) -> bool:
        """Adds ``item``; returns True when an older item had to be dropped to make room. Never blocks."""
        with self.changed:
            queue = self._queues.setdefault(key, deque())
            dropped = len(queue) >= self.capacity
            if dropped:
                queue.popleft()
                self._dropped[key] = self._dropped.get(key, 0) + 1
            queue.append(item)
            self.changed.notify_all()
            return dropped

    def take_each(self, keys: Iterable[str] | None = None) -> dict[str, T]:
        """Removes and returns the oldest item of every non-empty queue, or of those of ``keys``."""
        with self.changed:
            queues = self._queues.items() if keys is None else ((k, self._queues.get(k)) for k in keys)
            taken = {key: q.popleft() for key, q in queues if q}
            if taken:
                self.changed.notify_all()  # a producer may wait for room (wait_until_empty)
            return taken

    def keys_with_items(self) -> list[str]:
        with self.changed:
            return [key for key, q in self._queues.items() if q]

    def wait_for_items(self, timeout: float | None = None) -> bool:
        """Blocks until some queue has an item or the slots are closed; True when items are ready."""
        with self.changed:
            self.changed.wait_for(lambda: self._closed or any(self._queues.values()), timeout)
            return any(self._queues.values())

    def wait_until_empty(self) -> None:
        """Blocks until every queue is empty (the consumer took everything) or the slots are closed. Every way
        an item leaves (take_each, discard, close) notifies, so this cannot miss its wake-up."""
        with self.changed:
            self.changed.wait_for(lambda: self._closed or not any(self._queues.values()))

    def discard(self, key: str) -> int:
        """Forgets a key's queue; returns how many items were in it."""
        with self.changed:
            queue = self._queues.pop(key, None)
            self._dropped.pop(key, None)
            self.changed.notify_all()  # a producer waiting for room (wait_until_empty) may go on
            return len(queue) if queue else 0

    def dropped(self, key: str) -> int:
        with self.changed:
            return self._dropped.get(key, 0)

    def pending(self) -> int:
        with self.changed:
            return sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        with self.changed:
            self._closed = True
            self.changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
