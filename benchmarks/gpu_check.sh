#!/usr/bin/env bash
# Checks for a machine with an NVIDIA GPU, in sections that each stop at their own time limit
# (their limits add up to about 15 minutes after the Python setup; they usually take less). Results and a log go to
# $OUT (default ./gpu_out). XOMNI_GPU_ROUNDS sets the timed rounds of the 7B run (default 3).
#
#   bash benchmarks/gpu_check.sh
#
# Python: $XOMNI_PYTHON if set (used as it is); else .venv/bin/python if it imports torch and
# xomni; else a python3 whose torch sees a GPU, with the wheels in $XOMNI_WHEELS (default
# build/gpu-wheels, written by benchmarks/gpu_wheels.sh on a machine with network and copied
# along with the checkout; nothing is downloaded here) installed into a private folder and this
# checkout's packages linked beside them; else a new .venv from the package index (torch==2.13.0, a CUDA build there), which
# XOMNI_SKIP_INSTALL=1 refuses.
#
# To add a check: write a function that runs it (it sees $PY, $OUT and the exported settings)
# and add one `section "title" LIMIT_S function` line at the end.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export OUT PYTHONUNBUFFERED=1
ROUNDS=${XOMNI_GPU_ROUNDS:-3}
FAILED=()

# section TITLE LIMIT_S FUNCTION: run FUNCTION in a child shell, killed after LIMIT_S seconds.
section() {
    local title=$1 limit=$2 function=$3 start=$SECONDS status
    echo
    echo "=== $title (limit ${limit} s) ==="
    export -f "$function"
    timeout --kill-after=10 "$limit" bash -c "$function"
    status=$?
    echo "=== $title: exit $status after $((SECONDS - start)) s ==="
    if [ "$status" -ne 0 ]; then
        FAILED+=("$title (exit $status)")
    fi
}

# --- Python environment (in this shell: later sections use $PY and $PYTHONPATH) ---

imports_xomni() {
    "$1" -c "import torch, transformers, xomni_core, xomni_plugins.backbones.x_omni.model" 2>/dev/null
}

setup_python() {
    local site=${TMPDIR:-/tmp}/xomni-gpu-site wheels=${XOMNI_WHEELS:-build/gpu-wheels}
    if [ -n "${XOMNI_PYTHON:-}" ]; then
        PY=$XOMNI_PYTHON
    elif [ -x .venv/bin/python ] && imports_xomni .venv/bin/python; then
        PY=.venv/bin/python
    elif python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
        PY=python3
        mkdir -p "$site"
        if compgen -G "$wheels/*.whl" >/dev/null; then
            timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                --upgrade --target "$site" "$wheels"/*.whl || return 1
        fi
        ln -sfn "$PWD/xomni_core" "$site/xomni_core"
        ln -sfn "$PWD/plugins" "$site/xomni_plugins"
        ln -sfn "$PWD/export" "$site/xomni_export"
        export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    elif [ -n "${XOMNI_SKIP_INSTALL:-}" ]; then
        echo "no Python with torch and xomni found, and XOMNI_SKIP_INSTALL is set"
        return 1
    else
        python3 -m venv .venv && timeout 600 .venv/bin/pip install -q torch==2.13.0 -e . || return 1
        PY=.venv/bin/python
    fi
    export PY
    "$PY" -c "
import sys, torch, transformers
print('python', sys.version.split()[0], '| torch', torch.__version__, '| transformers', transformers.__version__)
print('cuda', torch.version.cuda, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')
"
    if ! imports_xomni "$PY"; then
        echo "$PY cannot import xomni: are the wheels of benchmarks/gpu_wheels.sh in $wheels?"
        return 1
    fi
}

# --- sections ---

gpu_info() {
    nvidia-smi
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
}

# Seconds, tiny sizes: the benchmark runs on this GPU at all, before the long run.
decode_smoke() {
    "$PY" benchmarks/decode_speed.py --device cuda --dtype bfloat16 --batch 2 --rounds 1 \
        --new-tokens 8 --share-batch 2 --json "$OUT/decode_smoke.json" --params \
        '{"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
          "num_key_value_heads": 2, "num_mm_adap_layers": 1, "num_mm_head_layers": 1}'
}

# The released 7B sizes, random bf16 weights, next to transformers generate.
decode_7b() {
    "$PY" benchmarks/decode_speed.py --device cuda --dtype bfloat16 --preset 7b --threads 4 \
        --batch 1 16 --rounds "$ROUNDS" --share-batch 16 --modes eager --json "$OUT/decode_7b.json"
}

# xomni's eager step and its compiled step (torch.compile + CUDA graph over the preallocated
# cache) next to transformers' dynamic and static caches, batch 1 and 16.
decode_7b_modes() {
    "$PY" benchmarks/decode_speed.py --device cuda --dtype bfloat16 --preset 7b --threads 4 \
        --batch 1 16 --rounds 2 --share-batch 0 --modes eager compiled --reference dynamic static \
        --json "$OUT/decode_7b_modes.json"
}

# The Triton pipeline model on TensorRT engines built here, answers checked against the engines
# run in process (needs tensorrt and nvidia-pytriton; exit 3 says which is missing).
serve_tensorrt() {
    "$PY" benchmarks/serve_tensorrt_check.py --out "$OUT/serve_tensorrt"
}

# Full SFT of the tiny backbone sharded by accelerate's FSDP2 over NCCL: one process on one GPU;
# with two GPUs also two processes against one unsharded process, and an exact resume (needs
# accelerate; exit 3 if it is missing). The same checks run on gloo in tests/training/test_fsdp.py.
fsdp_sft() {
    "$PY" -c "import accelerate" || { echo "accelerate is not installed"; exit 3; }
    "$PY" benchmarks/fsdp_check.py --out "$OUT/fsdp"
}

echo "=== python environment ==="
if ! setup_python; then
    echo "no usable Python environment; stopping"
    exit 1
fi
export ROUNDS
section "GPU" 20 gpu_info
section "decode speed, tiny sizes" 120 decode_smoke
section "decode speed, 7B, batch 1 and 16" 240 decode_7b
section "decode speed, 7B, eager and compiled" 150 decode_7b_modes
section "serving TensorRT engines through Triton" 240 serve_tensorrt
section "FSDP SFT, tiny sizes" 150 fsdp_sft

echo
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "all sections passed; results in $OUT"
else
    printf 'failed: %s\n' "${FAILED[@]}"
    exit 1
fi
