#!/usr/bin/env bash
# Real-scale checks on a CUDA (or Metal) GPU, one step after another, each writing its results
# under $OUT as it goes (default bench/results), so a run cut short still leaves what finished:
#   info    the device, and a warm-up that pays the first kernel compilation
#   clara   bench/clara_throughput.py at 1.1B shapes (CLaRa stage 1 variants, LoRA, mlx-lm)
#   lora    the same bench's LoRA trainer against mlx-lm's
#   big     CLaRa stage 1 at Llama-3-8B shapes in 4 bits, batch 1: peak against --estimate
#   tests   the method, engine, memory and chat tests in the platform's dtype (bfloat16), one
#           pytest per module (GPU_TESTS picks them; DEADLINE=epoch seconds stops in time)
#   scale   bench/distributed_scaling.py on every GPU of the host (NCCL), 1B LoRA: 1 vs 2
#           processes at global batch 96 and 128 (one GPU: 64 and 64x2, accumulated), 384 rows
#           so that every batch is full (SCALE_CASES, SCALE_MODEL change them)
#   pair    two independent 1-GPU runs (batch PAIR_BATCH, default 4; PAIR_PINNED=0: no pinned
#           pair) at the same time, one per GPU, against one alone: is a
#           rank's slow-down the host's (no communication at all) or the distributed step's?
#   parts   bench/stage1_parts.py at 1.1B: one CLaRa stage-1 step and its parts (dropout off, the
#           forward alone, the encoder's and the decoder's forward + backward), at PARTS_BATCHES
#           (default "8 32"; PARTS_ARGS adds flags, e.g. "--parts dropout,attn": the dropout
#           kernel's self-check and attention alone, no model built)
#   profile Nsight Compute's per-kernel summary of one warm stage-1 step (PROFILE_ARGS, default
#           4 blocks of the 1.1B shape at batch 32; kernels outside CUDA graphs; at most
#           PROFILE_KERNELS kernels): $OUT/ncu.txt
#   rag     bench/rag_latency.py at 1B shapes (5 documents x 256 tokens, CR 16) and chat
#           decode against mlx_lm.generate
# Usage: bash scripts/gpu-check.sh [STEP ...]   (default: info clara big tests rag)
# CLARA_ARGS, BIG_ARGS and RAG_ARGS add flags to those benches (e.g. small shapes to try the
# script on a CPU), CLARA_ONLY and BIG_ONLY pick the work, STEPS the timed steps.
# On the project's lent H200 (MLX for CUDA packed in .gpu1/.gpu2, see /work/shared/docs/platform.md):
#   bash .gpu2/gpu-install install && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu-check.sh
# The first MLX process on a fresh CUDA machine compiles kernels for minutes (cached under
# MLX_PTX_CACHE_DIR, default $TMPDIR/mlx/VERSION/ptx); later processes start in seconds. The
# `info` warm-up compiles only its own kernels (17 s): the first 1.1B CLaRa step still compiled
# for ~190-210 s, and a checkpointed step's first for ~90 s more (session 7).
# That cache travels: `tar czf ptx.tgz -C / tmp/mlx/<version>/ptx` at the end of a lease (6.6 MB
# after the clara, scale, rag and test steps, session 8), carried into the next and unpacked
# with `tar xzf ptx.tgz -C /` before any MLX process: the first 1.1B CLaRa step then took
# 2.3 s instead of 189 s, and the CUDA tests ran in minutes.
# Packages the box lacks (tomli_w) are installed from wheels in .whl/ when it is there.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! $PY -c 'import tomli_w' 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
STEPS=${STEPS:-6}
# the scaling benchmark's model: the 1B Llama of bench/distributed_scaling.py's docstring
SCALE_MODEL=${SCALE_MODEL:---hidden 2048 --layers 22 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 4096 --rows 384 --seq 512 --batch-size 8 --dtype bfloat16}
step() { echo "== $1 $(date -u +%T)" | tee -a "$OUT/steps.txt"; }

for what in "${@:-info clara big tests rag}"; do
  for w in $what; do
    case $w in
      info)
        step info
        $PY -c 'import mlx.core as mx; from clara.platform import describe, device_memory
print(describe(), device_memory())' 2>&1 | tee -a "$OUT/steps.txt"
        time $PY -c 'import mlx.core as mx, mlx.nn as nn
x = mx.random.normal((64, 256)).astype(mx.bfloat16); l = nn.Linear(256, 256).set_dtype(mx.bfloat16)
g = mx.grad(lambda x: l(x).astype(mx.float32).sum())(x); mx.eval(g); print("warm-up ok")' ;;
      clara)
        step clara
        $PY bench/clara_throughput.py --preset 1b --steps "$STEPS" --warmup 2 \
            --only "${CLARA_ONLY:-stage1,stage1+chunk,stage1+chunk+ckpt,stage1+eager}" \
            --json "$OUT/clara_1b.json" ${CLARA_ARGS:-} 2>&1 | tee "$OUT/clara_1b.txt" ;;
      lora)
        step lora
        $PY bench/clara_throughput.py --preset 1b --steps "$STEPS" --warmup 2 \
            --only lora,mlx-lm --json "$OUT/lora_1b.json" ${CLARA_ARGS:-} 2>&1 \
            | tee "$OUT/lora_1b.txt" ;;
      big)
        step big
        $PY bench/clara_throughput.py --preset 8b-q4 --steps 4 --warmup 1 \
            --only "${BIG_ONLY:-stage1+chunk+ckpt,stage1+chunk}" --json "$OUT/clara_8b.json" \
            ${BIG_ARGS:-} 2>&1 \
            | tee "$OUT/clara_8b.txt" ;;
      tests)
        # one pytest per module, each with its own log and time limit, so that a module cut
        # short leaves the others' results; DEADLINE (epoch seconds) ends the step in time
        step tests
        for t in ${GPU_TESTS:-tests/test_method_core.py tests/test_method_stages.py \
            tests/test_method_checkpoint.py tests/test_train.py tests/test_memory.py \
            tests/test_chat.py}; do
          left=$(( ${DEADLINE:-$(( $(date +%s) + 3600 ))} - $(date +%s) ))
          (( left < 20 )) && { echo "not run (time): $t" | tee -a "$OUT/steps.txt"; continue; }
          limit=$(( left < ${TEST_TIMEOUT:-300} ? left : ${TEST_TIMEOUT:-300} ))
          timeout "$limit" $PY -m pytest -q -p no:cacheprovider -rfs "$t" 2>&1 \
              | tee "$OUT/tests-$(basename "$t" .py).txt"
          echo "$t: $(tail -n 1 "$OUT/tests-$(basename "$t" .py).txt") (limit ${limit}s)" \
              | tee -a "$OUT/steps.txt"
        done ;;
      scale)
        step scale
        $PY bench/distributed_scaling.py $SCALE_MODEL --backend nccl \
            --iters "${SCALE_ITERS:-12}" --warmup "${SCALE_WARMUP:-4}" \
            --cases "${SCALE_CASES:-1:64,1:128x2,2:128,1:96,2:96}" \
            --out "$OUT" 2>&1 | tee "$OUT/scale.txt" ;;
      pair)
        step pair
        one() { CUDA_VISIBLE_DEVICES=$1 $PY bench/distributed_scaling.py $SCALE_MODEL --iters \
            "${SCALE_ITERS:-12}" --warmup "${SCALE_WARMUP:-4}" --cases 1:${PAIR_BATCH:-4} --out "/tmp/pair$2" \
            > "$OUT/pair$2.txt" 2>&1; }
        one 0 alone
        one 0 0 & one 1 1 & wait
        [ "${PAIR_PINNED:-1}" = 0 ] && { tail -n 3 "$OUT"/pair*.txt | tee -a "$OUT/steps.txt"; continue; }
        cpus() { $PY -c "from clara.train.distributed import gpu_cpus as g; print(','.join(map(str, g($1))))"; }
        echo "GPU 0 CPUs $(cpus 0); GPU 1 CPUs $(cpus 1)" | tee -a "$OUT/steps.txt"
        taskset -c "$(cpus 0)" bash -c "$(declare -f one); PY=$PY SCALE_MODEL='$SCALE_MODEL' OUT=$OUT one 0 0pin" &
        taskset -c "$(cpus 1)" bash -c "$(declare -f one); PY=$PY SCALE_MODEL='$SCALE_MODEL' OUT=$OUT one 1 1pin" &
        wait
        tail -n 3 "$OUT"/pair*.txt | tee -a "$OUT/steps.txt" ;;
      parts)
        step parts
        for b in ${PARTS_BATCHES:-8 32}; do
          $PY bench/stage1_parts.py --preset 1b --batch-size "$b" --json "$OUT/parts_b$b.json" \
              ${PARTS_ARGS:-} 2>&1 | tee "$OUT/parts_b$b.txt"
        done ;;
      profile)
        step profile
        MLX_USE_CUDA_GRAPHS=0 ncu --profile-from-start off --metrics gpu__time_duration.sum \
            --cache-control none --clock-control none --launch-count "${PROFILE_KERNELS:-20000}" \
            --print-summary per-kernel --log-file "$OUT/ncu.txt" \
            $PY bench/stage1_parts.py --preset 1b --ncu ${PROFILE_ARGS:---layers 4 --batch-size 32} \
            2>&1 | tail -n 20 | tee -a "$OUT/steps.txt" ;;
      rag)
        step rag
        $PY bench/rag_latency.py --top-k 5 --doc-tokens 256 --compression-rate 16 \
            --hidden 2048 --layers 16 --limit 4 --max-tokens 32 ${RAG_ARGS:-} 2>&1 \
            | tee "$OUT/rag.txt" ;;
      *) echo "unknown step $w (info clara lora big tests scale pair parts profile rag)" >&2; exit 2 ;;
    esac
  done
done
step done
