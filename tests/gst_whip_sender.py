#!/usr/bin/python3
"""A WHIP sender built on GStreamer's webrtcbin, as whipclientsink/whipsink and embedded cameras use it: H.264
(x264enc, else openh264enc) and Opus, posted to a WHIP URL as OBS does (one offer with every ICE candidate, no
trickle), with ICE on 127.0.0.1 only. webrtcbin's DTLS certificate is RSA (GStreamer's dtls plugin makes an
RSA-2048 one), which is what tests/test_whip_gstreamer.py needs to prove server.dtls_ciphers.

Run by Debian's /usr/bin/python3, whose python3-gi has GStreamer's bindings (the project's venv has none), so it
uses the standard library only. It prints one JSON line per event to stdout ({"event": ...}) and ends the WHIP
session (DELETE) when it gets SIGTERM or SIGINT, or after --seconds.
"""

from __future__ import annotations

import argparse
import re
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstWebRTC  # noqa: E402
from gst_session import Session, say  # noqa: E402 - next to this script, also run by /usr/bin/python3

VIDEO = ("videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},framerate=15/1 ! videoconvert ! "
         "{encoder} ! video/x-h264,profile=constrained-baseline ! h264parse ! "
         "rtph264pay config-interval=-1 aggregate-mode=zero-latency ! "
         "application/x-rtp,media=video,encoding-name=H264,payload=102 ! send.")
AUDIO = ("audiotestsrc is-live=true wave=sine volume=0.1 ! audioconvert ! audioresample ! opusenc ! rtpopuspay ! "
         "application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! send.")
LOOPBACK_ONLY = re.compile(r"a=candidate:(?:\S+ ){4}(?!127\.)\S+ [^\r\n]*\r?\n")  # other candidates
ENCODERS = {"x264enc": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=500",
            "openh264enc": "openh264enc complexity=low gop-size=15 bitrate=500000"}


class WhipSender(Session):
    def __init__(self, url: str, token: str | None, size: tuple[int, int]) -> None:
        super().__init__(url, token)
        encoder = next((ENCODERS[e] for e in ENCODERS if Gst.ElementFactory.find(e)), None)
        if encoder is None:
            raise SystemExit("no H.264 encoder: install gstreamer1.0-plugins-ugly (x264enc) or -bad (openh264enc)")
        self.pipe = Gst.parse_launch("webrtcbin name=send bundle-policy=max-bundle " +
                                     VIDEO.format(w=size[1], h=size[0], encoder=encoder) + " " + AUDIO)
        self.webrtc = self.pipe.get_by_name("send")
        self.offers_left = 3  # webrtcbin has answered create-offer without an offer while starting up
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        say("encoder", name=encoder.split()[0])

    def start(self) -> None:
        self.only_loopback()
        for index in range(2):  # WHIP senders only send
            transceiver = self.webrtc.emit("get-transceiver", index)
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        self.pipe.set_state(Gst.State.PLAYING)

    def on_negotiation_needed(self, element: Gst.Element) -> None:
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(self.on_offer, element, None))

    def on_offer(self, promise: Gst.Promise, element: Gst.Element, _: object) -> None:
        reply = promise.get_reply()
        if reply is None or not reply.has_field("offer"):
            self.offers_left -= 1
            say("no-offer", reply=reply.to_string() if reply else None, retrying=self.offers_left > 0)
            if self.offers_left > 0:
                GLib.timeout_add(500, lambda: self.on_negotiation_needed(element) or False)
            else:
                GLib.idle_add(self.loop.quit)
            return
        offer = reply.get_value("offer")
        element.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, element: Gst.Element, _: object) -> None:
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.post_offer)  # HTTP on the main loop, not on webrtcbin's thread

    def on_connection_state(self, element: Gst.Element, _: object) -> None:
        say("connection", state=element.get_property("connection-state").value_nick)

    def post_offer(self) -> bool:
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        posted = self.post(sdp)
        if posted is not None:
            answer, status, _ = posted
            say("answered", status=status, location=self.location, offer=sdp)
            self.answered(LOOPBACK_ONLY.sub("", answer))  # checks go to 127.0.0.1 only, not to other addresses
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the WHIP endpoint, e.g. http://127.0.0.1:8080/whip?stream=gst")
    parser.add_argument("--token")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("HEIGHT", "WIDTH"))
    args = parser.parse_args()
    Gst.init(None)
    WhipSender(args.url, args.token, tuple(args.size)).run(args.seconds)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
