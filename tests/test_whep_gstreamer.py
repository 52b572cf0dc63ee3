"""A WHEP player that is not aiortc: GStreamer's webrtcbin (tests/gst_whep_player.py, under Debian's
/usr/bin/python3) posts a candidate-less receive-only offer to /whep, decodes the restyled VP8 video and counts the
frames; the server counts what it sent to viewers; the player's DELETE ends the session. Skipped with the reason
without GStreamer (failing under CI=true), as the WHIP sender test is."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx

from tests.support import eventually, running
from tests.support.prometheus import sample
from tests.support.webrtc import connect
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture
from tests.test_whip_gstreamer import SYSTEM_PYTHON, require_gstreamer

PLAYER = Path(__file__).with_name("gst_whep_player.py")
TOKEN = "gst-whep-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Player:
    """The player's process and its JSON events, read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process, self.lines = process, []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace").rstrip())

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def frames(self) -> int:
        return max((e["count"] for e in self.events() if e["event"] == "frames"), default=0)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()  # it ends its session with DELETE
        await asyncio.wait_for(self.process.wait(), 30)
        await self.reader


async def start_player(url: str, *args: str, prefix: tuple[str, ...] = ()) -> Player:
    process = await asyncio.create_subprocess_exec(*prefix, SYSTEM_PYTHON, str(PLAYER), url, "--seconds", "120",
                                                   *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return Player(process)


def test_a_gstreamer_player_plays_the_restyled_stream_over_whep(local_engine):
    require_gstreamer()

    async def main():
        app = make_app(local_engine, token=TOKEN)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE), headers=AUTH)
            await client.wait_frames(2)
            player = await start_player(f"{base}/whep?stream={client.stream}", "--token", TOKEN)
            try:
                await eventually(lambda: player.frames() >= 20, 60, f"20 frames at the GStreamer player "
                                 f"({player.lines[-3:]})")
                metrics = (await http.get("/metrics", headers=AUTH)).text
                routes = (await http.get("/debug/connections", headers=AUTH)).json()["viewers"]
            finally:
                await player.stop()
            await eventually(lambda: not app.state.viewers().viewers, 10, "the WHEP session ended")
            generated = app.state.runtime["pipeline"].stats(client.stream).generated
            await client.close()
        return player, metrics, routes, generated, client.stream

    player, metrics, routes, generated, stream = asyncio.run(main())
    events = player.events()
    answered = next(e for e in events if e["event"] == "answered")
    assert answered["status"] == 201 and answered["offer_candidates"] == 0, answered
    frames = [e for e in events if e["event"] == "frames"]
    assert frames[-1]["count"] >= 20 and (frames[-1]["height"], frames[-1]["width"]) == (SIZE, SIZE), frames[-1]
    # the frames the player decoded are what the stream's output (the engine's) sent to viewers: the server's count,
    # read just after the player's 20th frame, is within a frame or two of it (the meter counts a frame once sent)
    sent = sample(metrics, "sana_stream_frames_sent_total", stream=stream, to="viewers")
    assert sent >= 18 and generated >= 18, (sent, generated)
    (route,) = routes.values()
    assert route["state"] == "connected" and route["remote"] == "prflx", route
    assert {"event": "deleted", "status": 200} in events, player.lines
