"""What a stream's owner may change while it runs, declared once. The fields of ``POST /prompt``
(``server.schemas.PromptUpdate``), the camera bridge's prompt settings and its ``/commands`` are derived from
``LIVE_SETTINGS``; ``StreamSettings.replace`` (``stream.state``) applies them. No torch here: the bridge reads it
on a laptop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_PROMPT_CHARS = 2000  # Gemma sees at most max_sequence_length tokens anyway; this bounds tokenizer work
SEED_LIMIT = 2**63  # seeds lie in [0, SEED_LIMIT)
MAX_STRENGTH = 1.5708  # just above pi/2: StreamConfig's angle checks give the exact bound and message


@dataclass(frozen=True)
class LiveSetting:
    name: str  # the POST /prompt field, and the keyword of StreamEngine.update
    kind: type  # str, int or float; with ``many``, a list of them
    command: str  # the camera bridge's line command: /COMMAND VALUE
    placeholder: str  # how the bridge's help shows the value
    description: str | None = None  # for the API's schema
    bounds: dict[str, Any] = field(default_factory=dict)  # pydantic Field constraints (ge, gt, le, lt, max_length)
    many: bool = False

    def parse(self, text: str) -> Any:
        """The value ``text`` (typed by a user) stands for; ValueError when it is none."""
        if self.many:
            return [self.kind(part) for part in text.split(",")]
        return self.kind(text)

    @property
    def kind_name(self) -> str:
        return "list of numbers" if self.many else self.kind.__name__


LIVE_SETTINGS: tuple[LiveSetting, ...] = (
    LiveSetting("prompt", str, "prompt", "TEXT", "the style, in words", {"max_length": MAX_PROMPT_CHARS}),
    LiveSetting("negative_prompt", str, "negative", "TEXT", "what to steer away from (with RCFG, --cfg-type)",
                {"max_length": MAX_PROMPT_CHARS}),
    LiveSetting("seed", int, "seed", "N", "the noise seed; a new one redraws the noise", {"ge": 0, "lt": SEED_LIMIT}),
    LiveSetting("strength", float, "strength", "X", "t_list[0] in radians: how far from the input (below pi/2)",
                {"gt": 0, "lt": MAX_STRENGTH}),
    LiveSetting("guidance_scale", float, "guidance", "X", "Sprint's distilled guidance (default 4.5)",
                {"ge": 0, "le": 20}),
    LiveSetting("cfg_scale", float, "cfg", "X", "RCFG scale (with --cfg-type other than none)", {"ge": 0, "le": 20}),
    LiveSetting("control_scales", float, "control", "X[,Y]", "one conditioning scale per ControlNet (0 turns it off)",
                {"max_length": 8}, many=True),
)
LIVE_SETTING_NAMES = tuple(s.name for s in LIVE_SETTINGS)
ALIASES = frozenset({"strength"})  # live settings that are not StreamSettings fields: strength sets t_list
