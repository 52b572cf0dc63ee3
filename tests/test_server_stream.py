"""The server with real aiortc peers over loopback: frames flow, match the engine, follow /prompt."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from server.app import ModelInfo, create_app, streams_per_call
from server.ice import include_loopback_candidates
from server.settings import ServerSettings
from server.metrics import StreamMeter
from server.tracks import REPEAT_AFTER_S, SLOW_OUTPUT_S, StreamOutputTrack, repeat_after, to_video_frame
from stream import StreamConfig, StreamEngine
from stream.pipeline import FramePipeline, PipelineConfig
from tests.support import block_diff, running
from tests.support.webrtc import FRAME_PTS, SyntheticCamera, connect

SIZE = 128


@pytest.fixture(scope="module")
def local_engine(tiny_model_dir):
    include_loopback_candidates()
    return lambda **kw: StreamEngine.from_pretrained(
        tiny_model_dir, StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,), **kw))


def make_app(local_engine, **settings):
    config = StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,), prompt="a watercolor painting")
    engine = local_engine(prompt="a watercolor painting")
    return create_app(ServerSettings(stream=config, **settings), engine, ModelInfo("tiny", True, "torch"))


def assert_shows(client, frames, reference, *, least: int = 4, bound: float = 5.0) -> None:
    """Every announced generated frame is the engine's output for the input frame it names: within ``bound``
    of it (VP8's error, in and out) and closer to it than to the outputs for the neighbouring inputs (whose
    coarse colours differ); the 0.8 factor is the identity check (docs/testing.md#bounds-and-why)."""
    traced = [(f, k) for f in frames for k, kind in [client.source(f)] if kind == "generated"]
    assert len(traced) >= least
    for f, k in traced[-least:]:
        assert f.image.shape == (SIZE, SIZE, 3)
        expected = block_diff(f.image, reference(client.camera.pattern(k)))
        others = [block_diff(f.image, reference(client.camera.pattern(k + d))) for d in (-2, -1, 1, 2)]
        assert expected < bound and expected < 0.8 * min(others), (expected, others)


def test_frames_flow_and_are_the_engines_output(local_engine):
    async def main():
        async with running(make_app(local_engine)) as base:
            client = await connect(base, (SIZE, SIZE))
            frames = await client.wait_frames(12)
            await client.close()
        return client, frames

    client, frames = asyncio.run(main())
    assert_shows(client, frames, local_engine(prompt="a watercolor painting"), least=6)


def test_prompt_change_reaches_the_output_within_a_few_frames(local_engine):
    async def main():
        async with running(make_app(local_engine)) as base:
            client = await connect(base, (SIZE, SIZE))
            await client.wait_frames(5)
            async with httpx.AsyncClient(base_url=base) as http:
                r = await http.post("/prompt", json={"prompt": "neon cyberpunk city", "seed": 5})
            await client.wait_frames(4)  # a few frames for the change to arrive
            after = await client.wait_frames(8)
            await client.close()
        return client, after, r

    client, after, response = asyncio.run(main())
    assert response.status_code == 200
    state = response.json()["streams"][client.stream]
    assert state["prompt"] == "neon cyberpunk city" and state["seed"] == 5
    assert_shows(client, after, local_engine(prompt="neon cyberpunk city", seed=5))


@pytest.mark.slow
def test_four_peers_with_their_own_prompts_stay_isolated(local_engine):
    prompts = ["a watercolor painting", "neon cyberpunk city", "an oil painting of a dog", "pencil sketch"]

    async def main():
        async with running(make_app(local_engine, max_peers=4)) as base:
            clients = [await connect(base, (SIZE, SIZE), offset=100 * i) for i in range(4)]
            async with httpx.AsyncClient(base_url=base) as http:
                for client, prompt in zip(clients, prompts):
                    r = await http.post("/prompt", json={"prompt": prompt, "stream": client.stream})
                    assert r.status_code == 200 and set(r.json()["streams"]) == {client.stream}
            for client in clients:
                await client.wait_frames(4, timeout=30)
            received = [await client.wait_frames(6, timeout=30) for client in clients]
            for client in clients:
                await client.close()
        return clients, received

    clients, received = asyncio.run(main())
    for client, frames, prompt in zip(clients, received, prompts):
        assert_shows(client, frames, local_engine(prompt=prompt), least=3)


@pytest.mark.cpu
def test_on_a_cpu_the_servers_streams_take_turns_one_per_engine_call(local_engine):
    assert streams_per_call(local_engine()) == 1  # the pipeline's turns: tests/test_pipeline.py


def test_a_slow_stream_repeats_each_output_so_aiortc_receivers_get_it_at_once(local_engine):
    """aiortc completes a received frame only when the next one starts arriving (our own client completes it on
    its marker packet; this one, as other aiortc receivers, does not); the server's repeat of each new output (at
    once for a stream this slow) brings glass-to-glass latency down to about one engine call instead of two."""
    from tests.support.backends import InstrumentedBackend

    fast = local_engine(prompt="a watercolor painting")
    engine = StreamEngine(InstrumentedBackend(fast.backend, delay=0.4), fast.prompt_encoder, fast.config)
    app = create_app(ServerSettings(stream=fast.config), engine, ModelInfo("tiny", True, "torch"))

    async def main():
        async with running(app) as base:
            client = await connect(base, (SIZE, SIZE), marker_assembly=False)
            frames = await client.wait_frames(12, timeout=30)
            await client.close()
        return client, frames

    client, frames = asyncio.run(main())
    kinds = [client.source(f)[1] for f in frames]
    assert "repeat" in kinds
    for before, f, kind in zip(frames, frames[1:], kinds[1:]):
        if kind == "repeat":
            assert block_diff(before.image, f.image) < 2.0  # the same picture again
    generated = [(f.at, k) for f in frames for k, kind in [client.source(f)] if kind == "generated" and k is not None]
    latencies = [at - client.camera.sent[k * FRAME_PTS] for at, k in generated]
    assert len(latencies) >= 4
    # in output intervals, which a loaded machine stretches as much as the latency: about one with the repeat
    # (the call), two without it (the call, then the wait for the next output)
    interval = np.median(np.diff([at for at, _ in generated]))
    assert np.median(latencies) < 2.0 * interval, (latencies, interval)


def test_a_camera_frame_is_restyled_without_waiting_for_the_next_one(local_engine):
    """The server completes each received camera frame on its RTP marker packet (server.frame_assembly), and so
    does the client each output: with aiortc's own assembly, a frame of a 2 fps camera would wait 0.5 s for the
    next one's first packet."""
    async def main():
        async with running(make_app(local_engine)) as base:
            client = await connect(base, camera=SyntheticCamera((SIZE, SIZE), interval=0.5))
            frames = await client.wait_frames(6, timeout=30)
            await client.close()
        return client, frames

    client, frames = asyncio.run(main())
    kinds = [client.source(f)[1] for f in frames]
    assert "repeat" not in kinds  # a stream this slow is repeated only for receivers that ask (repeat=True)
    latencies = [f.at - client.camera.sent[k * FRAME_PTS] for f in frames
                 for k, kind in [client.source(f)] if kind == "generated" and k is not None]
    assert len(latencies) >= 4
    # waiting for the next frame's first packet would take at least the camera's interval, whatever the load
    assert np.median(latencies) < client.camera.interval, latencies


def test_repeats_come_sooner_for_slow_streams_and_never_for_fast_ones():
    assert repeat_after(None) == REPEAT_AFTER_S  # nothing measured yet
    assert repeat_after(SLOW_OUTPUT_S) < repeat_after(SLOW_OUTPUT_S / 2)  # slow outputs: repeated sooner
    assert repeat_after(0.066) > 0.066  # 15 outputs a second: the next one comes before any repeat


def test_a_repeat_resends_the_same_yuv_frame_as_an_inter_frame_after_a_forced_keyframe(local_engine):
    """The repeat costs an encode only: the track hands aiortc's encoder its last frame object again (already
    yuv420p, so nothing is converted), and the keyframe the encoder forced on it last time does not stick."""
    from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor

    def is_keyframe(payloads: list[bytes]) -> bool:
        _, vp8 = VpxPayloadDescriptor.parse(payloads[0])
        return vp8[0] & 1 == 0  # RFC 7741 / RFC 6386: the P bit of the frame tag is 0 on keyframes

    async def main():
        with FramePipeline(local_engine(), PipelineConfig(convert=to_video_frame)) as pipeline:
            pipeline.open_stream("s")
            track = StreamOutputTrack(pipeline, "s", StreamMeter())
            pipeline.submit("s", np.full((SIZE, SIZE, 3), 128, np.uint8))
            encoder = Vp8Encoder()
            first = await asyncio.wait_for(track.recv(), 30)
            assert first.format.name == "yuv420p"
            assert is_keyframe(encoder.encode(first, force_keyframe=True)[0])
            repeat = await asyncio.wait_for(track.recv(), 5)  # no newer output: the repeat
            assert repeat is first and repeat.pts > 0
            assert not is_keyframe(encoder.encode(repeat)[0])
            track.stop()

    asyncio.run(main())


def test_a_track_told_not_to_repeat_waits_for_the_next_output(local_engine):
    """repeat=False (a receiver completing frames on the marker bit): after an output, recv() returns only the
    next new one, however slow the stream."""
    async def main():
        with FramePipeline(local_engine(), PipelineConfig(convert=to_video_frame)) as pipeline:
            pipeline.open_stream("s")
            track = StreamOutputTrack(pipeline, "s", StreamMeter(), repeat=False)
            pipeline.submit("s", np.full((SIZE, SIZE, 3), 128, np.uint8))
            first = await asyncio.wait_for(track.recv(), 30)
            pending = asyncio.ensure_future(track.recv())
            await asyncio.sleep(3 * REPEAT_AFTER_S)  # a repeating track would have sent the repeat by now
            assert not pending.done()
            pipeline.submit("s", np.full((SIZE, SIZE, 3), 64, np.uint8))
            second = await asyncio.wait_for(pending, 30)
            assert second is not first and second.pts > first.pts
            track.stop()

    asyncio.run(main())
