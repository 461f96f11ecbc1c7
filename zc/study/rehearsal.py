"""A dress rehearsal of the GPU path on a stand-in SD (zc.sd.build_sd15_standin): SD 1.5's exact shapes
with random weights, run through the code chapters 6 to 10 use (loading, zc.train with its latent
cache and one evaluation, the sampler), stage by stage, with time and peak memory per stage.

    rows = rehearsal.run("sd15", device="cuda")      # chapter 11 on a GPU; scripts/gpu_check.sh
    rows = rehearsal.run("mini", device="cpu")       # the same cells in CI, at toy size

Peak memory: on CUDA the allocator's peak within the stage (torch.cuda.max_memory_allocated, reset
per stage); on a CPU the process's resident high-water mark, which only grows (run each stage in its
own process for per-stage peaks, as benchmarks/sd15_rehearsal.py does). Images are noise: no
fidelity is reported.
"""
from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch

from ..sd import image_size

__all__ = ["STAGES", "peak_gb", "stage", "run", "format_rows"]

STAGES = ("load", "train", "sample")


def peak_gb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def stage(name: str, sd: str, device: str = "cpu", pairs: int = 8, train_steps: int = 2, batch: int = 1,
          sample_steps: int = 2) -> dict:
    """One stage on the SD folder `sd`: a dict of what it measured (time, peak GB, shapes, s/step)."""
    from .. import train as zt
    from ..controlnet import ControlNet
    from ..sample import sample
    from ..sd import load_sd, precision
    from ..world.pairs import PairedData

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    out = {"stage": name}
    if name == "load":
        pipe = load_sd(sd, device=device)
        cn = ControlNet.for_pipeline(pipe)
        count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
        out.update(unet_m=round(count(pipe.unet)), controlnet_m=round(count(cn)), vae_factor=pipe.vae_scale_factor,
                   size=image_size(pipe), residuals=cn.num_residuals)
    elif name == "train":
        with tempfile.TemporaryDirectory() as run:
            cfg = zt.TrainConfig.preset("sd15", sd=sd, n_train=pairs, steps=train_steps, batch=batch,
                                        eval_every=train_steps, eval_n=1, eval_steps=2, checkpoint_every=10_000,
                                        mixed_precision=precision(device), device=device, out=run)
            r = zt.train(cfg)
        out.update(steps=train_steps, batch=batch, precision=cfg.mixed_precision,
                   s_per_step=round(r.step_seconds / train_steps, 3), gradient_checkpointing=cfg.gradient_checkpointing)
    elif name == "sample":
        pipe = load_sd(sd, device=device)
        cn = ControlNet.for_pipeline(pipe).eval()
        size = image_size(pipe)
        test = PairedData.generate(1, size=size, seed=0, split="test")
        t1 = time.time()
        sample(pipe, cn, test.prompts, test.conditions(), num_inference_steps=sample_steps,
               generator=torch.Generator().manual_seed(0))
        out.update(steps=sample_steps, s_per_step=round((time.time() - t1) / sample_steps, 3))
    else:
        raise ValueError(f"stage must be one of {STAGES}, got {name!r}")
    out.update(seconds=round(time.time() - t0, 1), peak_gb=round(peak_gb(device), 2))
    return out


def run(scale: str = "sd15", device: str = "cpu", folder: str | Path | None = None, **kw) -> list[dict]:
    """Build the stand-in of `scale` ("sd15": SD 1.5's shapes, ~2 GB on disk; "mini": toy size) in
    `folder` (default: a temporary folder) and run every stage in this process."""
    from ..sd import build_sd15_standin

    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder or Path(tmp) / f"standin-{scale}")
        if not (where / "model_index.json").is_file():
            build_sd15_standin(where, scale=scale, dtype=torch.float16 if scale == "sd15" else torch.float32)
        return [stage(name, str(where), device, **kw) for name in STAGES]


def format_rows(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        extra = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("stage", "seconds", "peak_gb"))
        lines.append(f"{r['stage']:7s} {r['seconds']:7.1f} s  peak {r['peak_gb']:6.2f} GB  {extra}")
    return "\n".join(lines)
