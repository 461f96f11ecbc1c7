"""Sampler settings for where + which colours, chosen on validation scenes (zoo.TEST_SEED + 1), never on the
held-out scenes of the tables: for each design, keypoint accuracy, colour accuracy and joint (hit x colour)
per adapter scale λ (zc/controls/ip_adapter.py), ControlNet conditioning scale and CFG guidance scale, empty prompt,
20 DDIM steps. The designs: the keypoints ControlNet beside the palette IP-Adapter, trained apart
("separate"), and the keypoints ControlNet trained with that adapter attached ("trained with",
zoo.with_adapter_folder). zoo.IP_SCALE and zoo.TUNED come from this table.

    python benchmarks/where_and_colours_settings.py      # 36 settings x 64 scenes, ~11 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402

import zc  # noqa: E402
from zc.sample import sample  # noqa: E402
from zc.study import zoo  # noqa: E402
from zc.world import conditions  # noqa: E402

GRID = {"separate": dict(ip_scale=[0.25, 0.5, 0.75, 1.0], conditioning_scale=[1.0, 1.5, 2.0], guidance_scale=[3.0, 5.0]),
        "trained with": dict(ip_scale=[0.5, 1.0], conditioning_scale=[1.0, 1.5, 2.0], guidance_scale=[3.0, 5.0])}


def best(rows: list[dict], design: str) -> dict:
    """The design's setting with the highest joint (the first of equals, in the grid's order)."""
    mine = [r for r in rows if r["design"] == design]
    if not mine:
        raise ValueError(f"no rows for {design!r}")
    return max(mine, key=lambda r: r["joint"])


def per_scene(pipe, net, ipa, scenes, settings: dict) -> dict[str, list[float]]:
    """One keypoints ControlNet beside the palette adapter on `scenes` (PairedData of keypoints), empty
    prompt, 20 DDIM steps, at settings {ip_scale, conditioning_scale, guidance_scale}: per scene keypoint
    accuracy, colour accuracy and joint (hit x colour)."""
    ipa.set_scale(settings["ip_scale"])
    x = sample(pipe, [(net.eval(), scenes.conditions()), (ipa, conditions.draw("palette", scenes.scenes, 64))],
               [""] * len(scenes), num_inference_steps=20, guidance_scale=settings["guidance_scale"],
               conditioning_scale=settings["conditioning_scale"], generator=torch.Generator().manual_seed(0))
    m = conditions.measure(x, scenes.scenes, per_item=True)
    return {"keypoint_accuracy": list(m["keypoint_accuracy"]), "colour_accuracy": list(m["colour_accuracy"]),
            "joint": zoo.joint_items(m)}


def grid_rows(pipe, design: str, net, ipa, scenes, grid: dict):
    """Each setting of `grid` (λ x control x CFG, in its order): a row of its mean scores on `scenes`."""
    for lam, cs, gs in itertools.product(*grid.values()):
        setting = {"ip_scale": lam, "conditioning_scale": cs, "guidance_scale": gs}
        m = per_scene(pipe, net, ipa, scenes, setting)
        yield {"design": design, **setting, **{k: sum(v) / len(v) for k, v in m.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="validation scenes")
    ap.add_argument("--out", default="benchmarks/results/cpu/zoo/where_and_colours_settings.txt")
    args = ap.parse_args(argv)
    if not (zoo.with_adapter_folder() / "config.json").is_file():
        raise FileNotFoundError(f"no {zoo.with_adapter_folder()}: scripts/train_zoo.sh keypoints-with-palette")
    pipe = zc.load_sd()
    val = zoo.test_set("keypoints", args.n, 64, seed=zoo.TEST_SEED + 1)
    nets = {"separate": zoo.load("keypoints"), "trained with": zc.ControlNet.from_pretrained(zoo.with_adapter_folder())}
    ipa = zoo.load_adapter("palette")
    lines = [f"$ python benchmarks/where_and_colours_settings.py --n {args.n}",
             f"{_results.machine()}; {args.n} validation scenes (seed {zoo.TEST_SEED + 1}), keypoints ControlNet "
             "(trained apart / trained with the adapter) + palette IP-Adapter, empty prompt, 20 DDIM steps", "",
             f"{'design':13s}{'λ':>6s}{'control':>8s}{'CFG':>5s}{'keypoint acc.':>15s}{'colour acc.':>12s}{'joint':>7s}"]
    rows = []
    for design, grid in GRID.items():
        for row in grid_rows(pipe, design, nets[design], ipa, val, grid):
            rows.append(row)
            lam, cs, gs = row["ip_scale"], row["conditioning_scale"], row["guidance_scale"]
            lines.append(f"{design:13s}{lam:6.2f}{cs:8.1f}{gs:5.1f}{row['keypoint_accuracy']:15.3f}"
                         f"{row['colour_accuracy']:12.3f}{row['joint']:7.3f}")
            print(lines[-1], flush=True)
    lines.append("")
    for design in GRID:
        b = best(rows, design)
        lines.append(f"best joint, {design}: {b['joint']:.3f} at λ {b['ip_scale']}, control {b['conditioning_scale']}, "
                     f"CFG {b['guidance_scale']} (zoo.TUNED)")
    plain = best([r for r in rows if r["conditioning_scale"] == 1.0 and r["guidance_scale"] == 5.0], "separate")
    lines.append(f"separate at control 1, CFG 5 (the zoo table's): best λ {plain['ip_scale']} (zoo.IP_SCALE)")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
