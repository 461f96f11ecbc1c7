#!/usr/bin/env bash
# The recipe of the ControlNets shipped in zc/weights/<condition>-controlnet: one command each, on the
# shipped TinySD, 2 CPU cores (8 to 13 minutes each; see benchmarks/results/cpu/zoo/README.md), and of
# the palette's IP-Adapter (zc/weights/palette-ip-adapter: the colours as cross-attention tokens).
#   scripts/train_zoo.sh                 # every condition of the zoo, then the palette's IP-Adapter
#   scripts/train_zoo.sh scribble        # one
#   scripts/train_zoo.sh palette-ip-adapter
#   scripts/train_zoo.sh spatial         # one network for every spatial condition (not in the default list:
#                                        # 19500 steps, the five spatial ControlNets' total)
#   SEED=1 scripts/train_zoo.sh keypoints-with-palette   # the keypoints ControlNet fine-tuned with the palette's
#                                        # IP-Adapter attached (after both; seed 0 is shipped, 1 and 2 stay in runs/)
#   SEED=0 scripts/train_zoo.sh keypoints-more           # its control arm: the same 1500 steps, no adapter
#   scripts/train_zoo.sh tinysd3-outline # the outline ControlNet of TinySD3's transformer (chapter 14; the MMDiT
#                                        # ControlNet copying half its blocks; not in the default list)
# Evaluations use empty prompts: the curve shows what the condition alone controls.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for name in ${@:-outline silhouette lowres scribble keypoints palette palette-ip-adapter}; do
  c=${name%-ip-adapter}  # the condition
  dest=$c
  kinds=circle,square,triangle,diamond  # every kind of the shapes world (fill50k itself is circles only)
  extra=()
  steps=4000
  preset=cpu  # TinySD; sd3: TinySD3 and the transformer's ControlNet (zc.train's presets)
  trained=controlnet  # the folder zc.train writes the trained part to
  # the palette says nothing about where: its residuals are pooled over space (ControlNet 1.1 shuffle's
  # global_pool_conditions), and every caption is dropped, since with the prompt's colour words present half
  # the time its hint block learns to ignore the condition (benchmarks/results/cpu/zoo/README.md)
  [ "$name" = palette ] && extra=(--global-pool --empty-prompt-prob 1.0)
  # as an IP-Adapter (zc/controls/ip_adapter.py), also with every caption dropped; 10% of the palettes are blanked
  # too, so that the zero features CFG gives the unconditional branch mean "no palette"
  if [ "$name" != "$c" ]; then
    extra=(--architecture ip-adapter --empty-prompt-prob 1.0 --condition-dropout 0.1)
    trained=ip-adapter
  fi
  # the silhouette's steps are slower (its evaluations score four kinds of masks): 3500 fit the 15-minute
  # budget; it converged at step 175 and its last evaluations wobble within noise of each other
  [ "$name" = silhouette ] && steps=3500
  # one network, the five spatial conditions stacked along the channels (zc.study.zoo.SPATIAL), each member
  # blanked half the time so that any subset works; trained for the separate ControlNets' total steps
  if [ "$name" = spatial ]; then
    c=outline+silhouette+lowres+scribble+keypoints dest=spatial steps=19500 extra=(--condition-dropout 0.5)
  fi
  # where + which colours: the shipped keypoints ControlNet trained on for 1500 steps with the shipped palette
  # IP-Adapter attached and locked (zc.controls.ip_adapter.WithGlobal), so that it places the shape while the adapter's
  # tokens set the colours; 10% of the palettes (and keypoints) blanked, what CFG's unconditional branch gets
  if [ "$name" = keypoints-with-palette ]; then
    c=keypoints dest=keypoints-with-palette steps=1500 extra=(--init zc/weights/keypoints-controlnet --ip-adapter zc/weights/palette-ip-adapter
                                  --condition-dropout 0.1 --seed "${SEED:-0}")
    [ "${SEED:-0}" != 0 ] && name=$name-seed$SEED
  fi
  # its control arm (issue #39): the same 1500 more steps, data, dropout and seeds with no adapter attached, so
  # that what the adapter adds in training is told apart from what 1500 more steps add (measured, not shipped)
  if [ "$name" = keypoints-more ]; then
    c=keypoints steps=1500 extra=(--init zc/weights/keypoints-controlnet --condition-dropout 0.1 --seed "${SEED:-0}")
    name=$name-seed${SEED:-0}
  fi
  # chapter 14's base: the same recipe on TinySD3, its MMDiT ControlNet (half the blocks copied)
  if [ "$name" = tinysd3-outline ]; then
    c=outline dest=tinysd3-outline preset=sd3
  fi
  $PY -m zc.train --preset "$preset" --condition "$c" --kinds "$kinds" --steps "$steps" --batch 16 --n-train 10000 \
      --eval-every 250 --eval-n 32 --eval-prompts empty --checkpoint-every 500 "${extra[@]}" --out "runs/zoo/$name"
  mkdir -p "benchmarks/results/cpu/zoo/$name"
  cp "runs/zoo/$name/log.jsonl" "runs/zoo/$name/config.json" "runs/zoo/$name/time.json" "benchmarks/results/cpu/zoo/$name/"
  [ "${name#keypoints-with-palette-seed}" != "$name" ] && continue  # seeds 1, 2: measured, not shipped
  [ "${name#keypoints-more}" != "$name" ] && continue  # the control arm: measured, not shipped
  dest="zc/weights/$dest-$trained"
  rm -rf "$dest" && cp -r "runs/zoo/$name/$trained" "$dest"
done
