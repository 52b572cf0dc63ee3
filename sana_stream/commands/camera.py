"""``sana-stream camera``: capture a local source, restyle it on a sana-stream server, write a virtual camera (or
an NDI source, a preview window, PNG files).

    sana-stream camera --server http://gpu-box:8080 --token TOKEN --source camera:0 --virtual-camera
    sana-stream camera --source window:VSeeFace --keep-background key:#00ff00 --prompt "anime cel shading"
    sana-stream camera --source file:clip.mp4 --loop --record out/ --max-frames 300
    sana-stream camera --source window:VSeeFace --keep-background key:#00ff00 --ndi avatar   (transparent in OBS)

Options also come from SANA_STREAM_SERVER, SANA_STREAM_TOKEN, SANA_STREAM_SOURCE and SANA_STREAM_RELAY. Exit
status: 0 when done or stopped, 1 for a runtime failure (unreachable server, refused token, missing camera or
virtual-camera driver), 2 for a bad option.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sana_stream.env import env


def run(args: argparse.Namespace) -> int:
    from bridge.cli import run_camera

    return run_camera(args)


def _source(text: str) -> Any:
    from bridge.sources import parse_source

    try:
        return parse_source(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _ndi_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the NDI source name must not be empty")
    return text


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected frames per second, got {text!r}") from None
    if not 0 < value <= 240:
        raise argparse.ArgumentTypeError(f"--fps must lie in (0, 240], got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bridge.prompts import HELP

    p.description = f"{__doc__}\nWhile it runs, {HELP}, then press Enter.\n"
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--server", default=env("server", "http://127.0.0.1:8080"),
                   help="the sana-stream server's base URL (default: %(default)s)")
    p.add_argument("--token", default=env("token"), help="the server's token (Authorization: Bearer)")
    p.add_argument("--source", type=_source, default=env("source", "camera:0"),
                   help="camera:INDEX | camera:/dev/videoN | file:PATH | screen | screen:X,Y,W,H | window:TITLE "
                        "(a visible window whose title contains TITLE, followed as it moves; docs/bridge.md) "
                        "(default: camera:0)")
    p.add_argument("--loop", action="store_true", help="start a file source over at its end")
    p.add_argument("--fps", type=_fps, default=None, help="frames sent per second (default: the source's, else 30)")
    p.add_argument("--width", type=_positive_int, default=None,
                   help="width of the frames sent (default: the server's output width)")
    p.add_argument("--height", type=_positive_int, default=None,
                   help="height of the frames sent (default: the server's output height)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--virtual-camera", action="store_true",
                     help="write to a virtual camera with pyvirtualcam (the default output)")
    out.add_argument("--preview", action="store_true",
                     help="show a window instead (q or Esc closes it; needs an OpenCV with a GUI: pip install "
                          "opencv-python in place of the headless one)")
    out.add_argument("--record", type=Path, metavar="DIR", help="write frame_000001.png, ... into DIR instead")
    out.add_argument("--ndi", type=_ndi_name, metavar="NAME",
                     help="publish the restyled video as the NDI source NAME instead (OBS's NDI plugin, vMix, ...; "
                          "needs the ndi extra: pip install '.[ndi]')")
    p.add_argument("--device", default=None, help="virtual camera device, e.g. /dev/video10 (v4l2loopback)")
    p.add_argument("--camera-backend", default=None, choices=["obs", "unitycapture", "v4l2loopback"],
                   help="pyvirtualcam backend: v4l2loopback on Linux, obs or unitycapture on Windows, obs on macOS; "
                        "another is refused (default: the first that works)")
    p.add_argument("--prompt", default=None, help="prompt for this stream (default: the server's)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt for this stream (the server's RCFG uses it)")
    p.add_argument("--seed", type=int, default=None, help="noise seed for this stream (a fixed one keeps the look steady)")
    p.add_argument("--strength", type=float, default=None, help="first TrigFlow angle in radians, below pi/2")
    p.add_argument("--prompt-file", type=Path, default=None,
                   help="a text file holding the prompt; each save applies it")
    p.add_argument("--no-stdin", action="store_true", help="don't read prompt changes from standard input")
    p.add_argument("--stream", default=None, help="ask for this stream id (so /view?stream=ID links are fixed)")
    p.add_argument("--keep-background", default=None, metavar="key:#RRGGBB",
                   help="the source's background is this key colour: paint it back over the restyled frame "
                        "(for OBS's Chroma Key filter; transparent in --ndi and in --record PNGs)")
    p.add_argument("--key-tolerance", type=float, default=60.0,
                   help="RGB distance from the key colour still counted as background (default: 60)")
    p.add_argument("--stall-timeout", type=float, default=10.0,
                   help="seconds without a restyled frame before reconnecting (default: 10)")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after this many restyled frames")
    p.add_argument("--relay", action="store_true", default=env("relay") == "1",
                   help="send all media through the server's TURN server (iceTransportPolicy relay), to check a TURN "
                        "setup; fails with a clear message when no relay can be had (docs/deploy.md)")
    p.set_defaults(func=run)
