#!/usr/bin/env bash
# Reproduces the shipped TinySD3 (zc/weights/tinysd3): its transformer pretrained by flow matching on the
# shapes world, on this project's 2-core CPU (no GPU was lent; ~30 min: 6 min to VAE-encode the 65,536
# training scenes once, then 6000 steps at batch 64, ~0.24 s a step). TinySD's VAE and the text encoders
# of TinySD and TinySD-shaded are borrowed (zc/tinysd3.py). Its log and evaluation: benchmarks/results/cpu/tinysd3/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs}
$PY -m zc.tinysd3 train --out $OUT/tinysd3 --steps 6000 --lr 5e-4 --device cpu
$PY -m zc.tinysd3 eval $OUT/tinysd3/pipeline
echo "copy $OUT/tinysd3/pipeline to zc/weights/tinysd3 to ship it"
