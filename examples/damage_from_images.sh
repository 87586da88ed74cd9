#!/usr/bin/env bash
# Heights from imagery, then damage, then a one-line answer with jq.
#   pre/post RGB  --predict-height-->  heights  --damage-map-->  grades per building  --jq-->  counts
# Usage: examples/damage_from_images.sh MODEL.onnx [WORKDIR]
# (make a model with examples/train_height_model.sh, or use the one `rsgeo demo` writes)
set -euo pipefail
model=${1:?usage: $0 MODEL.onnx [WORKDIR]}
work=${2:-damage-example}
size=${SIZE:-512}
mkdir -p "$work"

# a pre/post-event scene with known damage (replace with your own orthophotos)
rsgeo -q synth -o "$work/city" --size "$size" --seed 7 --destroyed 0.3 --overwrite

# heights (metres) on the images' own grids, streamed tile by tile
rsgeo predict-height "$work/city/city_007_pre_rgb.tif" "$work/city/city_007_post_rgb.tif" \
    -m "$model" -o "$work/heights" --overwrite --json | jq -c '{output, mpx_per_s, height_max}'

# per-building damage from the height loss, footprints from the pre-event survey
rsgeo damage-map "$work/heights/city_007_pre_rgb_height.tif" "$work/heights/city_007_post_rgb_height.tif" \
    --buildings "$work/city/city_007_footprints.gpkg" -o "$work/damage.tif" --overwrite --json \
    | tee "$work/damage.json" | jq '{by_grade, damaged_area_m2, lost_volume_m3}'

# the same question from the true heights, for comparison
rsgeo damage-map "$work/city/city_007_pre_ndsm.tif" "$work/city/city_007_post_ndsm.tif" \
    --buildings "$work/city/city_007_footprints.gpkg" -o "$work/damage_truth.tif" --overwrite --json \
    | jq -c '.by_grade'
