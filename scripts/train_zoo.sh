#!/usr/bin/env bash
# The recipe of the ControlNets shipped in zc/weights/<condition>-controlnet: one command each, on the
# shipped TinySD, 2 CPU cores (8 to 13 minutes each; see benchmarks/results/cpu/zoo/README.md).
#   scripts/train_zoo.sh                 # every condition of the zoo
#   scripts/train_zoo.sh scribble        # one
# Evaluations use empty prompts: the curve shows what the condition alone controls.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for c in ${@:-outline silhouette lowres scribble keypoints palette}; do
  kinds=circle,square,triangle,diamond  # every kind of the shapes world (fill50k itself is circles only)
  extra=()
  steps=4000
  # the palette says nothing about where: its residuals are pooled over space (ControlNet 1.1 shuffle's
  # global_pool_conditions), and every caption is dropped, since with the prompt's colour words present half
  # the time its hint block learns to ignore the condition (benchmarks/results/cpu/zoo/README.md)
  [ "$c" = palette ] && extra=(--global-pool --empty-prompt-prob 1.0)
  # the silhouette's steps are slower (its evaluations score four kinds of masks): 3500 fit the 15-minute
  # budget; it converged at step 175 and its last evaluations wobble within noise of each other
  [ "$c" = silhouette ] && steps=3500
  $PY -m zc.train --preset cpu --condition "$c" --kinds "$kinds" --steps "$steps" --batch 16 --n-train 10000 \
      --eval-every 250 --eval-n 32 --eval-prompts empty --checkpoint-every 500 "${extra[@]}" --out "runs/zoo/$c"
  mkdir -p "benchmarks/results/cpu/zoo/$c"
  cp "runs/zoo/$c/log.jsonl" "runs/zoo/$c/config.json" "runs/zoo/$c/time.json" "benchmarks/results/cpu/zoo/$c/"
  rm -rf "zc/weights/$c-controlnet" && cp -r "runs/zoo/$c/controlnet" "zc/weights/$c-controlnet"
done
