"""How soon clients notice that the server went away (issue 30), with and without the server's goodbye.

Real ``python -m sana_stream serve`` processes (the tiny demo model, torch backend) on one loopback port; each round
connects ``--clients`` aiortc clients (``rtc.client.connect``, as the camera bridge connects) and, with ``--browser``,
the webcam page in Debian's Chromium with a fake camera, then stops the server:

- **SIGTERM**: a clean stop. The server says goodbye: it closes every peer's and viewer's connection (an SCTP
  ABORT, which closes the data channels, and a DTLS close_notify) before it exits.
- **SIGKILL**: a crash, no goodbye. The clients find out from silence: aiortc clients after ``rtc.liveness``'s
  SILENCE_S without a packet; Chromium when ICE consent checks go unanswered (``disconnected``), after which
  the page waits 3 s for the connection to recover before it reconnects.

"Noticed" is when a client starts reconnecting: an aiortc client's connection is closed (the bridge's reconnect
loop looks at that), the page's state turns to ``reconnecting``. Time from the signal, median and maximum over
rounds and clients; the two kinds of stop alternate, so slow drift of the machine hits both alike.

    python -m benchmarks.goodbye [--clients 3] [--rounds 3] [--browser] [--output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiortc import VideoStreamTrack

from benchmarks.loopback import free_port
from benchmarks.report import Comparison, machine_info, text_table, write_results
from benchmarks.serve_process import ServeProcess
from rtc.client import StreamClient, connect
from rtc.ice import include_loopback_candidates
from stream.demo_model import make_demo_model

logger = logging.getLogger("benchmarks.goodbye")
SIZE = 64
RESULTS = Path(__file__).resolve().parent / "results"
NOTICE_TIMEOUT_S = 60.0
# the page's state when it starts reconnecting, recorded (wall clock, ms) the moment it changes
PAGE_WATCH = """() => {
  window.noticedAt = null;
  new MutationObserver(() => {
    if (document.body.dataset.state === "reconnecting" && window.noticedAt === null) window.noticedAt = Date.now();
  }).observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
}"""
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", "--allow-loopback-in-peer-connection",
                 "--disable-features=WebRtcHideLocalIpsWithMdns"]


async def connect_clients(base: str, count: int) -> list[StreamClient]:
    clients = [await connect(base, VideoStreamTrack()) for _ in range(count)]
    await asyncio.gather(*(c.wait_frames(1, timeout=60) for c in clients))
    return clients


async def noticed(clients: list[StreamClient]) -> list[float]:
    """Wall-clock times at which each client's connection closed or failed."""
    times: dict[int, float] = {}
    deadline = time.monotonic() + NOTICE_TIMEOUT_S
    while len(times) < len(clients) and time.monotonic() < deadline:
        for i, c in enumerate(clients):
            if i not in times and c.pc.connectionState in ("closed", "failed"):
                times[i] = time.time()
        await asyncio.sleep(0.01)
    return [times.get(i, float("nan")) for i in range(len(clients))]


class ClientLoop:
    """The aiortc clients' event loop, on a thread of its own: Playwright's sync API runs on the main thread and
    refuses to run inside an asyncio loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="clients", daemon=True)
        self.thread.start()

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def close_clients(clients: list[StreamClient]) -> None:
    for c in clients:
        await c.close()


def one_round(server: ServeProcess, how: signal.Signals, clients: int, loop: ClientLoop,
              page: Any | None) -> dict[str, Any]:
    server.start()
    connected = loop.submit(connect_clients(server.base, clients)).result(120)
    if page is not None:
        page.goto(f"{server.base}/")
        page.wait_for_function("document.body.dataset.state === 'streaming'", timeout=60_000)
        page.evaluate(PAGE_WATCH)
    watching = loop.submit(noticed(connected))
    sent = server.stop(how)
    exited = time.time()
    times = watching.result(NOTICE_TIMEOUT_S + 10)
    loop.submit(close_clients(connected)).result(30)
    result: dict[str, Any] = {"signal": how.name, "exit_s": exited - sent, "clients_s": [t - sent for t in times]}
    if page is not None:
        page.wait_for_function("window.noticedAt !== null", timeout=NOTICE_TIMEOUT_S * 1000)
        result["page_s"] = page.evaluate("window.noticedAt") / 1000 - sent
        page.goto("about:blank")
    logger.info("%s", result)
    return result


def summarize(rounds: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    out = {}
    for how in ("SIGTERM", "SIGKILL"):
        values = [v for r in rounds if r["signal"] == how
                  for v in (r[key] if isinstance(r[key], list) else [r[key]])]
        out[how] = {"median": statistics.median(values), "max": max(values), "n": len(values)}
    return out


def comparison(key: str, title: str, stats: dict[str, dict[str, float]], note: str) -> Comparison:
    term, kill = stats["SIGTERM"], stats["SIGKILL"]
    return Comparison(key=key, title=title, a_label="SIGTERM (goodbye)", a=term["median"], b_label="SIGKILL (none)",
                      b=kill["median"], unit="s", ratio=kill["median"] / max(term["median"], 1e-3), ratio_of="B/A",
                      note=note, details=stats)


def run(args: argparse.Namespace, workdir: Path, page: Any | None) -> list[dict[str, Any]]:
    model = make_demo_model(workdir / "model")
    server = ServeProcess(free_port(), ["--model", str(model), "--backend", "torch", "--width", str(SIZE),
                                        "--height", str(SIZE)], workdir / "serve.log",
                          env={"SANA_STREAM_CACHE": str(workdir / "cache")})
    loop = ClientLoop()
    rounds = []
    try:
        for _ in range(args.rounds):
            for how in (signal.SIGTERM, signal.SIGKILL):
                rounds.append(one_round(server, how, args.clients, loop, page))
    finally:
        server.close()
        loop.close()
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also the webcam page in /usr/bin/chromium")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("aioice", "aiortc", "httpx"):  # one line per ICE check otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    include_loopback_candidates()
    with tempfile.TemporaryDirectory() as tmp:
        if args.browser:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                                            ignore_default_args=["--headless"])
                page = browser.new_context().new_page()
                rounds = run(args, Path(tmp), page)
                browser.close()
        else:
            rounds = run(args, Path(tmp), None)
    comparisons = [comparison("aiortc", "aiortc clients (the camera bridge): signal -> connection closed",
                              summarize(rounds, "clients_s"), "median over rounds and clients; details: max")]
    if args.browser:
        comparisons.append(comparison("page", "webcam page in Chromium: signal -> reconnecting",
                                      summarize(rounds, "page_s"), "median over rounds; details: max"))
    comparisons.append(comparison("exit", "server process: signal -> exited", summarize(rounds, "exit_s"),
                                  "what the goodbye costs the stop"))
    print(text_table(comparisons))
    meta = {"machine": machine_info(), "settings": {"preset": "tiny demo model", "width": SIZE, "height": SIZE,
                                                   "frames": "-", "clients": args.clients, "rounds": args.rounds,
                                                   "browser": args.browser}, "rounds": rounds}
    write_results(args.output, "goodbye", comparisons, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
