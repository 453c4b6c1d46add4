#!/usr/bin/env bash
# Reproduce the young_women preset (tfcartoon/presets/young_women) from
# ../shared/data/p2c/train. Resumable: run it again after an interruption and each
# phase continues from its last checkpoint. About 5 h on a 2-core CPU (phases 5-7: 1 h 17 min as run).
#
#   bash configs/preset_young_women.sh [DATA_DIR] [RUNS_DIR]
#
# On a GPU, raise train.steps in the seven configs (more steps, same recipe). Phase 8
# averages the weights of phases 6 and 7 (python -m tfcartoon.average; seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/p2c/train}
RUNS=${2:-runs}

phase() {  # phase CONFIG OUT [--init RUN]
    local config=$1 out=$2; shift 2
    if [ -f "$out/config.yaml" ]; then
        python -m tfcartoon.train --data "$DATA" --out "$out" --resume
    else
        python -m tfcartoon.train --config "$config" --data "$DATA" --out "$out" "$@"
    fi
}

phase configs/preset_young_women.yaml "$RUNS/preset-128"
phase configs/preset_young_women_256.yaml "$RUNS/preset-256" --init "$RUNS/preset-128"
phase configs/preset_young_women_finish.yaml "$RUNS/preset-finish" --init "$RUNS/preset-256"
phase configs/preset_young_women_more.yaml "$RUNS/preset-more" --init "$RUNS/preset-finish"
phase configs/preset_young_women_sharpen.yaml "$RUNS/preset-sharpen" --init "$RUNS/preset-more"
phase configs/preset_young_women_sharpen2.yaml "$RUNS/preset-sharpen2" --init "$RUNS/preset-sharpen"
phase configs/preset_young_women_sharpen3.yaml "$RUNS/preset-sharpen3" --init "$RUNS/preset-sharpen2"
# Phase 8: the weighted mean of phases 6 and 7 (PSNR of one, crisp lines of the other).
if [ ! -f "$RUNS/preset-average/checkpoints/index.json" ]; then
    rm -rf "$RUNS/preset-average"  # an interrupted average is redone (it takes seconds)
    python -m tfcartoon.average "$RUNS/preset-sharpen2" "$RUNS/preset-sharpen3" \
        --weights 0.3 0.7 --out "$RUNS/preset-average"
fi
# Figures on the held-out pairs (data.holdout=0.1), then the float16 preset itself, in
# RUNS/presets/young_women (the shipped one is not touched; copy it over to replace it).
python bench/bench_preset.py --model "$RUNS/preset-average" --group young_women --data "$DATA" \
    --holdout 0.1 --json "$RUNS/preset-figures.json" --grid "$RUNS/preset-grid.jpg"
python -m tfcartoon.preset "$RUNS/preset-average" --name young_women \
    --figures "$RUNS/preset-figures.json" --root "$RUNS/presets"
