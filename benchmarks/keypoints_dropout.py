"""Why prompt dropout 0% beats 50% on keypoints with no prompt (chapter 10): the sweep's trained keypoints
ControlNets, reference (50% of captions dropped) and "prompt dropout 0%", taken apart on the sweep's 32
held-out scenes under the empty and the full prompt:

- which keypoint is missed (centre or top), how far, and whether a shape is drawn at all;
- what the ControlNet puts into the UNet: the size of its residuals (mean |r| over every skip and the
  middle block, on the held-out conditions, noisy latents at t = 500) under the empty prompt and the
  full one: a ControlNet that speaks louder draws the dots' shape more firmly;
- sampled at conditioning scale 1 and 2: if a louder control is what the no-prompt score needs, the
  reference at scale 2 should close the gap.

    python benchmarks/keypoints_dropout.py --runs runs/ablations-zoo --seeds 0 1 2

Needs the sweep's run folders (scripts/ablation_sweep.sh keeps each run's controlnet/ there).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import _results  # benchmarks/_results.py
import torch

import zc
from zc.sample import sample
from zc.study import ablations, stats
from zc.world import conditions
from zc.world.pairs import PairedData

RUNS = {"ControlNet": "ControlNet", "prompt dropout 0%": "prompt_dropout_0%"}


@torch.no_grad()
def residual_size(pipe, cn, test, prompts, seed: int) -> float:
    """Mean |residual| over every ControlNet output, on noisy latents of the true images at t = 500."""
    g = torch.Generator().manual_seed(seed)
    x = test.targets.float() / 127.5 - 1  # (N, 3, H, W) in [-1, 1]
    z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    t = torch.full((len(z),), 500)
    zt = pipe.scheduler.add_noise(z, torch.randn(z.shape, generator=g), t)
    text = pipe.encode_prompt(prompts, zt.device, 1, False)[0]
    down, mid = cn(zt, t, text, test.conditions())
    return torch.cat([r.abs().flatten() for r in [*down, mid]]).mean().item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/ablations-zoo", help="the sweep's output folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=32, help="held-out scenes (the sweep's: 32, seed 777)")
    ap.add_argument("--out", default="benchmarks/results/cpu/ablations-zoo/keypoints_dropout.txt")
    ap.add_argument("--table-only", action="store_true", help="rewrite --out from its stored .json rows")
    args = ap.parse_args(argv)
    if args.table_only:
        stored = json.loads(Path(args.out).with_suffix(".json").read_text())
        _results.write(args.out, table(stored["rows"], stored["machine"], args.runs, args.n), stored["rows"])
        return
    pipe = zc.load_sd()
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    test = PairedData.generate(args.n, size=size, seed=777, split="test", condition="keypoints")
    tol = conditions.KEYPOINT_TOLERANCE * size / 64
    rows = []
    for name, folder in RUNS.items():
        for seed in args.seeds:
            path = Path(args.runs) / f"keypoints_{folder}_seed{seed}" / "controlnet"
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: run scripts/ablation_sweep.sh (keypoints, seed {seed}) first")
            cn = zc.ControlNet.from_pretrained(path).eval()
            for setting in ("none", "perfect"):
                prompts = ablations.prompt_setting(test.prompts, setting)
                loud = residual_size(pipe, cn, test, prompts, seed)
                for scale in (1.0, 2.0):
                    images = sample(pipe, cn, prompts, test.conditions(), num_inference_steps=20,
                                    conditioning_scale=scale, generator=torch.Generator().manual_seed(seed))
                    m = conditions.measure(images, test.scenes, per_item=True)
                    drawn = [e < size for e in m["centre_error"]]
                    rows.append(dict(run=name, seed=seed, prompt=setting, scale=scale, residual=loud,
                                     keypoint_accuracy=statistics.mean(m["keypoint_accuracy"]),
                                     centre_hit=statistics.mean(e <= tol for e in m["centre_error"]),
                                     top_hit=statistics.mean(e <= tol for e in m["top_error"]),
                                     centre_error=statistics.median(m["centre_error"]),
                                     top_error=statistics.median(m["top_error"]),
                                     drawn=statistics.mean(drawn),
                                     kind_accuracy=statistics.mean(m["kind_accuracy"])))
                    print(rows[-1], flush=True)
    lines = table(rows, _results.machine(), args.runs, args.n)
    _results.write(args.out, lines, rows)


def table(rows: list[dict], machine: str, runs: str, n: int) -> list[str]:
    """The stored text: what was run, a line per (run, seed, prompt, scale), then the summary."""
    seeds = " ".join(map(str, sorted({r["seed"] for r in rows})))
    head = (f"{'run':19s}{'seed':>5s}{'prompt':>9s}{'scale':>6s}{'|resid.|':>9s}{'kp acc':>8s}{'centre':>8s}"
            f"{'top':>6s}{'c err':>7s}{'t err':>7s}{'drawn':>7s}{'kind':>6s}")
    lines = ["Keypoints: reference (50% of captions dropped) vs prompt dropout 0%, taken apart",
             machine,
             f"python benchmarks/keypoints_dropout.py --runs {runs} --seeds {seeds} --n {n}; sweep held-out scenes"
             f" (seed 777), 20 DDIM steps, CFG 5; centre/top: share of keypoints within"
             f" {conditions.KEYPOINT_TOLERANCE:.0f} px; errors: medians in px; |resid.|: mean |ControlNet residual|"
             " at t = 500 under that prompt",
             "", head]
    for r in rows:
        lines.append(f"{r['run']:19s}{r['seed']:5d}{r['prompt']:>9s}{r['scale']:6.1f}{r['residual']:9.4f}"
                     f"{r['keypoint_accuracy']:8.3f}{r['centre_hit']:8.3f}{r['top_hit']:6.3f}{r['centre_error']:7.1f}"
                     f"{r['top_error']:7.1f}{r['drawn']:7.2f}{r['kind_accuracy']:6.2f}")
    return lines + ["", *summary(rows)]


def summary(rows: list[dict]) -> list[str]:
    """Means over seeds with their 95% t-intervals, and the paired differences the chapter reads."""
    seeds = sorted({r["seed"] for r in rows})

    def cell(name, prompt, scale, key):  # one value per seed, in seed order: differences pair by seed
        by_seed = {r["seed"]: r[key] for r in rows if (r["run"], r["prompt"], r["scale"]) == (name, prompt, scale)}
        if sorted(by_seed) != seeds:
            raise ValueError(f"{name}, {prompt}, x{scale}: seeds {sorted(by_seed)}, need {seeds} to pair them")
        return [by_seed[s] for s in seeds]

    def fmt(x):
        m, h = stats.t_interval(x)
        return f"{m:.3f} [{m - h:.3f}, {m + h:.3f}]"

    out = [f"means over {len({r['seed'] for r in rows})} seeds, 95% t-intervals; differences paired by seed",
           f"{'prompt, measure, scale':28s}{'ControlNet (ref)':>24s}{'prompt dropout 0%':>24s}{'0% minus ref':>24s}"]
    label = {"residual": "|residual|", "keypoint_accuracy": "keypoint acc.", "top_hit": "top hit",
             "centre_hit": "centre hit"}
    for prompt in ("none", "perfect"):
        for key, scale in (("residual", 1.0), ("keypoint_accuracy", 1.0), ("keypoint_accuracy", 2.0),
                           ("top_hit", 1.0), ("centre_hit", 1.0)):
            a, b = cell("ControlNet", prompt, scale, key), cell("prompt dropout 0%", prompt, scale, key)
            out.append(f"{f'{prompt}, {label[key]}, x{scale:g}':28s}{fmt(a):>24s}{fmt(b):>24s}"
                       f"{fmt([y - x for x, y in zip(a, b)]):>24s}")
    for prompt in ("none", "perfect"):
        a2, b1 = cell("ControlNet", prompt, 2.0, "keypoint_accuracy"), cell("prompt dropout 0%", prompt, 1.0,
                                                                           "keypoint_accuracy")
        a1 = cell("ControlNet", prompt, 1.0, "keypoint_accuracy")
        out += [f"{prompt}, keypoint acc., reference x2 minus reference x1:  {fmt([y - x for x, y in zip(a1, a2)])}",
                f"{prompt}, keypoint acc., dropout 0% x1 minus reference x2: {fmt([y - x for x, y in zip(a2, b1)])}"]
    return out


if __name__ == "__main__":
    main()
