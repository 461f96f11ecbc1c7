"""The shipped TinySD's quality bar, measured once per change of its weights (issue #37: shipped
weights are measured in benchmarks, not in test fixtures): VAE reconstruction PSNR on held-out
shapes, colour accuracy of text-to-image on held-out prompts, and how far one prompt's shape moves
over seeds (text should say what, not where). Beside the numbers: the SHA-256 of every weight file,
so tests/test_tinysd.py can tell a stale result from a current one.

    python benchmarks/tinysd_quality.py [--n 64] [--steps 25] [--out benchmarks/results/cpu/tinysd_quality.txt]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from zc import tinysd
from zc.sd import TINYSD

sys.path.insert(0, str(Path(__file__).parent))  # also when a test loads this file
import _results  # benchmarks/_results.py

BARS = {"vae_psnr_db": 30.0, "colour_accuracy": 0.9, "position_std": 0.08}  # each a lower bound


def weight_hashes(folder=TINYSD) -> dict[str, str]:
    """SHA-256 of each .safetensors file under `folder`, by its path relative to it."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="held-out scenes")
    ap.add_argument("--steps", type=int, default=25, help="sampler steps")
    ap.add_argument("--out", default="benchmarks/results/cpu/tinysd_quality.txt")
    args = ap.parse_args(argv)
    pipe = StableDiffusionPipeline.from_pretrained(TINYSD, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        r = tinysd.evaluate(pipe, n=args.n, steps=args.steps, guidance_scale=5.0)
    lines = [f"$ python benchmarks/tinysd_quality.py --n {args.n} --steps {args.steps}", _results.machine(), "",
             f"{'measure':28s}{'value':>8s}{'bar':>8s}  met"]
    row = {"n": args.n, "steps": args.steps, "weights": weight_hashes()}
    for k, bar in BARS.items():
        lines.append(f"{k:28s}{r[k]:8.3f}{bar:8.2f}  {'yes' if r[k] >= bar else 'NO'}")
        row[k] = round(r[k], 4)
    _results.write(args.out, lines, [row])
    return 0 if all(r[k] >= bar for k, bar in BARS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
