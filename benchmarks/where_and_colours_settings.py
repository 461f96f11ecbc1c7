"""The palette IP-Adapter's scale λ (zc/ip_adapter.py) beside the keypoints ControlNet, chosen on validation
scenes (zoo.TEST_SEED + 1), not on the held-out scenes of benchmarks/zoo.py's table: keypoint accuracy,
colour accuracy and joint (hit x colour) per λ, empty prompt, CFG 5.

    python benchmarks/ip_scale.py --out benchmarks/results/cpu/zoo/ip_scale.txt      # ~1 min on 2 CPU cores
"""
from __future__ import annotations

import argparse

import torch

import _results  # benchmarks/_results.py
import zc
from zc import conditions, zoo
from zc.sample import sample


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/cpu/zoo/ip_scale.txt")
    args = ap.parse_args(argv)
    pipe = zc.load_sd()
    val = zoo.test_set("keypoints", args.n, 64, seed=zoo.TEST_SEED + 1)
    kp, ipa = zoo.load("keypoints"), zoo.load_adapter("palette")
    palettes = conditions.draw("palette", val.scenes, 64)
    lines = [f"$ python benchmarks/ip_scale.py --scales {' '.join(map(str, args.scales))} --n {args.n}",
             f"{_results.machine()}; {args.n} validation scenes (seed {zoo.TEST_SEED + 1}), keypoints ControlNet + "
             "palette IP-Adapter, empty prompt, 20 DDIM steps, CFG 5", "",
             f"{'scale':>6s} {'keypoint acc.':>14s} {'colour acc.':>12s} {'joint':>6s}"]
    rows = []
    for lam in args.scales:
        ipa.set_scale(lam)
        x = sample(pipe, kp, [""] * args.n, val.conditions(), num_inference_steps=20,
                   generator=torch.Generator().manual_seed(0), ip_adapter=ipa, ip_condition=palettes)
        m = conditions.measure(x, val.scenes, per_item=True)
        joint = zoo.joint_score(m)
        row = {"scale": lam, "keypoint_accuracy": sum(m["keypoint_accuracy"]) / args.n,
               "colour_accuracy": sum(m["colour_accuracy"]) / args.n, "joint": joint}
        rows.append(row)
        lines.append(f"{lam:6.2f} {row['keypoint_accuracy']:14.3f} {row['colour_accuracy']:12.3f} {joint:6.3f}")
    best = max(rows, key=lambda r: r["joint"])
    lines.append(f"\nbest joint at scale {best['scale']} (zoo.IP_SCALE)")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
