"""Per-stream meters and their Prometheus text exposition (no client library needed for a handful of series)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)  # seconds
FPS_WINDOW = 2.0  # seconds of sent frames the fps is averaged over


@dataclass
class StreamMeter:
    """Frames sent to a viewer: fps over the last FPS_WINDOW seconds and an input-to-send latency histogram."""

    sent: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, now: float, latency: float, kind: str) -> None:
        with self.lock:
            self.sent.append(now)
            if kind != "warmup":
                self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
                self.latency_sum += latency
                self.latency_count += 1

    def fps(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self.lock:
            recent = [t for t in self.sent if now - t <= FPS_WINDOW]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(meters: dict[str, StreamMeter], counters: dict[str, dict[str, int]], gauges: dict[str, float]) -> str:
    """Prometheus text format: per-stream fps and latency histogram, per-stream counters, global gauges."""
    lines = ["# HELP sana_stream_fps Frames per second sent to the viewer.", "# TYPE sana_stream_fps gauge"]
    for sid, meter in meters.items():
        lines.append(f'sana_stream_fps{{stream="{_escape(sid)}"}} {meter.fps():.3f}')
    lines += ["# HELP sana_stream_latency_seconds Input frame receipt to output frame send.",
              "# TYPE sana_stream_latency_seconds histogram"]
    for sid, meter in meters.items():
        label = f'stream="{_escape(sid)}"'
        with meter.lock:
            counts, total, count = list(meter.bucket_counts), meter.latency_sum, meter.latency_count
        cumulative = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), counts):
            cumulative += n
            le = "+Inf" if bound == float("inf") else f"{bound}"
            lines.append(f'sana_stream_latency_seconds_bucket{{{label},le="{le}"}} {cumulative}')
        lines.append(f"sana_stream_latency_seconds_sum{{{label}}} {total:.6f}")
        lines.append(f"sana_stream_latency_seconds_count{{{label}}} {count}")
    for name, per_stream in counters.items():
        lines += [f"# TYPE sana_stream_{name}_total counter"]
        lines += [f'sana_stream_{name}_total{{stream="{_escape(sid)}"}} {n}' for sid, n in per_stream.items()]
    for name, value in gauges.items():
        lines += [f"# TYPE sana_stream_{name} gauge", f"sana_stream_{name} {value}"]
    return "\n".join(lines) + "\n"
