"""The paper's ablations, rerun and measured: each run trains one ControlNet variant with zc.train
and measures condition fidelity under the paper's four prompt settings (Fig. 8a):

    none          ""                                        the condition alone
    insufficient  "circle"                                  what, not which colours
    conflicting   "<fill> square with <bg> background"      the text says square, the outline circle
    perfect       "<fill> circle with <bg> background"      the full caption

Fidelity here must not depend on the prompt naming the colours, so the shape region is found
without them: pixels that differ from the image's border colour (its background) by more than
metrics.NEAR. IoU against the disc the outline implies.

    python -m zc.study.ablations --preset ci                  # minutes on a CPU (the book runs it)
    python -m zc.study.ablations --preset cpu --seeds 0 1 2   # the full table on a CPU (about an hour a seed)

Results are appended to <out>/results.csv (one row per run) and <out>/curves.csv (fidelity during
training) one run at a time: a rerun skips the finished ones, so an interrupted sweep loses at
most the run it was in. The figures are written beside them.

Two more tables need no training of their own, only the shipped fill50k ControlNet:
guidance_table (CFG vs CFG-RW vs guess mode) and transfer_table (the ControlNet applied
unchanged to a fine-tuned TinySD, the paper's community-model transfer).
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

from .. import designs
from ..sample import sample
from ..sd import image_size, precision
from ..sd3 import load_base
from ..train import TrainConfig, train
from ..training_utils import hide_bar, pick_device
from ..world import conditions, metrics, shapes
from ..world.conditions import shape_regions
from ..world.pairs import PairedData, disc_masks
from .stats import (
    SETTINGS,
    read_csv,
    summarize,
    t_interval,
)
from .sweep_report import format_table, plot_curves, plot_settings

__all__ = ["PROMPTS", "CONFLICT", "prompt_setting", "shading_score", "Run", "PRESETS", "runs_for",
    "measure", "forgetting", "run_all", "references", "GUIDANCE", "guidance_table", "conflicting_scenes",
    "conflict_geometry", "transfer_table", "main"]

PROMPTS = SETTINGS  # the prompt settings of every measurement (zc.study.stats)
CONFLICT = {"circle": "square", "square": "circle", "triangle": "diamond", "diamond": "triangle"}


def _kind(prompt: str) -> str:
    """The shape word of "<fill> <kind> with <background> background"."""
    return prompt.partition(" with ")[0].rsplit(" ", 1)[-1]


def prompt_setting(prompts: list[str], setting: str) -> list[str]:
    """The paper's four prompt settings (Fig. 8a) for captions of the shapes world: none (""),
    insufficient (the kind alone: "circle"), conflicting (another kind: circle <-> square,
    triangle <-> diamond), perfect (the caption)."""
    if setting == "none":
        return [""] * len(prompts)
    if setting == "insufficient":
        return [_kind(p) for p in prompts]
    if setting == "conflicting":
        return [p.replace(f" {_kind(p)} with ", f" {CONFLICT.get(_kind(p), 'square')} with ", 1) for p in prompts]
    if setting == "perfect":
        return list(prompts)
    raise ValueError(f"prompt setting must be one of {PROMPTS}, got {setting!r}")


def shading_score(images: torch.Tensor) -> torch.Tensor:
    """Per image: how much darker the lower half of the drawn shape (shape_regions) is than its
    upper half, (upper - lower) / upper in mean RGB brightness. ~0 for flat fills, ~0.35 for the
    "shaded" style (lit from above), so it tells whether a model's style survives the control."""
    shape = shape_regions(images)  # (B, H, W)
    rows = torch.arange(shape.shape[1])[None, :, None].float()  # (1, H, 1)
    centre = (shape * rows).flatten(1).sum(1) / shape.flatten(1).sum(1).clamp(min=1)  # (B,) the shape's centre row
    upper = shape & (rows < centre[:, None, None])
    lower = shape & (rows >= centre[:, None, None])
    light = images.float().cpu().mean(1)  # (B, H, W)
    mean = lambda m: (light * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)  # noqa: E731
    return (mean(upper) - mean(lower)) / mean(upper).clamp(min=0.1)


@dataclass
class Run:
    name: str  # row label in the table
    group: str  # which question it answers
    overrides: dict  # TrainConfig fields that differ from the preset's base


PRESETS = {  # base TrainConfig fields, and how many held-out outlines measure each finished run
    # ci: chapter 10's live demonstration, ~1.5 min on 2 CPU cores (batch 8; its curve: 3 points, 10 sampler steps)
    "ci": (dict(steps=300, batch=8, n_train=1000, eval_every=100, eval_dense=False, eval_n=8, eval_steps=10), 8),
    "cpu": (dict(steps=1000, batch=16, n_train=5000, eval_every=250, eval_n=16), 32),
    # sd3: chapter 14's sweep on TinySD3, the cpu preset's protocol with a denser curve (sudden convergence)
    "sd3": (dict(sd="tinysd3", steps=1000, batch=16, n_train=5000, eval_every=100, eval_n=16), 32),
}


def runs_for(preset: str) -> tuple[dict, list[Run]]:
    """(base TrainConfig fields, runs) of a preset. The reference ControlNet (designs.REFERENCE) is what
    every group compares with; the training choices it is run with are listed here, the other designs'
    runs come from the registry (each design's SweepRun, in its own module), grouped as below."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")

    def of(group):  # the registered designs' runs of one group in this preset
        return [Run(d.name + r.suffix, group, {"architecture": d.architecture, **r.train})
                for d, r in designs.in_sweep(group, preset)]

    if preset == "sd3":  # the transformer's ControlNet and its variants: the first is the reference
        return PRESETS[preset][0], of("transformer")
    runs = [Run(designs.REFERENCE, "reference", {}), *of("architecture")[:1],
            Run("Gaussian-init convs", "zero convolution", {"zero_conv_init": "gaussian"})]
    if preset == "ci":  # live in chapter 10, a few minutes on 2 CPU cores: the reference and one variant
        runs = runs[:2]
    if preset == "cpu":
        runs += [*of("architecture")[1:],
                 Run("prompt dropout 0%", "prompt dropout", {"empty_prompt_prob": 0.0}),
                 Run("1k pairs", "dataset size", {"n_train": 1000}),
                 Run("50k pairs", "dataset size", {"n_train": 50000}),
                 Run("only_mid_control", "speed", {"only_mid_control": True}),
                 Run("sd_locked=False", "speed", {"sd_locked": False}),
                 Run("from scratch", "locked copy", {"copy_weights": False}),
                 Run("from scratch, 1k pairs", "locked copy", {"copy_weights": False, "n_train": 1000}),
                 *of("locked copy"),
                 # after ControlNet: beside the same locked UNet, same data, steps and scenes
                 *of("successors")]
    return PRESETS[preset][0], runs


def measure(pipe, controlnet, test: PairedData, seed: int, steps: int = 20, **sample_kw) -> dict[str, float]:
    """The test set's condition score (conditions.measure, e.g. shape IoU for outlines) under each
    prompt setting; none of them depends on the prompt's colours."""
    cond, key = test.conditions(), conditions.get(test.condition).score
    control = designs.sample_kwargs(controlnet, cond)  # a ControlNet, an adapter or a branch (zc.designs)
    out = {}
    for setting in PROMPTS:
        images = sample(pipe, prompts=prompt_setting(test.prompts, setting), num_inference_steps=steps,
                        generator=torch.Generator().manual_seed(seed), **control, **sample_kw)
        out[setting] = conditions.measure(images, test.scenes)[key]
    return out


def forgetting(pipe, model=None, n: int = 32, seed: int = 0, steps: int = 20) -> dict[str, float]:
    """What the SD still does on its own after training: n held-out prompts of every kind, no control
    (a blank condition for a design with a UNet of its own, the fine-tuned one, which has no 'off').
    base_kind_accuracy: the drawn shape is the prompt's kind (conditions.kind_of); base_colour_accuracy:
    fill and background near the prompt's colours. A ControlNet leaves the locked SD as it was; a
    fine-tuned UNet may forget."""
    size = image_size(pipe)
    test = PairedData.generate(n, size=size, seed=4242, split="test", kinds=shapes.KINDS)
    own_unet = model is not None and designs.of(model).enter.alone
    cond = torch.zeros(n, 3, size, size) if own_unet else None
    images = sample(pipe, model if own_unet else None, test.prompts, cond, num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(seed))
    m = conditions.measure(images, test.scenes)
    kind = (conditions.kind_of(images) == test.scenes.kind).float().mean().item()
    return {"base_kind_accuracy": kind, "base_colour_accuracy": m["colour_accuracy"]}


def _append(path: Path, fields: list[str], rows: list[dict]) -> None:
    new = not path.is_file()
    if not new:
        with open(path) as f:
            header = f.readline().strip().split(",")
        if header != fields:
            raise ValueError(f"{path} was written with other columns ({header}); give this sweep another --out")
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerows(rows)


def run_all(preset: str = "ci", out: str = "runs/ablations", seeds: tuple[int, ...] = (0,), sd: str | None = None,
            n_test: int | None = None, condition: str = "outline", names: list[str] | None = None,
            device: str = "auto", overrides: dict | None = None, sample_steps: int = 20, n_forget: int = 32) -> Path:
    """Train and measure every run of `preset` (or only those in `names`) on `condition`, for each
    seed; append to out/results.csv and out/curves.csv. Finished (condition, run, seed) rows are
    skipped, so a rerun resumes an interrupted sweep. With an SD other than TinySD the runs take the
    sd15 preset's memory settings (batch 4, gradient checkpointing, bf16/fp16 on a GPU). `overrides`:
    TrainConfig fields set for every run (e.g. fewer steps for a rehearsal); sample_steps: sampler steps
    of the final measurements; n_forget: held-out prompts of forgetting()."""
    from tqdm.auto import tqdm

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, curves = out_dir / "results.csv", out_dir / "curves.csv"
    done = {(r.get("condition", "outline"), r["name"], int(r["seed"])) for r in read_csv(table)} if table.is_file() else set()
    base, runs = runs_for(preset)
    sd = sd or base.get("sd")
    if sd and sd not in ("tinysd", "tinysd3"):  # SD 1.5 scale: what fits a 16 GB GPU
        base = {**base, "batch": 4, "gradient_checkpointing": True, "mixed_precision": precision(device)}
    base = {**base, **(overrides or {})}
    if names:
        unknown = set(names) - {r.name for r in runs}
        if unknown:
            raise ValueError(f"no run named {sorted(unknown)} in preset {preset!r}: {[r.name for r in runs]}")
        runs = [r for r in runs if r.name in names]
    key = conditions.get(condition).score
    n_test = n_test or PRESETS.get(preset, (None, 16))[1]
    on = pick_device(device)  # where train() runs
    pipe = load_base(sd, device=on)
    size = image_size(pipe)
    test = PairedData.generate(n_test, size=size, seed=777, split="test", condition=condition)
    fields = ["condition", "score", "name", "group", "seed", "steps", "n_train", "train_seconds", "sec_per_step",
              "final_loss", *PROMPTS, "base_kind_accuracy", "base_colour_accuracy", "machine"]
    todo = [(r, s) for s in seeds for r in runs if (condition, r.name, s) not in done]  # seed by seed
    base_alone = {}  # seed -> forgetting() of the untouched SD: the same for every locked run of a seed
    for run, seed in tqdm(todo, desc=f"ablations ({preset}, {condition})", **hide_bar()):
        cfg = TrainConfig(**{**dataclasses.asdict(TrainConfig()), **base, **run.overrides, "seed": seed,
                             "condition": condition, "sd": sd or "tinysd", "device": device,
                             "out": str(out_dir / f"{condition}_{run.name.replace(' ', '_')}_seed{seed}")})
        cfg.cache = str(out_dir / f"cache_{condition}_{cfg.n_train}_seed{seed}")  # one per data set: encoded once
        pipe = load_base(sd, device=on)  # fresh: sd_locked=False changes the UNet
        t0 = time.time()
        result = train(cfg, pipe=pipe)
        seconds = time.time() - t0
        score = measure(pipe, result.module.eval(), test, seed, steps=sample_steps)  # the pipe it trained with (its decoder, if unlocked)
        if cfg.sd_locked and not designs.of(result.module).enter.alone:  # the SD as loaded: what it does alone
            if seed not in base_alone:
                base_alone[seed] = forgetting(pipe, n=n_forget, seed=seed, steps=sample_steps)
            score.update(base_alone[seed])
        else:  # the SD itself trained: what does it still do alone?
            score.update(forgetting(pipe, result.module, n=n_forget, seed=seed, steps=sample_steps))
        losses = [h["loss"] for h in result.history if "loss" in h]
        _append(curves, ["condition", "name", "seed", "step", "score", "shape_iou", "fill_accuracy"],
                [{"condition": condition, "name": run.name, "seed": seed, "step": h["step"], "score": round(h[key], 4),
                  "shape_iou": round(h["shape_iou"], 4), "fill_accuracy": round(h["fill_accuracy"], 4)}
                 for h in result.history if key in h])
        _append(table, fields, [{
            "condition": condition, "score": key, "name": run.name, "group": run.group, "seed": seed,
            "steps": cfg.steps, "n_train": cfg.n_train, "train_seconds": round(seconds, 1),
            "sec_per_step": round(result.step_seconds / cfg.steps, 4),
            "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 5), **{k: round(v, 4) for k, v in score.items()},
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"}])
    return table


NO_CONTROL, CEILING = "no control (SD alone)", "ceiling (training renders)"


def references(condition: str, seeds=(0, 1, 2), n_test: int = 32, sd: str | None = None, steps: int = 20) -> list[dict]:
    """What every sweep score sits between, on the sweep's own held-out scenes and protocol (run_all):
    the SD with no ControlNet under each prompt setting, sampled with each run seed (the no-control
    baseline), and the training renders themselves scored by the same measure (the ceiling, the
    same under every prompt). Rows in results.csv's form (name, seed, the four settings)."""
    pipe = load_base(sd)
    size = image_size(pipe)
    test = PairedData.generate(n_test, size=size, seed=777, split="test", condition=condition)
    key = conditions.get(condition).score
    ceiling = conditions.measure(shapes.render(test.scenes, size), test.scenes)[key]
    rows = []
    for seed in seeds:
        rows.append({"condition": condition, "score": key, "name": NO_CONTROL, "group": "bounds", "seed": seed,
                     **{k: round(v, 4) for k, v in measure(pipe, None, test, seed, steps=steps).items()}})
        rows.append({"condition": condition, "score": key, "name": CEILING, "group": "bounds", "seed": seed,
                     **{p: round(ceiling, 4) for p in PROMPTS}})
    return rows


# --- summaries and figures ---------------------------------------------------------------------


# --- tables that reuse one trained ControlNet -----------------------------------------------------
GUIDANCE = {"CFG": {}, "CFG-RW": {"cfg_rw": True}, "guess mode": {"guess_mode": True}}


def guidance_table(pipe, controlnet, test: PairedData, seeds=(0, 1, 2), steps: int = 20, guidance_scale: float = 5.0):
    """CFG vs CFG-RW vs guess mode with no prompt and the full prompt: IoU (mean, 95% t half-width
    and the per-seed values, so two modes can be compared paired by seed) and, with the full
    prompt, fill colour accuracy, over sampling seeds."""
    from ..world.fidelity import condition_fidelity

    cond = test.conditions()
    discs = disc_masks(test.sources)
    rows = []
    for mode, kw in GUIDANCE.items():
        for setting in ("none", "perfect"):
            ious, fills = [], []
            for seed in seeds:
                images = sample(pipe, controlnet, prompt_setting(test.prompts, setting), cond, num_inference_steps=steps,
                                guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed), **kw)
                ious.append(metrics.iou(shape_regions(images), discs).mean().item())
                if setting == "perfect":
                    fills.append(condition_fidelity(images, test)["fill_accuracy"])
            mean, half = t_interval(ious)
            rows.append({"mode": mode, "prompt": setting, "seeds": len(seeds), "shape_iou": mean,
                         "shape_iou_ci": half, "shape_iou_by_seed": ious,  # paired by sampling seed across modes
                         "fill_accuracy": sum(fills) / len(fills) if fills else float("nan")})
    return rows


def conflicting_scenes(scenes: shapes.Scenes) -> shapes.Scenes:
    """The scenes with the conflicting prompt's kind (CONFLICT) at the same place, size and colours."""
    other = torch.tensor([shapes.KINDS.index(CONFLICT[shapes.KINDS[k]]) for k in scenes.kind.tolist()],
                         device=scenes.kind.device)
    return dataclasses.replace(scenes, kind=other)


def conflict_geometry(images: torch.Tensor, scenes: shapes.Scenes) -> dict[str, float]:
    """What images drawn under the conflicting prompt show (chapter 10): the share drawn as the
    prompt's kind (conditions.kind_of), the drawn area over the condition's shape area, and the IoU
    with the condition's shape, beside two references computed on the same scenes: the prompt's
    kind at the same centre and radius (what TinySD draws for that kind), and at the centre with
    the drawn area (a shape that obeys place and size but not the outline's kind)."""
    scenes = scenes.to("cpu")
    size = images.shape[-1]
    truth = shapes.coverage(scenes, size) > 0.5
    drawn = shape_regions(images)
    other = conflicting_scenes(scenes)
    area = drawn.flatten(1).float().sum(1) / truth.flatten(1).float().sum(1).clamp(min=1)  # (B,)
    per_r2 = torch.tensor([conditions.AREA[shapes.KINDS[k]] / conditions.AREA[shapes.KINDS[o]]
                           for k, o in zip(scenes.kind.tolist(), other.kind.tolist())])  # equal-area radius^2 scale

    def ghost(scale: torch.Tensor | float) -> torch.Tensor:  # (B, H, W) the prompt's kind, centred on the scene
        return shapes.coverage(dataclasses.replace(other, radius=other.radius * scale), size) > 0.5

    return {"prompt_kind_share": (conditions.kind_of(images) == other.kind).float().mean().item(),
            "area_ratio": area.mean().item(),
            "iou": metrics.iou(drawn, truth).mean().item(),
            "iou_same_radius": metrics.iou(ghost(1.0), truth).mean().item(),
            "iou_same_area": metrics.iou(ghost((per_r2 * area).sqrt()), truth).mean().item()}


def transfer_table(pipes: dict, controlnet, test: PairedData, seed: int = 0, steps: int = 20):
    """The same ControlNet on several SDs (e.g. TinySD and its fine-tuned variant), full prompt.
    Returns (rows, images): IoU, fill accuracy and shading score with and without the ControlNet."""
    from ..world.fidelity import condition_fidelity

    cond = test.conditions()
    discs = disc_masks(test.sources)
    rows, images = [], {}
    for sd_name, pipe in pipes.items():
        for cn_name, cn in (("none", None), (designs.REFERENCE, controlnet)):
            x = sample(pipe, cn, test.prompts, cond if cn is not None else None, num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(seed))
            images[sd_name, cn_name] = x
            rows.append({"sd": sd_name, "controlnet": cn_name,
                         "shape_iou": metrics.iou(shape_regions(x), discs).mean().item(),
                         "fill_accuracy": condition_fidelity(x, test)["fill_accuracy"],
                         "shading": shading_score(x).mean().item()})
    return rows, images


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m zc.study.ablations", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ci", choices=sorted(PRESETS))
    ap.add_argument("--out", default="runs/ablations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--conditions", nargs="+", default=["outline"], help="conditions.py names, one sweep each")
    ap.add_argument("--runs", nargs="+", default=None, help="only these run names of the preset")
    ap.add_argument("--sd", default=None, help="SD to control (default: $ZC_SD or TinySD)")
    ap.add_argument("--references", action="store_true",
                    help="write out/references.csv (no-control baseline and ceiling per condition, per seed) and stop")
    args = ap.parse_args(argv)
    if args.references:
        rows = [r for c in args.conditions for r in references(c, tuple(args.seeds), PRESETS[args.preset][1], args.sd)]
        Path(args.out).mkdir(parents=True, exist_ok=True)
        path = Path(args.out) / "references.csv"
        path.unlink(missing_ok=True)
        _append(path, ["condition", "score", "name", "group", "seed", *PROMPTS], rows)
        print(format_table(summarize(rows, PROMPTS)))
        return
    for condition in args.conditions:
        table = run_all(args.preset, args.out, tuple(args.seeds), args.sd, condition=condition, names=args.runs)
    import matplotlib
    matplotlib.use("Agg")
    rows = read_csv(table)
    summary = summarize(rows)
    print(format_table(summary))
    for condition in dict.fromkeys(r.get("condition", "outline") for r in rows):
        part = [s for s in summary if s["condition"] == condition]
        plot_settings(part, f"preset {args.preset}, {condition}").figure.savefig(
            Path(args.out) / f"settings_{condition}.png", dpi=120, bbox_inches="tight")
    curves = Path(args.out) / "curves.csv"
    if curves.is_file():
        plot_curves(read_csv(curves)).figure.savefig(Path(args.out) / "curves.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
