#!/usr/bin/python3
"""A WHEP player built on GStreamer's webrtcbin, as whepsrc and other players use it: a receive-only VP8 offer posted
to a WHEP URL before any candidate is gathered (no a=candidate lines: the server learns this player's address from
its checks), the video decoded and counted. With --ice-from-options it first asks the endpoint's OPTIONS for its
Link headers (RFC 9725 4.6) and gathers through the STUN/TURN servers they name (behind NAT).

Run by Debian's /usr/bin/python3, whose python3-gi has GStreamer's bindings (the project's venv has none), so it
uses the standard library only. It prints one JSON line per event to stdout ({"event": ...}): "frames" with the
count and size every 10 decoded frames, and ends the WHEP session (DELETE) on SIGTERM or SIGINT, or after --seconds.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstWebRTC  # noqa: E402
from gst_session import Session, say  # noqa: E402 - next to this script, also run by /usr/bin/python3

VIDEO_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
DECODE = "rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=RGB ! fakesink name=frames signal-handoffs=true"
CANDIDATE = re.compile(r"a=(?:candidate|end-of-candidates)[^\r\n]*\r?\n")
NOT_LOOPBACK = re.compile(r"a=candidate:(?:\S+ ){4}(?!127\.)\S+ [^\r\n]*\r?\n")
LINK = re.compile(r'<((?:stun|turn):[^>]+)>;\s*rel="ice-server"(.*)')


def ice_servers(links: list[str]) -> list[str]:
    """webrtcbin's stun://HOST:PORT and turn://USER:PASS@HOST:PORT from the Link header values."""
    servers = []
    for link in links:
        match = LINK.match(link.strip())
        if match is None:
            continue
        url, params = match.groups()
        values = dict(re.findall(r'(username|credential)="([^"]*)"', params))
        scheme, _, rest = url.partition(":")
        address = rest.split("?")[0]
        if scheme == "stun":
            servers.append(f"stun://{address}")
        elif "username" in values and "transport=tcp" not in rest:
            user = urllib.parse.quote(values["username"], safe="")
            secret = urllib.parse.quote(values["credential"], safe="")
            servers.append(f"turn://{user}:{secret}@{address}")
    return servers


class WhepPlayer(Session):
    def __init__(self, url: str, token: str | None, loopback: bool, ice_from_options: bool) -> None:
        super().__init__(url, token)
        self.loopback, self.ice_from_options, self.frames = loopback, ice_from_options, 0
        self.size: tuple[int, int] | None = None
        self.pipe = Gst.Pipeline.new("player")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "recv")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipe.add(self.webrtc)
        self.webrtc.connect("pad-added", self.on_pad)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)

    def use_ice_servers(self) -> None:
        request = urllib.request.Request(self.url, headers=self.headers(), method="OPTIONS")
        with urllib.request.urlopen(request, timeout=30) as response:
            links = response.headers.get_all("Link") or []
        servers = ice_servers(links)
        say("ice-servers", links=len(links), servers=[s.split("@")[-1] for s in servers])
        for server in servers:
            if server.startswith("stun://"):
                self.webrtc.set_property("stun-server", server)
            else:
                self.webrtc.emit("add-turn-server", server)

    def start(self) -> None:
        if self.ice_from_options:
            self.use_ice_servers()
        if self.loopback:
            self.only_loopback()
        self.webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                         Gst.Caps.from_string(VIDEO_CAPS))
        self.pipe.set_state(Gst.State.PLAYING)
        self.webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(self.on_offer, None, None))

    def on_offer(self, promise: Gst.Promise, _: object, __: object) -> None:
        reply = promise.get_reply()
        if reply is None or not reply.has_field("offer"):
            say("no-offer", reply=reply.to_string() if reply else None)
            GLib.idle_add(self.loop.quit)
            return
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        GLib.idle_add(self.post_offer, offer.sdp.as_text())  # at once, as OBS does: no candidates yet

    def post_offer(self, sdp: str) -> bool:
        sdp = CANDIDATE.sub("", sdp)
        posted = self.post(sdp)
        if posted is not None:
            answer, status, links = posted
            say("answered", status=status, location=self.location, links=len(links),
                offer_candidates=sdp.count("a=candidate"))
            self.answered(NOT_LOOPBACK.sub("", answer) if self.loopback else answer)
        return False

    def on_pad(self, _: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.parse_bin_from_description(DECODE, True)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))
        decode.get_by_name("frames").connect("handoff", self.on_frame)

    def on_frame(self, sink: Gst.Element, _: Gst.Buffer, pad: Gst.Pad) -> None:
        self.frames += 1
        if self.size is None:
            structure = pad.get_current_caps().get_structure(0)
            self.size = (structure.get_value("height"), structure.get_value("width"))
        if self.frames == 1 or self.frames % 10 == 0:
            say("frames", count=self.frames, height=self.size[0], width=self.size[1])

    def on_connection_state(self, element: Gst.Element, _: object) -> None:
        say("connection", state=element.get_property("connection-state").value_nick)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the WHEP endpoint, e.g. http://127.0.0.1:8080/whep?stream=cam")
    parser.add_argument("--token")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--any-address", action="store_true", help="gather on every interface, not 127.0.0.1 only")
    parser.add_argument("--ice-from-options", action="store_true", help="STUN/TURN from OPTIONS' Link headers")
    args = parser.parse_args()
    Gst.init(None)
    player = WhepPlayer(args.url, args.token, loopback=not args.any_address, ice_from_options=args.ice_from_options)
    player.run(args.seconds)
    say("stopped", frames=player.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
