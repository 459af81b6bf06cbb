#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine whose python3 already holds torch
# (this workplace's `device` tool; see docs/benchmarks.md). The packages torch's image
# lacks travel as wheels in .whl/ (open_clip_torch, ftfy, wcwidth, scikit-learn 1.9):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
#       open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 scikit-learn==1.9.1
# Each step has its own time limit and writes its log to $OUT (or ./device_out), so that
# one slow step cannot eat the others' time.
#   bash tools/device_checks.sh [step ...]   steps: env gpu-tests fit-gpu embedder scale
#                                            inference suite cost (default: all, in order)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_out}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import open_clip" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD:$PWD/benchmarks
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
}

check_env() {  # fails fast where the set-up is broken: nothing else would run
    nvidia-smi -L
    python3 -c "import torch, sklearn, open_clip, candle_sklearn as c; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '-'); \
print('sklearn', sklearn.__version__, 'open_clip', open_clip.__version__, 'candle', c.__version__)"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(env gpu-tests fit-gpu embedder scale inference suite cost)
for s in "${steps[@]}"; do
    case $s in
        env) check_env || exit 1 ;;
        gpu-tests) step gpu-tests 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests ;;
        # graphed against eager training steps (1,000 and 8,142 classes) and default fits
        # (paper-lt); about a minute on an H100
        fit-gpu) step fit-gpu 180 python3 benchmarks/bench_fit_gpu.py
                 cp benchmarks/results/gpu.jsonl "$OUT/" 2>/dev/null ;;  # its rows, at the end
        embedder) step embedder 120 python3 benchmarks/bench_embedder.py --gpu-only ;;
        scale) step scale 120 python3 benchmarks/bench_scale.py --device cuda --steps 5 ;;
        inference) step inference 90 python3 benchmarks/bench_inference.py --device cuda \
                       --classes 100 1000 8142 --threads 16 ;;
        cost) step cost 120 python3 benchmarks/bench_cost.py --device cuda --worlds \
                  paper-lt 10k-x-100 4shot-10-noisytext siblings-768 classes-1000 ;;
        # -v: each result is logged with its name as it ends, so a log cut by the time
        # limit still names its failures
        suite) step suite 240 python3 -m pytest -v -p no:cacheprovider -p no:benchmark \
                   --maxfail=20 -n 8 tests --ignore=tests/test_docs.py ;;
        *) echo "unknown step $s" >&2; exit 2 ;;
    esac
done
