#!/usr/bin/env bash
# Creates .venv with the right torch build, then installs sana-stream with the given extras.
# CPU machines get torch 2.13.0 (the CPU wheel on our build machines; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid the CUDA wheel).
# Machines with a working nvidia-smi get the CUDA torch build and the tensorrt extra.
set -euo pipefail
extras="${1:-test}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; installing the CUDA torch build and the tensorrt extra"
    "${pip[@]}" "torch>=2.13"
    extras="$extras,tensorrt"
else
    echo "setup: no NVIDIA GPU; installing the CPU torch build"
    "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e ".[$extras]"
