"""ControlNet cost benchmark (issue 7): per-frame time of the stream engine with one Sprint ControlNet vs none,
on the proportional model (its ControlNet copies 1 of 4 transformer blocks, like 7 of the real 28), with the
DC-AE encoder (the control image costs a second DC-AE encode) and with the tiny encoder.

    python -m benchmarks.controlnet [--quick] [--frames N] [--preset proportional|tiny] [--output DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.frames import camera_frames
from benchmarks.report import Comparison, machine_info, text_table, write_results
from benchmarks.timing import in_worker_thread, interleave, median_of
from stream import StreamConfig, StreamEngine
from stream.control import ControlNetConfig
from stream.tiny_codecs import CONTROLNET_DIR
from stream.tiny_model import make_tiny_model


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="proportional", choices=["proportional", "tiny"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size, frames = (128, 3) if args.quick else (args.size, args.frames)
    comparisons = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "model", preset=args.preset)
        net = (ControlNetConfig(str(model / CONTROLNET_DIR), "canny"),)
        for encoder in ("dcae", "tiny"):
            config = dict(width=size, height=size, t_list=(1.0,), encoder=encoder, decoder=encoder)
            engines = {"none": StreamEngine.from_pretrained(model, StreamConfig(**config)),
                       "controlnet": StreamEngine.from_pretrained(model, StreamConfig(**config, controlnets=net))}
            frames_in = camera_frames(frames + 1, size, size)

            def side(engine: StreamEngine) -> Any:
                def run(i: int) -> None:
                    engine(frames_in[i])
                return run

            samples = in_worker_thread(lambda: interleave({name: side(e) for name, e in engines.items()}, frames))
            none, with_net = (1000 * median_of(samples[k]) for k in ("none", "controlnet"))
            comparisons.append(Comparison(
                f"controlnet_{encoder}", f"per-frame time, one ControlNet vs none, {encoder} autoencoder",
                "ControlNet", with_net, "none", none, "ms", with_net / none, "A/B",
                note="the ControlNet adds its blocks to every step and one more encode (of the control image) "
                     "per frame"))
    write_results(args.output, "controlnet", comparisons,
                  {"machine": machine_info(), "settings": {"preset": args.preset, "width": size, "height": size,
                                                           "frames": frames}})
    print(text_table(comparisons))
    return {"comparisons": comparisons}


if __name__ == "__main__":
    main()
