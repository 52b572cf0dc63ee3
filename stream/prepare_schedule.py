"""When the pipeline should prepare the next frames: just before the engine wants them.

A camera delivers 30 frames a second; an engine on a CPU takes a few. Preparing every frame wastes CPU the
engine needs (on 2 cores that cost the pipeline ~10% of the engine's rate), and preparing the next frame as
soon as the engine takes a batch makes that frame one whole engine call old by the time it runs. So the
preprocessing thread waits until the engine's current call should end, less the time preparing takes
and a margin: the frame it then prepares is the newest one, and it is ready when the engine is.

The durations, and the spread of the engine's, are exponential moving averages of what was measured, so a
slower or faster engine (more streams, a prompt change, the similarity filter skipping) retunes the schedule
within a few calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SMOOTHING = 0.3  # weight of the newest measurement in each moving average
# start preparing PREPARE_LEAD x the usual preparation time, plus the usual spread of the engine's call times,
# plus MARGIN_S before the engine is due to be free: the preparing thread competes for the GIL with the
# engine's (5 ms switch interval), so a preparation often takes twice its average, and calls vary by ~10%;
# with one average and 5 ms of margin the engine sat idle ~4% of the time on 2 cores
PREPARE_LEAD = 2.0
MARGIN_S = 0.010


class PrepareSchedule:
    """Thread-safe: the engine thread records its calls, the preprocessing thread asks how long to wait."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._run_started: float | None = None
        self._run_s: float | None = None
        self._run_spread = 0.0  # moving average of |run - average run|
        self._prepare_s: float | None = None

    def run_started(self) -> float:
        """The engine took a batch; returns the start time to hand back to ``run_finished``."""
        now = self._clock()
        with self._lock:
            self._run_started = now
        return now

    def run_finished(self, started: float) -> None:
        seconds = self._clock() - started
        with self._lock:
            if self._run_s is not None:
                self._run_spread = _smooth(self._run_spread, abs(seconds - self._run_s))
            self._run_s = _smooth(self._run_s, seconds)

    def prepared(self, seconds: float) -> None:
        """Preparing the last round of frames took ``seconds``."""
        with self._lock:
            self._prepare_s = _smooth(self._prepare_s, seconds)

    def delay(self) -> float:
        """Seconds to wait before preparing: 0 while nothing is known or the engine is due to be free."""
        with self._lock:
            if self._run_started is None or self._run_s is None:
                return 0.0
            lead = PREPARE_LEAD * (self._prepare_s or 0.0) + self._run_spread + MARGIN_S
            due = self._run_started + self._run_s - lead
        return max(0.0, due - self._clock())


def _smooth(average: float | None, value: float) -> float:
    return value if average is None else (1 - SMOOTHING) * average + SMOOTHING * value
