#!/usr/bin/env bash
# Runs the test suite in ./.venv (created on first use), on as many processes as there are cores
# plus one (pytest-xdist; CLARA_TEST_PROCS overrides). Extra arguments go to pytest.
CLARA_TEST_TOOLS=1 source "$(dirname "$0")/env.sh"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# One BLAS thread a process: the tests' models are tiny and several processes run at once; with
# OpenBLAS's own threads spinning beside them the same work took 1.6x the CPU and 2x the time.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
lib=$(.venv/bin/python -c 'from clara.platform import blas_library; print(blas_library() or "")')
[ -n "$lib" ] && export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
# One process more than the cores: many tests wait on worker subprocesses and on the app's
# terminal, and a third process fills those waits (clean clone on 2 cores: pytest 469 s with
# 2 processes, 455 s with 3, session 9).
procs=${CLARA_TEST_PROCS:-$(( $(nproc 2>/dev/null || sysctl -n hw.ncpu) + 1 ))}
exec .venv/bin/python -m pytest -n "$procs" --dist loadgroup "$@"
