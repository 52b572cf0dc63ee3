"""/health and /metrics of the whole cluster: every worker's own figures, per worker and per stream."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from cluster.supervisor import WorkerSlot, WorkerState
from server.schemas import Health

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class WorkerHealth(BaseModel):
    index: int
    state: WorkerState
    node: str | None
    url: str | None
    pid: int | None
    device: str | None
    engine: str | None  # built / cached (this node's engine cache) / uncompiled
    rate_fps: float | None  # frames a second its engine gave one stream alone, measured at its start
    restarts: int
    streams: dict[str, float]  # stream id -> frames a second sent
    viewers: int
    error: str | None


class ClusterHealth(Health):
    """The single server's /health fields summed over the ready workers, plus each worker."""

    workers_ready: int
    workers: list[WorkerHealth]


def worker_health(slot: WorkerSlot) -> WorkerHealth:
    s = slot.status
    live = s is not None and slot.state in (WorkerState.READY, WorkerState.UNRESPONSIVE)
    return WorkerHealth(index=slot.index, state=slot.state, node=s.node if s else None, url=s.url if s else None,
                        pid=s.pid if s else None, device=s.device if s else None,
                        engine=s.engine.value if s and s.engine else None, rate_fps=s.rate_fps if s else None,
                        restarts=slot.restarts, streams={r.id: r.fps for r in s.streams} if live else {},
                        viewers=s.viewers if live else 0, error=s.error if s else None)


def cluster_health(slots: Sequence[WorkerSlot], model: str, demo: bool, backend: str) -> ClusterHealth:
    workers = [worker_health(slot) for slot in slots]
    ready = [w for w in workers if w.state is WorkerState.READY]
    status = "ok" if len(ready) == len(workers) else "degraded" if ready else "unavailable"
    first = next((s.status for s in slots if s.state is WorkerState.READY and s.status), None)
    fps = {sid: value for w in workers for sid, value in w.streams.items()}
    live = [s.status for s in slots if s.status and s.state in (WorkerState.READY, WorkerState.UNRESPONSIVE)]
    rates = {sid: r for status in live for sid, r in status.rates.items()}
    return ClusterHealth(status=status, model=model, demo_model=demo, backend=backend,
                         device=",".join(sorted({w.device for w in ready if w.device})) or "none",
                         dtype=first.dtype if first else "", streams=len(fps), peers=len(fps),
                         viewers=sum(w.viewers for w in workers), fps=fps, rates=rates, workers_ready=len(ready), workers=workers)


@dataclass
class _Family:
    meta: list[str] = field(default_factory=list)  # its # HELP / # TYPE lines, from the first worker that had it
    samples: list[str] = field(default_factory=list)


def _with_label(sample: str, label: str) -> str:
    name_and_labels, _, value = sample.rpartition(" ")
    if name_and_labels.endswith("}"):
        name, _, labels = name_and_labels.partition("{")
        return f"{name}{{{label},{labels} {value}"
    return f"{name_and_labels}{{{label}}} {value}"


def merge_metrics(expositions: Mapping[int, str], front: Mapping[str, Mapping[str, float]]) -> str:
    """The workers' Prometheus texts as one: each sample gains a ``worker`` label, each family is written once
    with every worker's samples together (the text format wants a family's lines in one block). ``front``:
    the front's own gauges, name -> {label text (may be empty) -> value}."""
    families: dict[str, _Family] = {}
    for worker, text in expositions.items():
        current = ""  # the family named by the last # HELP or # TYPE line
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(maxsplit=3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    current = parts[2]
                    family = families.setdefault(current, _Family())
                    if not any(m.split(maxsplit=2)[1] == parts[1] for m in family.meta):
                        family.meta.append(line)
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            key = current if current in (name, _base(name)) else name
            families.setdefault(key, _Family()).samples.append(_with_label(line, f'worker="{worker}"'))
    lines = [line for family in families.values() for line in (*family.meta, *family.samples)]
    for name, series in front.items():
        lines.append(f"# TYPE sana_stream_{name} gauge")
        lines += [f"sana_stream_{name}{{{labels}}} {value}" if labels else f"sana_stream_{name} {value}"
                  for labels, value in series.items()]
    return "\n".join(lines) + "\n"


def _base(name: str) -> str:
    """A histogram sample's family name: its own without _bucket, _sum or _count."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
