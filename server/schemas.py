"""Request and response bodies of the HTTP API. Unknown fields and non-finite numbers are rejected."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from stream.live_settings import LIVE_SETTINGS, LiveSetting

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)
STREAM_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
REPEAT_FIELD = Field(default=True, description="send each slow output a second time, for receivers that show a frame "
                     "only once the next one arrives; false spares the server an encode per output (docs/api.md)")


class Offer(BaseModel):
    model_config = Strict
    sdp: str = Field(max_length=64 * 1024)
    type: str = Field(max_length=16)
    stream: str | None = Field(default=None, pattern=STREAM_ID_PATTERN,
                               description="ask for this stream id (e.g. the one a reconnecting page had, so viewer "
                                           "links stay valid); a live peer holding it is replaced")
    repeat: bool = REPEAT_FIELD


class ViewOffer(BaseModel):
    """A receive-only offer: the answer sends the restyled video of ``stream`` and takes no input."""

    model_config = Strict
    sdp: str = Field(max_length=64 * 1024)
    type: str = Field(max_length=16)
    stream: str = Field(pattern=STREAM_ID_PATTERN)
    repeat: bool = REPEAT_FIELD


class Answer(BaseModel):
    sdp: str
    type: str
    stream: str = Field(description="the id of the stream this peer feeds; use it with /prompt and /view")


class StreamChoice(BaseModel):
    """Changes live settings; only the fields given change. Without ``stream`` every stream changes."""

    model_config = Strict
    stream: str | None = Field(default=None, max_length=64)


def _optional_field(setting: LiveSetting) -> tuple[Any, Any]:
    kind = list[setting.kind] if setting.many else setting.kind
    return kind | None, Field(default=None, description=setting.description, **setting.bounds)


# the stream, then every live setting (stream.live_settings), each optional
PromptUpdate = create_model("PromptUpdate", __base__=StreamChoice, __doc__=StreamChoice.__doc__,
                            **{s.name: _optional_field(s) for s in LIVE_SETTINGS})


class StreamSettingsOut(BaseModel):
    prompt: str
    negative_prompt: str
    seed: int
    t_list: list[float]
    strength: float
    guidance_scale: float
    cfg_scale: float
    delta: float
    control_scales: list[float]


class PromptState(BaseModel):
    streams: dict[str, StreamSettingsOut]


class ViewAnswer(BaseModel):
    sdp: str
    type: str
    viewer: str = Field(description="the id of this viewer connection")


class ServerConfig(BaseModel):
    """What a page needs before it connects: the output size (ask the camera for it) and whether a token is needed."""

    width: int
    height: int
    token_required: bool
    max_peers: int
    max_viewers: int
    model: str
    demo_model: bool
    demo_label: str | None = Field(default=None, description="what the demo model does (None for real weights)")
    defaults: StreamSettingsOut


class StreamRates(BaseModel):
    """One stream's frame rates: over the last 2 s, or since the previous read of /health or /metrics when that
    was longer ago."""

    kind: str = Field(description="the peer feeding the stream: camera (POST /offer) or whip")
    viewers: int
    received_fps: float = Field(description="camera frames received from the peer per second")
    generated_fps: float = Field(description="restyled frames generated per second")
    sent_fps: float = Field(description="frames sent back to the peer per second (0 for WHIP: it only sends)")
    viewers_sent_fps: float = Field(description="frames sent to the stream's viewers per second, together")


class Liveness(BaseModel):
    """``GET /health`` without a token on a server that has one: for load balancers' and orchestrators' probes."""

    status: str


class ViewToken(BaseModel):
    view_token: str | None = Field(description="the token /view links carry: it plays streams and nothing else "
                                               "(null: the server has no token)")


class Health(Liveness):
    model: str
    demo_model: bool
    backend: str
    device: str
    dtype: str
    streams: int
    peers: int
    viewers: int
    fps: dict[str, float] = Field(description="restyled frames generated per second, per stream")
    rates: dict[str, StreamRates]
