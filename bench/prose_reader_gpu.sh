# The GPU driver of bench/prose_reader.py (session 10): pretrain three prose-reading bases
# (hidden 128/192/256, 4 layers, 2048-token BPE) at once on one GPU through `clara train lora
# --fine-tune-type full`, each phase time-bounded; every phase's base is exported as it ends and
# packed into $OUT/bases-TAG.tgz (the device tool returns few files). Run from the checkout that
# holds .gpu1/.gpu2 and this tree as .dev-demo10, after `bash .gpu1/gpu-install stash`:
#   PRE=230 RD=75 TO=460 bash .dev-demo10/bench/prose_reader_gpu.sh
# LOCAL=1 PY=.venv/bin/python ART=40 PRE=20 RD=8 SIZES=A:32:2 OUT=/tmp/o ... tries it on the CPU.
R=$OUT; T0=$(date +%s); mkdir -p ${O:-/tmp/o}
if [ -z "$LOCAL" ]; then
bash .gpu2/gpu-install install > $R/install.txt 2>&1 || { cat $R/install.txt; exit 9; }
tar xzf .dev-demo10/ptx.tgz -C / && echo "ptx cache: $(ls /tmp/mlx/*/ptx 2>/dev/null | wc -l) files"
fi
export PYTHONPATH=/tmp/site:$PWD/.dev-demo10 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd .dev-demo10
[ -z "$LOCAL" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
nvidia-smi --query-gpu=name,memory.used --format=csv > $R/gpu.txt 2>&1
W=${W:-/tmp/pr}; A="--workdir $W --articles ${ART:-6000} --copy-share 0.1 --closed-share 0.3 --vocab 2048 --reader-rows ${RR:-60000} --out ${O:-/tmp/o} --evals heldout --compare="
${PY:-python3} bench/prose_reader.py $A --corpus-only > $R/corpus.log 2>&1; echo "corpus at $(( $(date +%s) - T0 )) s"; tail -1 $R/corpus.log
wc -l $W/study/datasets/prose-read/train.jsonl
P="--pre-iters 200000 --pre-batch 32 --pre-lr 3e-3 --pre-seconds ${PRE:-240} --reader-iters 100000 --reader-batch 64 --reader-seconds ${RD:-80} --reader-lr 2e-3"
for v in ${SIZES:-A:128:4 B:192:4 C:256:4}; do set -- ${v//:/ }
  timeout ${TO:-500} ${PY:-python3} bench/prose_reader.py $A $P --tag $1 --hidden $2 --layers $3 --heads 4 > $R/run$1.log 2>&1 &
done
wait; echo "runs done at $(( $(date +%s) - T0 )) s"
for t in A B C; do tail -4 $R/run$t.log; done
for t in A B C; do [ -d ${O:-/tmp/o}/base$t ] && tar czf $R/bases-$t.tgz -C ${O:-/tmp/o} base$t warm$t \
    $(cd ${O:-/tmp/o} && ls | grep -e "$t-metrics.jsonl" -e "prose_reader$t-"); done
ls $R
