"""The web pages in a real browser: Debian's Chromium with a fake camera (a generated .y4m file), driven by
Playwright against a server on loopback running the tiny model.

Screenshots of every page go to tests/artifacts/ on each run; with SANA_STREAM_UPDATE_DOCS=1 the two README
screenshots in docs/ are replaced too. Without /usr/bin/chromium (or Playwright) the tests are skipped with the
reason, except under CI=true, where they fail: `make test` installs Chromium when it runs as root.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from server.app import ModelInfo, create_app
from server.auth import derived_view_token
from server.settings import ServerSettings
from stream import StreamConfig
from tests.support import ServerThread, camera_frame, mean_abs_diff, wait_until
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture

CHROMIUM = Path(os.environ.get("SANA_STREAM_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS = Path(__file__).resolve().parent.parent / "docs"
TOKEN = "s3cret-token"
PROMPT = "mosaic"
# the mean RGBA of `count` 32x32 canvas grabs of a video element, `everyMs` apart
GRAB = """async ([id, count, everyMs]) => {
  const video = document.getElementById(id);
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 32;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const sum = new Float64Array(32 * 32 * 4);
  for (let i = 0; i < count; i++) {
    if (i) await new Promise((resolve) => setTimeout(resolve, everyMs));
    g.drawImage(video, 0, 0, 32, 32);
    g.getImageData(0, 0, 32, 32).data.forEach((v, j) => { sum[j] += v / count; });
  }
  return Array.from(sum);
}"""
ADVANCING = """([id, after]) => {
  const video = document.getElementById(id);
  return video.currentTime > after && video.readyState >= 2;
}"""
# a WebRTC video's currentTime runs on without frames: count the frames the element presents
PRESENTS = """([id, count, timeoutMs]) => new Promise((resolve) => {
  const video = document.getElementById(id);
  let seen = 0;
  const step = () => (++seen >= count ? resolve(true) : video.requestVideoFrameCallback(step));
  video.requestVideoFrameCallback(step);
  setTimeout(() => resolve(false), timeoutMs);
})"""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(f"{reason}: the browser tests need Debian's chromium; `make test` as root installs it "
                "(scripts/ensure_chromium.sh), or run `apt-get install chromium`")


def write_y4m(path: Path, size: int = SIZE, frames: int = 30, moving: bool = True) -> Path:
    """A fake camera for Chromium (--use-file-for-fake-video-capture), I420 at 30 fps: a gradient with a square
    that moves, or (``moving=False``) stays put."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{size} H{size} F30:1 Ip A1:1 C420jpeg\n".encode())
        for k in range(frames):
            f.write(b"FRAME\n")
            rgb = camera_frame(k if moving else 3, height=size, width=size)
            f.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
    # a still camera: the tiny random model reacts to a prompt far less than to motion (about 1 grey level against
    # 2-4), so only with a still picture can a test tell that the prompt changed the output
    camera = write_y4m(tmp_path_factory.mktemp("camera") / "camera.y4m", moving=False)
    args = ["--headless=new", "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}", "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-gpu"]
    with sync_playwright() as p:
        # Playwright gives each launch a fresh --user-data-dir; its own "--headless" is replaced by ours
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args,
                                     ignore_default_args=["--headless"])
        try:
            yield chromium
        finally:
            chromium.close()


def prompt_sensitive_app(local_engine):
    """The tiny random model changes its output by only about a grey level from one prompt to another (less than
    the video encoders do while they settle); full CFG with a large scale multiplies that by about five."""
    settings = {"prompt": "a watercolor painting", "cfg_type": "full", "cfg_scale": 8.0}
    config = StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,), **settings)
    return create_app(ServerSettings(stream=config), local_engine(**settings), ModelInfo("tiny", True, "torch"))


def new_page(browser, token: str | None = None, csp: bool = False):
    """A page in a fresh context; the pages' Content-Security-Policy is bypassed unless ``csp`` (Playwright's
    wait_for_function evaluates its string in the page, which the policy forbids): ``poll`` waits under it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=not csp)
    if token is not None:
        context.add_init_script(f"localStorage.setItem('sana-stream.token', {token!r})")
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def poll(page, expression: str, timeout: float = 20.0) -> None:
    """Waits until ``expression`` is true in the page, evaluated from outside it (allowed under the page's CSP)."""
    wait_until(lambda: page.evaluate(expression), timeout, expression)


def grab(page, element: str, count: int = 1) -> np.ndarray:
    return np.array(page.evaluate(GRAB, [element, count, 100]), np.float32).reshape(32, 32, 4)[..., :3]


def mean_grab(page, element: str) -> np.ndarray:
    return grab(page, element, count=4)


def send_prompt(page, stream: str, prompt: str) -> np.ndarray:
    """Types ``prompt`` + Enter, checks the server's answer, and returns the output a moment later."""
    page.fill("#prompt", prompt)
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as answer:
        page.press("#prompt", "Enter")
    assert answer.value.ok and answer.value.json()["streams"][stream]["prompt"] == prompt
    page.wait_for_function("document.getElementById('prompt-hint').dataset.kind === 'ok'")
    page.wait_for_timeout(500)  # a few frames for the new prompt to come through
    return settled_grab(page, "output")


def settled_grab(page, element: str, timeout: float = 20.0) -> np.ndarray:
    """The picture once it stops changing: on a still camera the video encoders refine the image over the first
    seconds (about a grey level, as much as a prompt changes the tiny model's output)."""
    deadline = time.monotonic() + timeout
    last = mean_grab(page, element)
    while time.monotonic() < deadline:
        current = mean_grab(page, element)
        if mean_abs_diff(current, last) < 0.12:
            return current
        last = current
    raise AssertionError(f"the {element} video did not settle within {timeout} s")


def wait_advancing(page, element: str, frames: int = 4) -> None:
    """The video element plays (its currentTime passes a value read after it started) and presents new frames."""
    page.wait_for_function(ADVANCING, arg=[element, 0])
    now = page.evaluate("(id) => document.getElementById(id).currentTime", element)
    page.wait_for_function(ADVANCING, arg=[element, now + 0.3])
    assert page.evaluate(PRESENTS, [element, frames, 15_000]), f"no {frames} new frames in #{element}"


def screenshot(page, name: str, docs: str | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    if docs and os.environ.get("SANA_STREAM_UPDATE_DOCS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / docs)


def test_webcam_page_restyles_feeds_the_viewer_and_follows_the_prompt(browser, local_engine):
    with ServerThread(prompt_sensitive_app(local_engine)) as server:
        base = server.base
        page = new_page(browser)
        page.goto(f"{base}/")
        page.wait_for_function("document.body.dataset.state === 'streaming'")
        wait_advancing(page, "output")
        wait_advancing(page, "camera")
        stream = page.evaluate("window.sanaStream.streamId")
        camera = grab(page, "camera")
        assert mean_abs_diff(grab(page, "output"), camera) > 20, "the output looks like the raw camera"

        viewer = new_page(browser)
        viewer.goto(f"{base}/view?stream={stream}")
        viewer.wait_for_function("document.body.dataset.state === 'playing'")
        wait_advancing(viewer, "output")
        assert httpx.get(f"{base}/health").json()["viewers"] == 1
        shown = grab(viewer, "output")
        near, far = mean_abs_diff(shown, grab(page, "output")), mean_abs_diff(shown, camera)
        assert near < 0.5 * far, "the viewer does not show the output"
        screenshot(viewer, "viewer.png", docs="viewer.png")

        # the prompt alternates between PROMPT and the first one: the output must move at each change by more than
        # it moves between two grabs under the same prompt (once, a few seconds in, the server's video encoder
        # restarts at a new bitrate and shifts the picture by about a grey level: of the three same-prompt pairs,
        # which overlap in time, at least one does not span that moment)
        prompts = [page.input_value("#prompt"), PROMPT] * 2 + [page.input_value("#prompt")]
        shots = [settled_grab(page, "output")] + [send_prompt(page, stream, p) for p in prompts[1:]]
        change = min(mean_abs_diff(a, b) for a, b in pairwise(shots))
        same = min(mean_abs_diff(a, b) for a, b in zip(shots, shots[2:]))
        assert change > max(1.0, 3 * same), f"the prompt moved the output {change:.2f} levels (same prompt: {same:.2f})"
        page.wait_for_function("document.getElementById('stat-fps').textContent !== '–'")
        page.fill("#prompt", PROMPT)
        page.press("#prompt", "Enter")
        page.wait_for_function("document.getElementById('prompt-hint').dataset.kind === 'ok'")
        screenshot(page, "webcam-filter.png", docs="webcam-filter.png")

        # Reconnect keeps the stream id, so the viewer page (an OBS source) finds the stream again by itself
        generation = viewer.evaluate("window.sanaView.generation")
        page.click("#reconnect")
        page.wait_for_function("document.body.dataset.state === 'streaming'")
        assert page.evaluate("window.sanaStream.streamId") == stream
        viewer.wait_for_function(f"window.sanaView.generation > {generation}")
        viewer.wait_for_function("document.body.dataset.state === 'playing'")
        wait_advancing(viewer, "output")
        for p in (viewer, page):
            p.context.close()


def test_a_full_server_says_so(browser, local_engine):
    with ServerThread(make_app(local_engine, max_peers=1)) as server:
        base = server.base
        first = new_page(browser)
        first.goto(f"{base}/")
        first.wait_for_function("document.body.dataset.state === 'streaming'")
        second = new_page(browser)
        second.goto(f"{base}/")
        message = second.locator("#message[data-kind='server-full']")
        message.wait_for(state="visible")
        assert "Server full" in message.inner_text()
        screenshot(second, "server-full.png")
        lost = new_page(browser)
        lost.goto(f"{base}/view?stream=no-such-stream")
        lost.wait_for_function("document.body.dataset.state === 'waiting'")
        assert "Waiting for stream no-such-stream" in lost.inner_text("#view-status")
        lost.context.close()
        for p in (second, first):
            p.context.close()


def test_a_wrong_token_is_reported_and_a_right_one_connects(browser, local_engine):
    with ServerThread(make_app(local_engine, token=TOKEN)) as server:
        base = server.base
        page = new_page(browser, token="wrong-token")
        page.goto(f"{base}/")
        message = page.locator("#message[data-kind='token']")
        message.wait_for(state="visible")
        assert "Token refused" in message.inner_text()
        assert page.locator("#token").is_visible()
        screenshot(page, "bad-token.png")
        page.fill("#token", TOKEN)
        page.click("#token-save")
        page.wait_for_function("document.body.dataset.state === 'streaming'")
        assert page.evaluate("localStorage.getItem('sana-stream.token')") == TOKEN
        wait_advancing(page, "output")

        # the OBS link the page copies carries the view token, which plays the stream and nothing else
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page.click("#copy-view")
        page.wait_for_function("document.getElementById('copy-view').textContent === 'Copied (with view token)'")
        link = page.evaluate("navigator.clipboard.readText()")
        assert TOKEN not in link and link.endswith(f"#token={derived_view_token(TOKEN)}"), link
        viewer = new_page(browser)  # another browser profile: no remembered token
        viewer.goto(link)
        viewer.wait_for_function("document.body.dataset.state === 'playing'")
        wait_advancing(viewer, "output")
        view_token = {"Authorization": f"Bearer {derived_view_token(TOKEN)}"}
        assert httpx.post(f"{base}/prompt", json={"prompt": "x"}, headers=view_token).status_code == 401
        for p in (viewer, page):
            p.context.close()


def test_the_api_docs_render_from_this_origin_alone_under_the_pages_policy(browser, local_engine):
    """Swagger UI at /docs draws the API from the server's own copy of its files: no request leaves the origin and
    the Content-Security-Policy blocks nothing it needs (Chromium reports each block on the console)."""
    with ServerThread(make_app(local_engine, token=TOKEN)) as server:
        base = server.base
        page = new_page(browser, csp=True)
        requests, console = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: console.append(m.text))
        page.goto(f"{base}/docs")
        page.locator(".swagger-ui .opblock-summary-path[data-path='/view/offer']").wait_for()
        page.context.close()
    assert requests and all(url.startswith(base) for url in requests), requests
    assert not [m for m in console if "Content Security Policy" in m], console


def test_the_pages_work_under_their_content_security_policy(browser, local_engine):
    """The webcam page streams and the view page plays with the policy enforced: every script, style and request
    of theirs comes from the origin (Chromium reports each block on the console)."""
    with ServerThread(make_app(local_engine)) as server:
        console = []
        page, viewer = new_page(browser, csp=True), new_page(browser, csp=True)
        for p in (page, viewer):
            p.on("console", lambda m: console.append(m.text))
        page.goto(f"{server.base}/")
        poll(page, "document.body.dataset.state === 'streaming'")
        viewer.goto(f"{server.base}/view?stream={page.evaluate('window.sanaStream.streamId')}")
        poll(viewer, "document.body.dataset.state === 'playing'")
        for p in (viewer, page):
            p.context.close()
    assert not [m for m in console if "Content Security Policy" in m], console
