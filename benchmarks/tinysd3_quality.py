"""TinySD3 (chapter 14's SD3) beside TinySD, measured by the same function in one run (zc.tinysd.evaluate): colour
accuracy and kind accuracy (the prompt's shape drawn) of text-to-image on held-out prompts, how far one prompt's
shape moves over seeds, and the VAE's reconstruction (TinySD3 borrows TinySD's VAE). With the SHA-256 of TinySD3's
weight files, so a result for other weights can be told apart.

    python benchmarks/tinysd3_quality.py [--n 64] [--steps 25] [--out benchmarks/results/cpu/tinysd3/eval.txt]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402
from tinysd_quality import BARS, weight_hashes  # noqa: E402

from zc import sd3, tinysd, tinysd3  # noqa: E402
from zc.sd import load_sd  # noqa: E402

MEASURES = ("colour_accuracy", "kind_accuracy", "position_std", "vae_psnr_db")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="held-out scenes")
    ap.add_argument("--steps", type=int, default=25, help="sampler steps (DDIM for TinySD, flow Euler for TinySD3)")
    ap.add_argument("--out", default="benchmarks/results/cpu/tinysd3/eval.txt")
    args = ap.parse_args(argv)
    with torch.no_grad():
        results = {"TinySD3": tinysd3.evaluate(sd3.load_sd3(), n=args.n, steps=args.steps),
                   "TinySD": tinysd.evaluate(load_sd(), n=args.n, steps=args.steps)}
    lines = [f"$ python benchmarks/tinysd3_quality.py --n {args.n} --steps {args.steps}", _results.machine(), "",
             f"{'measure':20s}{'TinySD3':>9s}{'TinySD':>9s}{'bar':>8s}  (same {args.n} held-out prompts, guidance 5)"]
    for k in MEASURES:
        bar = f"{BARS[k]:8.2f}" if k in BARS else f"{'':8s}"
        lines.append(f"{k:20s}" + "".join(f"{results[m][k]:9.3f}" for m in results) + bar)
    lines.append("(position_std: one prompt x 16 seeds, the shape centroid's spread; uniform placement ~0.17)")
    rows = [{"model": m, "n": args.n, "steps": args.steps, **{k: round(r[k], 4) for k in MEASURES}}
            for m, r in results.items()]
    rows[0]["weights"] = weight_hashes(sd3.TINYSD3)
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
