"""A sender that is neither aiortc nor a browser: GStreamer's webrtcbin (as in whipclientsink/whipsink, on
Raspberry Pi and embedded cameras) posts H.264 + Opus to /whip as OBS does, with an RSA DTLS certificate, which
aiortc alone refuses ("no shared cipher"); server.dtls_ciphers lets it in. Also the suites themselves, with an
in-memory DTLS handshake against an RSA server, before and after.

The sender (tests/gst_whip_sender.py) runs under Debian's /usr/bin/python3 with python3-gi. Without those
packages the test is skipped with the reason, except under CI=true, where it fails: `make test` installs them when
it runs as root (scripts/ensure_gstreamer.sh)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate, generate_certificate
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from server.dtls_ciphers import RSA_SUITES, allow_rsa_senders, cipher_names
from tests.support import eventually, running
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture
from tests.test_server_viewer import view

SENDER = Path(__file__).with_name("gst_whip_sender.py")
SYSTEM_PYTHON = os.environ.get("SANA_STREAM_SYSTEM_PYTHON", "/usr/bin/python3")
TOKEN = "gstreamer-token"
# what the sender needs: GStreamer's bindings, webrtcbin (-bad), libnice's element and bindings, an H.264 encoder
# (x264enc: -ugly; openh264enc: -bad), Opus (-base) and RTP payloaders (-good)
PROBE = """
import gi
for name, version in (("Gst", "1.0"), ("GstWebRTC", "1.0"), ("GstSdp", "1.0"), ("Nice", "0.1")):
    gi.require_version(name, version)
from gi.repository import Gst, GstWebRTC, GstSdp, Nice
Gst.init(None)
need = [["webrtcbin"], ["nicesrc"], ["x264enc", "openh264enc"], ["opusenc"], ["rtph264pay"], ["rtpopuspay"],
        ["videotestsrc"], ["h264parse"]]
missing = [" or ".join(names) for names in need if not any(Gst.ElementFactory.find(n) for n in names)]
print("missing GStreamer elements: " + ", ".join(missing) if missing else "ok")
"""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_gstreamer() -> None:
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60)
        reason = probe.stdout.strip() if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]
    except FileNotFoundError:
        reason = f"{SYSTEM_PYTHON} is missing"
    if reason == "ok":
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the GStreamer WHIP test must run)")
    pytest.skip(f"{reason}: the GStreamer WHIP test needs Debian's python3-gi and GStreamer packages; "
                "`make test` as root installs them (scripts/ensure_gstreamer.sh)")


def test_a_gstreamer_sender_with_an_rsa_certificate_streams_over_whip(local_engine):
    require_gstreamer()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def main():
        app = make_app(local_engine, token=TOKEN)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            sender = await asyncio.create_subprocess_exec(
                SYSTEM_PYTHON, str(SENDER), f"{base}/whip?stream=gst", "--token", TOKEN, "--seconds", "120",
                "--size", str(SIZE), str(SIZE), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            lines: list[str] = []

            async def read() -> None:
                async for line in sender.stdout:
                    lines.append(line.decode(errors="replace").rstrip())

            reader = asyncio.ensure_future(read())
            pipeline = app.state.runtime["pipeline"]
            try:
                await eventually(lambda: "gst" in pipeline.stream_ids() and pipeline.stats("gst").generated >= 5,
                                 60, "restyled frames of the GStreamer stream")
                dtls = app.state.peers().peers["gst"].pc.getTransceivers()[0].receiver.transport
                ssl = dtls._ssl  # aiortc's DTLS connection: the suite it agreed, the sender's certificate
                cipher, key = ssl.get_cipher_name(), ssl.get_peer_certificate(as_cryptography=True).public_key()
                viewer = await view(base, "gst", headers=auth)  # the OBS way: WHIP in, a viewer out
                shown = await viewer.wait_frames(2)
                rates = (await http.get("/health", headers=auth)).json()["rates"]["gst"]
                stats = pipeline.stats("gst")
                await viewer.pc.close()
            finally:
                sender.terminate()  # it ends its session with DELETE
                await asyncio.wait_for(sender.wait(), 30)
                await reader
            await eventually(lambda: "gst" not in app.state.peers().peers, 10, "the WHIP session ended")
        return lines, cipher, key, shown, rates, stats

    lines, cipher, key, shown, rates, stats = asyncio.run(main())
    events = [json.loads(line) for line in lines if line.startswith("{")]
    offer = next(e["offer"] for e in events if e["event"] == "answered")
    assert "H264/90000" in offer and "OPUS/48000" in offer.upper(), offer
    assert isinstance(key, rsa.RSAPublicKey) and cipher in RSA_SUITES, (cipher, key)
    assert stats.submitted >= 5 and stats.generated >= 5, stats
    assert rates["kind"] == "whip" and rates["received_fps"] > 0 and rates["generated_fps"] > 0, rates
    assert all(image.shape == (SIZE, SIZE, 3) for image in shown)
    assert {"event": "deleted", "status": 200} in events, lines


def _rsa_dtls_server() -> SSL.Context:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(generate_certificate(key))
    ctx.use_privatekey(key)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    ctx.set_verify(SSL.VERIFY_PEER, lambda *_: True)
    return ctx


def _handshake(client_ctx: SSL.Context, server_ctx: SSL.Context) -> str | None:
    """An in-memory DTLS handshake; the suite agreed. Raises SSL.Error when there is none."""
    client, server = SSL.Connection(client_ctx), SSL.Connection(server_ctx)
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(10):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                while True:
                    b.bio_write(a.bio_read(65536))
            except SSL.WantReadError:
                pass
    return client.get_cipher_name()


def test_aiortc_offers_the_rsa_suites_after_its_own():
    """aiortc answering an offer is the DTLS client: against a sender with an RSA certificate, its own suites
    share none; with allow_rsa_senders the RSA suites follow aiortc's own, in aiortc's order."""
    certificate = RTCCertificate.generateCertificate()
    original = RTCCertificate.__dict__["_create_ssl_context"]
    original = getattr(original, "__wrapped__", original)  # the test session may have wrapped it already
    with pytest.raises(SSL.Error, match="no shared cipher"):
        _handshake(original(certificate, SRTP_PROFILES), _rsa_dtls_server())
    own = cipher_names(original(certificate, SRTP_PROFILES))
    assert allow_rsa_senders() and allow_rsa_senders()  # idempotent
    suites = cipher_names(certificate._create_ssl_context(SRTP_PROFILES))
    assert suites == [*own, *RSA_SUITES] and own and all("ECDSA" in s for s in own), suites
    assert _handshake(certificate._create_ssl_context(SRTP_PROFILES), _rsa_dtls_server()) in RSA_SUITES
