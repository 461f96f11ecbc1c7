"""Load a Stable Diffusion: the shipped TinySD by default, or any SD1.x diffusers folder / hub id.

    pipe = zc.load_sd()                                   # TinySD, offline, CPU
    pipe = zc.load_sd("tinysd-shaded")                    # its fine-tuned variant (a "community model")
    pipe = zc.load_sd("stable-diffusion-v1-5/stable-diffusion-v1-5", device="cuda", dtype=torch.float16)
    ZC_SD=/path/to/sd15 jupyter lab                       # every chapter switches with one variable

The result is a diffusers StableDiffusionPipeline: `.vae`, `.text_encoder`, `.tokenizer`, `.unet`,
`.scheduler` are the parts each chapter uses.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .resources import WEIGHTS

TINYSD = WEIGHTS / "tinysd"
SHIPPED = {  # names that load a folder shipped with zc
    "tinysd": TINYSD,  # pretrained on the shapes world by scripts/train_tinysd.sh
    "tinysd-shaded": WEIGHTS / "tinysd-shaded",  # TinySD fine-tuned to shade its shapes (scripts/train_tinysd.sh)
}
FILL50K_CONTROLNET = WEIGHTS / "fill50k-controlnet"  # a ControlNet trained on TinySD by benchmarks/fidelity_cpu.py


def sd_location(name_or_path: str | os.PathLike | None = None) -> str:
    """`name_or_path`, else $ZC_SD, else the shipped TinySD folder."""
    name = str(name_or_path or os.environ.get("ZC_SD") or "tinysd")
    return str(SHIPPED.get(name, name))


def looks_like_hub_id(name: str) -> bool:
    """'owner/name' with no path prefix: something to fetch from the hub rather than a local path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def load_sd(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32):
    from diffusers import StableDiffusionPipeline

    where = sd_location(name_or_path)
    local = Path(where).expanduser()
    if local.exists() and not (local / "model_index.json").is_file():
        raise FileNotFoundError(f"{local} is not a diffusers Stable Diffusion folder (no model_index.json)")
    if not local.exists() and not looks_like_hub_id(where):
        raise FileNotFoundError(f"no Stable Diffusion folder at {where!r}; give a diffusers folder or a hub id "
                                "like 'stable-diffusion-v1-5/stable-diffusion-v1-5'")
    pipe = StableDiffusionPipeline.from_pretrained(where, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
