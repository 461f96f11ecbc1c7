"""TinySD3: the project's own small Stable Diffusion 3, an MMDiT trained by flow matching on the shapes world.

Same classes as SD3 (SD3Transformer2DModel, AutoencoderKL, two CLIPTextModelWithProjection + CLIPTokenizer,
no T5, FlowMatchEulerDiscreteScheduler), saved as a standard diffusers folder, so
`diffusers.StableDiffusion3Pipeline.from_pretrained(folder)` loads it offline.

    64x64 RGB --VAE (4x)--> 4x16x16 latents --2x2 patches--> 64 image tokens of width 96
    SD3-medium: 1024 px --VAE (8x)--> 16x128x128 --2x2--> 4096 tokens of width 1536, 24 joint blocks

What is borrowed, as SD3 borrows its text encoders: TinySD's VAE (its latents get SD3's shift too:
`(z - shift_factor) * scaling_factor`, both measured here, not SD3's 0.0609 / 1.5305) and, as the two
CLIPs, the text encoders of TinySD and of its fine-tuned variant TinySD-shaded (frozen; the projection
that gives SD3 its pooled vector starts as the identity). Only the transformer is trained: flow matching,

    z_t = (1 - t) z_0 + t e,   the transformer predicts v = e - z_0,   t ~ logit-normal(0, 1)

(SD3's rectified flow; the timestep it sees is 1000 t). SD3 fills the T5 slot with zeros when T5 is
dropped; ours always has 16 of them (call the pipeline with `max_sequence_length=16`, as `load_sd3` and
zc's sampler do).

    python -m zc.tinysd3 train --out runs/tinysd3      # progress bar, resumes if interrupted
    python -m zc.tinysd3 eval zc/weights/tinysd3        # colour accuracy, position spread (TinySD's bar)
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .resources import WEIGHTS
from .sd3 import encode_text, flow_draw, image_size, load_sd3, scale_latents, t5_tokens, unpack_text
from .tinysd import _ema_update, command_line, fit_budget, _log, _lr_lambda, _spend, training_batch
from .training_utils import has_checkpoint, load_checkpoint, pick_device, save_checkpoint, step_generator

__all__ = ["TinySD3Config", "build_transformer", "build_parts", "latent_shift_scale", "narrow_posterior",
           "pipeline", "latent_pool", "train", "evaluate", "main"]


@dataclass
class TinySD3Config:
    out: str = "runs/tinysd3"  # run folder: checkpoints, log, and the final pipeline in out/pipeline
    seed: int = 0  # every batch, noise draw and initialisation follows from it
    device: str = "auto"  # "auto" = cuda if available, else cpu
    width: int = 96  # token width: heads x head_dim (SD3-medium: 24 x 64 = 1536)
    heads: int = 3  # attention heads
    layers: int = 6  # joint blocks (SD3-medium: 24); chapter 14 copies 1, 2, 3 or 6 of them
    steps: int = 6000  # optimiser steps
    batch: int = 64
    pool: int = 65536  # training scenes, VAE-encoded once (the encoder costs more than a transformer step)
    lr: float = 1e-3  # AdamW, warmup then cosine decay
    warmup: int = 200
    empty_prompt_prob: float = 0.1  # caption dropout, so classifier-free guidance works
    ema_decay: float = 0.999  # the exported weights are an exponential moving average
    checkpoint_every: int = 250  # steps between resumable checkpoints
    time_budget_min: float = 0.0  # >0: after 50 steps, shrink `steps` so training ends within this many minutes
    base: str = ""  # TinySD folder whose VAE and text encoder are borrowed (default: the shipped one)
    base_2: str = ""  # second text encoder's TinySD (default: the shipped TinySD-shaded)


# --- the parts ---------------------------------------------------------------------------------------
def build_transformer(cfg: TinySD3Config, in_channels: int = 4, latent_size: int = 16, text_width: int = 64):
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=latent_size, patch_size=2, in_channels=in_channels, out_channels=in_channels,
        num_layers=cfg.layers, attention_head_dim=cfg.width // cfg.heads, num_attention_heads=cfg.heads,
        joint_attention_dim=2 * text_width, caption_projection_dim=cfg.width,
        pooled_projection_dim=2 * text_width, pos_embed_max_size=latent_size // 2)


def _clip_with_projection(text_encoder):
    """TinySD's CLIPTextModel as a CLIPTextModelWithProjection whose projection is the identity."""
    from transformers import CLIPTextModelWithProjection

    model = CLIPTextModelWithProjection(text_encoder.config)
    model.text_model.load_state_dict(text_encoder.state_dict())  # transformers 5: no text_model. prefix
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(*model.text_projection.weight.shape))
    return model.eval().requires_grad_(False)


def narrow_posterior(vae):
    """TinySD's VAE with its posterior's variance set to ~0 (log-variance -30: std 3e-7), its means untouched.
    TinySD's posterior is wide (std ~0.4 against |mean| ~0.7); TinySD3 learns the means, and SD3's pipeline
    draws the control image's latents from the posterior: with it narrowed, that draw is the mean."""
    conv, c = vae.quant_conv, vae.config.latent_channels
    with torch.no_grad():  # moments = quant_conv(h) = (mean, logvar) along the channels
        conv.weight[c:] = 0
        conv.bias[c:] = -30.0
    return vae


def build_parts(cfg: TinySD3Config) -> dict:
    """The borrowed VAE, tokenizers and text encoders, and a fresh transformer (seeded)."""
    from .sd import load_sd

    one = load_sd(cfg.base or WEIGHTS / "tinysd")
    two = load_sd(cfg.base_2 or WEIGHTS / "tinysd-shaded")
    vae = narrow_posterior(copy.deepcopy(one.vae)).eval().requires_grad_(False)
    torch.manual_seed(cfg.seed)
    width = one.text_encoder.config.hidden_size
    return dict(vae=vae, tokenizer=one.tokenizer, tokenizer_2=two.tokenizer,
                text_encoder=_clip_with_projection(one.text_encoder),
                text_encoder_2=_clip_with_projection(two.text_encoder),
                transformer=build_transformer(cfg, vae.config.latent_channels,
                                              one.unet.config.sample_size, width))


@torch.no_grad()
def latent_shift_scale(vae, seed: int = 0, n: int = 256, size: int = 64) -> tuple[float, float]:
    """SD3's `shift_factor` and `scaling_factor`: the latents' mean, and 1 / their std about it, on scenes
    rendered from the training split (SD3's own VAE: 0.0609 and 1.5305)."""
    _, x = training_batch(seed, "scale", 0, n, size, vae.device)
    z = vae.encode(x).latent_dist.mean
    return float(z.mean()), float(1.0 / (z - z.mean()).std())


# --- training ------------------------------------------------------------------------------------------
@torch.no_grad()
def latent_pool(parts: dict, cfg: TinySD3Config, folder: Path, device) -> tuple[list[str], torch.Tensor]:
    """cfg.pool training scenes' prompts and their VAE latents' means (shifted and scaled), encoded once and
    kept in folder/pool.safetensors (rebuilt when it was made for other scenes, another VAE or other scaling)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from .world import shapes

    scenes = shapes.sample_scenes(cfg.pool, step_generator(cfg.seed, "pool", 0), split="train")
    vae, chunk = parts["vae"], 256
    made = {"pool": str(cfg.pool), "seed": str(cfg.seed), "base": cfg.base or "tinysd",
            "shift": repr(vae.config.shift_factor), "scale": repr(vae.config.scaling_factor)}
    path = folder / "pool.safetensors"
    if path.exists():
        with safe_open(path, "pt") as f:
            if f.metadata() == made:
                return scenes.prompts(), f.get_tensor("latents").to(device)
    latents = []
    for i in tqdm(range(0, cfg.pool, chunk), desc="TinySD3: encoding the training scenes"):
        x = shapes.render(scenes[i:i + chunk].to(device), 64) * 2 - 1
        latents.append(scale_latents(vae, vae.encode(x).latent_dist.mean).half().cpu())  # (chunk, 4, 16, 16)
    folder.mkdir(parents=True, exist_ok=True)
    latents = torch.cat(latents).contiguous()
    save_file({"latents": latents}, path, metadata=made)
    return scenes.prompts(), latents.to(device)


def train(cfg: TinySD3Config, stop_after: int | None = None) -> Path | None:
    """Pretrain the transformer; resumes from out/checkpoint. Returns the exported pipeline folder.
    stop_after: stop (with a checkpoint) after this many steps of this call, for tests."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    parts = build_parts(cfg)
    for k in ("vae", "text_encoder", "text_encoder_2", "transformer"):
        parts[k].to(device)
    shift, scale = latent_shift_scale(parts["vae"])
    parts["vae"].register_to_config(shift_factor=shift, scaling_factor=scale)
    prompts_all, pool = latent_pool(parts, cfg, out, device)
    pipe = pipeline(parts)
    model = parts["transformer"].train()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup, cfg.steps))
    folder, modules, start = out / "checkpoint", {"transformer": model, "ema": ema}, 0
    if has_checkpoint(folder):
        saved = load_checkpoint(folder, modules, opt)
        start, cfg.steps = saved["step"], saved.get("steps", cfg.steps)
        sched.lr_lambdas[0] = _lr_lambda(cfg.warmup, cfg.steps)
        sched.last_epoch = start - 1
        sched.step()
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    budget = [stop_after]
    bar = tqdm(range(start, cfg.steps), desc="TinySD3: transformer", initial=start, total=cfg.steps)
    t_start = time.time()
    for step in bar:
        if cfg.time_budget_min > 0 and step == start + 50:
            fit_budget(cfg, step, 50, t_start, sched, bar, out)
        if step >= cfg.steps:
            break
        if not _spend(budget):
            save_checkpoint(folder, modules, opt, {"step": step, "steps": cfg.steps})
            return None
        g = step_generator(cfg.seed, "transformer", step)  # on the CPU: any device draws the same
        rows = torch.randint(0, cfg.pool, (cfg.batch,), generator=g)
        z = pool[rows.to(device)].float()  # (batch, 4, 16, 16)
        drop = torch.rand(cfg.batch, generator=g) < cfg.empty_prompt_prob
        prompts = ["" if d else prompts_all[r] for r, d in zip(rows.tolist(), drop.tolist())]
        text, pooled = unpack_text(encode_text(pipe, prompts), model.config.pooled_projection_dim)
        zt, timestep, target = flow_draw(z, g)
        pred = model(zt, encoder_hidden_states=text, pooled_projections=pooled, timestep=timestep).sample
        loss = F.mse_loss(pred.float(), target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}: lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        _ema_update(ema, model, cfg.ema_decay)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            _log(out, {"step": step, "loss": loss.item(), "seconds": time.time() - t_start})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(folder, modules, opt, {"step": step + 1, "steps": cfg.steps})
    pipe.transformer = ema
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    return out / "pipeline"


def pipeline(parts: dict):
    """The parts as a StableDiffusion3Pipeline (T5 left out): what trains encodes prompts through it, and
    `pipeline(parts).save_pretrained(folder)` writes the folder diffusers and zc.sd3.load_sd3 load."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0),
                                    text_encoder_3=None, tokenizer_3=None, **parts)


# --- evaluation ---------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(pipe, n: int = 64, steps: int = 20, guidance_scale: float = 5.0, seed: int = 0,
             spread_samples: int = 16) -> dict:
    """TinySD's quality bar for an SD3 pipeline (see zc.tinysd.evaluate)."""
    from .tinysd import evaluate as evaluate_sd

    return evaluate_sd(pipe, n=n, steps=steps, guidance_scale=guidance_scale, seed=seed,
                       spread_samples=spread_samples, size=image_size(pipe),
                       call_kwargs={"max_sequence_length": t5_tokens(pipe)})


def main(argv=None):
    command_line(argv, "python -m zc.tinysd3", __doc__, TinySD3Config, train, load_sd3, evaluate, "TinySD3")


if __name__ == "__main__":
    main()
