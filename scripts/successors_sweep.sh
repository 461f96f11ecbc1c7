#!/usr/bin/env bash
# The side-by-side of ControlNet and its successors (issue #27), on TinySD, one heavy job at a time:
#   1. every design under the stored sweep's protocol (1000 steps, 5k pairs, 32 held-out scenes, four prompt
#      settings), on a dense and a sparse condition, 3 seeds: rows beside the ablation sweep's;
#   2. what each costs: parameters, s per training step, s per image (interleaved rounds);
#   3. ControlNet++'s reward fine-tuning against the same steps without it, 3 seeds.
# Resumable: each step skips what it has written. ~6 min a run on 2 CPU cores (4 designs x 2 conditions x 3 seeds
# ~ 2.5 h), minutes on a GPU (--device cuda in the ablation runner).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/cpu/successors}
for condition in outline keypoints; do
  $PY -m zc.ablations --preset cpu --conditions "$condition" --seeds 0 1 2 --out "$OUT" \
      --runs ControlNet T2I-Adapter ControlNeXt-style ControlNet-XS-style
done
$PY benchmarks/designs_speed.py --out "$OUT/designs_speed.txt"
$PY benchmarks/reward_finetune.py --seeds 0 1 2 --out "$OUT/reward_finetune.txt"
