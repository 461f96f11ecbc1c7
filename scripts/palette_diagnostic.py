"""Palette diagnostic: does the palette ControlNet carry colour partly (distance falls) and does CFG on the
control (guess mode: control in the conditional branch only) amplify it to the right colours?"""

import sys
import time

import torch

import zc
from zc import conditions, shapes
from zc import train as zt
from zc.fill50k import Fill50k
from zc.sample import sample

steps = (
    int(sys.argv[1]) if len(sys.argv) > 1 else 2000
)  # python scripts/palette_diagnostic.py [steps]
out = f"runs/palette_{steps}"
t0 = time.time()
cfg = zt.TrainConfig.preset(
    "cpu",
    condition="palette",
    kinds="circle,square,triangle,diamond",
    steps=steps,
    batch=16,
    n_train=10000,
    eval_every=0,
    out=out,
    checkpoint_every=10**9,
)
res = zt.train(cfg)
print(f"trained {steps} steps in {(time.time() - t0) / 60:.1f} min", flush=True)
pipe = zc.load_sd()
cn = res.controlnet.eval()
test = Fill50k.generate(
    32, seed=777, split="test", condition="palette", kinds=shapes.KINDS
)
cond, empty = test.conditions(), [""] * 32
table = shapes.colour_table()


def dist(images):
    drawn = conditions.shape_regions(images)
    x = images.permute(0, 2, 3, 1)
    f = (x - table[test.scenes.fill][:, None, None]).norm(dim=-1)
    b = (x - table[test.scenes.bg][:, None, None]).norm(dim=-1)
    fd = (f * drawn).flatten(1).sum(1) / drawn.flatten(1).sum(1).clamp(min=1)
    bd = (b * ~drawn).flatten(1).sum(1) / (~drawn).flatten(1).sum(1).clamp(min=1)
    return fd.mean().item(), bd.mean().item()


g = lambda: torch.Generator().manual_seed(0)
for label, net, kw in [
    ("alone", None, {}),
    ("CN cfg5", cn, {}),
    ("CN guess cfg5", cn, dict(guess_mode=True)),
    ("CN scale2", cn, dict(conditioning_scale=2.0)),
    ("CN guess cfg9", cn, dict(guess_mode=True, guidance_scale=9.0)),
]:
    x = sample(
        pipe,
        net,
        empty,
        cond if net is not None else None,
        num_inference_steps=20,
        generator=g(),
        **kw,
    )
    m = conditions.measure(x, test.scenes)
    fd, bd = dist(x)
    print(
        f"{label:16s} colour acc {m['colour_accuracy']:.3f} fill {m['fill_accuracy']:.3f} bg {m['background_accuracy']:.3f}"
        f"  mean dist fill {fd:.3f} bg {bd:.3f}  iou {m['shape_iou']:.3f}",
        flush=True,
    )
