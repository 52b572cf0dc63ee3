"""``serve --ndi``: each stream's restyled output as an NDI source named after the stream (``rtc.ndi``), for a GPU
machine on the studio's LAN. A source appears at the stream's first output, at its size, announced at
``NDI_FPS`` (the server does not know the camera's rate; frames go out as they are made). When a stream closes
its source stays up for ``linger`` seconds, so a client that reconnects with the same stream id (the camera
bridge does) finds the same source and receivers such as OBS keep it."""

from __future__ import annotations

import asyncio
import logging

from rtc.ndi import NdiSender, NdiUnavailable
from stream.pipeline import FramePipeline

logger = logging.getLogger(__name__)
NDI_FPS = 30.0  # the frame rate each source announces


class NdiOutputs:
    def __init__(self, pipeline: FramePipeline, linger: float = 10.0) -> None:
        self.pipeline, self.linger = pipeline, linger
        self.senders: dict[str, NdiSender] = {}
        self._closers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Future[None]] = set()

    async def publish(self, stream_id: str) -> None:
        """Sends each new output of the stream until it closes (a task of the stream's peer)."""
        closer = self._closers.pop(stream_id, None)
        if closer is not None:
            closer.cancel()
        try:
            async for out in self.pipeline.frames(stream_id):
                sender = self.senders.get(stream_id)
                if sender is None:
                    height, width = out.image.shape[:2]
                    try:
                        sender = await asyncio.to_thread(NdiSender, stream_id, width, height, NDI_FPS)
                    except NdiUnavailable as exc:  # the stream itself goes on, without its NDI source
                        logger.error("stream %s: %s", stream_id, exc)
                        return
                    self.senders[stream_id] = sender
                await asyncio.to_thread(sender.send, out.image)
        finally:
            if stream_id in self.senders:
                self._closers[stream_id] = asyncio.get_running_loop().call_later(self.linger, self._close, stream_id)

    def _close(self, stream_id: str) -> None:
        self._closers.pop(stream_id, None)
        sender = self.senders.pop(stream_id, None)
        if sender is not None:
            closing = asyncio.get_running_loop().run_in_executor(None, sender.close)
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        """Takes every source off the network (the server stops)."""
        for closer in self._closers.values():
            closer.cancel()
        self._closers.clear()
        senders, self.senders = list(self.senders.values()), {}
        await asyncio.gather(*self._closing, *(asyncio.to_thread(s.close) for s in senders))
