#!/usr/bin/env bash
# One shot on a machine with a GPU and no network (about 10 minutes on one H100-class GPU):
#
#   scripts/gpu_check.sh [--dry-run] [OUT]        # OUT: benchmarks/results/gpu-<date>
#
# 1. builds the SD 1.5 stand-in (zc.sd.build_sd15_standin: SD 1.5's exact shapes, random weights) and a
#    hub cache of ControlNets shaped for it under the public checkpoints' ids (no download);
# 2. executes every chapter under nbmake with ZC_DEVICE=cuda and ZC_SD=<stand-in> (small sizes; chapter 11
#    runs its live rehearsal on the GPU);
# 3. the training-step benchmark on SD 1.5's shapes in bf16: step time, peak memory, FLOPs and MFU;
# 4. TinySD's ControlNet trained on the GPU exactly as chapter 6 trains it on a CPU (450 steps);
# and writes each output, with the machine, the command and the date, into OUT (README.md lists them).
# --dry-run prints and records the commands without running them (the tests run it on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-benchmarks/results/gpu-$(date +%F)}
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/zc-gpu-check}  # the stand-in (~2 GB) and its hub cache (~4 GB): not results
mkdir -p "$OUT" "$WORK"
README="$OUT/README.md"
machine=$( [ $DRY = 1 ] && echo "(dry run: not measured)" || $PY -c "import torch, platform; print(torch.cuda.get_device_name(), '|', platform.machine(), '| torch', torch.__version__)")
printf '# scripts/gpu_check.sh\n\nDate: %s\nMachine: %s\n\n| output | seconds | command |\n| --- | --- | --- |\n' \
  "$(date -u +%FT%TZ)" "$machine" > "$README"

step() {  # step NAME COMMAND...: runs it (unless dry), output to OUT/NAME.txt, a row in README.md
  local name=$1; shift
  local t0=$SECONDS
  echo "\$ $*"
  if [ $DRY = 0 ]; then "$@" > "$OUT/$name.txt" 2>&1 || { tail -40 "$OUT/$name.txt"; echo "FAILED: $name"; exit 1; }; fi
  printf '| %s | %s | `%s` |\n' "$name.txt" "$((SECONDS - t0))" "$*" >> "$README"
}

step standin $PY -c "import zc; from zc.study import checkpoints; from zc.sd import build_sd15_standin; \
sd = build_sd15_standin('$WORK/sd15'); checkpoints.standin_hub_cache('$WORK/hub', zc.load_sd(sd)); print(sd)"

step chapters env ZC_SD="$WORK/sd15" ZC_DEVICE=cuda ZC_SD_VARIANT="$WORK/sd15" HF_HUB_CACHE="$WORK/hub" \
  HF_HUB_OFFLINE=1 ZC_RUNS="$WORK/runs" ZC_STEPS=200 ZC_PAIRS=200 ZC_N=8 ZC_SAMPLE_STEPS=4 ZC_ABLATION_STEPS=50 \
  ZC_REHEARSE=sd15 TQDM_DISABLE=1 $PY -m pytest --nbmake notebooks --nbmake-timeout=900 -q -p no:cacheprovider \
  --durations=0

step train_step_sd15_bf16 $PY benchmarks/train_step.py --config sd15 --batch 4 --steps 15 --dtype bfloat16

step tinysd_gpu $PY -m zc.train --preset cpu --device cuda --steps 450 --n-train 2000 --eval-every 75 \
  --eval-n 16 --out "$WORK/tinysd-gpu"
if [ $DRY = 0 ]; then cp "$WORK/tinysd-gpu/time.json" "$WORK/tinysd-gpu/log.jsonl" "$OUT/"; fi
echo "results in $OUT"
