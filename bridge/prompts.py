"""Live prompt changes for a running bridge: lines typed on stdin, or a text file that is watched.

A line is a new prompt, or a command:

    a watercolor painting of a fox     -> prompt
    /seed 7                            -> seed
    /strength 0.8                      -> strength (first TrigFlow angle, radians)
    /negative blurry, low quality      -> negative prompt
    /guidance 4.5                      -> guidance scale
    /cfg 1.2                           -> RCFG scale
    /control 0.6,0.8                   -> ControlNet scales, one per --controlnet of the server

A watched ``--prompt-file`` holds the prompt itself (its whole text, lines joined); each save applies it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from stream.live_settings import LIVE_SETTINGS, LiveSetting

logger = logging.getLogger(__name__)

COMMANDS: dict[str, LiveSetting] = {s.command: s for s in LIVE_SETTINGS}
HELP = "type a prompt, or " + ", ".join(f"/{s.command} {s.placeholder}" for s in LIVE_SETTINGS if s.name != "prompt")

SetPrompt = Callable[..., Awaitable[Any]]


def parse_prompt_line(line: str) -> dict[str, Any] | None:
    """One input line -> the /prompt changes it asks for (None for a blank line); ValueError when malformed."""
    text = line.strip()
    if not text:
        return None
    if not text.startswith("/"):
        return {"prompt": text}
    name, _, rest = text[1:].partition(" ")
    if name not in COMMANDS:
        raise ValueError(f"unknown command /{name}: {HELP}")
    setting = COMMANDS[name]
    rest = rest.strip()
    try:
        return {setting.name: setting.parse(rest)}
    except ValueError:
        raise ValueError(f"/{name} needs a {setting.kind_name} value, got {rest!r}") from None


async def apply_line(set_prompt: SetPrompt, line: str) -> None:
    try:
        changes = parse_prompt_line(line)
    except ValueError as exc:
        logger.warning("%s", exc)
        return
    if changes is None:
        return
    try:
        state = await set_prompt(**changes)
    except Exception as exc:  # noqa: BLE001 - a refused value or a lost server: say so and keep running
        logger.warning("the server refused %s: %s", changes, exc)
        return
    if state is None:
        logger.info("%s will be applied once connected", changes)
    else:
        logger.info("applied %s", changes)


async def read_stdin(set_prompt: SetPrompt, stream: TextIO | None = None) -> None:
    """Applies each line of ``stream`` (stdin) until it ends. Lines are read on a daemon thread, which never
    keeps the process alive."""
    stream = stream if stream is not None else sys.stdin
    if stream is None or stream.closed:
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        try:
            for line in stream:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, RuntimeError):  # closed, or not readable (pytest's stand-in)
            pass
        finally:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:  # the loop has closed
                pass

    threading.Thread(target=reader, name="bridge-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        await apply_line(set_prompt, line)


async def watch_file(set_prompt: SetPrompt, path: Path, interval: float = 0.5) -> None:
    """Applies the text of ``path`` as the prompt whenever it changes (checked every ``interval`` seconds),
    and once at the start when it exists."""
    last: tuple[float, int] | None = None
    applied: str | None = None
    while True:
        try:
            stat = path.stat()
            signature = (stat.st_mtime, stat.st_size)
        except OSError:
            signature = None
        if signature is not None and signature != last:
            last = signature
            try:
                text = " ".join(path.read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError) as exc:
                logger.warning("cannot read %s: %s", path, exc)
                text = ""
            if text and text != applied:
                applied = text
                await apply_line(set_prompt, "/prompt " + text)
        await asyncio.sleep(interval)
