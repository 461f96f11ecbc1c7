#!/usr/bin/env bash
# Reproduces the shipped TinySD (zc/weights/tinysd) exactly as it was trained: three chained runs
# (step 4 makes its fine-tuned variant, zc/weights/tinysd-shaded)
# on one NVIDIA H100 (about 16 minutes in all; logs and configs in benchmarks/results/h100/).
# The stage-2 loop ran at ~8 steps/s there (batch 256), limited by per-step overhead, not FLOPs.
# On a CPU the same commands run unchanged (add --device cpu), but take hours at batch 256.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs}
# 1. from scratch: VAE (4000 steps, batch 64), then UNet + text encoder, v-prediction (1869 steps, batch 256)
$PY -m zc.tinysd train --out $OUT/tinysd_1 --prediction-type v_prediction --vae-steps 4000 --vae-batch 64 \
    --batch 256 --steps 1869 --lr 5e-4 --warmup 500 --checkpoint-every 500
# 2. and 3. continue stage 2 from the EMA weights of the previous run, with a fresh warmup + cosine
$PY -m zc.tinysd train --out $OUT/tinysd_2 --init-from $OUT/tinysd_1/pipeline --prediction-type v_prediction \
    --batch 256 --steps 1415 --lr 4e-4 --warmup 100 --checkpoint-every 1000
$PY -m zc.tinysd train --out $OUT/tinysd_3 --init-from $OUT/tinysd_2/pipeline --prediction-type v_prediction \
    --batch 256 --steps 1900 --lr 3e-4 --warmup 50 --checkpoint-every 5000
$PY -m zc.tinysd eval $OUT/tinysd_3/pipeline
echo "copy $OUT/tinysd_3/pipeline to zc/weights/tinysd to ship it"
# 4. the "community model" of chapter 10: TinySD fine-tuned on shaded shapes (CPU, 2 cores: ~15 min)
$PY -m zc.tinysd train --out $OUT/tinysd-shaded --init-from zc/weights/tinysd --prediction-type v_prediction \
    --style shaded --batch 32 --steps 600 --lr 3e-4 --warmup 25 --ema-decay 0.99 --checkpoint-every 100 --device cpu
echo "copy $OUT/tinysd-shaded/pipeline to zc/weights/tinysd-shaded to ship it"
