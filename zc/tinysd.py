"""TinySD: the project's own small Stable Diffusion, pretrained on the shapes world.

Same classes as Stable Diffusion (AutoencoderKL, CLIPTextModel + CLIPTokenizer,
UNet2DConditionModel, a DDPM/DDIM scheduler), saved as a standard diffusers folder, so
`diffusers.StableDiffusionPipeline.from_pretrained(folder)` loads it offline.

    64x64 RGB --VAE (4x)--> 4x16x16 latents      SD 1.5: 512x512 --VAE (8x)--> 4x64x64
    text: "<colour> <shape> with <colour> background", 16 tokens, 64-d    SD: 77 tokens, 768-d

Training has two stages, like SD: the VAE alone, then the UNet (with the text encoder, which
here is trained jointly because there is no pretrained CLIP to borrow) on frozen VAE latents.

    python -m zc.tinysd train --out runs/tinysd            # progress bar, resumes if interrupted
    python -m zc.tinysd eval zc/weights/tinysd              # PSNR, colour accuracy, position spread
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .sd import image_size
from .training_utils import (
    has_checkpoint,
    load_checkpoint,
    pick_device,
    prediction_target,
    save_checkpoint,
    step_generator,
)
from .world import conditions, metrics, shapes

__all__ = ["MAX_TOKENS", "TinySDConfig", "vocabulary", "build_tokenizer", "build_models",
    "training_scheduler", "encode_prompts", "training_batch", "train", "latent_scale", "export",
    "evaluate", "main"]

MAX_TOKENS = 16  # longest caption: "light golden rod yellow triangle with medium spring green background" = 12 words


@dataclass
class TinySDConfig:
    out: str = "runs/tinysd"  # run folder: checkpoints, log, and the final pipeline in out/pipeline
    seed: int = 0  # every batch, noise draw and initialisation follows from it
    device: str = "auto"  # "auto" = cuda if available, else cpu
    image_size: int = 64  # pixels; latents are image_size / 4
    # stage 1: the VAE
    vae_steps: int = 4000  # optimiser steps
    vae_batch: int = 64
    vae_lr: float = 1e-3  # AdamW, cosine decay to 0
    kl_weight: float = 1e-6  # SD's VAE is nearly an autoencoder: tiny KL pull towards N(0, 1)
    # stage 2: UNet + text encoder
    steps: int = 20000
    batch: int = 128
    lr: float = 5e-4  # AdamW, warmup then cosine decay
    warmup: int = 500
    prediction_type: str = "epsilon"  # "epsilon" (SD), "v_prediction" or "sample": what the UNet predicts
    empty_prompt_prob: float = 0.1  # caption dropout, so classifier-free guidance works
    ema_decay: float = 0.999  # the exported weights are an exponential moving average
    bf16: bool = True  # bfloat16 autocast on a GPU (ignored on the CPU)
    checkpoint_every: int = 1000  # steps between resumable checkpoints
    style: str = "flat"  # how scenes are drawn (shapes.STYLES); "shaded" + init_from makes the fine-tuned variant
    init_from: str = ""  # a TinySD pipeline folder to continue from: skips stage 1, resumes stage 2 from its weights
    time_budget_min: float = 0.0  # >0: after 100 steps, shrink `steps` so stage 2 ends within this many minutes


# --- the parts ---------------------------------------------------------------------------------
def vocabulary() -> list[str]:
    """Every word a caption can contain."""
    words = {w for n in shapes.colour_names() for w in n.split()}
    return sorted(words | set(shapes.KINDS) | {"with", "background"})


def build_tokenizer():
    """A CLIPTokenizer whose BPE merges are learnt (deterministically) from the caption words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"),
                                  show_progress=False)
    bpe.train_from_iterator(vocabulary(), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # The trainer breaks ties between equally frequent pairs in an order that varies from run to run;
    # every word still ends up one token, so give ids in a fixed order (specials first).
    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokens = specials + sorted(t for t in model["vocab"] if t not in specials)
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=MAX_TOKENS)


def build_models(vocab_size: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=64))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 96), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)
    return vae, text_encoder, unet


def training_scheduler(prediction_type: str = "epsilon"):
    """SD's noise schedule (scaled-linear betas 0.00085 -> 0.012 over 1000 steps)."""
    from diffusers import DDPMScheduler

    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=prediction_type, clip_sample=False)


def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """(B, 16, 64) text features, padded like SD (max_length)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def training_batch(seed: int, stage: str, step: int, batch: int, size: int, device, style: str = "flat"):
    """Scenes and their images in [-1, 1] for one step; depends only on (seed, stage, step)."""
    scenes = shapes.sample_scenes(batch, step_generator(seed, stage, step), split="train")
    images = shapes.render(scenes.to(device), size, style) * 2 - 1
    return scenes, images


def _lr_lambda(warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


# --- training ------------------------------------------------------------------------------------
def train(cfg: TinySDConfig, stop_after: int | None = None) -> Path:
    """Both stages; resumes from out/stage*/ checkpoints. Returns the exported pipeline folder.
    stop_after: stop (with a checkpoint) after this many steps of this call, for tests."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    budget = [stop_after]
    if cfg.init_from:
        from .sd import load_sd

        pipe = load_sd(cfg.init_from)
        vae, text_encoder, unet, tokenizer = pipe.vae.to(device), pipe.text_encoder, pipe.unet, pipe.tokenizer
    else:
        tokenizer = build_tokenizer()
        vae, text_encoder, unet = build_models(len(tokenizer))
        if not _train_vae(cfg, vae, device, out / "stage1_vae", budget):
            return None
        vae.register_to_config(scaling_factor=latent_scale(vae, cfg, device))
    if not _train_denoiser(cfg, vae, text_encoder, unet, tokenizer, device, out / "stage2_unet", budget):
        return None
    return export(vae, text_encoder, tokenizer, unet, cfg.prediction_type, out / "pipeline")


def fit_budget(cfg, step: int, measured: int, t_start: float, sched, bar, out: Path) -> None:
    """At `step`, `measured` steps after t_start: shrink cfg.steps so training ends within cfg.time_budget_min
    minutes, with the learning-rate schedule, the bar and out/config.json following."""
    rate = measured / (time.time() - t_start)
    cfg.steps = min(cfg.steps, step + int(rate * (cfg.time_budget_min * 60 - (time.time() - t_start))))
    sched.lr_lambdas[0] = _lr_lambda(cfg.warmup, cfg.steps)
    bar.total = cfg.steps
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))


def _spend(budget: list) -> bool:
    """Count one step against stop_after; False once it is used up."""
    if budget[0] is None:
        return True
    budget[0] -= 1
    return budget[0] >= 0


def _log(out: Path, row: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _train_vae(cfg, vae, device, folder: Path, budget) -> bool:
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(100, cfg.vae_steps))
    start = 0
    if has_checkpoint(folder):
        start = load_checkpoint(folder, {"vae": vae}, opt)["step"]
        sched.last_epoch = start - 1
        sched.step()
    if start >= cfg.vae_steps:
        vae.eval()
        return True
    bar = tqdm(range(start, cfg.vae_steps), desc="stage 1: VAE", initial=start, total=cfg.vae_steps)
    for step in bar:
        if not _spend(budget):
            save_checkpoint(folder, {"vae": vae}, opt, {"step": step})
            return False
        _, x = training_batch(cfg.seed, "vae", step, cfg.vae_batch, cfg.image_size, device)
        g = step_generator(cfg.seed, "vae-noise", step, device)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(generator=g)).sample
        rec = F.mse_loss(recon, x)
        loss = rec + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            p = 10 * math.log10(4.0 / max(rec.item(), 1e-10))  # images span 2 ([-1, 1])
            bar.set_postfix(psnr=f"{p:.1f}dB")
            _log(folder.parent, {"stage": "vae", "step": step, "loss": loss.item(), "psnr": p})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
            save_checkpoint(folder, {"vae": vae}, opt, {"step": step + 1})
    vae.eval()
    return True


@torch.no_grad()
def latent_scale(vae, cfg, device) -> float:
    """SD's `scaling_factor`: 1 / std of the latents, so the diffusion sees unit-variance inputs."""
    _, x = training_batch(cfg.seed, "scale", 0, 256, cfg.image_size, device)
    return float(1.0 / vae.encode(x).latent_dist.mean.std())


def _train_denoiser(cfg, vae, text_encoder, unet, tokenizer, device, folder: Path, budget) -> bool:
    vae.requires_grad_(False)
    scheduler = training_scheduler(cfg.prediction_type)
    text_encoder.to(device).train()
    unet.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup, cfg.steps))
    ema = {"unet": copy.deepcopy(unet).requires_grad_(False), "text_encoder": copy.deepcopy(text_encoder).requires_grad_(False)}
    modules = {"unet": unet, "text_encoder": text_encoder, "ema_unet": ema["unet"], "ema_text_encoder": ema["text_encoder"]}
    start = 0
    if has_checkpoint(folder):
        start = load_checkpoint(folder, modules, opt)["step"]
        sched.last_epoch = start - 1
        sched.step()
    use_bf16 = cfg.bf16 and device.type == "cuda"
    bar = tqdm(range(start, cfg.steps), desc="stage 2: UNet + text", initial=start, total=cfg.steps)
    t_start = time.time()
    for step in bar:
        if cfg.time_budget_min > 0 and step == start + 100:
            fit_budget(cfg, step, 100, t_start, sched, bar, folder.parent)
        if step >= cfg.steps:
            break
        if not _spend(budget):
            save_checkpoint(folder, modules, opt, {"step": step})
            return False
        scenes, x = training_batch(cfg.seed, "unet", step, cfg.batch, cfg.image_size, device, cfg.style)
        g = step_generator(cfg.seed, "unet-noise", step, device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            latents = vae.encode(x).latent_dist.sample(generator=g).float() * vae.config.scaling_factor
        prompts = scenes.prompts()
        drop = torch.rand(len(prompts), generator=g, device=device) < cfg.empty_prompt_prob
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        noise = torch.randn(latents.shape, generator=g, device=device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=g, device=device)
        noisy = scheduler.add_noise(latents, noise, t)
        target = prediction_target(scheduler, latents, noise, t)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            text = encode_prompts(tokenizer, text_encoder, prompts)
            pred = unet(noisy, t, encoder_hidden_states=text).sample
        loss = F.mse_loss(pred.float(), target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}: lower --lr or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        _ema_update(ema["unet"], unet, cfg.ema_decay)
        _ema_update(ema["text_encoder"], text_encoder, cfg.ema_decay)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            _log(folder.parent, {"stage": "unet", "step": step, "loss": loss.item()})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(folder, modules, opt, {"step": step + 1})
    unet.load_state_dict(ema["unet"].state_dict())
    text_encoder.load_state_dict(ema["text_encoder"].state_dict())
    return True


def export(vae, text_encoder, tokenizer, unet, prediction_type: str, folder: Path) -> Path:
    """Save a standard diffusers StableDiffusionPipeline folder (safetensors)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=vae.cpu().eval(), text_encoder=text_encoder.cpu().eval(), tokenizer=tokenizer,
                                   unet=unet.cpu().eval(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


# --- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(pipe, n: int = 64, steps: int = 25, guidance_scale: float = 5.0, seed: int = 0,
             spread_samples: int = 16, size: int | None = None, call_kwargs: dict | None = None) -> dict:
    """The TinySD quality bar: VAE PSNR, colour and kind accuracy on held-out prompts, position spread.
    size: the image side (default: what the pipeline's UNet makes); call_kwargs: more arguments for every
    pipeline call (an SD3's max_sequence_length)."""
    call_kwargs = call_kwargs or {}
    size = size or image_size(pipe)
    device = pipe.device
    g = torch.Generator().manual_seed(10_000 + seed)
    scenes = shapes.sample_scenes(n, g, split="test")
    images = shapes.render(scenes, size).to(device)
    lat = pipe.vae.encode(images * 2 - 1).latent_dist.mean
    recon = (pipe.vae.decode(lat).sample / 2 + 0.5).clamp(0, 1)
    out = pipe(scenes.prompts(), height=size, width=size, num_inference_steps=steps, guidance_scale=guidance_scale,
               generator=torch.Generator().manual_seed(seed), output_type="pt", **call_kwargs).images
    table = shapes.colour_table()
    fill_acc, bg_acc = metrics.colour_accuracy(out.cpu(), table[scenes.fill], table[scenes.bg])
    kind_acc = (conditions.kind_of(out.cpu()) == scenes.kind).float().mean().item()  # the prompt's shape drawn
    # one prompt, many seeds: where does the shape land?
    one = scenes[:1]
    prompt = one.prompts()[0]
    many = pipe([prompt] * spread_samples, height=size, width=size, num_inference_steps=steps,
                guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed + 1), output_type="pt",
                **call_kwargs).images
    masks = metrics.shape_masks(many.cpu(), table[one.fill].expand(spread_samples, 3), table[one.bg].expand(spread_samples, 3))
    c = metrics.centroids(masks)
    return {"vae_psnr_db": metrics.psnr(recon.cpu(), images.cpu()).mean().item(),
            "fill_accuracy": fill_acc.mean().item(), "background_accuracy": bg_acc.mean().item(),
            "colour_accuracy": ((fill_acc + bg_acc) / 2).mean().item(), "kind_accuracy": kind_acc,
            "position_std": c.std(dim=0).mean().item(), "spread_prompt": prompt,
            "images": out.cpu(), "prompts": scenes.prompts(), "spread_images": many.cpu(), "spread_centroids": c}


def command_line(argv, prog: str, doc: str, config_cls, train_fn, load, evaluate_fn, what: str) -> None:
    """`python -m zc.tinysd` and `python -m zc.tinysd3`: `train` with one flag per config field (resumes from
    --out), `eval` of a pipeline folder (default: the shipped one) printed against TinySD's quality bar."""
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help=f"pretrain {what} (resumes from --out)")
    for f in dataclasses.fields(config_cls):
        kw = {"action": argparse.BooleanOptionalAction} if f.type in ("bool", bool) else {"type": type(f.default)}
        tr.add_argument("--" + f.name.replace("_", "-"), default=f.default, **kw)
    ev = sub.add_parser("eval", help=f"measure a {what} folder")
    ev.add_argument("path", nargs="?", default=None, help=f"pipeline folder (default: the shipped {what})")
    ev.add_argument("--n", type=int, default=64)
    ev.add_argument("--steps", type=int, default=25)
    ev.add_argument("--guidance-scale", type=float, default=5.0)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        cfg = config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
        t0 = time.time()
        path = train_fn(cfg)
        print(f"pipeline written to {path} in {time.time() - t0:.0f} s")
        return
    r = evaluate_fn(load(args.path), n=args.n, steps=args.steps, guidance_scale=args.guidance_scale)
    print(f"VAE PSNR (held-out shapes)      {r['vae_psnr_db']:.2f} dB   (bar: >= 30)")
    print(f"colour accuracy, {args.n} held-out prompts  fill {r['fill_accuracy']:.3f}  background "
          f"{r['background_accuracy']:.3f}  mean {r['colour_accuracy']:.3f}   (bar: >= 0.9)")
    print(f"kind accuracy (the prompt's shape drawn): {r['kind_accuracy']:.3f} (a blind pick among four kinds: 0.25)")
    print(f"position spread, one prompt x 16 seeds: centroid std {r['position_std']:.3f} "
          f"(uniform placement ~0.17; 0 would mean text fixes position)")


def main(argv=None):
    from .sd import load_sd

    command_line(argv, "python -m zc.tinysd", __doc__, TinySDConfig, train, load_sd, evaluate, "TinySD")


if __name__ == "__main__":
    main()
