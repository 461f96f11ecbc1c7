"""Chapter 9's confound, measured (issue #39): is "trained with the palette IP-Adapter" better than the same
1,500 more steps without it? Both arms start from the shipped keypoints ControlNet and train 1,500 more steps
of the same recipe and seeds; only the adapter attached in training differs:

    SEED=k scripts/train_zoo.sh keypoints-with-palette    # k = 0 (shipped), 1, 2: the trained-with arm
    SEED=k scripts/train_zoo.sh keypoints-more            # k = 0, 1, 2: the control arm, no adapter
    python benchmarks/control_arm.py                      # ~10 min on 2 CPU cores

Matched tuning: the trained-with arm was tuned on validation scenes (zoo.TUNED["trained with"], chosen for
its seed 0 over where_and_colours_settings.GRID["trained with"]); the control arm's seed 0 is tuned here on
the same validation scenes over the same grid. Then both arms, every seed, sample the 64 held-out scenes of
where_and_colours.txt beside the palette IP-Adapter (trained apart), empty prompt, same noise; joint =
keypoint hit x colour accuracy. Writes benchmarks/results/cpu/zoo/control_arm.txt / .json: each arm's joint
over its seeds (95% t over seeds), trained-with minus control (Welch over the seeds, and paired by scene on
the seeds' means), each with its state by chapter 10's rule (a gain where the whole interval is above 0).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402
from where_and_colours_settings import GRID, best, grid_rows, per_scene  # noqa: E402

import zc  # noqa: E402
from zc.study import claims, stats, zoo  # noqa: E402

KEYS = ("keypoint_accuracy", "colour_accuracy", "joint")
SETTINGS = ("ip_scale", "conditioning_scale", "guidance_scale")


def folders(pattern: str, seeds, recipe: str) -> list[Path]:
    """The arm's ControlNet per seed (seed 0 of the trained-with arm: the shipped one, where pattern says so)."""
    out = [zoo.with_adapter_folder() if s == 0 and recipe == "keypoints-with-palette" else Path(pattern.format(seed=s))
           for s in seeds]
    for f in out:
        if not (f / "config.json").is_file():
            raise FileNotFoundError(f"no ControlNet in {f}: SEED=k scripts/train_zoo.sh {recipe}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--with", dest="with_", default="runs/zoo/keypoints-with-palette-seed{seed}/controlnet",
                    help="the trained-with arm (seed 0: the shipped folder)")
    ap.add_argument("--control", default="runs/zoo/keypoints-more-seed{seed}/controlnet", help="the control arm")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/cpu/zoo/control_arm.txt")
    args = ap.parse_args(argv)
    with_ = folders(args.with_, args.seeds, "keypoints-with-palette")
    control = folders(args.control, args.seeds, "keypoints-more")
    pipe = zc.load_sd()
    ipa = zoo.load_adapter("palette")
    load = lambda f: zc.ControlNet.from_pretrained(f).eval()  # noqa: E731
    # 1. the control arm's settings, chosen on validation scenes over the trained-with arm's grid
    val = zoo.test_set("keypoints", args.n, 64, seed=zoo.TEST_SEED + 1)
    tried = []
    for row in grid_rows(pipe, "control arm", load(control[0]), ipa, val, GRID["trained with"]):
        tried.append(row)
        print(f"validation: {({k: row[k] for k in SETTINGS})} joint {row['joint']:.3f}", flush=True)
    chosen = {k: best(tried, "control arm")[k] for k in SETTINGS}  # the first of equals, in the grid's order
    # 2. every seed of both arms on the held-out scenes, each at its arm's chosen settings
    test = zoo.test_set("keypoints", args.n)
    arms = {"trained with the adapter": (with_, dict(zoo.TUNED["trained with"])),
            "1,500 more steps without it": (control, chosen)}
    per = {name: [per_scene(pipe, load(f), ipa, test, s) for f in fs] for name, (fs, s) in arms.items()}
    cmd = f"$ python benchmarks/control_arm.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
    lines = [cmd, f"{_results.machine()}; TinySD; {args.n} held-out scenes, empty prompt, 20 DDIM steps, palette "
             "IP-Adapter beside each arm's keypoints ControlNet; seeds " + " ".join(map(str, args.seeds)), "",
             f"control arm's settings, chosen on {args.n} validation scenes over {len(tried)}: {chosen} "
             f"(trained with: {zoo.TUNED['trained with']})", "",
             f"{'arm':30s}" + "".join(f"{k:>28s}" for k in KEYS) + "   (mean [95% t over seeds])"]
    rows = [{"chosen": chosen, "validation": tried}]
    seed_means = {name: {k: [sum(r[k]) / len(r[k]) for r in runs] for k in KEYS} for name, runs in per.items()}
    for name, m in seed_means.items():
        s = {k: stats.difference_interval(m[k]) for k in KEYS}
        lines.append(f"{name:30s}" + "".join(f"{s[k]['mean']:12.3f} [{s[k]['low']:.3f}, {s[k]['high']:.3f}]"
                                             for k in KEYS))
        rows.append({"arm": name, "per_seed": m, "seeds": s})
    a, b = arms
    lines += ["", f"{a} minus {b}:"]
    for k in KEYS:
        welch = stats.welch_difference(seed_means[a][k], seed_means[b][k])
        scene_a = [sum(v) / len(v) for v in zip(*(r[k] for r in per[a]))]
        scene_b = [sum(v) / len(v) for v in zip(*(r[k] for r in per[b]))]
        by_scene = stats.difference_interval([x - y for x, y in zip(scene_a, scene_b)])
        state = claims.STATES["gain"]  # each interval's state by the gain rule (stats.interval_state)
        lines.append(f"  {k:18s} over seeds (Welch) {welch['mean']:+.3f} [{welch['low']:+.3f}, {welch['high']:+.3f}] "
                     f"{state[stats.interval_state(welch)]};  by scene {by_scene['mean']:+.3f} "
                     f"[{by_scene['low']:+.3f}, {by_scene['high']:+.3f}] {state[stats.interval_state(by_scene)]}")
        rows.append({"measure": k, "welch": welch, "by_scene": by_scene})
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
