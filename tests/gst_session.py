"""What the GStreamer WHIP sender and WHEP player (tests/gst_whip_sender.py, tests/gst_whep_player.py) share: JSON
event lines, ICE on 127.0.0.1 only, the offer's POST and its answer, the main loop with its signals and deadline,
and the DELETE that ends the session. Standard library and Debian's python3-gi only, as the two scripts run under /usr/bin/python3."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Session:
    """A webrtcbin in a pipeline, a WHIP/WHEP resource URL once answered (``location``), and the main loop."""

    pipe: Gst.Pipeline
    webrtc: Gst.Element

    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token, self.location = url, token, None
        self.loop = GLib.MainLoop()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def only_loopback(self) -> None:
        """ICE candidates on 127.0.0.1 only, over UDP: libnice otherwise gathers every interface but loopback.
        The wrappers are kept for the process's life: webrtcbin 1.22's ice-agent getter hands out its own
        reference, so a wrapper that goes frees the agent under webrtcbin."""
        self.ice = self.webrtc.get_property("ice-agent")
        self.ice.set_property("ice-tcp", False)
        self.agent = self.ice.get_property("agent")
        address = Nice.Address.new()
        address.set_from_string("127.0.0.1")
        self.agent.add_local_address(address)

    def start(self) -> None:
        raise NotImplementedError

    def post(self, sdp: str) -> tuple[str, int, list[str]] | None:
        """POSTs the offer: the answer, the status and the Link headers, with ``location`` set; None when refused
        or unreachable (said, and the main loop ends)."""
        headers = {"Content-Type": "application/sdp", **self.headers()}
        request = urllib.request.Request(self.url, data=sdp.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer, status = response.read().decode(), response.status
                self.location = urllib.parse.urljoin(self.url, response.headers["Location"])
                return answer, status, response.headers.get_all("Link") or []
        except urllib.error.HTTPError as exc:
            say("refused", status=exc.code, body=exc.read().decode(errors="replace"))
        except urllib.error.URLError as exc:
            say("unreachable", reason=str(exc.reason))
        GLib.idle_add(self.loop.quit)
        return None

    def answered(self, answer: str) -> None:
        _, message = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self.webrtc.emit("set-remote-description", description, Gst.Promise.new())

    def on_bus(self, _: Gst.Bus, message: Gst.Message) -> bool:
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            say("error", message=str(error), debug=debug)
            self.loop.quit()
        return True

    def run(self, seconds: float) -> None:
        """``start()``, then the main loop until SIGTERM, SIGINT or ``seconds`` have passed."""
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_bus)
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self.stop)
        GLib.timeout_add(int(seconds * 1000), self.stop)
        self.start()
        self.loop.run()
        self.pipe.set_state(Gst.State.NULL)

    def stop(self) -> bool:
        """Ends the session (DELETE on its Location) and the main loop."""
        if self.location is not None:
            request = urllib.request.Request(self.location, headers=self.headers(), method="DELETE")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    say("deleted", status=response.status)
            except urllib.error.HTTPError as exc:
                say("deleted", status=exc.code)
            self.location = None
        self.loop.quit()
        return False
