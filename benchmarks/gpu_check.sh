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
STEPS=${STEPS:-"tests pretrain predict input raster"}

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

step tests 75 $PY -m pytest -q -p no:cacheprovider -m cuda tests
step pretrain 220 $PY benchmarks/pretrain_speed.py --device cuda --steps 20 --warmup 5
step predict 150 $PY benchmarks/predict_height.py --device cuda --backend torch --precision bf16 \
    --backbone vit_small_patch16_224 --tile 256 --batch-size 64 --size 8192 --folder 100
step input 70 $PY benchmarks/input_pipeline.py --device cuda --workers 12 --scenes 8 --skip-old
step raster 60 $PY benchmarks/raster_pipeline.py --threads 16 --codecs zstd lerc_zstd deflate \
    --content noisy --skip-rss
cat "$OUT/steps.txt"
