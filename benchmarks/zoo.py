"""The condition zoo, measured: for each shipped ControlNet (zc/weights/<condition>-controlnet), its score
on held-out scenes without control (TinySD alone), with control, and on the ground-truth images
(the ceiling), under an empty and under the full prompt; the step of its sudden convergence and its
training time, from the stored training run. Then the composition of two ControlNets.

    python benchmarks/zoo.py --out benchmarks/results/cpu/zoo        # ~3 min on 2 CPU cores

Writes table.txt, table.json and composition.json under --out (beside the training logs that
scripts/train_zoo.sh stored there).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

import zc
from zc.study import zoo
from zc.world import conditions
from zc.world.fidelity import convergence_step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="held-out scenes per condition")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps")
    ap.add_argument("--out", default="benchmarks/results/cpu/zoo")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = zc.load_sd()
    rows = []
    for name in zoo.shipped():
        r = zoo.benchmark(pipe, name, n=args.n, steps=args.steps)
        run = out / name
        if (run / "log.jsonl").is_file():
            history = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            r["convergence_step"] = convergence_step(history, conditions.get(name).score, r["none_empty"],
                                                         r["control_empty"])
            r["train_minutes"] = zoo.train_minutes(run)
        rows.append(r)
        print(zoo.format_table(rows[-1:], header=len(rows) == 1), flush=True)
    comp = {}  # plainly, then in guess mode; a row sampled the same way twice (a pooled ControlNet alone) once
    for gm in (False, True):
        for r in zoo.composition(pipe, n=args.n, steps=args.steps, guess_mode=gm):
            comp.setdefault((r["run"], r["guess_mode"]), r)
    comp = list(comp.values())
    stamp = (f"{datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
             f"{args.n} held-out scenes, {args.steps} DDIM steps, CFG 5")
    text = zoo.format_table(rows) + "\n\n" + zoo.format_composition(comp) + f"\n\n({stamp})\n"
    print("\n" + text)
    (out / "table.txt").write_text(f"$ python benchmarks/zoo.py --n {args.n} --steps {args.steps} --out {args.out}\n\n{text}")
    (out / "table.json").write_text(json.dumps({"rows": rows, "composition": comp, "machine": stamp}, indent=1))


if __name__ == "__main__":
    main()
