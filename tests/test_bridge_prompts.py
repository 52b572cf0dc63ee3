"""Live prompt changes of the camera bridge: typed lines and a watched prompt file."""

from __future__ import annotations

import asyncio
import io

import pytest

from bridge.prompts import parse_prompt_line, read_stdin, watch_file
from tests.support import eventually


def test_prompt_lines_and_the_watched_prompt_file(tmp_path):
    assert parse_prompt_line("a fox, watercolor\n") == {"prompt": "a fox, watercolor"}
    assert parse_prompt_line("/seed 7") == {"seed": 7}
    assert parse_prompt_line("/strength 0.8") == {"strength": 0.8}
    assert parse_prompt_line("/negative blurry") == {"negative_prompt": "blurry"}
    assert parse_prompt_line("/control 0.6, 0.8") == {"control_scales": [0.6, 0.8]}
    assert parse_prompt_line("   ") is None
    for bad in ("/seed x", "/bogus 1", "/control a"):
        with pytest.raises(ValueError):
            parse_prompt_line(bad)

    applied: list[dict] = []

    async def set_prompt(**changes):
        applied.append(changes)

    async def scenario() -> None:
        path = tmp_path / "prompt.txt"
        path.write_text("pencil sketch\n")
        task = asyncio.create_task(watch_file(set_prompt, path, interval=0.02))
        await eventually(lambda: len(applied) == 1, 5, "the first prompt")
        path.write_text("oil painting,\n  dramatic light\n")
        await eventually(lambda: len(applied) == 2, 5, "the changed prompt")
        task.cancel()

    asyncio.run(scenario())
    assert applied == [{"prompt": "pencil sketch"}, {"prompt": "oil painting, dramatic light"}]


def test_stdin_lines_are_applied_in_order():
    applied: list[dict] = []

    async def set_prompt(**changes):
        applied.append(changes)

    asyncio.run(read_stdin(set_prompt, io.StringIO("pencil sketch\n/seed 3\n/bogus\n\n/strength 0.9\n")))
    assert applied == [{"prompt": "pencil sketch"}, {"seed": 3}, {"strength": 0.9}]
