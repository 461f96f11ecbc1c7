"""One network for every spatial condition against the five separately trained ControlNets (issue #26):

    python benchmarks/one_network.py                       # zc/weights/spatial-controlnet, 64 scenes
    python benchmarks/one_network.py --network runs/zoo/spatial/controlnet --n 16   # a quick look

Both were trained on TinySD by scripts/train_zoo.sh at equal total compute (the one network for 19500
steps of batch 16, the five ControlNets' total: 4 x 4000 + 3500 for the silhouette). On the same
held-out scenes, condition images and noise (zoo.together), with an empty and with the full prompt:
each condition alone, then pairs given together (the one network reads both slots; the separate
ControlNets' residuals are summed, paper §3.4), each member's own measure. one - separate is paired by
scene, with its 95% t-interval over the scenes (one trained network of each design: the interval is the
scenes', not the training seeds'). Then two conditions that disagree (zoo.disagreeing: keypoints at one
place, a scribble at the mirrored place): which place each design draws. Sampling only (7 min on
this project's 2 CPU cores). Writes benchmarks/results/cpu/zoo/one_network.txt / .json.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402

import zc  # noqa: E402
from zc.study import stats, zoo  # noqa: E402
from zc.world import conditions  # noqa: E402

PAIRS = [["keypoints", "scribble"], ["outline", "keypoints"], ["lowres", "keypoints"], ["silhouette", "scribble"]]


def compare(one: list[dict], apart: list[dict]) -> list[dict]:
    """Rows {given, prompt, measure, one, separate, diff, low, high}: per subset and its members' measures, the
    one network minus the separate ControlNets, paired by scene (95% t-interval over the scenes)."""
    out = []
    for a, b in zip(one, apart):
        if (a["given"], a["prompt"]) != (b["given"], b["prompt"]):
            raise ValueError(f"rows do not pair: {a['given']} / {b['given']}")
        for key in dict.fromkeys(conditions.get(m).score for m in conditions.members(a["given"])):  # each once
            d = stats.difference_interval([x - y for x, y in zip(a["per_item"][key], b["per_item"][key])])
            out.append({"given": a["given"], "prompt": a["prompt"], "measure": key,
                        "one": a[key], "separate": b[key], "diff": d["mean"], "low": d["low"], "high": d["high"]})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default=str(zoo.one_network_folder()), help="the stacked ControlNet's folder")
    ap.add_argument("--n", type=int, default=64, help="held-out scenes")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/cpu/zoo/one_network.txt")
    args = ap.parse_args(argv)
    if not (Path(args.network) / "config.json").is_file():
        raise FileNotFoundError(f"no ControlNet in {args.network}: train it with scripts/train_zoo.sh spatial")
    pipe = zc.load_sd()
    one = zc.ControlNet.from_pretrained(args.network).eval()
    given = [[m] for m in conditions.members(zoo.SPATIAL)] + PAIRS
    rows = []
    for prompt in ("empty", "full"):
        kw = dict(n=args.n, steps=args.steps, seed=args.seed, prompt=prompt)
        rows += compare(zoo.together(pipe, given, one, **kw), zoo.together(pipe, given, None, **kw))
    cmd = f"$ python benchmarks/one_network.py {' '.join(argv or sys.argv[1:])}".rstrip()
    where = os.path.relpath(args.network)
    lines = [cmd, f"{_results.machine()}; TinySD; {where}; {args.n} held-out scenes, {args.steps} DDIM steps, CFG 5",
             "", f"{'given':22s}{'measure':19s}{'prompt':>7s}{'separate':>10s}{'one':>7s}"
             f"{'one - separate [95%]':>26s}"]
    for r in rows:
        lines.append(f"{r['given']:22s}{conditions.name(r['measure']):19s}{r['prompt']:>7s}{r['separate']:10.3f}"
                     f"{r['one']:7.3f}{r['diff']:+10.3f} [{r['low']:+.3f}, {r['high']:+.3f}]")
    lines.append("(separate: the zoo's five ControlNets, a pair's residuals summed; one: the stacked network, "
                 "the other slots zeroed; paired by scene)")
    sep = [zoo.load(m) for m in ("keypoints", "scribble")]
    dis, _, _ = zoo.disagreeing(pipe, networks={"separate": (sep, "separate"), "one network": (one, "stack")},
                                n=args.n, steps=args.steps, seed=args.seed, stack=zoo.SPATIAL)
    lines += ["", "keypoints at one place, a scribble at the mirrored place (empty prompt): IoU of the drawn shape",
              f"{'design':14s}{'with the keypoints shape':>26s}{'with the scribble shape':>25s}"]
    lines += [f"{r['design']:14s}{r['iou_first']:26.3f}{r['iou_second']:25.3f}" for r in dis]
    _results.write(args.out, lines, rows + [{"disagreeing": r} for r in dis])


if __name__ == "__main__":
    main()
