#!/usr/bin/env bash
# gpu11 lease driver (session 11, issue 16): run from the device's repo root as
#   LEASE_S=... bash .dev-gpu11/scripts/lease-gpu11.sh   (after `.gpu2/gpu-install install`)
# Every step appends to $OUT/steps.txt and re-packs $OUT/results.tgz as it goes (at most 8 files
# come back); the kernel cache is re-tarred at the end (split under 16 MB a file).
T0=$(date +%s); END=$(( T0 + ${LEASE_S:-520} ))
D=.dev-gpu11
[ -d /tmp/site/mlx ] || bash .gpu2/gpu-install install 2>&1 | tail -n 2 >> $OUT/steps.txt
[ -d /tmp/site/mlx ] || exit 9
[ -d /tmp/mlx ] || { tar xzf $D/ptx.tgz -C / && echo "ptx cache restored: $(ls /tmp/mlx/*/ptx | wc -l) files"; } 2>&1 | tee -a $OUT/steps.txt
export PYTHONPATH=/tmp/site:$PWD/$D PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CUDA_VISIBLE_DEVICES=0 TOKENIZERS_PARALLELISM=false
cd $D && R=$OUT && mkdir -p /tmp/res
python3 -c 'import tomli_w' 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
left() { echo $(( END - $(date +%s) )); }
log() { echo "== $* at $(( $(date +%s) - T0 )) s" | tee -a $R/steps.txt; tar czf $R/results.tgz -C /tmp res 2>/dev/null; }
log "setup; $(command -v ncu || echo no ncu) $(command -v nsys || echo no nsys); $(nvidia-smi --query-gpu=name,memory.used --format=csv,noheader)"
for step in ${LEASE_STEPS:-profile linears mfu big tests rag}; do
  (( $(left) < 25 )) && { log "not run (time): $step"; continue; }
  case $step in
    profile)  # Nsight Compute, one warm compiled step, 4 blocks of 1.1B at b32 (session 9's shape)
      P=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
      [ -n "$P" ] || { log "profile: no ncu"; continue; }
      MLX_USE_CUDA_GRAPHS=0 timeout $(( $(left) < 170 ? $(left) : 170 )) $P --profile-from-start off \
        --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size --cache-control none \
        --clock-control none --launch-count 20000 -o /tmp/prof -f \
        python3 bench/stage1_parts.py --preset 1b --ncu ${PROFILE_ARGS:---layers 4 --batch-size 32} \
        > /tmp/res/ncu_run.txt 2>&1
      tail -n 5 /tmp/res/ncu_run.txt | tee -a $R/steps.txt
      $P -i /tmp/prof.ncu-rep --print-summary per-kernel > $R/ncu.txt 2>&1
      $P -i /tmp/prof.ncu-rep --csv --page raw \
        > /tmp/res/ncu_raw.csv 2>&1; gzip -kf /tmp/res/ncu_raw.csv; mv /tmp/res/ncu_raw.csv.gz $R/
      log "profile done ($(wc -l < /tmp/res/ncu_raw.csv) csv lines)" ;;
    selfcheck)  # the CUDA dropout kernels (8-wide by default) against the MLX ops, bit for bit
      timeout 120 python3 bench/stage1_parts.py --preset 1b --batch-size 32 --parts dropout \
        --json /tmp/res/selfcheck.json 2>&1 | tee /tmp/res/selfcheck.txt | tee -a $R/steps.txt
      CLARA_DROPOUT_VEC=0 timeout 60 python3 bench/stage1_parts.py --preset 1b --batch-size 32 \
        --parts dropout 2>&1 | tail -n 1 | sed 's/^/scalar kernels: /' | tee -a $R/steps.txt
      log "selfcheck done" ;;
    tests2)  # the CUDA tests the change touches (dropout kernels, folded adapters, stages)
      for t in "tests/test_memory.py -k mask_again" tests/test_method_stages.py \
               tests/test_method_checkpoint.py; do
        (( $(left) < 30 )) && { log "not run (time): $t"; continue; }
        f=/tmp/res/tests-$(basename ${t%% *} .py).txt
        timeout $(( $(left) - 20 )) python3 -m pytest -q -p no:cacheprovider -rfs $t > $f 2>&1
        echo "$t: $(tail -n 1 $f)" | tee -a $R/steps.txt
      done
      log "tests2 done" ;;
    linears)  # model-free: a block's projections base / adapters / unfolded / folded, attention
      for b in 32 8; do
        timeout 100 python3 bench/stage1_parts.py --preset 1b --batch-size $b --parts linears,attn \
          --json /tmp/res/linears_b$b.json 2>&1 | tee /tmp/res/linears_b$b.txt | tee -a $R/steps.txt
      done
      log "linears done" ;;
    mfu)  # the engine's rate: stage 1 at b32, b64, b8, each unfolded and folded, and LoRA SFT
      ROWS=${ROWS:-stage1+b32,stage1+b32+fold,stage1+b64,stage1+b64+fold,lora+b32,stage1,stage1+fold}
      CLARA_BENCH_PEAKS=0 CLARA_BENCH_DEADLINE=$(( END - ${MFU_SPARE:-200} )) timeout $(left) \
        python3 bench/clara_throughput.py --preset 1b --steps 8 --warmup 2 --only "$ROWS" \
        --json /tmp/res/clara_1b.json > /tmp/res/clara_1b.txt 2>&1
      awk '/^work /{p=1} /^(host ms|estimate|wrote)/{p=0} p' /tmp/res/clara_1b.txt | tee -a $R/steps.txt
      log "mfu done" ;;
    big)  # 8B 4-bit, batch 1, checkpointing + chunked CE + 8 GB limit, the new CUDA defaults
      CLARA_BENCH_PEAKS=0 timeout $(( $(left) < 200 ? $(left) : 200 )) python3 bench/clara_throughput.py \
        --preset 8b-q4 --steps 4 --warmup 1 --only ${BIG_ONLY:-stage1+chunk+ckpt+lim8} \
        --json /tmp/res/clara_8b.json > /tmp/res/clara_8b.txt 2>&1
      tail -n 4 /tmp/res/clara_8b.txt | tee -a $R/steps.txt
      log "big done" ;;
    tests)
      OUT=/tmp/res DEADLINE=$(( END - 40 )) GPU_TESTS="${GPU_TESTS:-tests/test_chat.py tests/test_train.py}" \
        bash scripts/gpu-check.sh tests > /dev/null 2>&1
      grep -h "tests/" /tmp/res/steps.txt | tail -n 4 | tee -a $R/steps.txt
      log "tests done" ;;
    rag)
      OUT=/tmp/res timeout $(( $(left) - 15 )) bash scripts/gpu-check.sh rag > /dev/null 2>&1
      tail -n 12 /tmp/res/rag.txt | tee -a $R/steps.txt
      log "rag done" ;;
  esac
done
tar czf /tmp/ptx.tgz -C / tmp/mlx 2>/dev/null && split -b 15m /tmp/ptx.tgz $R/ptx.tgz.
log "end; ptx $(du -m /tmp/ptx.tgz | cut -f1) MB"
