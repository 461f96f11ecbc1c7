#!/usr/bin/env bash
# The side-by-side of ControlNet and its successors (issue #27, chapter 13), on TinySD, one heavy job at a time:
#   1. every design under the stored sweep's protocol (1000 steps, 5k pairs, 32 held-out scenes, four prompt
#      settings), on a dense (outline) and a sparse (keypoints) condition, 3 seeds. The ControlNet rows are the
#      sweep recheck's (benchmarks/sweep_recheck.py, same protocol, seeds, data and scenes): copied in with
#      their latent caches, so the runner skips them;
#   2. benchmarks/successors.py: the stored CSVs, each design's two controls composed, the side-by-side table;
#   3. ControlNet++'s reward fine-tuning against the same steps without it, 3 seeds, from the recheck's
#      outline ControlNet (1000 steps: room to rise below the ceiling; the shipped one is near it).
# Resumable: each step skips what it has written. ~5.5 min a run on 2 CPU cores (3 designs x 2 conditions x
# 3 seeds ~ 1 h 45 min), minutes on a GPU (--device cuda in the ablation runner). The cost columns come from
# benchmarks/designs_speed.py (interleaved rounds, nothing else running), not from these runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/successors}
RECHECK=${RECHECK:-runs/sweep-recheck}  # python benchmarks/sweep_recheck.py --condition outline|keypoints
mkdir -p "$OUT"
for c in outline keypoints; do for s in 0 1 2; do  # the reference rows' latent caches, from the recheck
  [ -d "$OUT/cache_${c}_5000_seed$s" ] || cp -al "$RECHECK/cache_${c}_5000_seed$s" "$OUT/"
done; done
for f in results.csv curves.csv; do  # and their rows, each file once (written whole, then moved in)
  [ -f "$OUT/$f" ] && continue
  $PY - "$RECHECK/$f" "$OUT/$f.part" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
keep = [r for r in rows[1:] if r[rows[0].index("name")] == "ControlNet" and r[0] in ("outline", "keypoints")]
csv.writer(open(sys.argv[2], "w", newline="")).writerows([rows[0], *keep])
PY
  mv "$OUT/$f.part" "$OUT/$f"
done
for condition in outline keypoints; do
  $PY -m zc.study.ablations --preset cpu --conditions "$condition" --seeds 0 1 2 --out "$OUT" \
      --runs ControlNet T2I-Adapter ControlNeXt-style ControlNet-XS-style
done
$PY benchmarks/successors.py --runs "$OUT" --more-runs "$RECHECK" --out benchmarks/results/cpu/successors
$PY benchmarks/reward_finetune.py --seeds 0 1 2 --steps 300 --init "$RECHECK/outline_ControlNet_seed0/controlnet" \
    --out benchmarks/results/cpu/reward_finetune.txt
