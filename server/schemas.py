"""Request and response bodies of the HTTP API. Unknown fields and non-finite numbers are rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stream.prompt import MAX_PROMPT_CHARS

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


class PromptUpdate(BaseModel):
    """Changes live settings; only the fields given change. Without ``stream`` every stream changes."""

    model_config = Strict
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    stream: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    strength: float | None = Field(default=None, gt=0, lt=1.5708, description="t_list[0] in radians")
    guidance_scale: float | None = Field(default=None, ge=0, le=20)
    cfg_scale: float | None = Field(default=None, ge=0, le=20)
    control_scales: list[float] | None = Field(default=None, max_length=8,
                                               description="one conditioning scale per ControlNet (0 turns it off)")


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
    defaults: StreamSettingsOut


class Health(BaseModel):
    status: str
    model: str
    demo_model: bool
    backend: str
    device: str
    dtype: str
    streams: int
    peers: int
    viewers: int
    fps: dict[str, float]
