#!/usr/bin/env bash
# Runs the test suite in ./.venv (created on first use). Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
lib=$(.venv/bin/python -c 'from clara.platform import blas_library; print(blas_library() or "")')
[ -n "$lib" ] && export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
exec .venv/bin/python -m pytest "$@"
