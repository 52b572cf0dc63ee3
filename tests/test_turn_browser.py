"""The web pages forced to relay (?relay=1, iceTransportPolicy "relay") through a real coturn on loopback, in
Debian's Chromium (the helpers and the skip rules of tests/test_browser.py)."""

from __future__ import annotations

import httpx

from server.ice_config import IceConfig
from tests.support import ServerThread, free_port, mean_abs_diff
from tests.test_browser import browser, grab, new_page, screenshot, wait_advancing  # noqa: F401 - fixture
from tests.test_server_stream import local_engine, make_app  # noqa: F401 - fixture

# the candidate types of the selected pair, from the browser's own getStats()
SELECTED_PAIR = """async (name) => {
  const report = await window[name].pc.getStats();
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) return null;
  const type = (id) => report.get(id).candidateType;
  return { local: type(pair.localCandidateId), remote: type(pair.remoteCandidateId), state: pair.state };
}"""


def relay_app(local_engine, url: str, secret: str):
    return make_app(local_engine, ice=IceConfig.from_options([url], turn_secret=secret))


def test_pages_forced_to_relay_stream_through_coturn(browser, local_engine, coturn):
    with ServerThread(relay_app(local_engine, coturn.url(), coturn.secret)) as server:
        base = server.base
        page = new_page(browser)
        page.goto(f"{base}/?relay=1")
        page.wait_for_function("document.body.dataset.state === 'streaming'")
        wait_advancing(page, "output")
        assert mean_abs_diff(grab(page, "output"), grab(page, "camera")) > 20, "the output looks like the raw camera"
        pair = page.evaluate(SELECTED_PAIR, "sanaStream")
        assert pair is not None and pair["local"] == "relay" and pair["state"] == "succeeded", pair
        page.wait_for_function("document.getElementById('stat-route').textContent === 'relay'")
        stream = page.evaluate("window.sanaStream.streamId")
        route = httpx.get(f"{base}/debug/connections").json()["peers"][stream]
        assert route["relayed"] is True and route["remote"] == "relay" and route["state"] == "connected", route

        viewer = new_page(browser)
        viewer.goto(f"{base}/view?stream={stream}&relay=1")
        viewer.wait_for_function("document.body.dataset.state === 'playing'")
        wait_advancing(viewer, "output")
        assert viewer.evaluate(SELECTED_PAIR, "sanaView")["local"] == "relay"
        screenshot(page, "relay.png")
        for p in (viewer, page):
            p.context.close()


def test_a_wrong_turn_secret_or_a_dead_turn_server_is_reported_on_the_page(browser, local_engine, coturn):
    with ServerThread(relay_app(local_engine, coturn.url(), "not-the-secret-of-this-coturn")) as server:
        base = server.base
        page = new_page(browser)
        page.goto(f"{base}/?relay=1")
        message = page.locator("#message[data-kind='relay']")
        message.wait_for(state="visible")
        text = message.inner_text()
        assert "No relayed connection" in text and "refused the credentials (401" in text, text
        assert coturn.url() in text and "--turn-secret" in text, text
        screenshot(page, "relay-refused.png")
        page.context.close()
    dead = f"turn:127.0.0.1:{free_port()}?transport=tcp"
    with ServerThread(relay_app(local_engine, dead, coturn.secret)) as server:
        base = server.base
        page = new_page(browser)
        page.goto(f"{base}/?relay=1")
        message = page.locator("#message[data-kind='relay']")
        message.wait_for(state="visible")
        text = message.inner_text()
        assert f"The TURN server {dead} did not answer" in text, text
        page.context.close()


def test_relay_without_a_turn_server_says_so(browser, local_engine):
    with ServerThread(make_app(local_engine)) as server:
        base = server.base
        page = new_page(browser)
        page.goto(f"{base}/?relay=1")
        message = page.locator("#message[data-kind='relay']")
        message.wait_for(state="visible")
        assert "the server has no TURN server" in message.inner_text()
        page.context.close()
