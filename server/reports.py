"""Each live stream as ``/health`` and ``/metrics`` report it, read from the peers, viewers and pipeline."""

from __future__ import annotations

import time

from server.metrics import StreamReport
from server.peers import PeerManager
from server.schemas import StreamRates
from server.viewers import ViewerManager
from stream.pipeline import FramePipeline


def stream_reports(peers: PeerManager, viewers: ViewerManager, pipeline: FramePipeline) -> list[StreamReport]:
    """One report per peer whose stream is open (a peer still connecting, or closing, has none)."""
    now = time.monotonic()
    reports = []
    for stream_id, peer in list(peers.peers.items()):
        try:
            stats = pipeline.stats(stream_id)
        except KeyError:
            continue
        shared = viewers.meters.get(stream_id)
        reports.append(StreamReport(
            stream=stream_id, kind=peer.kind.value, viewers=viewers.count(stream_id),
            received=stats.submitted, generated=stats.generated, sent_peer=peer.meter.total,
            sent_viewers=shared.total if shared else 0, dropped=stats.dropped + stats.dropped_output,
            skipped=stats.skipped, errors=stats.errors,
            received_fps=peer.received_rate.rate(stats.submitted, now),
            generated_fps=peer.generated_rate.rate(stats.generated, now),
            sent_peer_fps=peer.meter.fps(now), sent_viewers_fps=shared.fps(now) if shared else 0.0,
            latency_peer=peer.meter, latency_viewers=shared))
    return reports


def health_rates(reports: list[StreamReport]) -> dict[str, StreamRates]:
    return {r.stream: StreamRates(kind=r.kind, viewers=r.viewers, received_fps=round(r.received_fps, 2),
                                  generated_fps=round(r.generated_fps, 2), sent_fps=round(r.sent_peer_fps, 2),
                                  viewers_sent_fps=round(r.sent_viewers_fps, 2))
            for r in reports}
