"""The hostile requests of tests/test_server_hostile.py: auth, Host, static paths, SDP, JSON, bodies, ids and
concurrency. Each names the status and error reason it must get; none may change what the server serves."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

TOKEN = "hostile-token-123"
CAP = 64 * 1024  # the documented body cap


@dataclass(frozen=True)
class Offers:
    """Real aiortc offers (no ICE candidates) to take apart, and the id of the live stream."""

    whip: str  # send-only video, as OBS sends
    with_audio: str  # send-only video and audio
    view: str  # receive-only video
    stream: str


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    error: str | None  # the expected "error" reason; None: any
    method: str = "post"
    path: str = "/offer"
    request: Callable[[Offers], dict[str, Any]] = lambda _: {}
    raw: Callable[[Offers], tuple[str, bytes]] | None = None  # a request sent byte for byte
    auth: bool = True  # send the right token
    repeat: int = 1  # sent this many times at once


def video_line(sdp: str) -> str:
    return re.search(r"m=video [^\r\n]*", sdp).group(0)


def sub(pattern: str, replacement: str, count: int = 0) -> Callable[[str], str]:
    return lambda sdp: re.sub(pattern, replacement, sdp, count=count)


def drop(pattern: str) -> Callable[[str], str]:
    return sub(pattern + r"[^\r\n]*\r\n", "")


def formats(new: str) -> Callable[[str], str]:
    """The video m-line with ``new`` as its format list."""
    return lambda sdp: sdp.replace(video_line(sdp), " ".join(video_line(sdp).split()[:3]) + new)


def extra_sections(n: int) -> Callable[[str], str]:
    return lambda sdp: sdp + "".join(f"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:x{i}\r\n"
                                     for i in range(n))


# each mutates a real send-only offer into one the server must refuse: (id, mutation, status, error)
SDP_MUTATIONS: list[tuple[str, Callable[[str], str], int, str]] = [
    ("av1-only", sub(r"(VP8|H264)/90000", "AV1/90000"), 422, "unsupported_codec"),
    ("h265-only", sub(r"(VP8|H264)/90000", "H265/90000"), 422, "unsupported_codec"),
    ("rtx-only", sub(r"(VP8|H264)/90000", "rtx/90000"), 422, "unsupported_codec"),
    ("h264-high-profile-only", lambda s: sub(r"profile-level-id=42[0-9a-f]{4}", "profile-level-id=640c1f")(
        sub(r"VP8/90000", "AV1/90000")(s)), 422, "unsupported_codec"),
    ("no-setup", drop(r"a=setup:"), 400, "invalid_sdp"),
    ("setup-holdconn", sub(r"a=setup:[^\r\n]*", "a=setup:holdconn"), 400, "invalid_sdp"),
    ("no-ice-ufrag", drop(r"a=ice-ufrag:"), 400, "invalid_sdp"),
    ("no-fingerprint", drop(r"a=fingerprint:"), 400, "invalid_sdp"),
    ("no-rtcp-mux", drop(r"a=rtcp-mux"), 400, "invalid_sdp"),
    ("malformed-m-line", lambda s: s.replace(video_line(s), "m=video x UDP"), 400, "invalid_sdp"),
    ("m-line-no-formats", formats(""), 400, "invalid_sdp"),
    ("m-line-port-too-big", lambda s: s.replace(video_line(s), re.sub(r"\d+", "70000", video_line(s), 1)), 400,
     "invalid_sdp"),
    ("payload-type-200", formats(" 200"), 400, "invalid_sdp"),
    ("payload-type-73", formats(" 73"), 400, "invalid_sdp"),
    ("payload-type-not-a-number", formats(" vp8"), 400, "invalid_sdp"),
    ("fmtp-undeclared-payload-type", sub(r"a=rtpmap", "a=fmtp:55 apt=1\r\na=rtpmap", 1), 400, "invalid_sdp"),
    ("rtcp-fb-undeclared-payload-type", sub(r"a=rtpmap", "a=rtcp-fb:120 nack\r\na=rtpmap", 1), 400, "invalid_sdp"),
    ("rtpmap-without-clock", sub(r"a=rtpmap:(\d+) VP8/90000", r"a=rtpmap:\1 VP8"), 400, "invalid_sdp"),
    ("malformed-c-line", sub(r"c=IN[^\r\n]*", "c=IN IP4"), 400, "invalid_sdp"),
    ("m-text-section", lambda s: s + "m=text 9 UDP/TLS/RTP/SAVPF 98\r\n", 400, "invalid_sdp"),
    ("plain-rtp-profile", sub(r"UDP/TLS/RTP/SAVPF", "RTP/AVP"), 400, "invalid_sdp"),
    ("nine-sections", extra_sections(8), 400, "invalid_sdp"),
    ("no-sections", lambda s: s[:s.index("m=")], 400, "invalid_sdp"),
    ("inactive-video", sub(r"a=sendonly", "a=inactive"), 400, "invalid_sdp"),
    ("receive-only-video", sub(r"a=sendonly", "a=recvonly"), 400, "invalid_sdp"),
    ("not-an-sdp-line", sub(r"a=mid:", "garbage line\r\na=mid:", 1), 400, "invalid_sdp"),
    ("nul-bytes", sub(r"a=mid:", "a=x\x00\x00\r\na=mid:", 1), 400, "invalid_sdp"),
    ("no-version-line", sub(r"^v=0\r\n", ""), 400, "invalid_sdp"),
]


def _sdp_cases() -> list[Case]:
    cases = []
    for name, mutate, status, error in SDP_MUTATIONS:
        cases.append(Case(f"offer-{name}", status, error,
                          request=lambda o, m=mutate: {"json": {"sdp": m(o.whip), "type": "offer"}}))
    for name, mutate, status, error in SDP_MUTATIONS[:8]:  # the same refusals on WHIP, as OBS meets them
        cases.append(Case(f"whip-{name}", status, error, path="/whip",
                          request=lambda o, m=mutate: {"content": m(o.whip),
                                                       "headers": {"Content-Type": "application/sdp"}}))
    cases += [
        Case("whip-aac-audio-only-codec", 422, "unsupported_codec", path="/whip",
             request=lambda o: {"content": sub(r"opus/48000/2|PCMU/8000|PCMA/8000|G722/8000", "MP4A-LATM/90000")(
                 o.with_audio), "headers": {"Content-Type": "application/sdp"}}),
        Case("offer-type-answer", 400, "invalid_sdp", request=lambda o: {"json": {"sdp": o.whip, "type": "answer"}}),
        Case("offer-empty-sdp", 400, "invalid_sdp", request=lambda o: {"json": {"sdp": "", "type": "offer"}}),
        Case("whip-empty-body", 400, "invalid_sdp", path="/whip",
             request=lambda o: {"content": b"", "headers": {"Content-Type": "application/sdp"}}),
        Case("whip-binary-body", 400, "invalid_sdp", path="/whip",
             request=lambda o: {"content": bytes(range(256)) * 8, "headers": {"Content-Type": "application/sdp"}}),
        Case("view-av1-only", 422, "unsupported_codec", path="/view/offer",
             request=lambda o: {"json": {"sdp": SDP_MUTATIONS[0][1](o.view), "type": "offer", "stream": o.stream}}),
        Case("view-no-setup", 400, "invalid_sdp", path="/view/offer",
             request=lambda o: {"json": {"sdp": drop(r"a=setup:")(o.view), "type": "offer", "stream": o.stream}}),
        Case("view-send-only-offer", 400, "invalid_sdp", path="/view/offer",
             request=lambda o: {"json": {"sdp": o.whip, "type": "offer", "stream": o.stream}}),
        Case("view-fmtp-undeclared", 400, "invalid_sdp", path="/view/offer",
             request=lambda o: {"json": {"sdp": SDP_MUTATIONS[15][1](o.view), "type": "offer", "stream": o.stream}}),
    ]
    return cases


def _auth_cases() -> list[Case]:
    offer = lambda o: {"json": {"sdp": o.whip, "type": "offer"}}  # noqa: E731
    wrong = [("missing", {}), ("wrong-token", {"Authorization": "Bearer wrong-token-123"}),
             ("basic-scheme", {"Authorization": f"Basic {TOKEN}"}), ("scheme-only", {"Authorization": "Bearer"}),
             ("token-without-scheme", {"Authorization": TOKEN}), ("other-header", {"X-Token": TOKEN}),
             ("token-prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"})]
    cases = [Case(f"auth-offer-{name}", 401, "unauthorized", auth=False,
                  request=lambda o, h=headers: {**offer(o), "headers": h}) for name, headers in wrong]
    cases += [
        Case("auth-whip-missing", 401, "unauthorized", path="/whip", auth=False,
             request=lambda o: {"content": o.whip, "headers": {"Content-Type": "application/sdp"}}),
        Case("auth-view-missing", 401, "unauthorized", path="/view/offer", auth=False,
             request=lambda o: {"json": {"sdp": o.view, "type": "offer", "stream": o.stream}}),
        Case("auth-prompt-missing", 401, "unauthorized", path="/prompt", auth=False,
             request=lambda o: {"json": {"prompt": "pwned", "stream": o.stream}}),
        Case("auth-delete-live-stream", 401, "unauthorized", method="delete", auth=False,
             path="/whip/{stream}"),
        Case("auth-token-in-query", 401, "unauthorized", path="/prompt?token=" + TOKEN, auth=False,
             request=lambda o: {"json": {"prompt": "pwned"}}),
    ]
    return cases


def _host_cases() -> list[Case]:
    hosts = [("evil-name", "evil.example"), ("loopback-prefix", "localhost.evil.example"),
             ("ip-in-name", "127.0.0.1.nip.io"), ("other-ipv6", "[::2]"), ("empty", ""), ("spaces", "a b"),
             ("other-port-same-evil", "evil.example:8080")]
    cases = [Case(f"host-{name}-health", 400, "invalid_host", method="get", path="/health",
                  request=lambda o, h=host: {"headers": {"Host": h}}) for name, host in hosts]
    cases += [
        Case("host-evil-offer", 400, "invalid_host", request=lambda o: {"json": {"sdp": o.whip, "type": "offer"},
                                                                         "headers": {"Host": "evil.example"}}),
        Case("host-evil-page", 400, "invalid_host", method="get", path="/",
             request=lambda o: {"headers": {"Host": "evil.example"}}),
        Case("host-evil-prompt", 400, "invalid_host", path="/prompt",
             request=lambda o: {"json": {"prompt": "pwned"}, "headers": {"Host": "evil.example"}}),
        Case("host-evil-metrics", 400, "invalid_host", method="get", path="/metrics",
             request=lambda o: {"headers": {"Host": "evil.example"}}),
    ]
    return cases


def _path_cases() -> list[Case]:
    raw = [("dot-segments", "/../server/app.py"), ("dot-segments-deep", "/js/../../../../etc/passwd"),
           ("encoded-dots", "/%2e%2e/%2e%2e/etc/passwd"), ("encoded-slashes", "/js/..%2f..%2fserver%2fapp.py"),
           ("backslashes", "/..%5c..%5cserver%5capp.py"), ("nul-byte", "/index.html%00.js"),
           ("missing-file", "/nonexistent.js"), ("whip-dot-segments", "/whip/../../server/app.py")]
    cases = [Case(f"path-{name}", 404, "not_found", method="get", raw=lambda o, p=path: (f"GET {p} HTTP/1.1", b""))
             for name, path in raw]
    cases += [
        Case("method-post-page", 405, "method_not_allowed", path="/index.html"),
        # a GET the routes do not take falls through to the web pages' mount, which has no such file
        Case("method-get-offer", 404, "not_found", method="get", path="/offer"),
        Case("method-put-offer", 405, "method_not_allowed", method="put", path="/offer"),
        Case("method-delete-prompt", 405, "method_not_allowed", method="delete", path="/prompt"),
        Case("method-get-whip-session", 404, "not_found", method="get", path="/whip/{stream}"),
    ]
    return cases


def _json_cases() -> list[Case]:
    prompt = [("not-json", {"content": "{not json", "headers": {"Content-Type": "application/json"}}, 422),
              ("array", {"json": ["prompt"]}, 422), ("wrong-type", {"json": {"prompt": 5}}, 422),
              ("unknown-field", {"json": {"prompt": "a", "colour": "red"}}, 422),
              ("nan", {"content": '{"seed": NaN}', "headers": {"Content-Type": "application/json"}}, 422),
              ("seed-negative", {"json": {"seed": -1}}, 422), ("seed-huge", {"json": {"seed": 2 ** 64}}, 422),
              ("too-many-scales", {"json": {"control_scales": [0.5] * 9}}, 422),
              ("prompt-too-long", {"json": {"prompt": "x" * 2001}}, 422),
              ("deep-nesting", {"content": "[" * 30000 + "]" * 30000,
                                "headers": {"Content-Type": "application/json"}}, 400)]
    cases = [Case(f"json-prompt-{name}", status, None, path="/prompt", request=lambda o, k=kw: k)
             for name, kw, status in prompt]
    cases += [
        Case("json-offer-missing-sdp", 422, "invalid_request", request=lambda o: {"json": {"type": "offer"}}),
        Case("json-offer-sdp-number", 422, "invalid_request", request=lambda o: {"json": {"sdp": 5, "type": "offer"}}),
        Case("json-offer-repeat-string", 422, "invalid_request",
             request=lambda o: {"json": {"sdp": o.whip, "type": "offer", "repeat": "sometimes"}}),
        Case("json-offer-extra-field", 422, "invalid_request",
             request=lambda o: {"json": {"sdp": o.whip, "type": "offer", "evil": 1}}),
    ]
    return cases


def _chunked(size: int) -> Callable[[Offers], dict[str, Any]]:
    def body(_: Offers) -> dict[str, Any]:
        return {"content": iter([b"{" + b" " * (size - 2) + b"}"]), "headers": {"Content-Type": "application/json"}}
    return body


def _body_cases() -> list[Case]:
    exactly_cap = json.dumps({"prompt": "x" * (CAP - 14)})  # 65536 bytes: read, then refused for its length
    assert len(exactly_cap) == CAP
    cases = [Case(f"body-chunked-over-cap{path.replace('/', '-')}", 413, "body_too_large", path=path,
                  request=_chunked(CAP + 1)) for path in ("/offer", "/prompt", "/view/offer")]
    cases += [
        Case("body-chunked-over-cap-whip", 413, "body_too_large", path="/whip",
             request=lambda o: {"content": iter([b"v=0\r\n" + b"a" * CAP]),
                                "headers": {"Content-Type": "application/sdp"}}),
        Case("body-declared-over-cap", 413, "body_too_large", path="/offer",
             request=lambda o: {"content": b"{" + b" " * CAP + b"}", "headers": {"Content-Type": "application/json"}}),
        Case("body-exactly-cap", 422, "invalid_request", path="/prompt",
             request=lambda o: {"content": exactly_cap, "headers": {"Content-Type": "application/json"}}),
        Case("body-cap-plus-one", 413, "body_too_large", path="/prompt",
             request=lambda o: {"content": exactly_cap + " ", "headers": {"Content-Type": "application/json"}}),
        Case("whip-text-plain", 415, "unsupported_media_type", path="/whip",
             request=lambda o: {"content": o.whip, "headers": {"Content-Type": "text/plain"}}),
        Case("whip-no-content-type", 415, "unsupported_media_type", path="/whip",
             request=lambda o: {"content": o.whip}),
    ]
    return cases


def _id_cases() -> list[Case]:
    return [
        Case("id-offer-reserved", 400, "invalid_stream",
             request=lambda o: {"json": {"sdp": o.whip, "type": "offer", "stream": "default"}}),
        Case("id-offer-path", 422, "invalid_request",
             request=lambda o: {"json": {"sdp": o.whip, "type": "offer", "stream": "../etc"}}),
        Case("id-offer-too-long", 422, "invalid_request",
             request=lambda o: {"json": {"sdp": o.whip, "type": "offer", "stream": "x" * 65}}),
        Case("id-offer-empty", 422, "invalid_request",
             request=lambda o: {"json": {"sdp": o.whip, "type": "offer", "stream": ""}}),
        Case("id-whip-spaces", 422, "invalid_request", path="/whip?stream=a%20b",
             request=lambda o: {"content": o.whip, "headers": {"Content-Type": "application/sdp"}}),
        Case("id-whip-reserved", 400, "invalid_stream", path="/whip?stream=default",
             request=lambda o: {"content": o.whip, "headers": {"Content-Type": "application/sdp"}}),
        Case("id-delete-unknown", 404, "unknown_session", method="delete", path="/whip/nope"),
        Case("id-view-unknown-stream", 404, "unknown_stream", path="/view/offer",
             request=lambda o: {"json": {"sdp": o.view, "type": "offer", "stream": "nope"}}),
        Case("id-view-engine-default", 404, "unknown_stream", path="/view/offer",
             request=lambda o: {"json": {"sdp": o.view, "type": "offer", "stream": "default"}}),
        Case("id-prompt-unknown-stream", 404, "unknown_stream", path="/prompt",
             request=lambda o: {"json": {"prompt": "a", "stream": "nope"}}),
        Case("id-get-prompt-unknown", 404, "unknown_stream", method="get", path="/prompt?stream=nope"),
    ]


def _concurrency_cases() -> list[Case]:
    return [
        Case("concurrent-av1-offers", 422, "unsupported_codec", repeat=12,
             request=lambda o: {"json": {"sdp": SDP_MUTATIONS[0][1](o.whip), "type": "offer"}}),
        Case("concurrent-av1-whip-same-id", 422, "unsupported_codec", path="/whip?stream=obs", repeat=12,
             request=lambda o: {"content": SDP_MUTATIONS[0][1](o.whip),
                                "headers": {"Content-Type": "application/sdp"}}),
        Case("concurrent-views-unknown-stream", 404, "unknown_stream", path="/view/offer", repeat=12,
             request=lambda o: {"json": {"sdp": o.view, "type": "offer", "stream": "nope"}}),
        Case("concurrent-bad-offers-for-live-id", 400, "invalid_sdp", repeat=8,
             request=lambda o: {"json": {"sdp": drop(r"a=setup:")(o.whip), "type": "offer", "stream": o.stream}}),
    ]


CASES: list[Case] = [*_sdp_cases(), *_auth_cases(), *_host_cases(), *_path_cases(), *_json_cases(),
                     *_body_cases(), *_id_cases(), *_concurrency_cases()]
