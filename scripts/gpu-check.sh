#!/usr/bin/env bash
# The method, engine and chat tests on a CUDA (or Metal) GPU, in the platform's dtype (bfloat16),
# plus a short CLaRa/LoRA benchmark at small shapes. On the project's lent H200:
#   bash .gpu2/gpu-install install && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu-check.sh
# The first MLX process on a fresh CUDA machine compiles kernels for minutes (cached under
# MLX_PTX_CACHE_DIR, default $TMPDIR/mlx/VERSION/ptx): the warm-up below pays that once.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
$PY -c 'import mlx.core as mx; from clara.platform import describe, device_memory; print(describe(), device_memory())'
echo "warming up (kernel compilation on a fresh machine)..."
time $PY -c 'import mlx.core as mx, mlx.nn as nn
x = mx.random.normal((64, 256)).astype(mx.bfloat16); l = nn.Linear(256, 256).set_dtype(mx.bfloat16)
g = mx.grad(lambda p: l(x).astype(mx.float32).sum())(x); mx.eval(g); print("ok")'
$PY -m pytest -q -x -p no:cacheprovider ${GPU_TESTS:-tests/test_method_core.py tests/test_method_stages.py \
    tests/test_method_checkpoint.py tests/test_train.py tests/test_chat.py tests/test_memory.py \
    tests/test_estimate.py} "$@"
