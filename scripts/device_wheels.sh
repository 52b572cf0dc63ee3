#!/usr/bin/env bash
# Downloads into .whl/ exactly the wheels `make device-check` needs on a GPU machine that has a CUDA PyTorch image
# but no network (docs/gpu.md, "make device-check"): what the engine imports and such an image does not ship.
# The image (see its package list) has torch, transformers, tokenizers, accelerate, huggingface_hub, safetensors,
# numpy, opencv-python-headless, Pillow, regex, requests, filelock, psutil: of what the engine imports it lacks
# diffusers alone (its importlib_metadata requirement is imported only on Python < 3.8; the wheel is installed
# with --no-deps). Run it on a machine with network before sending the tree there (6.3 MB).
#
#   scripts/device_wheels.sh [DIR]      (default .whl; Python 3.12 on x86-64 Linux, as the GPU image has)
set -euo pipefail

dir="${1:-.whl}"
py="${PYTHON:-python3}"
# the version the engine is tested with; a pure-Python wheel, so any platform tag fits
wheels=(diffusers==0.42.1)
mkdir -p "$dir"
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$dir" "${wheels[@]}"
du -ch "$dir"/*.whl | tail -n1
