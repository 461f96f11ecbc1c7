"""The paper's ablations, rerun and measured: each run trains one ControlNet variant with zc.train
and measures condition fidelity under the paper's four prompt settings (Fig. 8a):

    none          ""                                        the condition alone
    insufficient  "circle"                                  what, not which colours
    conflicting   "<fill> square with <bg> background"      the text says square, the outline circle
    perfect       "<fill> circle with <bg> background"      the full caption

Fidelity here must not depend on the prompt naming the colours, so the shape region is found
without them: pixels that differ from the image's border colour (its background) by more than
metrics.NEAR. IoU against the disc the outline implies.

    python -m zc.ablations --preset ci        # minutes on a CPU (the book runs it)
    python -m zc.ablations --preset cpu       # the full table on a CPU (about an hour)

Results are appended to <out>/results.csv one run at a time: a rerun skips the finished ones.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import metrics
from .fill50k import Fill50k, disc_masks
from .sample import sample
from .sd import load_sd
from .train import TrainConfig, train

PROMPTS = ("none", "insufficient", "conflicting", "perfect")


def prompt_setting(prompts: list[str], setting: str) -> list[str]:
    if setting == "none":
        return [""] * len(prompts)
    if setting == "insufficient":
        return ["circle"] * len(prompts)
    if setting == "conflicting":
        return [p.replace(" circle with ", " square with ") for p in prompts]
    if setting == "perfect":
        return list(prompts)
    raise ValueError(f"prompt setting must be one of {PROMPTS}, got {setting!r}")


def shape_regions(images: torch.Tensor, near: float = metrics.NEAR) -> torch.Tensor:
    """(B, H, W) bool: pixels unlike the image's border colour (its median), whatever the colours."""
    x = images.float().cpu().permute(0, 2, 3, 1)  # (B, H, W, 3)
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)  # (B, 4W, 3)
    bg = border.median(dim=1).values  # (B, 3)
    return (x - bg[:, None, None]).norm(dim=-1) > near


@dataclass
class Run:
    name: str  # row label in the table
    group: str  # which table it belongs to
    overrides: dict  # TrainConfig fields that differ from the preset's base


def runs_for(preset: str) -> tuple[dict, list[Run]]:
    """(base TrainConfig fields, runs) of a preset."""
    base = {"ci": dict(steps=400, batch=16, n_train=1000, eval_every=0, eval_n=8),
            "cpu": dict(steps=1500, batch=16, n_train=5000, eval_every=250, eval_n=16)}
    if preset not in base:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(base)}")
    runs = [Run("ControlNet", "architecture", {}),
            Run("ControlNet-lite", "architecture", {"architecture": "lite"}),
            Run("Gaussian-init convs", "zero convolution", {"zero_conv_init": "gaussian"})]
    if preset == "cpu":
        runs += [Run("condition added directly", "architecture", {"architecture": "direct"}),
                 Run("prompt dropout 0%", "prompt dropout", {"empty_prompt_prob": 0.0}),
                 Run("1k pairs", "dataset size", {"n_train": 1000}),
                 Run("only_mid_control", "speed", {"only_mid_control": True}),
                 Run("sd_locked=False", "speed", {"sd_locked": False})]
    return base[preset], runs


def measure(pipe, controlnet, test: Fill50k, seed: int, steps: int = 20, **sample_kw) -> dict[str, float]:
    """IoU (colour-agnostic) under each prompt setting."""
    cond = torch.stack([test[i]["conditioning"] for i in range(len(test))])
    discs = disc_masks(test.sources)
    out = {}
    for setting in PROMPTS:
        images = sample(pipe, controlnet, prompt_setting(test.prompts, setting), cond, num_inference_steps=steps,
                        generator=torch.Generator().manual_seed(seed), **sample_kw)
        out[setting] = metrics.iou(shape_regions(images), discs).mean().item()
    return out


def run_all(preset: str = "ci", out: str = "runs/ablations", seeds: tuple[int, ...] = (0,), sd: str | None = None,
            n_test: int = 16) -> Path:
    """Train and measure every run of `preset` for each seed; append rows to out/results.csv."""
    from tqdm.auto import tqdm

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "results.csv"
    done = set()
    if table.is_file():
        with open(table) as f:
            done = {(r["name"], int(r["seed"])) for r in csv.DictReader(f)}
    base, runs = runs_for(preset)
    pipe = load_sd(sd)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    test = Fill50k.generate(n_test, size=size, seed=777, split="test")
    fields = ["name", "group", "seed", "steps", "train_seconds", "sec_per_step", "final_loss", *PROMPTS, "machine"]
    todo = [(r, s) for r in runs for s in seeds if (r.name, s) not in done]
    for run, seed in tqdm(todo, desc=f"ablations ({preset})"):
        cfg = TrainConfig(**{**dataclasses.asdict(TrainConfig()), **base, **run.overrides, "seed": seed,
                             "sd": sd or "tinysd", "out": str(out_dir / f"{run.name.replace(' ', '_')}_seed{seed}")})
        pipe = load_sd(sd)  # fresh: sd_locked=False changes the UNet
        t0 = time.time()
        result = train(cfg, pipe=pipe)
        seconds = time.time() - t0
        iou = measure(pipe, result.controlnet.eval(), test, seed)  # the pipe it trained with (its decoder, if unlocked)
        losses = [h["loss"] for h in result.history if "loss" in h]
        row = {"name": run.name, "group": run.group, "seed": seed, "steps": cfg.steps, "train_seconds": round(seconds, 1),
               "sec_per_step": round(seconds / cfg.steps, 4), "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 5),
               **{k: round(v, 4) for k, v in iou.items()},
               "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"}
        new = not table.is_file()
        with open(table, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            if new:
                w.writeheader()
            w.writerow(row)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m zc.ablations", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ci", choices=["ci", "cpu"])
    ap.add_argument("--out", default="runs/ablations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--sd", default=None, help="SD to control (default: $ZC_SD or TinySD)")
    args = ap.parse_args(argv)
    print(run_all(args.preset, args.out, tuple(args.seeds), args.sd).read_text())


if __name__ == "__main__":
    main()
