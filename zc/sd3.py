"""SD3 in zc: what changes when the locked base is an MMDiT trained by flow matching (chapter 14).

    SD 1.x (zc.sd, zc.sample)                     SD3 (here)
    UNet predicts ε (or v) at t ∈ {0..999}        transformer predicts v = e − z_0 at t ∈ [0, 1] (fed 1000 t)
    z_t = √ᾱ_t z_0 + √(1−ᾱ_t) e                   z_t = (1 − t) z_0 + t e              (rectified flow)
    z_0 = VAE(x) · scaling_factor                 z_0 = (VAE(x) − shift_factor) · scaling_factor
    text: one CLIP's tokens                       text: two CLIPs' tokens + T5's (zeros when left out)
                                                  and a pooled vector (the two CLIPs' projections)

zc's training loop and sampler read the text of a batch as one tensor; for SD3 it packs the pooled vector
as one more token (`pack_text`, zero-padded to the tokens' width), and the model unpacks it.

    pipe = load_sd3("tinysd3")                                  # or an SD3 folder / hub id
    images = sample_sd3(pipe, model, prompts, conditions)        # model(z_t, t, text, c) -> v, any design
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .resources import WEIGHTS
from .sd import check_device, image_size, is_sd3_folder, load_sd, looks_like_hub_id, sd_location

__all__ = ["TINYSD3", "TINYSD3_OUTLINE", "T5_TOKENS", "t5_tokens", "is_sd3", "load_sd3", "load_base", "denoiser", "pack_text",
           "unpack_text", "compacts_text", "compact_text", "expand_text", "encode_text", "text_features", "scale_latents", "SD3_TRANSFORMER", "SD3_VAE", "SD3_CLIP_L",
           "SD3_CLIP_G", "build_sd3_standin", "to_latents", "from_latents", "flow_draw", "sample_sd3"]

TINYSD3 = WEIGHTS / "tinysd3"  # pretrained on the shapes world by scripts/train_tinysd3.sh
# its outline ControlNet (MMDiTControlNet, half the blocks copied): scripts/train_zoo.sh tinysd3-outline
TINYSD3_OUTLINE = WEIGHTS / "tinysd3-outline-controlnet"
T5_TOKENS = 16  # TinySD3 fills SD3's T5 slot with 16 zero tokens: the pipeline's max_sequence_length


def t5_tokens(pipe) -> int:
    """How many zero tokens fill the T5 slot: TinySD3's 16 (its CLIPs' length), else the pipeline's 256."""
    return T5_TOKENS if pipe.tokenizer.model_max_length == T5_TOKENS else 256


def is_sd3(pipe) -> bool:
    """Whether `pipe` is an SD3 pipeline (an MMDiT `transformer`) rather than an SD 1.x one (a `unet`)."""
    return getattr(pipe, "transformer", None) is not None


def load_sd3(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32):
    """A StableDiffusion3Pipeline: the shipped TinySD3 ("tinysd3", the default), or an SD3 folder or hub id.
    T5 is left out (diffusers' documented way: text_encoder_3=None); its tokens are zeros."""
    from diffusers import StableDiffusion3Pipeline

    where = str(TINYSD3 if name_or_path in (None, "tinysd3") else name_or_path)
    local = Path(where).expanduser()
    if local.exists() and not is_sd3_folder(local):
        raise FileNotFoundError(f"{local} is not a diffusers SD3 folder (model_index.json of a StableDiffusion3"
                                f"Pipeline): SD 1.x folders load with zc.load_sd, and SD3 ones with zc.sd3.load_sd3")
    if not local.exists() and not looks_like_hub_id(where):
        raise FileNotFoundError(f"no SD3 folder at {where!r}; give a diffusers folder or a hub id like "
                                "'stabilityai/stable-diffusion-3-medium-diffusers'")
    check_device(device)
    pipe = StableDiffusion3Pipeline.from_pretrained(where, text_encoder_3=None, tokenizer_3=None, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_base(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32):
    """Either kind of base, whichever the folder or name holds: an SD3 (load_sd3) or an SD 1.x (zc.load_sd)."""
    where = sd_location(name_or_path)
    if is_sd3_folder(where) or (not Path(where).expanduser().exists() and looks_like_hub_id(where)
                                and _hub_class(where).startswith("StableDiffusion3")):
        return load_sd3(where, device, dtype)
    return load_sd(where, device, dtype)


def _hub_class(repo: str) -> str:
    """The pipeline class a hub repo's model_index.json names (from the local hub cache when offline); "" if
    it cannot be read (zc.load_sd then says what is missing)."""
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(repo, "model_index.json")).read_text()).get("_class_name", "")
    except Exception:  # not on the hub, not in the cache, offline: the SD 1.x loader reports it
        return ""


def denoiser(pipe):
    """The network that denoises: SD3's transformer or SD 1.x's UNet."""
    return pipe.transformer if is_sd3(pipe) else pipe.unet


def pack_text(tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(B, L, D) tokens and (B, P) pooled (P <= D) -> (B, L + 1, D): the pooled vector as a last token."""
    if pooled.shape[-1] > tokens.shape[-1]:
        raise ValueError(f"pooled width {pooled.shape[-1]} > token width {tokens.shape[-1]}: cannot pack")
    return torch.cat([tokens, F.pad(pooled, (0, tokens.shape[-1] - pooled.shape[-1]))[:, None]], dim=1)


def unpack_text(text: torch.Tensor, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pack_text's inverse: (tokens (B, L, D), pooled (B, pooled_dim))."""
    return text[:, :-1], text[:, -1, :pooled_dim]


def _clip_part(pipe) -> tuple[int, int]:
    """(CLIP tokens, their width): of SD3's packed text (L + 1, D) only these rows and columns can be non-zero
    when no T5 is loaded, the pooled vector included (SD3-medium: 77 tokens, 2048 of 4096 columns)."""
    width = max(pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size,
                pipe.transformer.config.pooled_projection_dim)
    return pipe.tokenizer.model_max_length, width


def compacts_text(pipe) -> bool:
    """Whether compact_text drops anything: an SD3 loaded without T5 (zc's way)."""
    return is_sd3(pipe) and getattr(pipe, "text_encoder_3", None) is None


def compact_text(pipe, text: torch.Tensor) -> torch.Tensor:
    """What a latent cache stores of SD3's packed text (B, L + 1, D): the CLIP tokens and the pooled vector
    (B, clip + 1, C), without the T5 slot's zero tokens and the zero columns that pad CLIP's width C to D
    (~8x smaller for SD3-medium). A base with T5 loaded, and SD 1.x's text, are kept as they are."""
    if not compacts_text(pipe):
        return text
    n, c = _clip_part(pipe)
    kept = torch.cat([text[:, :n, :c], text[:, -1:, :c]], dim=1)
    if expand_text(pipe, kept).ne(text).any():  # what is dropped must be zero, or the cache would change training
        raise ValueError("SD3 text has non-zero values outside its CLIP tokens and pooled vector (a T5 loaded?): "
                         "it cannot be stored compactly")
    return kept


def expand_text(pipe, kept: torch.Tensor) -> torch.Tensor:
    """compact_text's inverse: (B, clip + 1, C) -> the packed (B, L + 1, D) that encode_text gives."""
    if not compacts_text(pipe):
        return kept
    n, c = _clip_part(pipe)
    out = kept.new_zeros(kept.shape[0], n + t5_tokens(pipe) + 1, pipe.transformer.config.joint_attention_dim)
    out[:, :n, :c], out[:, -1, :c] = kept[:, :n], kept[:, -1]
    return out


@torch.no_grad()
def encode_text(pipe, prompts: list[str]) -> torch.Tensor:
    """The prompts as SD3's pipeline encodes them (no T5: t5_tokens zero tokens), packed: (B, L + 1, D)."""
    tokens, _, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
                                              max_sequence_length=t5_tokens(pipe), device=pipe.device)
    return pack_text(tokens, pooled)


def text_features(pipe, prompts: list[str]) -> torch.Tensor:
    """What zc's training reads as a batch's text: SD 1.x's CLIP tokens, or SD3's packed tokens + pooled."""
    from .tinysd import encode_prompts

    return encode_text(pipe, prompts) if is_sd3(pipe) else encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)


def to_latents(vae, images: torch.Tensor, generator: torch.Generator | None = None,
               mean: bool = False) -> torch.Tensor:
    """Images in [-1, 1] -> SD3's latents (z − shift_factor) · scaling_factor, z a draw from the VAE
    posterior (the pipeline's: global RNG, unless `generator`) or, with mean=True, its mean."""
    post = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    return scale_latents(vae, post.mean if mean else post.sample(generator=generator))


def scale_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """VAE latents as the diffusion model sees them: (z − shift_factor) · scaling_factor (SD 1.x: no shift)."""
    return (z - (vae.config.get("shift_factor") or 0.0)) * vae.config.scaling_factor


def from_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """SD3's latents -> images in [0, 1] (the pipeline's decode)."""
    images = vae.decode(latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)).sample
    return (images / 2 + 0.5).clamp(0, 1)


def flow_draw(latents: torch.Tensor, generator: torch.Generator, shift: float = 1.0):
    """One flow-matching draw, as diffusers' SD3 scripts: t ~ logit-normal(0, 1) then the scheduler's shift
    s·t / (1 + (s − 1) t), z_t = (1 − t) z_0 + t e, target e − z_0. Returns (z_t, timestep = 1000 t, target).
    Everything drawn from `generator` on the CPU, so a run on any device draws the same."""
    n = latents.shape[0]
    u = torch.sigmoid(torch.randn(n, generator=generator))
    t = (shift * u / (1 + (shift - 1) * u)).to(latents.device)  # fp32 whatever the latents' precision
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    tt = t.view(n, *[1] * (latents.dim() - 1))
    z0 = latents.float()
    return ((1 - tt) * z0 + tt * noise).to(latents.dtype), t * 1000, (noise - z0).to(latents.dtype)


@torch.no_grad()
def sample_sd3(pipe, model, prompts: Sequence[str], conditions: torch.Tensor | None = None,
               num_inference_steps: int = 20, guidance_scale: float = 5.0, negative_prompt: str = "",
               generator: torch.Generator | None = None, control_input: str = "latents",
               progress: bool = False) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1]: the loop of diffusers' StableDiffusion3(ControlNet)Pipeline, written out.

    model(z_t, timestep, text, c) -> v: a design's wrapped transformer (its `wrap`), or None for the base
    alone. c: the control images (B, C, H, W) in [0, 1], given to the model as its design reads them
    (control_input): "latents", SD3's ControlNet's, through the VAE once (a posterior draw from the global
    RNG, as the pipeline draws it), or "pixels". Per step, with classifier-free guidance of weight g:
    v = v_u + g (v_c − v_u), then FlowMatchEulerDiscreteScheduler's step z ← z + (t_next − t) v."""
    from diffusers.utils.torch_utils import randn_tensor
    from tqdm.auto import tqdm

    prompts = list(prompts)
    n, size, device, dtype = len(prompts), image_size(pipe), pipe.device, pipe.transformer.dtype
    do_cfg = guidance_scale > 1.0
    text = encode_text(pipe, ([negative_prompt] * n if do_cfg else []) + prompts).to(dtype)  # (2B, L + 1, D)
    if model is None:
        def model(z, t, text_, c):  # the base alone
            tokens, pooled = unpack_text(text_, pipe.transformer.config.pooled_projection_dim)
            return pipe.transformer(z, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=t).sample
    elif conditions is None:
        raise ValueError("a control model needs its conditions: sample_sd3(pipe, model, prompts, conditions)")
    c = None
    if conditions is not None:
        if conditions.shape[0] != n or tuple(conditions.shape[-2:]) != (size, size):
            raise ValueError(f"conditions are {tuple(conditions.shape)}: give one (C, {size}, {size}) image per "
                             f"prompt ({n} prompts; this SD3 makes {size} px images)")
        if control_input not in ("latents", "pixels"):
            raise ValueError(f"control_input must be 'latents' or 'pixels', got {control_input!r}")
        if control_input == "latents" and conditions.shape[1] != 3:
            raise ValueError(f"conditions have {conditions.shape[1]} channels; a design that reads them through the "
                             "VAE takes RGB images (3 channels): stack conditions only for one reading pixels")
        c = conditions.to(device, dtype)
        c = torch.cat([c, c]) if do_cfg else c  # before the VAE, as the pipeline: each half gets its own draw
        c = to_latents(pipe.vae, c * 2 - 1) if control_input == "latents" else c  # (2B, C, h, w) or pixels
    sched = pipe.scheduler
    sched.set_timesteps(num_inference_steps, device=device)
    h = size // pipe.vae_scale_factor
    shape = (n, pipe.transformer.config.in_channels, h, h)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)  # as the pipeline draws them
    for t in tqdm(sched.timesteps, disable=not progress, desc="sampling"):
        z = torch.cat([latents] * 2) if do_cfg else latents
        v = model(z, t.expand(z.shape[0]), text, c)
        if do_cfg:
            uncond, cond = v.chunk(2)
            v = uncond + guidance_scale * (cond - uncond)
        latents = sched.step(v, t, latents, return_dict=False)[0]
    return from_latents(pipe.vae, latents).float().cpu()


# SD3-medium's configs (stabilityai/stable-diffusion-3-medium-diffusers: transformer/, vae/, text_encoder(_2)/
# config.json), written out so the stand-in below needs no download. SD3.5 adds qk_norm="rms_norm" and, in
# its medium model, dual attention in its first 13 blocks.
SD3_TRANSFORMER = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                       num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                       pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
SD3_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, sample_size=1024, layers_per_block=2,
               block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=1.5305, shift_factor=0.0609,
               use_quant_conv=False, use_post_quant_conv=False)
SD3_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
SD3_CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)


def build_sd3_standin(folder: str | os.PathLike, dtype: torch.dtype = torch.float16, seed: int = 0,
                      scale: str = "sd3") -> Path:
    """An SD3-medium *stand-in*: SD3-medium's configs (a 2B MMDiT of 24 joint blocks, a 16-channel VAE of
    factor 8 with SD3's shift and scale, CLIP-L and CLIP-G shapes, 1024 px, no T5) with random weights, built
    offline as a diffusers folder that load_sd3 / ZC_SD3 accept: for dress rehearsals of chapter 14's GPU path
    (memory, speed, shapes); its images are noise. The tokenizers are TinySD's, padded to 77 tokens.

    scale="mini": an SD3 that differs from TinySD3 in every way a chapter could wrongly assume: 16 latent
    channels (TinySD3: 4), a VAE of factor 8 (TinySD3: 4) at 128 px, SD3.5's qk_norm and dual attention in its
    first blocks, 77 tokens, FlowMatch shift 3.0 (SD3's; TinySD3: 1.0), fp32. Runs every cell of chapter 14 on
    a CPU in CI (ZC_SD3=<folder>)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    if scale not in ("sd3", "mini"):
        raise ValueError(f"scale must be 'sd3' or 'mini', got {scale!r}")
    tr, vae, clip_l, clip_g = dict(SD3_TRANSFORMER), dict(SD3_VAE), dict(SD3_CLIP_L), dict(SD3_CLIP_G)
    if scale == "mini":
        tr.update(sample_size=16, num_layers=4, attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                  caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16, qk_norm="rms_norm",
                  dual_attention_layers=(0, 1))
        vae.update(sample_size=128, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                   mid_block_add_attention=False)
        clip_l.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      projection_dim=32)
        clip_g.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      projection_dim=32)
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(WEIGHTS / "tinysd" / "tokenizer", model_max_length=77)
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**tr), vae=AutoencoderKL(**vae),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**clip_l, **ids)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**clip_g, **ids)), tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
