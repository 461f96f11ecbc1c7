"""Issue #28's cause, by ablation: zc.train on the VAE posterior's mean (zc before the fix) against
draws from it (now), nothing else changed: same pairs, seeds, noise, timesteps and prompt dropout
(--latent mean still takes eps from the step generator). Shape IoU on held-out outlines (full
prompts) at each evaluation, per seed, and the paired difference with a 95% t-interval.

    python benchmarks/latent_draws.py --seeds 0 1 2 3 4 --out benchmarks/results/cpu/latent_draws.txt

The same harness for any other difference from diffusers' script, one TrainConfig field at a time
(--field, --values old new), e.g. i.i.d. batches per step against shuffled epochs:

    python benchmarks/latent_draws.py --field batches --values iid epochs --out benchmarks/results/cpu/batches.txt
"""
from __future__ import annotations

import argparse
import json
import tempfile

import _results  # benchmarks/_results.py

from zc import train as zt
from zc.study.stats import t_interval
from zc.world import conditions


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--field", default="latent", help="the TrainConfig field compared")
    ap.add_argument("--values", nargs=2, default=["mean", "sample"], help="its two values: old new")
    ap.add_argument("--condition", default="outline", help="what the ControlNets learn (zc.world.conditions)")
    ap.add_argument("--out", default="benchmarks/results/cpu/latent_draws.txt")
    args = ap.parse_args(argv)
    old, new = args.values
    measure = conditions.get(args.condition).score  # the condition's own measure (shape IoU for outlines)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for value in (old, new):
                cfg = zt.TrainConfig(steps=args.steps, batch=16, lr=2e-4, n_train=args.pairs, seed=seed,
                                     condition=args.condition, eval_every=args.eval_every, eval_n=32, checkpoint_every=10**6, device="cpu",
                                     out=f"{tmp}/{value}{seed}", cache=f"{tmp}/cache{seed}")  # one cache per seed
                setattr(cfg, args.field, type(getattr(cfg, args.field))(value))
                r = zt.train(cfg)
                for h in r.history:
                    if measure in h and h["step"] % args.eval_every == 0:
                        rows.append({"seed": seed, args.field: value, "step": h["step"],
                                     measure: round(h[measure], 4)})
                print(json.dumps([x for x in rows if x["seed"] == seed and x[args.field] == value]), flush=True)
    steps = sorted({r["step"] for r in rows})
    flags = "" if args.field == "latent" else f" --field {args.field} --values {old} {new}"
    flags += "" if args.condition == "outline" else f" --condition {args.condition}"
    lines = [f"$ python benchmarks/latent_draws.py{flags} --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} "
             f"--pairs {args.pairs} --eval-every {args.eval_every}",
             f"{_results.machine()}; TinySD, {args.pairs} generated fill50k pairs, batch 16, lr 2e-4, 50% empty prompts; "
             f"{measure} on 32 held-out {args.condition} scenes with full prompts (20 DDIM steps, CFG 5)", ""]
    names = {"mean": "mean (old)", "sample": "sample (new)"} if args.field == "latent" else {old: old, new: new}
    lines.append(f"{'step':>5s} {names[old]:>11s} {names[new]:>13s} {f'{new} - {old}, 95% interval':>30s}  "
                 f"per seed ({new} - {old})")
    for s in steps:
        by = {v: {r["seed"]: r[measure] for r in rows if r["step"] == s and r[args.field] == v} for v in (old, new)}
        d = [by[new][k] - by[old][k] for k in args.seeds]
        m, hw = t_interval(d)
        mean_o = sum(by[old].values()) / len(by[old])
        mean_n = sum(by[new].values()) / len(by[new])
        lines.append(f"{s:5d} {mean_o:11.3f} {mean_n:13.3f} {m:+10.3f} [{m - hw:+.3f}, {m + hw:+.3f}]      "
                     + " ".join(f"{x:+.3f}" for x in d))
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
