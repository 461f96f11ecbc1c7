"""The data path at SD 1.5's 512 px: peak memory and time of data preparation plus 20 training steps,
for 1k, 5k and 20k generated pairs, against the previous design (every pair rendered and held in RAM).

    python benchmarks/data_scale.py --out benchmarks/results/cpu/data_scale.txt

The model is the `tiny8` stand-in (zc.sd.build_sd15_standin): SD 1.5's layout (a VAE of factor 8 at
512 px, 77-token text) at toy widths, so the numbers are the data path's, not SD's compute. Each
configuration runs in a fresh process; peak RSS is that process's high-water mark (ru_maxrss).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results  # benchmarks/_results.py
import torch


def child(args):
    """One configuration, in this process: prepare the data, train 20 steps, report."""
    from zc import train as zt
    from zc.world import conditions, shapes
    from zc.world.pairs import PairedData

    t0 = time.time()
    held = None
    if args.mode == "whole":  # the previous design: every pair rendered at once and kept (PairedData before lazy data)
        ds = PairedData.generate(args.n, size=512, seed=0)
        to8 = lambda x: (x * 255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
        held = (to8(shapes.render(ds.scenes, 512)), to8(conditions.draw("outline", ds.scenes, 512)))
    with tempfile.TemporaryDirectory() as out:
        cfg = zt.TrainConfig(sd=args.sd, n_train=args.n, steps=20, batch=4, eval_every=0, checkpoint_every=1000,
                             device="cpu", out=out)
        r = zt.train(cfg)
    total = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux reports KiB)
    print(json.dumps({"mode": args.mode, "n": args.n, "prep_s": round(total - r.step_seconds, 1),
                      "step_s": round(r.step_seconds / 20, 3), "peak_rss_mb": round(peak), "held": held is not None}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--whole-sizes", type=int, nargs="*", default=[1000], help="sizes to run the previous design at")
    ap.add_argument("--out", default="benchmarks/results/cpu/data_scale.txt")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="lazy", help=argparse.SUPPRESS)
    ap.add_argument("--sd", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    from zc.sd import build_sd15_standin

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sd = build_sd15_standin(Path(tmp) / "tiny8", scale="tiny8", dtype=torch.float32)
        runs = [("whole", n) for n in args.whole_sizes] + [("lazy", n) for n in args.sizes]
        for mode, n in runs:
            cmd = [sys.executable, __file__, "--child", "--n", str(n), "--mode", mode, "--sd", str(sd)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    base = next(r for r in rows if r["mode"] == "lazy")
    lines = [f"$ python benchmarks/data_scale.py --sizes {' '.join(map(str, args.sizes))} "
             f"--whole-sizes {' '.join(map(str, args.whole_sizes))}",
             f"{_results.machine()}; "
             "tiny8 stand-in (VAE factor 8, 512 px), batch 4, 20 steps",
             "", f"{'design':34s} {'pairs':>6s} {'prep s':>7s} {'s/step':>7s} {'peak RSS MB':>12s} {'x lazy 1k':>10s}"]
    names = {"whole": "previous: all pairs held in RAM", "lazy": "zc: per batch + latent cache on disk"}
    for r in rows:
        lines.append(f"{names[r['mode']]:34s} {r['n']:6d} {r['prep_s']:7.1f} {r['step_s']:7.3f} {r['peak_rss_mb']:12d}"
                     f" {r['peak_rss_mb'] / base['peak_rss_mb']:10.2f}")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
