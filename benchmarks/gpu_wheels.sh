#!/usr/bin/env bash
# Downloads, on a machine with package-registry access, the wheels that benchmarks/gpu_check.sh
# installs on a GPU machine without network whose python3 already holds a CUDA build of torch.
# Versions are those of this checkout's .venv, so both machines run the same transformers (the
# backbone's Qwen2 layers follow its keyword names) and pydantic. The folder is ignored by git.
#
#   bash benchmarks/gpu_wheels.sh                      # -> build/gpu-wheels (about 25 MB)
#   XOMNI_WHEELS=dir PYTHON_VERSION=3.12 bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=${XOMNI_WHEELS:-build/gpu-wheels}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
VENV_PYTHON=${VENV_PYTHON:-.venv/bin/python}
# What importing xomni_core, the X-Omni backbone and transformers needs beyond torch, numpy and
# the other packages a CUDA image of PyTorch ships; accelerate for the FSDP section.
PACKAGES=(
    transformers huggingface_hub tokenizers kernels httpx2 httpcore2 truststore regex
    pydantic pydantic_core annotated_types typing_inspection typing_extensions pluggy
    accelerate psutil
)

mkdir -p "$WHEELS"
pins=$("$VENV_PYTHON" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as metadata
import sys

print(" ".join(f"{name}=={metadata.version(name)}" for name in sys.argv[1:]))
EOF
)
platforms=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
    manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
# shellcheck disable=SC2086  # one argument per pin
"$VENV_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp "${platforms[@]}" -d "$WHEELS" $pins
ls -1 "$WHEELS"
du -sh "$WHEELS"
