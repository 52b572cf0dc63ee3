"""FramePipeline: feeds a StreamEngine from live video sources on three owned threads.

    submit() --raw slots--> preprocess thread --prepared slots--> engine worker --pending slots-->
    postprocess thread --> latest(stream) / frames(stream)

Each queue is a bounded newest-wins slot per stream (docs/design.md#newest-frame-wins): a model slower than
the camera lowers the frame rate and never raises the latency. The worker batches every stream with a frame
ready into one engine call (with ``PipelineConfig.max_batch``, up to that many streams, taking turns). Skipped
frames (similarity filter) go straight from preprocessing to postprocessing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import numpy as np

from stream.engine import FrameKind, FrameResult, PendingResult, PreparedFrame, StreamEngine
from stream.exceptions import UnknownStreamError
from stream.frames import DecodedFrame, to_rgb, validate_frame
from stream.latest_slot import LatestSlots
from stream.prepare_schedule import PrepareSchedule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    input_queue_size: int = 1  # raw frames waiting for preprocessing, per stream
    ready_queue_size: int = 1  # preprocessed frames waiting for the engine, per stream
    output_queue_size: int = 2  # engine results waiting for postprocessing, per stream
    convert: Callable[[np.ndarray], Any] | None = None  # to the caller's format, on the postprocess thread
    join_timeout: float = 10.0  # seconds close() waits for each thread
    # streams per engine call; None: every stream with a frame ready. With a limit the streams take turns, the
    # least recently prepared first, and each waits for its turn in the raw slot, where newer frames replace it
    max_batch: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch is not None and (isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int)
                                           or self.max_batch < 1):
            raise ValueError(f"max_batch must be None or a positive integer, got {self.max_batch!r}")


@dataclass(frozen=True)
class OutputFrame:
    image: np.ndarray  # (height, width, 3) uint8 RGB
    timestamp: Any  # the timestamp submitted with the input frame this image came from
    kind: FrameKind
    sequence: int  # submission number (within the stream) of the input whose engine call published this
    source_sequence: int  # submission number of the input frame this image came from (n - 1 earlier)
    converted: Any = None  # PipelineConfig.convert(image), when set


@dataclass
class StreamStats:
    submitted: int = 0
    dropped: int = 0  # input frames replaced by newer ones before the engine saw them
    dropped_output: int = 0  # results replaced by newer ones before postprocessing
    generated: int = 0
    skipped: int = 0
    warmup: int = 0
    errors: int = 0  # engine calls that failed with this stream in the batch, and frames that did not convert


@dataclass
class ThreadErrors:
    """Exceptions each pipeline thread caught, logged and survived (the frame or batch is lost, the thread goes
    on). Per-stream counts are in ``StreamStats.errors``."""

    preprocess: int = 0  # frames that could not be prepared (conversion, upload, control maps)
    engine: int = 0  # engine calls that failed (== FramePipeline.batch_errors)
    postprocess: int = 0  # results that could not be finished, converted or published


@dataclass
class _Stream:
    stats: StreamStats = field(default_factory=StreamStats)
    sequence: itertools.count = field(default_factory=itertools.count)
    latest: OutputFrame | None = None
    subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set)
    closed: bool = False
    turn: int = -1  # when its frames were last prepared (PipelineConfig.max_batch); -1: never


class FramePipeline:
    """Owns three threads around one engine. ``submit`` never blocks; ``close`` joins every thread and
    publishes each frame the engine already computed before returning."""

    def __init__(self, engine: StreamEngine, config: PipelineConfig | None = None) -> None:
        self.engine = engine
        self.config = config or PipelineConfig()
        self._raw: LatestSlots[tuple[int, np.ndarray | DecodedFrame, Any]] = LatestSlots(self.config.input_queue_size)
        self._ready: LatestSlots[PreparedFrame] = LatestSlots(self.config.ready_queue_size)
        self._pending: LatestSlots[PendingResult] = LatestSlots(self.config.output_queue_size)
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._published = threading.Condition(self._lock)
        self._schedule = PrepareSchedule()
        self._turn_count = itertools.count()
        self.batches = 0
        self.batch_errors = 0
        self._thread_errors = ThreadErrors()
        self._threads = [
            threading.Thread(target=self._preprocess_loop, name="sana-preprocess", daemon=True),
            threading.Thread(target=self._engine_loop, name="sana-engine", daemon=True),
            threading.Thread(target=self._postprocess_loop, name="sana-postprocess", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # ---- streams -------------------------------------------------------------------------------------

    def open_stream(self, stream_id: str, **settings: Any) -> None:
        """Registers a stream on the engine (own prompt, seed, strength, ...) and in the pipeline."""
        if stream_id not in self.engine.stream_ids():
            self.engine.add_stream(stream_id, **settings)
        elif settings:
            self.engine.update(stream_id, **settings)
        with self._lock:
            self._streams[stream_id] = _Stream()

    def close_stream(self, stream_id: str) -> None:
        """Frees a stream; the other streams are not disturbed."""
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        for slots in (self._raw, self._ready, self._pending):
            slots.discard(stream_id)
        self.engine.remove_stream(stream_id)
        stream.closed = True
        self._wake(stream)

    def stats(self, stream_id: str) -> StreamStats:
        with self._lock:
            stream = self._get(stream_id)
            return StreamStats(**vars(stream.stats))

    def thread_errors(self) -> ThreadErrors:
        """A copy of the counts of exceptions each thread caught and survived."""
        with self._lock:
            return ThreadErrors(**vars(self._thread_errors))

    # ---- frames --------------------------------------------------------------------------------------

    def submit(self, stream_id: str, frame: np.ndarray | DecodedFrame, timestamp: Any = None) -> None:
        """Queues a frame for ``stream_id``; an older queued frame of that stream is dropped. Never blocks.
        A DecodedFrame (an ``av.VideoFrame``) is converted to RGB on the preprocessing thread, and only if it is
        the one prepared: most camera frames are replaced by newer ones first, so they never cost a conversion."""
        if not isinstance(frame, DecodedFrame):
            validate_frame(frame, "frame")
        with self._lock:
            if self._raw.closed:
                raise RuntimeError("the pipeline is closed")
            stream = self._get(stream_id)
            stream.stats.submitted += 1
            sequence = next(stream.sequence)
        if self._raw.put(stream_id, (sequence, frame, timestamp)):
            self._count(stream_id, "dropped")

    def latest(self, stream_id: str) -> OutputFrame | None:
        with self._lock:
            return self._get(stream_id).latest

    def wait_for_output(self, stream_id: str, after: int = -1, timeout: float | None = None) -> OutputFrame | None:
        """Blocks until the stream publishes a frame of a sequence number above ``after``; None on timeout."""
        def newer() -> bool:
            stream = self._streams.get(stream_id)
            return stream is None or (stream.latest is not None and stream.latest.sequence > after)

        with self._published:
            self._published.wait_for(newer, timeout)
            stream = self._streams.get(stream_id)
            latest = stream.latest if stream else None
            return latest if latest is not None and latest.sequence > after else None

    async def frames(self, stream_id: str) -> AsyncIterator[OutputFrame]:
        """Yields each newer output of the stream (newest wins when the consumer is slow) until it closes."""
        event, loop = asyncio.Event(), asyncio.get_running_loop()
        with self._lock:
            stream = self._get(stream_id)
            stream.subscribers.add((loop, event))
        last = -1
        try:
            while not stream.closed:
                await event.wait()
                event.clear()
                latest = stream.latest
                if latest is not None and latest.sequence > last:
                    last = latest.sequence
                    yield latest
        finally:
            with self._lock:
                stream.subscribers.discard((loop, event))

    def close(self) -> None:
        """Stops input, lets the engine finish its batch, publishes every computed frame, joins the threads."""
        # in flow order, so that what the engine finishes still reaches the postprocess thread
        self._schedule.release()  # what is left gets prepared at once
        for slots, thread in zip((self._raw, self._ready, self._pending), self._threads):
            slots.close()
            thread.join(self.config.join_timeout)
            if thread.is_alive():
                raise RuntimeError(f"thread {thread.name} did not stop within {self.config.join_timeout} s")
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.closed = True
            self._wake(stream)

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- threads -------------------------------------------------------------------------------------

    def _preprocess_loop(self) -> None:
        while self._raw.wait_for_items() or not self._raw.closed:
            try:
                # prepare only the frames the engine will take, just before it takes them (stream.prepare_schedule)
                self._ready.wait_until_empty()
                self._schedule.wait_until_due()
                started = time.monotonic()
                self._prepare_round()
                self._schedule.prepared(time.monotonic() - started)
            except Exception:  # no thread may die: log, count, go on
                self._thread_failed("preprocess", "the preprocessing round failed")

    def _next_turn(self) -> list[str] | None:
        """The streams whose frames the next engine call takes: every one (None), or with ``max_batch`` the ones
        prepared least recently, so that on a CPU, where a batch costs what its calls one by one cost, each
        stream's output comes one call after its frame instead of a whole round of calls later."""
        if self.config.max_batch is None:
            return None
        ready = self._raw.keys_with_items()
        with self._lock:
            waiting = [(self._streams[key].turn, key) for key in ready if key in self._streams]
            turn = [key for _, key in sorted(waiting)[:self.config.max_batch]]
            for key in turn:
                self._streams[key].turn = next(self._turn_count)
        return turn

    def _prepare_round(self) -> None:
        for stream_id, (sequence, frame, timestamp) in self._raw.take_each(self._next_turn()).items():
            try:
                prepared = self.engine.prepare(stream_id, to_rgb(frame), (sequence, timestamp))
            except KeyError:  # the stream closed while its frame waited
                continue
            except Exception:  # a DecodedFrame with no valid RGB frame, a failed upload: this frame is lost
                self._thread_failed("preprocess", "frame %d of stream %r could not be prepared", sequence, stream_id)
                self._count(stream_id, "errors")
                continue
            if prepared.skipped:
                if self._pending.put(stream_id, PendingResult(prepared, FrameKind.SKIPPED, prepared.tag)):
                    self._count(stream_id, "dropped_output")
            elif self._ready.put(stream_id, prepared):
                self._count(stream_id, "dropped")

    def _engine_loop(self) -> None:
        while self._ready.wait_for_items() and not self._ready.closed:
            started = self._schedule.run_started()  # first: the take below wakes the preprocessing thread
            batch = list(self._ready.take_each().values())
            try:
                results = self.engine.run(batch)
            except Exception:  # one failed batch must not end every stream: log it, count it, go on
                self._schedule.run_finished(started, failed=True)
                self.batch_errors += 1
                self._thread_failed("engine", "engine call failed for streams %s", [p.stream_id for p in batch])
                for prepared in batch:
                    self._count(prepared.stream_id, "errors")
                continue
            self._schedule.run_finished(started)
            self.batches += 1
            for result in results:
                if self._pending.put(result.prepared.stream_id, result):
                    self._count(result.prepared.stream_id, "dropped_output")

    def _postprocess_loop(self) -> None:
        while self._pending.wait_for_items() or not self._pending.closed:
            for stream_id, pending in self._pending.take_each().items():
                try:
                    result = self.engine.finish(pending)
                    converted = self.config.convert(result.image) if self.config.convert else None
                    self._publish(stream_id, pending.prepared.tag[0], result, converted)
                except Exception:  # this result is lost, not the thread
                    self._thread_failed("postprocess", "result %d of stream %r could not be finished",
                                        pending.prepared.tag[0], stream_id)
                    self._count(stream_id, "errors")

    def _publish(self, stream_id: str, sequence: int, result: FrameResult, converted: Any) -> None:
        source_sequence, timestamp = result.tag
        with self._published:
            stream = self._streams.get(stream_id)
            if stream is None or (stream.latest is not None and stream.latest.sequence >= sequence):
                return  # closed, or a skipped frame's result already overtook this one
            stream.latest = OutputFrame(result.image, timestamp, result.kind, sequence, source_sequence, converted)
            counter = {FrameKind.GENERATED: "generated", FrameKind.SKIPPED: "skipped", FrameKind.WARMUP: "warmup"}
            setattr(stream.stats, counter[result.kind], getattr(stream.stats, counter[result.kind]) + 1)
            self._published.notify_all()
        self._wake(stream)

    # ---- helpers -------------------------------------------------------------------------------------

    def _thread_failed(self, stage: str, message: str, *args: Any) -> None:
        """Counts an exception a thread caught and logs it with its traceback (the first 10 per thread, then
        every 100th, so a persistent failure at camera rate cannot flood the log)."""
        with self._lock:
            count = getattr(self._thread_errors, stage) + 1
            setattr(self._thread_errors, stage, count)
        if count <= 10 or count % 100 == 0:
            logger.exception(f"{message} ({stage} thread error {count})", *args)
        else:
            logger.error(f"{message} ({stage} thread error {count}, traceback logged every 100th)", *args)

    def _wake(self, stream: _Stream) -> None:
        with self._lock:
            subscribers = list(stream.subscribers)
        for loop, event in subscribers:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
        with self._published:
            self._published.notify_all()

    def _count(self, stream_id: str, name: str) -> None:
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is not None:
                setattr(stream.stats, name, getattr(stream.stats, name) + 1)

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise UnknownStreamError(stream_id) from None
