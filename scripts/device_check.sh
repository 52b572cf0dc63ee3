#!/usr/bin/env bash
# `make device-check`: the one prepared run for an offline GPU machine that has a CUDA build of PyTorch (2.9 or
# newer) and nothing else of ours (docs/gpu.md, "make device-check"). It installs nothing from the network: where
# diffusers is missing, the wheels in .whl/ (scripts/device_wheels.sh puts them there beforehand) are installed with
# --no-index into a private folder; then benchmarks/device_check.py runs every case within the budget.
#
#   scripts/device_check.sh [--dry-run] [--budget-s S] [--cases ...] [--output-dir DIR] [--frames N]
#
# PYTHON picks the interpreter (default: the machine's python3; `make device-check` uses .venv's for --dry-run).
set -euo pipefail

py="${PYTHON:-python3}"
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "device-check: $py has no torch; this runs on a GPU machine's own CUDA PyTorch (PYTHON=... picks another" \
        "interpreter; on this machine: make device-check ARGS=--dry-run)" >&2
    exit 2
fi
wheels="${DEVICE_WHEELS:-.whl}"
if ! "$py" -c "import diffusers" 2>/dev/null && compgen -G "$wheels/*.whl" >/dev/null; then
    site="${DEVICE_SITE:-/tmp/sana-stream-device-site}"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$py" -m benchmarks.device_check "$@"
