"""Runs the camera bridge for ``sana-stream camera`` (its options: ``sana_stream.commands.camera``): the parsed
options become a Bridge with its source and sink, run until it ends or is stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

logger = logging.getLogger("sana_stream.camera")


def build_options(args: argparse.Namespace) -> Any:
    from bridge.background import parse_background
    from bridge.bridge import BridgeOptions

    from stream.live_settings import LIVE_SETTING_NAMES

    prompt = {name: getattr(args, name) for name in LIVE_SETTING_NAMES if getattr(args, name, None) is not None}
    if (args.width is None) != (args.height is None):
        raise ValueError("--width and --height go together")
    size = (args.width, args.height) if args.width is not None else None
    key = parse_background(args.keep_background, args.key_tolerance) if args.keep_background else None
    return BridgeOptions(server=args.server, token=args.token, fps=args.fps, size=size, stream=args.stream,
                         prompt=prompt, key=key, stall_timeout=args.stall_timeout, max_frames=args.max_frames,
                         relay=args.relay)


def build_sink(args: argparse.Namespace) -> Any:
    from bridge.sinks import PreviewSink, RecordingSink, VirtualCameraSink

    if args.record is not None:
        return RecordingSink(args.record, keep=4)
    if getattr(args, "ndi", None) is not None:
        from bridge.ndi_sink import NdiSink

        return NdiSink(args.ndi)
    if args.preview:
        return PreviewSink()
    return VirtualCameraSink(device=args.device, backend=args.camera_backend)


async def run_bridge(bridge: Any, prompt_file: Path | None = None, stdin: bool = True) -> None:
    """Runs ``bridge`` with its prompt inputs (stdin lines, a watched file) until it ends."""
    from bridge.prompts import HELP, read_stdin, watch_file

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # Windows; not the main thread
        loop.add_signal_handler(signal.SIGTERM, bridge.stop)  # `kill`, `docker stop`: release the camera first
    helpers = []
    if stdin:
        helpers.append(asyncio.ensure_future(read_stdin(bridge.set_prompt)))
        logger.info("live changes: %s, then Enter", HELP)
    if prompt_file is not None:
        helpers.append(asyncio.ensure_future(watch_file(bridge.set_prompt, prompt_file)))
    try:
        await bridge.run()
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_camera(args: argparse.Namespace) -> int:
    from bridge.errors import BridgeError

    if getattr(args, "log_level", "INFO") != "DEBUG":  # aioice/aiortc narrate every ICE check at INFO
        for name in ("aioice", "aiortc", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    options = build_options(args)  # ValueError: the caller's exit status 2
    from bridge.bridge import Bridge

    bridge = Bridge(args.source.build(loop=args.loop), build_sink(args), options)
    try:
        asyncio.run(run_bridge(bridge, args.prompt_file, stdin=not args.no_stdin))
    except BridgeError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    logger.info("stopped after %d restyled frames", bridge.frames_out)
    return 0
