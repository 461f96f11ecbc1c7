"""What a chapter costs at SD 1.5 scale on a T4-, A100- and H100-class GPU.

One measurement anchors everything: zc's ControlNet training step on SD 1.5 (batch 4, bf16) on an
H100, 124 ms (benchmarks/results/h100/bench_sd15_bf16.txt). Other GPUs are estimated from it by their
peak dense fp16/bf16 tensor FLOP/s, i.e. assuming the same share of peak (MFU) on each card; sampling
is estimated from the same step: a training step is about three forward passes of UNet + ControlNet
per image (forward, and backward at twice the cost), a CFG sampler step two forward passes. Both
assume half precision, as the chapters use on a GPU (zc.sd.precision, zc.sd.inference_dtype): in
fp32 a T4 is about eight times slower still.

    print(budget.table(train_steps=5000, batch=4))          # chapter 6's default on SD 1.5
"""
from __future__ import annotations

import textwrap

__all__ = ["H100_STEP_S", "H100_STEP_BATCH", "PEAK_FLOPS", "MEASURED", "PEAK_BY_NAME", "peak_flops",
    "train_seconds", "sample_seconds", "table"]

H100_STEP_S = 0.124  # s per training step, batch 4, bf16, zc ControlNet on SD 1.5 (measured)
H100_STEP_BATCH = 4
PEAK_FLOPS = {  # dense fp16/bf16 tensor-core peak, vendor datasheets (T4 has no bf16: fp16)
    "T4 (16 GB)": 65e12,
    "A100 (40/80 GB)": 312e12,
    "H100 (80 GB)": 989e12,
}
MEASURED = {"H100 (80 GB)"}  # the rest: estimates
PEAK_BY_NAME = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12,
                "A10": 125e12, "V100": 125e12, "T4": 65e12}  # dense fp16/bf16 tensor peak (V100, T4: fp16 only)


def peak_flops(device_name: str) -> float | None:
    """The dense half-precision peak of a GPU from its name (torch.cuda.get_device_name()), or None."""
    return next((v for k, v in PEAK_BY_NAME.items() if k in device_name), None)


def train_seconds(steps: int, batch: int = 4, gpu: str = "H100 (80 GB)") -> float:
    """Optimiser steps alone (no evaluations), batch per step as given."""
    return steps * H100_STEP_S * (batch / H100_STEP_BATCH) * PEAK_FLOPS["H100 (80 GB)"] / PEAK_FLOPS[gpu]


def sample_seconds(images: int, steps: int = 20, gpu: str = "H100 (80 GB)", cfg: bool = True) -> float:
    """Sampler steps for `images` images (VAE decode and text encoding left out: a few % at 512 px)."""
    per_image_forward = H100_STEP_S / H100_STEP_BATCH / 3  # one forward of UNet + ControlNet, one image
    return images * steps * (2 if cfg else 1) * per_image_forward * PEAK_FLOPS["H100 (80 GB)"] / PEAK_FLOPS[gpu]


def table(train_steps: int = 0, batch: int = 4, images: int = 0, sample_steps: int = 20,
          evals: int = 0, eval_images: int = 16, checkpointing: bool = False) -> str:
    """One row per GPU: minutes of training (train_steps at `batch`, plus `evals` evaluations of
    eval_images images: count them from the run's config, zc.train.evaluations) and of sampling
    `images` images; 'measured' or 'estimate' per row, and under the table what is assumed.
    checkpointing: the run recomputes the copy's activations (the sd15 preset), which the measured
    step did not: the table then says its training minutes are a lower bound."""
    head = f"{'GPU':16s} {'train min':>10s} {'sample min':>11s}  basis"
    lines = [head]
    for gpu in PEAK_FLOPS:
        t = (train_seconds(train_steps, batch, gpu) + sample_seconds(evals * eval_images, sample_steps, gpu)) / 60
        s = sample_seconds(images, sample_steps, gpu) / 60
        basis = ("measured step time (training); sampling estimated from it" if gpu in MEASURED
                 else "estimate: H100 step x peak-FLOP ratio")
        lines.append(f"{gpu:16s} {t:10.1f} {s:11.1f}  {basis}")
    what = [f"{train_steps} training steps at batch {batch}" if train_steps else "",
            f"{evals} evaluations of {eval_images} images" if evals else "",
            f"{images} images sampled" if images else ""]
    lines.append(textwrap.fill(f"(SD 1.5, 512 px, {sample_steps} sampler steps with CFG; "
                               + ", ".join(w for w in what if w) + ")", 96))
    note = "(estimates assume each card reaches the H100 run's share of its peak FLOP/s, not measured"
    if checkpointing and train_steps:
        note += ("; the H100 step was timed without gradient checkpointing, which this run uses: its training "
                 "takes longer than shown")
    lines.append(textwrap.fill(note + ")", 96))
    return "\n".join(lines)
