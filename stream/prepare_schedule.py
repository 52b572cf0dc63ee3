"""When the pipeline should prepare the next frames: just before the engine wants them, so no CPU goes to frames a
newer one replaces and the frame the engine takes is the newest (docs/design.md#prepared-just-in-time).

The durations are exponential moving averages of what was measured, so a slower or faster engine retunes the
schedule within a few calls; a call that ends early wakes the waiting thread at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SMOOTHING = 0.3  # weight of the newest measurement in each moving average
# start preparing PREPARE_LEAD x the usual preparation time plus MARGIN_S before the engine is due to be free:
# the preparing thread competes for the GIL with the engine's (5 ms switch interval), so a preparation often
# takes twice its average
PREPARE_LEAD = 2.0
MARGIN_S = 0.010


class PrepareSchedule:
    """Thread-safe: the engine thread records its calls, the preprocessing thread waits for its moment."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._run_started: float | None = None  # of the call in progress; None between calls
        self._runs_ended = 0
        self._run_s: float | None = None
        self._prepare_s: float | None = None
        self._released = False

    def run_started(self) -> float:
        """The engine took a batch; returns the start time to hand back to ``run_finished``."""
        now = self._clock()
        with self._changed:
            self._run_started = now
        return now

    def run_finished(self, started: float, *, failed: bool = False) -> None:
        """The call begun at ``started`` ended (a failed one is not averaged in); wakes ``wait_until_due``."""
        seconds = self._clock() - started
        with self._changed:
            if not failed:
                self._run_s = smooth(self._run_s, seconds)
            self._run_started = None
            self._runs_ended += 1
            self._changed.notify_all()

    def prepared(self, seconds: float) -> None:
        """Preparing the last round of frames took ``seconds``."""
        with self._changed:
            self._prepare_s = smooth(self._prepare_s, seconds)

    def delay(self) -> float:
        """Seconds until preparing should start: 0 between calls, while nothing is known, or when due."""
        with self._changed:
            return self._delay()

    def wait_until_due(self) -> None:
        """Blocks until preparing should start, the engine's current call ends, or ``release`` is called."""
        with self._changed:
            runs_ended = self._runs_ended
            while not self._released and self._runs_ended == runs_ended and (delay := self._delay()) > 0:
                self._changed.wait(delay)

    def release(self) -> None:
        """Ends every wait, now and later (the pipeline is closing: what is left gets prepared at once)."""
        with self._changed:
            self._released = True
            self._changed.notify_all()

    def _delay(self) -> float:
        if self._run_started is None or self._run_s is None:
            return 0.0
        lead = PREPARE_LEAD * (self._prepare_s or 0.0) + MARGIN_S
        return max(0.0, self._run_started + self._run_s - lead - self._clock())


def smooth(average: float | None, value: float) -> float:
    """An exponential moving average with ``value`` weighted SMOOTHING; the first value starts it."""
    return value if average is None else (1 - SMOOTHING) * average + SMOOTHING * value
