#!/usr/bin/env bash
# How tall is each building: footprints you have + an image -> heights per building.
#   RGB + footprints  --building-heights -m-->  polygons with height_m, volume_m3, ...  --jq-->  summary
# Usage: examples/building_heights.sh MODEL.onnx [WORKDIR]
# (make a model with examples/train_height_model.sh, or use the one `rsgeo demo` writes)
set -euo pipefail
model=${1:?usage: $0 MODEL.onnx [WORKDIR]}
work=${2:-heights-example}
size=${SIZE:-512}
mkdir -p "$work"

# an orthophoto and its building footprints, which here carry their true height_m
# (replace with your own ortho and cadastre / OpenStreetMap buildings)
rsgeo -q synth -o "$work/city" --size "$size" --seed 11 --overwrite

# heights predicted from the image, measured in every footprint, compared with height_m
rsgeo building-heights "$work/city/city_011_pre_rgb.tif" -m "$model" \
    --buildings "$work/city/city_011_footprints.gpkg" --prefix predicted_ --compare height_m \
    -o "$work/buildings.gpkg" --overwrite --json \
    | tee "$work/buildings.json" | jq -c '{measured, median_height_m, vs_true: .compare.p95}'

# the same footprints on a surface model and its terrain model (LiDAR, photogrammetry)
rsgeo building-heights "$work/city/city_011_dsm.tif" --dtm "$work/city/city_011_dtm.tif" \
    --buildings "$work/city/city_011_footprints.gpkg" --prefix lidar_ --compare height_m \
    -o "$work/buildings_lidar.gpkg" --overwrite --json | jq -c '.compare.p95'
