"""Condition fidelity: does the generated image follow its condition? And when did it start to?

The paper's training curves famously do not show when a ControlNet starts to obey its condition
("sudden convergence"): the loss is dominated by the noise it cannot predict. So we measure what we
want instead. `conditions.measure` scores images against the scenes they should show (generated
sets); `condition_fidelity` does the same for any outline set, loaded folders included, by
recovering the implied shape from the outline image itself:

- shape_iou: IoU of the drawn shape (the pixels unlike the border colour, no prompt needed) and the
  shape the condition implies;
- fill_accuracy / background_accuracy: metrics.colour_accuracy with the colours the prompt names.
"""
from __future__ import annotations

import torch

from . import metrics, shapes
from .conditions import measure, shape_regions
from .pairs import PairedData, disc_masks

__all__ = ["prompt_colours", "condition_fidelity", "convergence_step", "plot_history", "PERTURBATIONS",
    "perturbation", "lighting", "texture", "noise", "jpeg"]


def prompt_colours(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(fill, background) RGB of prompts "<fill> <shape> with <background> background"."""
    table = shapes.colour_table()
    fills, bgs = [], []
    for p in prompts:
        head, sep, tail = p.partition(" with ")
        if not sep or not tail.endswith(" background"):
            raise ValueError(f"prompt {p!r} is not '<colour> <shape> with <colour> background'")
        fills.append(shapes.colour_index(head.rsplit(" ", 1)[0]))
        bgs.append(shapes.colour_index(tail[: -len(" background")]))
    return table[fills], table[bgs]


def condition_fidelity(images: torch.Tensor, data: PairedData) -> dict:
    """Means over the batch: conditions.measure against data.scenes when they are known (generated
    sets, every condition); for a loaded outline folder, shape_iou against the outline's inside
    (disc_masks) and the colour accuracies of the prompts' colours."""
    if data.scenes is not None:
        return measure(images, data.scenes)
    fill, bg = prompt_colours(data.prompts)
    fill_acc, bg_acc = metrics.colour_accuracy(images.float().cpu(), fill, bg)
    return {"shape_iou": metrics.iou(shape_regions(images), disc_masks(data.sources)).mean().item(),
            "fill_accuracy": fill_acc.mean().item(), "background_accuracy": bg_acc.mean().item()}


def convergence_step(history: list[dict], key: str, baseline: float, final: float | None = None,
                     fraction: float = 0.7) -> int | None:
    """The book's one definition of when a ControlNet has learned its condition: the first evaluated
    step from which `key` stays at or above baseline + fraction x (final - baseline), where baseline
    is the no-control score (the SD alone on the same scenes) and final the run's last evaluation.
    Relative, so conditions with different measures and ceilings compare. None when the run never
    rose 0.1 above the baseline."""
    evals = [h for h in history if key in h]
    if not evals:
        return None
    final = evals[-1][key] if final is None else final
    if final - baseline < 0.1:
        return None
    bar = baseline + fraction * (final - baseline)
    for i, h in enumerate(evals):
        if all(e[key] >= bar for e in evals[i:]):
            return h["step"]
    return None


def plot_history(history: list[dict], baseline: float, ax=None, key: str = "shape_iou",
                 label: str = "shape IoU (held-out)", smooth: int = 50):
    """A fidelity score and the training loss against steps in one figure, the convergence step
    (convergence_step, from the no-control `baseline` on the same scenes) marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    losses = [h for h in history if "loss" in h]
    evals = [h for h in history if key in h]
    steps, loss = [h["step"] for h in losses], torch.tensor([h["loss"] for h in losses])
    ax.plot(steps, loss, color="0.8", lw=0.6, label="training loss")
    if len(loss) > 2 * smooth:  # a moving average shows the trend under the per-batch noise
        avg = torch.nn.functional.avg_pool1d(loss[None, None], smooth, stride=1)[0, 0]
        ax.plot(steps[smooth // 2: smooth // 2 + len(avg)], avg, color="0.3", lw=1.2,
                label=f"loss, mean of {smooth} steps")
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel("loss", fontsize=9)
    ax2 = ax.twinx()
    ax2.plot([h["step"] for h in evals], [h[key] for h in evals], "o-", color="C3", label=label)
    ax2.set_ylabel(label, color="C3", fontsize=9)
    ax2.set_ylim(0, 1)
    step = convergence_step(history, key, baseline)
    if step is not None:
        ax2.axvline(step, color="C3", ls="--", lw=1)
        ax2.set_zorder(ax.get_zorder() + 1)  # the score's axis, and its label, in front of the loss trace
        ax2.patch.set_visible(False)
        ax2.annotate(f"converged at step {step}", (step, 0.6), xytext=(4, 0), textcoords="offset points",
                     ha="left", va="center", fontsize=8, color="C3",
                     bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
    (h1, l1), (h2, l2) = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)  # one key, on the axis in front
    return ax


# --- images that are not flat renders -------------------------------------------------------------
# The measures were built on TinySD's flat renders; SD 1.5 draws light, texture and compression. Each
# perturbation turns the ground-truth render into such an image at a strength in [0, 1] (0 = as is),
# so the measures can be checked against a known answer (benchmarks/fidelity_robustness.py).
PERTURBATIONS: dict = {}


def perturbation(name: str):
    def register(fn):
        PERTURBATIONS[name] = fn
        return fn
    return register


@perturbation("lighting")
def lighting(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Light from the top: brightness falls by a share s from the top row to the bottom one, over
    the whole image (shape and background), as in SD's lit scenes (and TinySD-shaded's fills)."""
    y = (torch.arange(x.shape[-2]) + 0.5) / x.shape[-2]
    return x * (1 - s * y)[None, None, :, None]


@perturbation("texture")
def texture(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """A smooth random pattern (noise at 1/8 resolution, upsampled) of amplitude s, like paper or
    fabric: everywhere, on the shape and the background."""
    b, _, h, w = x.shape
    coarse = torch.randn(b, 3, max(h // 8, 1), max(w // 8, 1), generator=g)
    field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (x + s * field / 2).clamp(0, 1)


@perturbation("noise")
def noise(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Per-pixel Gaussian noise of standard deviation s/2 (sensor noise, sampling grain)."""
    return (x + s / 2 * torch.randn(x.shape, generator=g)).clamp(0, 1)


@perturbation("jpeg")
def jpeg(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """JPEG compression at quality 100 - 95 s (s = 1: quality 5, heavy blocks and ringing)."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for im in (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=max(int(round(100 - 95 * s)), 1))
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))))
    return torch.stack(out).permute(0, 3, 1, 2).float() / 255
