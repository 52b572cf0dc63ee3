"""The threaded frame pipeline: newest frame wins, many streams, clean shutdown, failures and gaps."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest

from stream import FrameKind, StreamEngine
from stream.engine import PreparedFrame
from stream.pipeline import FramePipeline, PipelineConfig
from tests.support.backends import InstrumentedBackend
from tests.support import camera_frame, mean_abs_diff, wait_until

PROMPTS = ["a watercolor painting", "neon cyberpunk city", "an oil painting of a dog", "pencil sketch"]


def instrumented(make_engine, **backend_kwargs):
    loaded = make_engine(t_list=(1.2, 0.6))
    backend = InstrumentedBackend(loaded.backend, **backend_kwargs)
    return StreamEngine(backend, loaded.prompt_encoder, loaded.config), backend


def submitted_timestamp(prepared: PreparedFrame) -> float:
    """The timestamp a prepared frame was submitted with: the pipeline tags frames (sequence, timestamp)."""
    return prepared.tag[1]


@dataclass
class Call:
    streams: list[str]
    ages: list[float]  # seconds from each frame's submission (its timestamp) to this call taking it
    seconds: float = 0.0  # how long the call ran


def record_calls(engine: StreamEngine) -> list[Call]:
    """Wraps ``engine.run`` to record each call. Freshness is judged in measured call durations, which a loaded
    machine stretches as much as the ages."""
    calls: list[Call] = []
    run = engine.run

    def recorded(batch):
        now = time.monotonic()
        call = Call([p.stream_id for p in batch], [now - submitted_timestamp(p) for p in batch])
        calls.append(call)
        try:
            return run(batch)
        finally:
            call.seconds = time.monotonic() - now

    engine.run = recorded
    return calls


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sana-")]


def test_slow_engine_keeps_latency_flat_and_drops_frames(make_engine):
    """A camera five frames ahead of every engine call: the frame each call takes is at most one call's frames
    old, from the first call to the last (a queue would fall five frames further behind with every call), the
    older frames are dropped, and memory stays flat. Measured in frames, so the machine's speed does not matter."""
    engine, _ = instrumented(make_engine)
    ahead, calls = 5, 45
    ages: list[int] = []  # per call: frames submitted after the one it takes
    submitted = itertools.count()
    run = engine.run

    def camera_then_run(batch):
        newest = next(submitted) - 1
        ages.extend(newest - submitted_timestamp(p) for p in batch)  # each frame was submitted with its index
        if len(ages) < calls:
            for _ in range(ahead):  # the camera's frames during this call
                i = next(submitted)
                pipe.submit("cam", camera_frame(i), i)
        return run(batch)

    engine.run = camera_then_run
    with FramePipeline(engine) as pipe:
        pipe.open_stream("cam")
        pipe.submit("cam", camera_frame(0), next(submitted))
        wait_until(lambda: pipe.batches >= calls // 3, 60, f"{calls // 3} engine calls")
        tracemalloc.start()
        baseline = tracemalloc.take_snapshot()
        wait_until(lambda: pipe.batches >= calls, 60, f"{calls} engine calls")
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(baseline, "filename"))
        tracemalloc.stop()
        stats = pipe.stats("cam")
    assert len(ages) >= calls and max(ages) <= ahead, ages
    assert stats.dropped >= (ahead - 2) * (calls - 2), stats
    assert growth < 2 * 2**20


def test_prepares_only_what_the_engine_takes_just_before_it_takes_it(make_engine):
    """A 30 fps camera into a ~5 calls/s engine: frames are prepared about once per call, and the frame a call
    takes is fresh (prepared just before, not one whole call earlier)."""
    engine, _ = instrumented(make_engine, delay=0.1)
    prepares, prepare = [], engine.prepare
    engine.prepare = lambda *a: prepares.append(1) or prepare(*a)
    calls = record_calls(engine)
    with FramePipeline(engine) as pipe:
        pipe.open_stream("cam")
        start = time.monotonic()
        for i in range(90):  # 3 s
            pipe.submit("cam", camera_frame(i), time.monotonic())
            time.sleep(max(0.0, start + (i + 1) / 30 - time.monotonic()))
        batches = pipe.batches
    assert len(prepares) <= batches + 3 < 45  # not every camera frame
    call = np.median([c.seconds for c in calls])
    assert np.median([age for c in calls for age in c.ages]) < call / 2  # prepared one call ahead: a call old


def test_closing_a_stream_whose_frame_waits_for_the_engine_stops_cleanly(make_engine):
    engine, _ = instrumented(make_engine, delay=0.15)
    pipe = FramePipeline(engine)
    for sid in ("a", "b"):
        pipe.open_stream(sid)
    for i in range(6):
        for sid in ("a", "b"):
            pipe.submit(sid, camera_frame(i), i)
        time.sleep(0.05)
    pipe.close_stream("b")  # b's prepared frame is discarded while the preprocessing thread waits on it
    pipe.submit("a", camera_frame(7), 7)
    assert pipe.wait_for_output("a", after=5, timeout=10) is not None
    pipe.close()
    assert pipeline_threads() == []


def _outputs_alone(make_engine, prompt: str, seed: int, frames: list[np.ndarray]) -> list[np.ndarray]:
    engine = make_engine(t_list=(1.2, 0.6), prompt=prompt, seed=seed)
    return [engine(f) for f in frames]


@pytest.mark.parametrize("count", [2, 4])
def test_streams_batched_together_match_each_stream_alone(make_engine, count):
    frames = {f"s{i}": [camera_frame(k + 7 * i) for k in range(4)] for i in range(count)}
    engine = make_engine(t_list=(1.2, 0.6))
    with FramePipeline(engine) as pipe:
        for i, sid in enumerate(frames):
            pipe.open_stream(sid, prompt=PROMPTS[i], seed=i)
        got = {sid: [] for sid in frames}
        for k in range(4):
            for sid in frames:  # all streams ready at once: the worker batches them together
                pipe.submit(sid, frames[sid][k], k)
            for sid in frames:
                got[sid].append(pipe.wait_for_output(sid, after=k - 1, timeout=10).image)
    for i, sid in enumerate(frames):
        alone = _outputs_alone(make_engine, PROMPTS[i], i, frames[sid])
        for mine, theirs in zip(got[sid], alone):
            assert mean_abs_diff(mine, theirs) <= 0.5


def test_streams_with_frames_ready_share_one_engine_call(make_engine):
    """While the engine is busy, every stream's next frame waits; the next call takes them all at once."""
    engine, _ = instrumented(make_engine)
    calls: list[list[str]] = []
    preparing, prepared = threading.Event(), threading.Semaphore(0)
    queued = threading.Event()  # holds the first preparation until every stream's next frame is queued
    busy = threading.Event()  # holds the first engine call until those frames are prepared
    prepare, run = engine.prepare, engine.run

    def gated_prepare(*args):
        preparing.set()
        if not calls:
            queued.wait(10)
        result = prepare(*args)
        prepared.release()
        return result

    engine.prepare = gated_prepare
    engine.run = lambda batch: (calls.append([p.stream_id for p in batch]), busy.wait(10), run(batch))[2]
    streams = [f"s{i}" for i in range(4)]
    with FramePipeline(engine) as pipe:
        for sid in streams:
            pipe.open_stream(sid)
        pipe.submit("s0", camera_frame(0), 0)
        assert preparing.wait(10)  # s0's first frame left its input slot
        for sid in streams:
            pipe.submit(sid, camera_frame(1), 1)
        queued.set()
        for _ in range(1 + len(streams)):
            assert prepared.acquire(timeout=10)
        busy.set()
        for sid in streams:  # s0's second frame has sequence 1, the others' first 0
            assert pipe.wait_for_output(sid, after=0 if sid == "s0" else -1, timeout=10) is not None
    assert calls[:2] == [["s0"], streams]


def test_with_max_batch_streams_take_turns_and_each_call_takes_a_fresh_frame(make_engine):
    """max_batch=1 (a CPU server): one stream per call, in turn, and the frame a call takes is prepared just
    before it, while the stream's newer camera frames replaced the older ones during the other streams' calls."""
    engine, _ = instrumented(make_engine, delay=0.05)
    calls = record_calls(engine)
    with FramePipeline(engine, PipelineConfig(max_batch=1)) as pipe:
        streams = ["a", "b", "c"]
        for sid in streams:
            pipe.open_stream(sid)
        start = time.monotonic()
        for i in range(60):  # 2 s of three 30 fps cameras
            for sid in streams:
                pipe.submit(sid, camera_frame(i), time.monotonic())
            time.sleep(max(0.0, start + (i + 1) / 30 - time.monotonic()))
        stats = [pipe.stats(sid) for sid in streams]
    order = [c.streams for c in calls]
    assert all(len(ids) == 1 for ids in order)
    steady = [ids[0] for ids in order[3:-1]]
    assert all(steady[i] != steady[i + 1] for i in range(len(steady) - 1))  # turns, never the same stream twice
    assert max(steady.count(sid) for sid in streams) - min(steady.count(sid) for sid in streams) <= 1
    call = np.median([c.seconds for c in calls])
    assert np.median([age for c in calls for age in c.ages]) < call  # waiting a round would take three calls
    assert all(s.generated + s.warmup >= 4 for s in stats)


def test_max_batch_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_batch"):
            PipelineConfig(max_batch=bad)


def test_adding_and_removing_streams_does_not_disturb_others(make_engine):
    frames = [camera_frame(k) for k in range(6)]
    alone = _outputs_alone(make_engine, PROMPTS[0], 3, frames)
    with FramePipeline(make_engine(t_list=(1.2, 0.6))) as pipe:
        pipe.open_stream("a", prompt=PROMPTS[0], seed=3)
        got = []
        for k, frame in enumerate(frames):
            if k == 2:
                pipe.open_stream("b", prompt=PROMPTS[1], seed=9)
            if k == 4:
                pipe.close_stream("b")
            pipe.submit("a", frame, k)
            if "b" in pipe.engine.stream_ids():
                pipe.submit("b", camera_frame(40 + k), k)
            got.append(pipe.wait_for_output("a", after=k - 1, timeout=10).image)
    for mine, theirs in zip(got, alone):
        assert mean_abs_diff(mine, theirs) <= 0.5


def test_close_with_frames_in_flight_publishes_computed_frames_and_stops_threads(make_engine):
    engine, backend = instrumented(make_engine, delay=0.05)
    pipe = FramePipeline(engine)
    for sid in ("a", "b"):
        pipe.open_stream(sid)
    for i in range(12):
        for sid in ("a", "b"):
            pipe.submit(sid, camera_frame(i), i)
        time.sleep(0.02)
    pipe.close()
    assert pipeline_threads() == []
    published = sum(pipe.stats(sid).generated for sid in ("a", "b"))
    assert backend.decoded > 0 and published == backend.decoded  # nothing computed was lost
    with pytest.raises(RuntimeError, match="closed"):
        pipe.submit("a", camera_frame(0), 0)


def test_engine_error_on_one_batch_is_counted_and_streaming_continues(make_engine, caplog):
    engine, _ = instrumented(make_engine, fail_calls=frozenset({3}))
    with FramePipeline(engine) as pipe:
        pipe.open_stream("a")
        for k in range(6):
            pipe.submit("a", camera_frame(k), k)
            out = pipe.wait_for_output("a", after=k - 1, timeout=2 if k == 2 else 10)
            assert (out is None) == (k == 2)  # the third call failed; the stream went on
        assert pipe.stats("a").errors == 1 and pipe.batch_errors == 1
    assert "injected failure on transformer call 3" in caplog.text


def test_input_gap_keeps_the_last_frame_and_resumes(make_engine):
    with FramePipeline(make_engine(t_list=(1.0,))) as pipe:
        pipe.open_stream("a")
        for k in range(3):
            pipe.submit("a", camera_frame(k), k)
            pipe.wait_for_output("a", after=k - 1, timeout=10)
        held = pipe.latest("a")
        assert pipe.wait_for_output("a", after=held.sequence, timeout=0.5) is None  # the camera hiccups
        assert pipe.latest("a") is held and pipe.stats("a").errors == 0
        pipe.submit("a", camera_frame(10), 10)
        resumed = pipe.wait_for_output("a", after=held.sequence, timeout=10)
        assert resumed.kind is FrameKind.GENERATED and resumed.timestamp == 10


def test_async_iterator_and_convert(make_engine):
    config = PipelineConfig(convert=lambda image: image.mean())

    async def consume(pipe: FramePipeline) -> list:
        seen = []
        async for out in pipe.frames("a"):
            seen.append(out)
            if len(seen) == 3:
                break
        return seen

    with FramePipeline(make_engine(t_list=(1.0,)), config) as pipe:
        pipe.open_stream("a")

        async def main() -> list:
            task = asyncio.create_task(consume(pipe))
            for k in range(30):
                pipe.submit("a", camera_frame(k), k)
                await asyncio.sleep(0.05)
                if task.done():
                    break
            return await asyncio.wait_for(task, 10)

        seen = asyncio.run(main())
    assert [o.sequence for o in seen] == sorted({o.sequence for o in seen})
    assert all(o.converted == pytest.approx(o.image.mean()) for o in seen)


class BrokenFrame:
    """Decodes to the wrong shape: what a misbehaving video source could hand over."""

    def to_ndarray(self, format: str) -> np.ndarray:
        return np.zeros((4, 4), np.uint8)


def test_decoded_frames_are_converted_only_when_prepared(make_engine):
    av = pytest.importorskip("av")
    engine, _ = instrumented(make_engine, delay=0.1)
    converted = []

    class CountingFrame:
        def __init__(self, k: int) -> None:
            self.inner = av.VideoFrame.from_ndarray(camera_frame(k), format="rgb24")

        def to_ndarray(self, format: str) -> np.ndarray:
            converted.append(1)
            return self.inner.to_ndarray(format=format)

    with FramePipeline(engine) as pipe:
        pipe.open_stream("cam")
        for k in range(30):
            pipe.submit("cam", CountingFrame(k), k)
            time.sleep(1 / 30)
        pipe.submit("cam", BrokenFrame(), 30)  # lost with an error; the stream goes on
        wait_until(lambda: pipe.stats("cam").errors == 1, 10, "the broken frame's error")
        pipe.submit("cam", av.VideoFrame.from_ndarray(camera_frame(31), format="rgb24"), 31)
        out = pipe.wait_for_output("cam", after=30, timeout=10)
        assert out is not None and out.sequence == 31 and out.kind is FrameKind.GENERATED
        assert pipe.stats("cam").errors == 1
    assert 0 < len(converted) < 15


def test_bad_input_to_the_pipeline(make_engine):
    with FramePipeline(make_engine(t_list=(1.0,))) as pipe:
        pipe.open_stream("a")
        with pytest.raises(ValueError, match="dtype uint8"):
            pipe.submit("a", np.zeros((8, 8, 3), np.float32), 0)
        with pytest.raises(ValueError, match="frame must be a numpy array"):
            pipe.submit("a", "not a frame", 0)
        with pytest.raises(KeyError, match="nope"):
            pipe.submit("nope", camera_frame(0), 0)
        pipe.submit("a", camera_frame(0), 0)
        assert pipe.wait_for_output("a", timeout=10) is not None
    with pytest.raises(ValueError, match="capacity"):
        FramePipeline(make_engine(t_list=(1.0,)), PipelineConfig(input_queue_size=0))


def test_a_failed_preparation_or_finish_is_counted_and_no_thread_dies(make_engine, caplog):
    """Any exception in the preprocessing or postprocessing thread loses that frame only: it is logged with its
    traceback and counted (per stream and per thread), and the threads go on."""
    engine = make_engine(t_list=(1.0,))
    prepare, calls = engine.prepare, []

    def flaky_prepare(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected upload failure")
        return prepare(*args)

    engine.prepare = flaky_prepare
    converted = []

    def flaky_convert(image):
        converted.append(1)
        if len(converted) == 3:
            raise TypeError("injected conversion failure")
        return image.shape

    with FramePipeline(engine, PipelineConfig(convert=flaky_convert)) as pipe:
        pipe.open_stream("a")
        outputs = []
        for k in range(6):
            pipe.submit("a", camera_frame(k), k)
            outputs.append(pipe.wait_for_output("a", after=k - 1, timeout=2 if k in (1, 3) else 10))
        errors = pipe.thread_errors()
        assert [o is None for o in outputs] == [False, True, False, True, False, False]
        assert (errors.preprocess, errors.engine, errors.postprocess) == (1, 0, 1)
        assert pipe.stats("a").errors == 2 and pipeline_threads() == ["sana-preprocess", "sana-engine",
                                                                     "sana-postprocess"]
    assert "injected upload failure" in caplog.text and "injected conversion failure" in caplog.text
