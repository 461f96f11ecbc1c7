"""Dress rehearsal of the GPU path on the CPU: SD 1.5's exact shapes with random weights (the stand-in
of zc.sd.build_sd15_standin: UNet 860M, VAE factor 8, CLIP ViT-L-shaped text encoder, 512 px), run
through the code chapters 6 and 10 use: zc.train (data, latent cache, a few optimiser steps, one
evaluation) and the sampler. Reports time and peak memory of each stage.

    python benchmarks/sd15_rehearsal.py --out benchmarks/results/cpu/sd15_rehearsal.txt

Fidelity numbers are meaningless with random weights and are not reported. Each stage runs in a
fresh process, so each peak RSS is that stage's own.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results  # benchmarks/_results.py

from zc.study.rehearsal import STAGES


def stage(name: str, sd: str, args) -> dict:
    from zc.study.rehearsal import stage as run_stage

    out = run_stage(name, sd, "cpu", pairs=args.pairs, train_steps=args.train_steps, batch=args.batch,
                    sample_steps=args.sample_steps)
    out["peak_rss_gb"] = out.pop("peak_gb")  # the column name of the stored results
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8, help="generated fill50k pairs at 512 px")
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--sample-steps", type=int, default=2)
    ap.add_argument("--sd", default="", help="an existing stand-in folder (default: build one in a temp folder)")
    ap.add_argument("--out", default="benchmarks/results/cpu/sd15_rehearsal.txt")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        print(json.dumps(stage(args.stage, args.sd, args)))
        return
    from zc.sd import build_sd15_standin

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        sd = args.sd or str(build_sd15_standin(Path(tmp) / "sd15-standin"))
        built = time.time() - t0
        rows = []
        for name in STAGES:
            cmd = [sys.executable, __file__, "--stage", name, "--sd", sd, "--pairs", str(args.pairs), "--train-steps",
                   str(args.train_steps), "--batch", str(args.batch), "--sample-steps", str(args.sample_steps)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = [f"$ python benchmarks/sd15_rehearsal.py --pairs {args.pairs} --train-steps {args.train_steps} "
             f"--batch {args.batch} --sample-steps {args.sample_steps}",
             f"{_results.machine()}; "
             f"SD 1.5 stand-in (random weights, fp16 on disk, run in fp32), built in {built:.0f} s", ""]
    lines += [json.dumps(r) for r in rows]
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
