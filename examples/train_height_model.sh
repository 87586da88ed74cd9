#!/usr/bin/env bash
# prepare -> pretrain (YAML config) -> finetune on few labels -> export: a height model.
# Usage: examples/train_height_model.sh [WORKDIR]     (STEPS=... SIZE=... to scale it)
set -euo pipefail
work=${1:-train-example}
here=$(cd "$(dirname "$0")" && pwd)
size=${SIZE:-512}
steps=${STEPS:-200}
# 2 scenes of SIZE² give 2*(SIZE/64)² chips of 64 px; about 2/3 survive the split and de-duplication
train_size=${TRAIN_SIZE:-$(( 2 * (size / 64) * (size / 64) * 2 / 3 < 50 ? 2 * (size / 64) * (size / 64) * 2 / 3 : 50 ))}
mkdir -p "$work"

rsgeo -q synth -o "$work/city" --size "$size" --scenes 2 --seed 0 --overwrite
rsgeo prepare "$work/city" -o "$work/chips" --size 64 --overwrite --json | jq -c .

# settings live in a YAML file; options on the command line win over it
rsgeo pretrain "$work/chips" --config "$here/pretrain_selectivemae.yaml" -o "$work/pretrain" \
    --steps "$steps" --overwrite --json | jq -c '{step, loss, encoders}'

rsgeo finetune "$work/chips" --task height --encoder "$work/pretrain/encoder.safetensors" \
    --train-size "$train_size" --steps "$steps" --batch-size 8 --lr 5e-4 -o "$work/height" --overwrite \
    --json | jq -c '{best_step, best}'

rsgeo export "$work/height/best.ckpt" -o "$work/height.onnx" --overwrite
echo "model: $work/height.onnx"
