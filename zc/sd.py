"""Load a Stable Diffusion: the shipped TinySD by default, or any SD1.x diffusers folder / hub id.

    pipe = zc.load_sd()                                   # TinySD, offline, CPU
    pipe = zc.load_sd("tinysd-shaded")                    # its fine-tuned variant (a "community model")
    pipe = zc.load_sd("stable-diffusion-v1-5/stable-diffusion-v1-5", device="cuda", dtype=torch.float16)
    ZC_SD=/path/to/sd15 jupyter lab                       # every chapter switches with one variable

The result is a diffusers StableDiffusionPipeline: `.vae`, `.text_encoder`, `.tokenizer`, `.unet`,
`.scheduler` are the parts each chapter uses.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from .resources import WEIGHTS

__all__ = ["TINYSD", "SHIPPED", "FILL50K_CONTROLNET", "sd_location", "is_sd3_folder", "looks_like_hub_id", "image_size",
    "check_device", "precision", "BIG_ON_CPU", "inference_dtype", "load_sd", "SD15_UNET", "SD15_VAE",
    "SD15_TEXT", "build_sd15_standin"]

TINYSD = WEIGHTS / "tinysd"
SHIPPED = {  # names that load a folder shipped with zc
    "tinysd": TINYSD,  # pretrained on the shapes world by scripts/train_tinysd.sh
    "tinysd-shaded": WEIGHTS / "tinysd-shaded",  # TinySD fine-tuned to shade its shapes (scripts/train_tinysd.sh)
    "tinysd3": WEIGHTS / "tinysd3",  # an SD3 (MMDiT, flow matching) on the shapes world (scripts/train_tinysd3.sh)
}
FILL50K_CONTROLNET = WEIGHTS / "fill50k-controlnet"  # a ControlNet trained on TinySD by benchmarks/fidelity_cpu.py


def sd_location(name_or_path: str | os.PathLike | None = None) -> str:
    """`name_or_path`, else $ZC_SD, else the shipped TinySD folder."""
    name = str(name_or_path or os.environ.get("ZC_SD") or "tinysd")
    return str(SHIPPED.get(name, name))


def is_sd3_folder(where: str | os.PathLike) -> bool:
    """Whether `where` is a diffusers folder of a StableDiffusion3Pipeline (chapter 14's kind of base)."""
    index = Path(where).expanduser() / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name", "").startswith("StableDiffusion3")


def looks_like_hub_id(name: str) -> bool:
    """'owner/name' with no path prefix: something to fetch from the hub rather than a local path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def image_size(pipe) -> int:
    """The side in pixels of what this SD generates, and of every spatial condition it is given: the
    UNet's latent side times the VAE's downsampling factor (TinySD 16 x 4 = 64, SD 1.5 64 x 8 = 512)."""
    net = getattr(pipe, "transformer", None) or pipe.unet  # SD3: the transformer's latent side
    return net.config.sample_size * pipe.vae_scale_factor


def check_device(device: str | torch.device) -> None:
    """ValueError for a CUDA device this torch cannot reach (a Colab CPU runtime, a CPU build of torch),
    naming the switch, instead of torch's bare "Torch not compiled with CUDA enabled"."""
    if str(device) == "auto" or torch.device(device).type != "cuda" or torch.cuda.is_available():
        return
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    raise ValueError(f"device {str(device)!r} (ZC_DEVICE) but this torch sees no GPU (torch {torch.__version__}, "
                     f"{built}): on Colab pick Runtime > Change runtime type > a GPU; elsewhere install a CUDA "
                     "build of torch; or set ZC_DEVICE=cpu")


def precision(device: str | torch.device = "cpu") -> str:
    """The mixed precision a training run should use on `device`: "no" on a CPU (its half-precision
    kernels are slow or missing), "bf16" on a GPU that computes in it (compute capability 8.0 and up:
    A100, L4, H100), else "fp16" (T4 7.5, V100 7.0). Not torch.cuda.is_bf16_supported(): by default it
    also answers True where bf16 is only emulated (a T4), many times slower than fp16."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != "cuda":
        return "no"
    check_device(device)
    return "bf16" if torch.cuda.get_device_capability(torch.device(device)) >= (8, 0) else "fp16"


BIG_ON_CPU = 200_000_000  # UNet parameters above which a CPU run gets a warning (TinySD: 2.7M; SD 1.5: 860M)


def inference_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The precision to sample in: fp16 on a GPU (SD 1.5's usual, half the memory, tensor cores),
    fp32 on a CPU. zc.sample runs an fp32 ControlNet beside an fp16 SD."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def load_sd(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    from .training_utils import bars_off

    if bars_off():  # its "Loading pipeline components" bar is a notebook widget that ignores TQDM_DISABLE
        diffusers_logging.disable_progress_bar()
    where = sd_location(name_or_path)
    local = Path(where).expanduser()
    if is_sd3_folder(local):  # an SD3: the MMDiT base of chapter 14
        raise ValueError(f"{where} is an SD3 (an MMDiT transformer): load it with zc.sd3.load_sd3, or "
                         "zc.sd3.load_base for either kind")
    if local.exists() and not (local / "model_index.json").is_file():
        raise FileNotFoundError(f"{local} is not a diffusers Stable Diffusion folder (no model_index.json)")
    if not local.exists() and not looks_like_hub_id(where):
        raise FileNotFoundError(f"no Stable Diffusion folder at {where!r}; give a diffusers folder or a hub id "
                                "like 'stable-diffusion-v1-5/stable-diffusion-v1-5'")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(where, safety_checker=None, feature_extractor=None,
                                                       requires_safety_checker=False, dtype=dtype)
    except OSError as e:  # 'runs/sd15' read as a hub id: diffusers' message does not say it was a path too
        if local.exists():
            raise
        raise FileNotFoundError(
            f"{where!r} is not a folder here (relative paths start at {Path.cwd()}, a notebook's own folder in "
            f"Jupyter) and not a model in the hub cache: give the folder's absolute path, or a hub id to "
            f"download when online ({e.__class__.__name__}: {str(e)[:200]})") from e
    pipe.set_progress_bar_config(disable=True)
    check_device(device)
    params = sum(p.numel() for p in pipe.unet.parameters())
    if torch.device(device).type == "cpu" and params > BIG_ON_CPU:
        warnings.warn(f"{where}: a UNet of {params / 1e6:.0f}M parameters "
                      "on the CPU, where a chapter's training and sampling take hours: set ZC_DEVICE=cuda on a GPU "
                      "machine (or leave ZC_SD unset for TinySD)", stacklevel=2)
    return pipe.to(device)


# SD 1.5's configs (stable-diffusion-v1-5: unet/, vae/, text_encoder/ config.json), written out so the
# stand-in below needs no download.
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768, attention_head_dim=8,
                 block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, norm_num_groups=32)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)


def build_sd15_standin(folder: str | os.PathLike, dtype: torch.dtype = torch.float16, seed: int = 0,
                       scale: str = "sd15") -> Path:
    """A Stable Diffusion 1.5 *stand-in*: SD 1.5's exact configs (UNet 860M, VAE factor 8, a CLIP
    ViT-L-shaped text encoder, 512 px, 77 tokens) with random weights, built offline and saved as a
    diffusers folder that `load_sd` / ZC_SD accept. For dress rehearsals of the GPU path (memory,
    speed, shapes): its images are noise, so fidelity numbers mean nothing. The tokenizer is TinySD's
    (the real CLIP vocabulary is a download), padded to 77 tokens. About 2 GB on disk in fp16.

    scale="tiny8": the same layout at toy widths (a VAE of factor 8 at 512 px, a small UNet and text
    encoder): the data side of SD 1.5 without its compute, for benchmarks of the data path.

    scale="mini": an SD1.x that differs from TinySD in every way a chapter could wrongly assume: four
    UNet levels (TinySD: three) with two layers per block (TinySD: one), 13 residuals (TinySD: 7), a VAE
    of factor 8 (TinySD: 4) at 128 px (TinySD: 64), SD 1.5's PNDM scheduler predicting ε (TinySD: DDIM
    predicting v), 77 tokens, fp32. Small enough to run every chapter on a CPU in CI (ZC_SD=<folder>)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if scale not in ("sd15", "tiny8", "mini"):
        raise ValueError(f"scale must be 'sd15', 'tiny8' or 'mini', got {scale!r}")
    unet_cfg, vae_cfg, text_cfg = dict(SD15_UNET), dict(SD15_VAE), dict(SD15_TEXT)
    if scale == "tiny8":
        unet_cfg.update(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=64, norm_num_groups=8,
                        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
        vae_cfg.update(block_out_channels=(4, 4, 8, 8), layers_per_block=1, norm_num_groups=4,
                       mid_block_add_attention=False)  # attention over 64x64 latents would dominate
        text_cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                        projection_dim=64)
    if scale == "mini":
        unet_cfg.update(sample_size=16, block_out_channels=(16, 32, 32, 32), layers_per_block=2,
                        cross_attention_dim=32, norm_num_groups=8, attention_head_dim=4,
                        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                        up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",))
        vae_cfg.update(sample_size=128, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                       mid_block_add_attention=False)
        text_cfg.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        projection_dim=32)
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(TINYSD / "tokenizer", model_max_length=77)
    text_cfg.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    schedule = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    scheduler = (PNDMScheduler(skip_prk_steps=True, **schedule) if scale == "mini"  # SD 1.5's own scheduler
                 else DDIMScheduler(clip_sample=False, **schedule))
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**vae_cfg), text_encoder=CLIPTextModel(CLIPTextConfig(**text_cfg)), tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet_cfg), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    if dtype != torch.float32:  # built in fp32; diffusers warns on every cast, so cast only when asked
        pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
