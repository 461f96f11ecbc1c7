"""Condition fidelity: does the generated image put the fill colour where the outline says?

The paper's training curves famously do not show when a ControlNet starts to obey its condition
("sudden convergence"): the loss barely moves. So we measure what we want instead:

- IoU between the disc the outline implies and the region of the generated image whose colour is
  closer to the prompt's fill colour than to its background colour;
- colour accuracy of fill and background (metrics.colour_accuracy).
"""
from __future__ import annotations

import torch

from . import metrics, shapes
from .fill50k import Fill50k, disc_masks


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


def fill_regions(images: torch.Tensor, fill_rgb: torch.Tensor, bg_rgb: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels closer to the fill colour than to the background colour."""
    x = images.float().cpu().permute(0, 2, 3, 1)
    return (x - fill_rgb[:, None, None]).norm(dim=-1) < (x - bg_rgb[:, None, None]).norm(dim=-1)


def shape_regions(images: torch.Tensor, near: float = metrics.NEAR) -> torch.Tensor:
    """(B, H, W) bool: pixels unlike the image's border colour (its median), whatever the colours.

    Needs no prompt, so it measures "is the shape where the condition says" under an empty or a
    conflicting prompt too."""
    x = images.float().cpu().permute(0, 2, 3, 1)  # (B, H, W, 3)
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)  # (B, 4W, 3)
    bg = border.median(dim=1).values  # (B, 3)
    return (x - bg[:, None, None]).norm(dim=-1) > near


def condition_fidelity(images: torch.Tensor, data: Fill50k) -> dict:
    """Fidelity of generated `images` to the outlines and prompts of `data`, means over the batch:

    - shape_iou: colour-free IoU of shape_regions against the disc the outline implies;
    - iou: IoU of the pixels nearer the prompt's fill colour than its background colour (needs
      the prompt's colours; the metric of the stored training runs);
    - fill_accuracy / background_accuracy: metrics.colour_accuracy with the prompt's colours."""
    fill, bg = prompt_colours(data.prompts)
    discs = disc_masks(data.sources)
    iou = metrics.iou(fill_regions(images, fill, bg), discs)
    fill_acc, bg_acc = metrics.colour_accuracy(images.cpu(), fill, bg)
    return {"iou": iou.mean().item(), "shape_iou": metrics.iou(shape_regions(images), discs).mean().item(),
            "fill_accuracy": fill_acc.mean().item(), "background_accuracy": bg_acc.mean().item(), "iou_per_item": iou}


def sudden_convergence_step(history: list[dict], threshold: float = 0.7) -> int | None:
    """First evaluated step whose IoU reaches `threshold` and never falls below it afterwards."""
    steps = [h for h in history if "iou" in h]
    for i, h in enumerate(steps):
        if all(s["iou"] >= threshold for s in steps[i:]):
            return h["step"]
    return None


def plot_history(history: list[dict], threshold: float = 0.7, ax=None):
    """IoU and training loss against steps in one figure, the convergence step marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    losses = [h for h in history if "loss" in h]
    evals = [h for h in history if "iou" in h]
    ax.plot([h["step"] for h in losses], [h["loss"] for h in losses], color="0.7", lw=0.8, label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot([h["step"] for h in evals], [h["iou"] for h in evals], "o-", color="C3", label="condition IoU (held-out)")
    ax2.set_ylabel("IoU", color="C3")
    ax2.set_ylim(0, 1)
    step = sudden_convergence_step(history, threshold)
    if step is not None:
        ax2.axvline(step, color="C3", ls="--", lw=1)
        ax2.annotate(f"converged at step {step}", (step, threshold), xytext=(5, -15), textcoords="offset points", color="C3")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    return ax
