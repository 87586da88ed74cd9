#!/usr/bin/env bash
# One bounded session on a CUDA machine: the CUDA tests, then every GPU benchmark.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Each step runs under `timeout -k` so the whole script ends in about 9 minutes; logs go to
# OUT_DIR/<step>.log and a one-line status per step to OUT_DIR/steps.txt. Run it from the
# repository root with rsgeo importable (PYTHONPATH=. is set here) and its dependencies
# installed (rasterio & co.). Pass STEPS="pretrain predict" to run only some steps.
set -u
OUT=${1:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
STEPS=${STEPS:-"pretrain predict tests input finetune"}

step() {  # step NAME SECONDS CMD...
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return ;; esac
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s) $(date +%T)"
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log"
    echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc; free -g | head -2
  $PY -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.txt"

step pretrain 190 $PY benchmarks/pretrain_speed.py --device cuda --steps 20 --warmup 5
step predict 150 $PY benchmarks/predict_height.py --device cuda --backend torch
step tests 60 $PY -m pytest -q -p no:cacheprovider -p no:xdist -m cuda tests/test_loader.py \
    tests/test_validation.py tests/test_infer_stream.py tests/test_ensemble.py
step input 50 $PY benchmarks/input_pipeline.py --device cuda --workers 12 --scenes 8 --skip-old \
    --steps 12
step finetune 70 $PY benchmarks/finetune_speed.py --device cuda --train-size 50 --steps 300 \
    --batch-size 32 --workers 4 --precision bf16
cat "$OUT/steps.txt"
