"""Issue #28's cause, by ablation: zc.train on the VAE posterior's mean (zc before the fix) against
draws from it (now), nothing else changed: same pairs, seeds, noise, timesteps and prompt dropout
(--latent mean still takes eps from the step generator). Shape IoU on held-out outlines (full
prompts) at each evaluation, per seed, and the paired difference with a 95% t-interval.

    python benchmarks/latent_draws.py --seeds 0 1 2 3 4 --out benchmarks/results/cpu/latent_draws.txt
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _results  # benchmarks/_results.py
from zc import train as zt
from zc.ablations import t_interval


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/cpu/latent_draws.txt")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for latent in ("mean", "sample"):
                cfg = zt.TrainConfig(steps=args.steps, batch=16, lr=2e-4, n_train=args.pairs, seed=seed, latent=latent,
                                     eval_every=args.eval_every, eval_n=32, checkpoint_every=10**6, device="cpu",
                                     out=f"{tmp}/{latent}{seed}", cache=f"{tmp}/cache{seed}")  # one cache per seed
                r = zt.train(cfg)
                for h in r.history:
                    if "shape_iou" in h and h["step"] % args.eval_every == 0:
                        rows.append({"seed": seed, "latent": latent, "step": h["step"], "shape_iou": round(h["shape_iou"], 4)})
                print(json.dumps([x for x in rows if x["seed"] == seed and x["latent"] == latent]), flush=True)
    steps = sorted({r["step"] for r in rows})
    lines = [f"$ python benchmarks/latent_draws.py --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} "
             f"--pairs {args.pairs} --eval-every {args.eval_every}",
             f"{_results.machine()}; TinySD, {args.pairs} generated fill50k pairs, batch 16, lr 2e-4, 50% empty prompts; "
             "shape IoU on 32 held-out outlines with full prompts (20 DDIM steps, CFG 5)", "",
             f"{'step':>5s} {'mean (old)':>11s} {'sample (new)':>13s} {'sample - mean, 95% interval':>30s}  per seed (sample - mean)"]
    for s in steps:
        by = {lat: {r["seed"]: r["shape_iou"] for r in rows if r["step"] == s and r["latent"] == lat} for lat in ("mean", "sample")}
        d = [by["sample"][k] - by["mean"][k] for k in args.seeds]
        m, hw = t_interval(d)
        mean_m = sum(by["mean"].values()) / len(by["mean"])
        mean_s = sum(by["sample"].values()) / len(by["sample"])
        lines.append(f"{s:5d} {mean_m:11.3f} {mean_s:13.3f} {m:+10.3f} [{m - hw:+.3f}, {m + hw:+.3f}]      "
                     + " ".join(f"{x:+.3f}" for x in d))
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
