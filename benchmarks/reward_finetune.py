"""ControlNet++'s claim on the shapes world: does reward fine-tuning raise controllability, and what does
it cost? From the shipped fill50k ControlNet, two fine-tunes per seed with the same steps, data and
batches: the diffusion loss alone ("more steps", the control for the extra training), and the
diffusion loss + the reward (zc/controls/reward.py, t < reward_t_max). Measured on held-out outlines with
the full prompt and with none: shape IoU (conditions.measure, the book's measure), the segmenter's
own agreement (what the reward optimises), fill accuracy (what the reward does not see), and the
difference reward - plain, paired by seed, with its 95% interval.

    python benchmarks/reward_finetune.py --seeds 0 1 2 --steps 300        # ~6 min a run on 2 CPU cores

Runs resume (zc.train checkpoints under --work); the table is written to --out with the machine.
The shipped ControlNet already scores shape IoU ~0.92 on outlines (ceiling ~0.96): little room for a
gain. `--init` starts both fine-tunes from a less-trained ControlNet (e.g. chapter 6's run stopped
early) where controllability has room to rise, as in the paper's setting.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402

import zc  # noqa: E402
from zc import train as zt  # noqa: E402
from zc.controls import reward  # noqa: E402
from zc.sample import sample  # noqa: E402
from zc.study import stats  # noqa: E402
from zc.world import conditions  # noqa: E402
from zc.world.pairs import PairedData, disc_masks  # noqa: E402

SHIPPED = zc.sd.TINYSD.parent / "fill50k-controlnet"


def measure(pipe, cn, test: PairedData, seg, steps: int = 20) -> dict[str, float]:
    out = {}
    masks = disc_masks(test.sources)
    for setting, prompts in (("full", test.prompts), ("none", [""] * len(test))):
        x = sample(pipe, cn, prompts, test.conditions(), num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(0))
        m = conditions.measure(x, test.scenes)
        out[f"shape_iou_{setting}"] = float(m["shape_iou"])
        out[f"agreement_{setting}"] = float(reward.agreement(seg, x, masks).mean())
        if setting == "full":
            out["fill_accuracy"] = float(m["fill_accuracy"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--weight", type=float, default=1.0, help="reward_weight (λ)")
    ap.add_argument("--t-max", type=int, default=200, help="reward_t_max")
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--init", default=str(SHIPPED), help="the ControlNet both fine-tunes start from")
    ap.add_argument("--work", default="runs/reward-finetune")
    ap.add_argument("--out", default="benchmarks/results/cpu/reward_finetune.txt")
    args = ap.parse_args(argv)
    pipe = zc.load_sd()
    test = PairedData.generate(args.n_test, seed=777, split="test")
    seg = reward.load_segmenter()
    rows = [{"run": "start", "seed": -1, **measure(pipe, zc.ControlNet.from_pretrained(args.init).eval(), test, seg)}]
    for seed in args.seeds:
        for name, weight in (("more steps", 0.0), ("reward", args.weight)):
            cfg = zt.TrainConfig(init=args.init, reward_weight=weight, reward_t_max=args.t_max, steps=args.steps,
                                 seed=seed, n_train=args.pairs, eval_every=0, lr=2e-5,
                                 out=f"{args.work}/{name.replace(' ', '_')}_seed{seed}")
            r = zt.train(cfg, pipe=zc.load_sd())
            rows.append({"run": name, "seed": seed, **measure(pipe, r.module.eval(), test, seg)})
    keys = ["shape_iou_full", "shape_iou_none", "agreement_full", "agreement_none", "fill_accuracy"]
    lines = [f"$ python benchmarks/reward_finetune.py {' '.join(argv or sys.argv[1:])}".rstrip(),
             f"{_results.machine()}; TinySD, from {args.init}, {args.steps} steps at lr 2e-5, batch 16, "
             f"reward λ {args.weight} where t < {args.t_max}; {args.n_test} held-out outlines, 20 DDIM steps, CFG 5",
             "", f"{'run':16s} {'seed':>4s} " + " ".join(f"{k:>15s}" for k in keys)]
    for r in rows:
        lines.append(f"{r['run']:16s} {r['seed']:4d} " + " ".join(f"{r[k]:15.3f}" for k in keys))
    lines += ["", "reward - more steps, paired by seed: mean [95% interval]"]
    for k in keys:
        diff = [next(r[k] for r in rows if r["run"] == "reward" and r["seed"] == s)
                - next(r[k] for r in rows if r["run"] == "more steps" and r["seed"] == s) for s in args.seeds]
        d = stats.difference_interval(diff)
        lines.append(f"  {k:16s} {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
