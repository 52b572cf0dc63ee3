"""The pages ride out a server restart by themselves: real ``python -m sana_stream serve`` processes on one fixed
loopback port, stopped (SIGTERM) and started again there, and Debian's Chromium with a fake camera
(``tests.test_browser``'s browser). The webcam page streams again without a click, with its stream id and the
settings set before; ``/view`` follows; a server that comes back with a token the page does not have leaves the
page asking for it instead of retrying.

Each restart prints (and writes to tests/artifacts/reconnect-times.json) the time from the server answering again
to the first restyled frame decoded on the webcam page and on /view; docs/pages.md quotes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.serve_process import ServeProcess
from tests.support import free_port, wait_until
from tests.test_browser import ARTIFACTS, browser, new_page, screenshot, wait_advancing  # noqa: F401 - fixture

SIZE = 64
# the page's longest wait between attempts (web/js/filter-retry.js MAX_WAIT_MS), and what an attempt may take on a
# loaded 2-core machine (the /config, /ice-servers, /offer and /prompt round trips, ICE, DTLS, the first frames)
MAX_WAIT_S = 8.0
ATTEMPT_S = 20.0
SETTINGS = {"prompt": "a stained glass window", "strength": 0.8, "guidance_scale": 3.0, "seed": 1234}
# [generation, frames decoded] of the page's current connection (the webcam page's window.sanaStream, /view's
# window.sanaView): getStats() is answered in a background tab too, where video frames are not painted
DECODED = """async (key) => {
  const s = window[key];
  const pc = s.pc;
  if (!pc || pc.connectionState !== "connected") return [s.generation, 0];
  let decoded = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") decoded = r.framesDecoded || 0;
  });
  return [s.generation, decoded];
}"""
# Chromium's intensive wake-up throttling, as in a tab hidden for 5 minutes: the page's own timers fire at most once a
# minute. Headless Chromium never hides a page (nor does a headful one under Xvfb through Playwright), so the test
# slows the page's timers itself; the page's retries must not depend on them (web/js/wake-clock.js).
THROTTLE = """() => {
  const original = window.setTimeout.bind(window);
  window.setTimeout = (fn, ms, ...args) => original(fn, Math.max(ms || 0, 60000), ...args);
  const interval = window.setInterval.bind(window);
  window.setInterval = (fn, ms, ...args) => interval(fn, Math.max(ms || 0, 60000), ...args);
}"""
TIMES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def server(demo_model_dir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server process for the module, on a port kept across its restarts."""
    where = tmp_path_factory.mktemp("serve")
    process = ServeProcess(free_port(), ["--model", str(demo_model_dir), "--backend", "torch", "--width", str(SIZE),
                                         "--height", str(SIZE), "--prompt", "a watercolor painting"],
                           where / "serve.log", env={"SANA_STREAM_CACHE": str(where / "cache")})
    process.start()
    try:
        yield process
    finally:
        process.close()
        if TIMES:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "reconnect-times.json").write_text(json.dumps(TIMES, indent=2))


def streaming_pages(browser, server: ServeProcess, token: str | None = None):
    """The webcam page streaming with SETTINGS set through its controls, and /view of its stream playing."""
    page = new_page(browser, token=token)
    page.goto(f"{server.base}/")
    page.wait_for_function("document.body.dataset.state === 'streaming'")
    stream = page.evaluate("window.sanaStream.streamId")
    page.fill("#prompt", SETTINGS["prompt"])
    page.press("#prompt", "Enter")
    page.wait_for_function("document.getElementById('prompt-hint').dataset.kind === 'ok'")
    for name, value in (("strength", SETTINGS["strength"]), ("guidance", SETTINGS["guidance_scale"])):
        page.eval_on_selector(f"#{name}", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value)
    page.fill("#seed", str(SETTINGS["seed"]))
    page.dispatch_event("#seed", "change")
    wait_until(lambda: applied(server, stream) == SETTINGS, 30, "the settings on the server")
    viewer = new_page(browser, token=token)
    viewer.goto(f"{server.base}/view?stream={stream}")
    viewer.wait_for_function("document.body.dataset.state === 'playing'")
    return page, viewer, stream


def applied(server: ServeProcess, stream: str) -> dict[str, object]:
    try:
        shown = httpx.get(f"{server.base}/prompt", params={"stream": stream}, timeout=5).json()["streams"][stream]
    except (httpx.TransportError, KeyError):
        return {}
    return {name: shown[name] for name in SETTINGS}


def first_frames(pages: dict[str, object], after: dict[str, int], ready: float, timeout: float) -> dict[str, float]:
    """Seconds from ``ready`` (wall clock) until each page's first connection newer than generation ``after[name]``
    has decoded a frame."""
    found: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(pages):
        for name, (page, key) in pages.items():
            if name not in found:
                generation, decoded = page.evaluate(DECODED, key)
                if generation > after[name] and decoded > 0:
                    found[name] = time.time() - ready
        if time.monotonic() > deadline:
            raise AssertionError(f"no restyled frame within {timeout} s of the server's restart on "
                                 f"{sorted(set(pages) - set(found))} (found {found})")
        time.sleep(0.05)
    return found


def outage(browser, server: ServeProcess, seconds: float, name: str, throttled: bool = False) -> None:
    page, viewer, stream = streaming_pages(browser, server)
    if throttled:
        page.evaluate(THROTTLE)
    generations = {"webcam": page.evaluate("window.sanaStream.generation"),
                   "view": viewer.evaluate("window.sanaView.generation")}
    stopped = server.stop()
    # the server's goodbye (server.serve.GoodbyeServer): the page knows at once and counts down to its next attempt;
    # without one, Chromium would notice after ~5 s of unanswered ICE checks and the page wait 3 s more
    assert "said goodbye to every client" in server.log.read_text()
    page.wait_for_function("document.body.dataset.state === 'reconnecting'", timeout=5_000)
    assert page.locator("#message[data-kind='connection-lost'], #message[data-kind='unreachable']").is_visible()
    assert "Reconnecting" in page.inner_text("#message-countdown")
    screenshot(page, f"reconnecting-{name}.png")
    time.sleep(max(0.0, stopped + seconds - time.time()))
    assert page.evaluate("window.sanaStream.camera.getVideoTracks()[0].readyState") == "live"  # camera kept open
    restarted = time.time()
    ready = server.start()

    times = first_frames({"webcam": (page, "sanaStream"), "view": (viewer, "sanaView")}, generations, ready,
                         MAX_WAIT_S + ATTEMPT_S)
    TIMES[name] = {"outage_s": round(ready - stopped, 2), "server_start_s": round(ready - restarted, 2),
                   **{k: round(v, 2) for k, v in times.items()}}
    print(f"\n{name}: server down {ready - stopped:.1f} s (of which its start {ready - restarted:.1f} s); from ready "
          f"to the first restyled frame: webcam page {times['webcam']:.2f} s, /view {times['view']:.2f} s")
    page.wait_for_function("document.body.dataset.state === 'streaming'")
    assert page.evaluate("window.sanaStream.streamId") == stream
    assert page.locator("#message").is_hidden()
    assert applied(server, stream) == SETTINGS  # the page sent its settings to the new server
    assert page.input_value("#prompt") == SETTINGS["prompt"] and page.input_value("#seed") == str(SETTINGS["seed"])
    wait_advancing(page, "output")
    viewer.wait_for_function("document.body.dataset.state === 'playing'")
    wait_advancing(viewer, "output")
    for p in (viewer, page):
        p.context.close()


def test_a_3_s_outage_is_ridden_out_without_a_click(browser, server):
    outage(browser, server, 3.0, "outage_3s")


@pytest.mark.slow
def test_a_20_s_outage_is_ridden_out_without_a_click_even_with_timers_throttled(browser, server):
    outage(browser, server, 20.0, "outage_20s", throttled=True)


def test_a_server_back_with_a_token_is_asked_for_it_not_retried(browser, server):
    """The page keeps a token the old server ignored; the new server refuses it: the page says so and stops.
    Last in the module: it leaves the server with a token."""
    page = new_page(browser, token="an-old-token")
    page.goto(f"{server.base}/")
    page.wait_for_function("document.body.dataset.state === 'streaming'")
    server.stop()
    page.wait_for_function("document.body.dataset.state === 'reconnecting'", timeout=5_000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    server.start(["--token", "a-new-token"])
    try:
        message = page.locator("#message[data-kind='token']")
        message.wait_for(state="visible", timeout=int((MAX_WAIT_S + ATTEMPT_S) * 1000))
        assert "Token refused" in message.inner_text() and page.locator("#token").is_visible()
        assert page.evaluate("window.sanaStream.retry.due") is None  # no attempt pending
        tried = len(requests)
        page.wait_for_timeout((MAX_WAIT_S + 1) * 1000)  # longer than the longest wait: no attempt comes
        assert len(requests) == tried, requests[tried:]
        assert page.evaluate("document.body.dataset.state") == "error"
    finally:
        page.context.close()
