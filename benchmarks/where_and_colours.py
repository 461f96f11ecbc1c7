"""Where + which colours with an empty prompt (issue #26): the keypoints ControlNet trained with the palette
IP-Adapter attached, over its training seeds, against each control alone, the two summed ControlNets
(paper §3.4) and the separately trained pair (keypoints ControlNet + IP-Adapter at zoo.IP_SCALE):

    scripts/train_zoo.sh keypoints-with-palette                    # seed 0, shipped
    SEED=1 scripts/train_zoo.sh keypoints-with-palette             # seeds 1, 2: runs/zoo/...-seed<k>
    SEED=2 scripts/train_zoo.sh keypoints-with-palette
    python benchmarks/where_and_colours.py                         # 64 held-out scenes, ~4 min

Every run sees the same held-out scenes, condition images and noise (zoo.composition), at CFG 5 and,
for the two designs that join the colours as tokens, also at the sampler settings chosen for each on
validation scenes (zoo.TUNED, benchmarks/where_and_colours_settings.py). joint = mean over scenes of
keypoint hit x colour accuracy (0 for TinySD alone, 1 at the ceiling). The trained-with design: the
mean over its seeds with a 95% t-interval over the seeds (each seed's joint on the scenes); its
per-scene mean over seeds minus each baseline, paired by scene (95% t over the scenes: the baselines
are one trained network each). Writes benchmarks/results/cpu/zoo/where_and_colours.txt / .json.
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

TARGET = 0.5  # issue #26: joint success >= 0.5
KEYS = ("keypoint_accuracy", "colour_accuracy", "joint")


def seeds_summary(rows: list[dict]) -> dict:
    """{measure: {mean, low, high, seeds}} over the trained-with rows (one per training seed)."""
    return {k: stats.difference_interval([r[k] for r in rows]) for k in KEYS}


def paired(mine: list[dict], other: dict) -> dict:
    """{measure: {mean, low, high}}: the trained-with rows' per-scene mean over seeds minus `other`'s, by scene."""
    out = {}
    for k in KEYS:
        per_scene = [sum(v) / len(v) for v in zip(*(r["per_item"][k] for r in mine))]
        out[k] = stats.difference_interval([a - b for a, b in zip(per_scene, other["per_item"][k])])
    return out


def verdict(summary: dict, target: float = TARGET) -> str:
    j = summary["joint"]
    if j["low"] >= target:
        return f"met: the whole interval over seeds is at or above {target}"
    if j["mean"] >= target:
        return f"mean at or above {target}, but the interval over seeds reaches below it"
    return f"not met: mean below {target}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained", nargs="*", default=None,
                    help="ControlNet folders trained with the palette IP-Adapter (default: the shipped one and "
                         "runs/zoo/keypoints-with-palette-seed1, -seed2 where present)")
    ap.add_argument("--n", type=int, default=64, help="held-out scenes")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps")
    ap.add_argument("--out", default="benchmarks/results/cpu/zoo/where_and_colours.txt")
    args = ap.parse_args(argv)
    trained = args.trained
    if trained is None:
        trained = [str(zoo.with_adapter_folder())] + [f"runs/zoo/keypoints-with-palette-seed{k}/controlnet"
                                                     for k in (1, 2)]
        trained = [t for t in trained if (Path(t) / "config.json").is_file()]
    for t in trained:
        if not (Path(t) / "config.json").is_file():
            raise FileNotFoundError(f"no ControlNet in {t}: train it with scripts/train_zoo.sh keypoints-with-palette")
    if not trained:
        raise FileNotFoundError("no ControlNet trained with the palette IP-Adapter: scripts/train_zoo.sh "
                                "keypoints-with-palette")
    pipe = zc.load_sd()
    rows = zoo.composition(pipe, n=args.n, steps=args.steps, trained_with=trained, per_item=True)
    test = zoo.test_set("keypoints", args.n)  # the scenes composition sampled: their own images are the ceiling
    m = conditions.measure(test.targets.float() / 255, test.scenes, per_item=True)
    per = {"keypoint_accuracy": m["keypoint_accuracy"], "colour_accuracy": m["colour_accuracy"], "joint": zoo.joint_items(m)}
    rows.append({"run": "ground truth (ceiling)", **{k: sum(v) / args.n for k, v in per.items()}, "per_item": per})
    ours = [r for r in rows if r["run"].startswith("keypoints trained with")]
    groups = {"at CFG 5, control 1, λ 1 (as trained)": [r for r in ours if not r["run"].endswith(", tuned")],
              f"tuned ({zoo.TUNED['trained with']})": [r for r in ours if r["run"].endswith(", tuned")]}
    cmd = f"$ python benchmarks/where_and_colours.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
    lines = [cmd, f"{_results.machine()}; TinySD; {args.n} held-out scenes, empty prompt, {args.steps} DDIM steps, "
             f"CFG 5 unless tuned (zoo.TUNED, chosen on validation scenes); trained with: "
             f"{', '.join(os.path.relpath(t) for t in trained)}", "",
             f"{'run':52s}{'keypoint acc.':>14s}{'colour acc.':>12s}{'joint':>7s}  joint 95% (scenes)"]
    out_rows = []
    for r in rows:  # the table's rows; stored without the per-scene lists, with the joint's interval over the scenes
        j = stats.difference_interval(r["per_item"]["joint"])
        lines.append(f"{r['run']:52s}{r['keypoint_accuracy']:14.3f}{r['colour_accuracy']:12.3f}{r['joint']:7.3f}"
                     f"  [{j['low']:.3f}, {j['high']:.3f}]")
        out_rows.append({**{k: v for k, v in r.items() if k != "per_item"}, "joint_low": j["low"], "joint_high": j["high"]})
    baselines = [r for r in rows if r not in ours and r["run"] not in ("TinySD alone", "ground truth (ceiling)")]
    for label, mine in groups.items():
        s = seeds_summary(mine)
        lines += ["", f"trained with the IP-Adapter, {label}, over {len(mine)} training seed(s): mean [95% t over seeds]"]
        lines += [f"  {k:18s}{s[k]['mean']:.3f} [{s[k]['low']:.3f}, {s[k]['high']:.3f}]" for k in KEYS]
        lines += [f"  target joint >= {TARGET}: {verdict(s)}",
                  "  minus each baseline (its per-scene mean over seeds), paired by scene [95% t over scenes]:",
                  f"  {'baseline':50s}" + "".join(f"{k:>26s}" for k in KEYS)]
        out_rows.append({"group": label, "seeds": s, "verdict": verdict(s)})
        for r in baselines:
            d = paired(mine, r)
            out_rows.append({"group": label, "baseline": r["run"], "paired": d})
            lines.append(f"  {r['run']:50s}" + "".join(f"{d[k]['mean']:+8.3f} [{d[k]['low']:+.3f}, {d[k]['high']:+.3f}]"
                                                     for k in KEYS))
    _results.write(args.out, lines, out_rows)


if __name__ == "__main__":
    main()
