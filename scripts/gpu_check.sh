#!/usr/bin/env bash
# `make gpu-check`: the one command to run on a machine with an NVIDIA GPU (docs/gpu.md, "make gpu-check").
#
#   1. preflight: nvidia-smi, then the TensorRT/CUDA probe (a broken install stops here, with its cause)
#   2. the real-size model (`make-tiny-model --preset real`, random weights), written once, in the background
#   3. the GPU tests: pytest -m gpu
#   4. prebuild: every TensorRT engine of the benchmark, with its own limit (--build-limit, default 1500 s)
#   5. the real-size benchmark matrix (benchmarks/gpu.py) in three groups, most important first: TensorRT with
#      the tiny autoencoder, then torch on CUDA, then TensorRT with DC-AE
#
# Steps 1-3 and 5 each have their own time limit inside an overall budget (default 570 s, under 10 minutes; the
# prebuild is outside it), so a hang costs one step, not the run. Everything is cached under $SANA_STREAM_CACHE
# (default ~/.cache/sana-stream: the model, the GPU tests' and the benchmark's engines, TensorRT's timing cache),
# and a part that finished building stays there when a later one is cut short: a rerun continues. Results land as
# they come in benchmarks/results/gpu.md and gpu.json (a case whose step ran out of time reads "building / timed
# out"); the steps' log in gpu_check.log and the tests' output in gpu_tests.log beside them.
#
#   scripts/gpu_check.sh [--dry-run] [--budget SECONDS] [--build-limit SECONDS] [--model DIR] [--output-dir DIR]
#
# --dry-run runs every step that does not need a GPU on this machine (the GPU tests skip, the prebuild and the
# benchmark run their CPU smoke mode on the demo model), to check the script itself; its results go to a new
# temporary directory unless --output-dir names one, never to benchmarks/results.
set -uo pipefail

dry_run=0
budget=570
build_limit=1500
model=""
model_given=0
out="benchmarks/results"
out_given=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --budget) budget="${2:?--budget needs seconds}"; shift ;;
        --build-limit) build_limit="${2:?--build-limit needs seconds}"; shift ;;
        --model) model="${2:?--model needs a directory}"; model_given=1; shift ;;
        --output-dir) out="${2:?--output-dir needs a directory}"; out_given=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$budget" in ''|*[!0-9]*) echo "gpu-check: --budget must be whole seconds, got '$budget'" >&2; exit 2 ;; esac
case "$build_limit" in
    ''|*[!0-9]*) echo "gpu-check: --build-limit must be whole seconds, got '$build_limit'" >&2; exit 2 ;;
esac
if [ "$dry_run" = 1 ] && [ "$out_given" = 0 ]; then  # CPU figures never land where real GPU results live
    out=$(mktemp -d "${TMPDIR:-/tmp}/sana-stream-gpu-check-dry-run-XXXXXX")
fi

py="${PYTHON:-.venv/bin/python}"
gpu_tests="${GPU_TESTS:-tests/}"
cache="${SANA_STREAM_CACHE:-$HOME/.cache/sana-stream}"
export SANA_STREAM_CACHE="$cache"  # the GPU tests' engines too (tests/test_engines_tensorrt_gpu.py), for reruns
model="${model:-$cache/real-model}"
mkdir -p "$out"
log="$out/gpu_check.log"
started=$(date +%s)
failed=0
: > "$log"

remaining() { echo $((budget - ($(date +%s) - started))); }

# step NAME LIMIT COMMAND...: runs COMMAND for at most LIMIT seconds (less if the budget has less left)
step() {
    local name="$1" limit="$2" left rc t0
    shift 2
    left=$(remaining)
    [ "$limit" -gt "$left" ] && limit="$left"
    if [ "$limit" -le 5 ]; then
        echo "$name: skipped, out of time" | tee -a "$log"
        failed=1
        return 1
    fi
    echo "== $name (at most ${limit} s)"
    t0=$(date +%s)
    timeout --kill-after=15 "$limit" "$@"
    rc=$?
    local took=$(($(date +%s) - t0))
    case $rc in
        0) echo "$name: ok (${took} s)" | tee -a "$log" ;;
        124|137) echo "$name: TIMEOUT after ${took} s (limit ${limit} s)" | tee -a "$log"; failed=1 ;;
        *) echo "$name: FAILED with exit status $rc (${took} s)" | tee -a "$log"; failed=1 ;;
    esac
    return $rc
}

# `sh -c "$to_file" to_file FILE COMMAND...` runs COMMAND with its output in FILE (a command timeout can run)
# shellcheck disable=SC2016  # expanded by that inner sh
to_file='file="$1"; shift; exec "$@" > "$file" 2>&1'

bench() {  # bench NAME LIMIT CASES [more benchmarks.gpu arguments]
    local name="$1" limit="$2" cases="$3"
    shift 3
    step "$name" "$limit" "$py" -m benchmarks.gpu --cases "$cases" --output-dir "$out" \
        --deadline-s $((limit > 90 ? limit - 60 : limit / 2)) "$@"
}

if [ "$dry_run" = 1 ]; then
    step preflight 60 "$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
    step gpu-tests 240 sh -c "$to_file" to_file "$out/gpu_tests.log" \
        "$py" -m pytest -m gpu -q -rs -p no:cacheprovider "$gpu_tests"
    tail -n 3 "$out/gpu_tests.log"
    dry_model=()
    [ "$model_given" = 1 ] && dry_model=(--model "$model")
    step prebuild 240 "$py" -m benchmarks.gpu --build-only --dry-run --cases "${DRY_RUN_PREBUILD:-onnxruntime-tiny}" \
        --output-dir "$out" "${dry_model[@]}"
    bench benchmark-dry-run 240 "${DRY_RUN_CASES:-onnxruntime-tiny,torch-tiny-cn,tensorrt-tiny}" --dry-run \
        "${dry_model[@]}" --note "gpu-check --dry-run; GPU tests: $(tail -n1 "$out/gpu_tests.log")"
    echo "gpu-check (dry run): $out/gpu.md, steps in $log"
    exit $failed
fi

# 1. preflight: without a working GPU stack nothing after this can run
if ! step nvidia-smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; then
    echo "gpu-check: nvidia-smi does not work here; this command needs an NVIDIA GPU (try --dry-run)" >&2
    exit 1
fi
gpu_line=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n1)
if ! step probe 60 "$py" -c "from engines.gpu_probe import probe_tensorrt; probe_tensorrt()"; then
    "$py" -m benchmarks.gpu --report-only --output-dir "$out" \
        --note "GPU ($gpu_line): the TensorRT/CUDA probe failed; its message is in the output of make gpu-check"
    exit 1
fi

# 2. the real-size model, in the background while the tests run (written to a side directory, then moved)
model_pid=""
if [ ! -f "$model/model_index.json" ]; then
    rm -rf "$model.partial"
    (step real-model 300 "$py" -m sana_stream make-tiny-model "$model.partial" --preset real \
        && mv "$model.partial" "$model") &
    model_pid=$!
fi

# 3. the GPU tests
step gpu-tests 180 sh -c "$to_file" to_file "$out/gpu_tests.log" \
    "$py" -m pytest -m gpu -q -rs -p no:cacheprovider "$gpu_tests"
tail -n 15 "$out/gpu_tests.log"
tests_line=$(tail -n1 "$out/gpu_tests.log")

if [ -n "$model_pid" ]; then
    wait "$model_pid" || failed=1
fi
if [ ! -f "$model/model_index.json" ]; then
    echo "gpu-check: no real-size model at $model; the benchmark cannot run" | tee -a "$log" >&2
    "$py" -m benchmarks.gpu --report-only --output-dir "$out" \
        --note "GPU ($gpu_line); GPU tests: $tests_line; the real-size model could not be written (see $log)"
    exit 1
fi

# 4. prebuild every engine outside the measuring budget (builder optimization level 3, as serve); the budget for
# the measurement starts after it. A prebuild cut short keeps its finished engines, and the benchmark's groups
# build what is left within their own limits, or record "building / timed out".
build_started=$(date +%s)
budget=$((budget + build_limit))
step prebuild "$build_limit" "$py" -m benchmarks.gpu --build-only --model "$model" \
    --cases tensorrt-tiny,tensorrt-tiny-cn,tensorrt-dcae,tensorrt-dcae-cn
budget=$((budget - build_limit + $(date +%s) - build_started))

# 5. the benchmark, most important first; each group appends to the same results
note="GPU ($gpu_line); GPU tests: $tests_line"
bench benchmark-tensorrt-tiny 200 tensorrt-tiny,tensorrt-tiny-cn --model "$model" --note "$note"
bench benchmark-torch 100 torch-tiny,torch-tiny-cn,torch-dcae,torch-dcae-cn --model "$model" --append
bench benchmark-tensorrt-dcae "$(remaining)" tensorrt-dcae,tensorrt-dcae-cn --model "$model" --append

echo "gpu-check: $(($(date +%s) - started)) s; results in $out/gpu.md and gpu.json, steps in $log"
cat "$log"
exit $failed
