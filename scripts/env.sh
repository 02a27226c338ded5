# Sourced by the README's commands: makes ./.venv with clara and its test tools installed, and,
# on Linux as root, Debian's OpenBLAS (MLX's CPU wheel is ~30x faster with it preloaded).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
stamp=$(cat pyproject.toml | sha1sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --no-compile --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
fi
# Best effort: the test-only packages, PyTorch's CPU build (from a local wheel) for the transformers
# parity tests and wandb for the W&B export test. They go to a folder of their own that only the
# test process puts on sys.path (tests/conftest.py): where they are importable, every `import
# mlx_lm` imports torch (through transformers, 1.5 s of CPU) and every LoRA process wandb (through
# mlx_lm.tuner, 1.2 s) in each training, chat and CLI process. Only scripts/test.sh asks for them;
# they install beside clara's own install, at the same time (both are mostly unpacking).
ref_stamp="torch wandb"
ref_pid=
if [ "${CLARA_TEST_TOOLS:-0}" = 1 ] && [ "$(cat .venv/reference/.clara-stamp 2>/dev/null)" != "$ref_stamp" ]; then
    rm -rf .venv/reference
    torch_wheel=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | tail -1 || true)
    { .venv/bin/python -m pip install -q --no-compile --disable-pip-version-check \
        --target .venv/reference $torch_wheel "wandb>=0.17" >/dev/null 2>&1 \
        && echo "$ref_stamp" > .venv/reference/.clara-stamp || rm -rf .venv/reference; } &
    ref_pid=$!
fi
if [ "$(cat .venv/.clara-stamp 2>/dev/null)" != "$stamp" ]; then
    echo "setting up .venv (one time)..." >&2
    .venv/bin/python -m pip install -q --no-compile --disable-pip-version-check -e ".[dev]" 2>&1 \
        | grep -v -e "^WARNING: Location" -e "^\[notice\]" >&2 || true
    .venv/bin/python -c "import clara, mlx_lm, textual, pdfplumber" \
        || { echo "installing clara's dependencies failed" >&2; exit 1; }
    echo "$stamp" > .venv/.clara-stamp
fi
if [ "$(uname -s)" = Linux ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; then
    echo "installing OpenBLAS (libopenblas0-pthread) for fast float32 on the CPU..." >&2
    { apt-get install -y -qq --no-install-recommends libopenblas0-pthread \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libopenblas0-pthread; }; } \
      >/dev/null 2>&1 || echo "(OpenBLAS not installed: MLX runs with its slow reference BLAS)" >&2
fi
[ -z "$ref_pid" ] || wait "$ref_pid" || true
