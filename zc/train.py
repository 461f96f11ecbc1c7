"""Training a ControlNet on fill50k: one loop for TinySD on a CPU and SD 1.5 on GPUs.

    L = || target − ε_θ(z_t, t, c_t, c_i) ||²      (SD's objective; the locked SD, the ControlNet learns)

target is ε, v or z_0, whatever the SD predicts. Half of the prompts are replaced by "" (the paper's
50% prompt dropout), which forces the ControlNet to read the condition itself.

    python -m zc.train --preset cpu                 # TinySD, generated fill50k, 2 CPU cores
    accelerate launch -m zc.train --preset sd15 --data /path/to/fill50k     # SD 1.5, GPUs

Built on accelerate (device, mixed precision with the ControlNet kept in fp32, gradient
accumulation, several GPUs). A run writes out/checkpoint/ atomically every `checkpoint_every`
steps and resumes from it; data order and noise depend only on (seed, step), so a resumed run
ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import conditions, designs, reward
from .controlled_unet import ControlledUNet
from .controlnet import ControlNet
from .fill50k import Fill50k
from .ip_adapter import IPAdapter, WithGlobal
from .latent_cache import LatentCache, default_folder
from .sample import sample
from .sd import check_device, load_sd
from .tinysd import encode_prompts
from .training_utils import (
    atomic_write,
    has_checkpoint,
    hide_bar,
    load_checkpoint,
    save_checkpoint,
    step_generator,
)


@dataclass
class TrainConfig:
    sd: str = "tinysd"  # the locked SD: "tinysd", an SD1.x diffusers folder or a hub id
    data: str = ""  # a fill50k-style folder (prompt.json + source/ + target/); "" = generate pairs
    n_train: int = 10000  # pairs to generate when data == ""
    condition: str = "outline"  # what the ControlNet learns to follow (conditions.py); outline = fill50k;
    # "a+b": one network for several (their images stacked along the channels; see condition_dropout)
    kinds: str = ""  # comma-separated shape kinds to generate; "" = the condition's default
    encode: str = "cache"  # "cache": VAE latents + text features once, on disk; "fly": every batch (diffusers)
    latent: str = "sample"  # "sample": a draw from the VAE posterior each step (SD's training); "mean": its mean
    batches: str = "iid"  # "iid": each step draws its pairs anew; "epochs": shuffled passes over the data (diffusers)
    cache: str = ""  # the cache folder ("" = out/cache; on local disk where $ZC_RUNS or $ZC_CACHE is set: see
    # latent_cache.default_folder): give later runs on the same data the same folder
    num_workers: int = 0  # DataLoader workers reading each batch's images (helps for folders on a GPU box)
    out: str = "runs/controlnet"  # checkpoints, log.jsonl and the final controlnet/ folder
    seed: int = 0
    steps: int = 3000  # optimiser steps
    batch: int = 16  # per device, per accumulation step
    grad_accum: int = 1  # gradient accumulation steps
    lr: float = 2e-4  # AdamW on the ControlNet (paper at SD 1.5 scale: 1e-5)
    max_grad_norm: float = 1.0
    empty_prompt_prob: float = 0.5  # the paper's prompt dropout
    sd_locked: bool = True  # False: the UNet decoder trains too (original repo's sd_locked=False)
    decoder_lr: float = 2e-6  # its learning rate when unlocked
    only_mid_control: bool = False  # only the middle residual reaches the UNet
    global_pool: bool = False  # residuals averaged over space: for conditions with no "where" (palette)
    architecture: str = "controlnet"  # "controlnet"; ablations: "lite", "direct", "concat" (whole UNet fine-tuned);
    # "ip-adapter": a global condition as extra cross-attention tokens (ip_adapter.py), the UNet locked;
    # "t2i-adapter": a conv pyramid run once, added inside the down blocks (t2i_adapter.py), the UNet locked;
    # "controlnext": a small branch added after the first down block, cross-normalised (controlnext.py);
    # "controlnet-xs": a narrow control beside every encoder block, both ways (controlnet_xs.py)
    condition_dropout: float = 0.0  # per pair (and per member of a stack "a+b"), the condition replaced by zeros
    copy_weights: bool = True  # the trainable copy starts as the locked encoder (paper); False: random weights
    zero_conv_init: str = "zero"  # "zero" or "gaussian" (ablation)
    init: str = ""  # a trained ControlNet folder to start from instead of a copy of the UNet (fine-tuning it)
    ip_adapter: str = ""  # a trained IP-Adapter folder, locked and attached while the ControlNet trains (a
    # local control trained on top of a global one: zc.ip_adapter.WithGlobal); it reads ip_condition
    ip_condition: str = "palette"  # the global condition the attached adapter reads, drawn for the same scenes
    reward_weight: float = 0.0  # ControlNet++'s cycle-consistency loss, times this (reward.py); 0: off
    reward_t_max: int = 200  # the reward only where t < this: the one-step estimate of the image is good there
    mixed_precision: str = "no"  # "no", "fp16" or "bf16": the frozen SD in half precision, ControlNet in fp32
    gradient_checkpointing: bool = False  # recompute the copy's activations in backward (saves memory)
    eval_every: int = 250  # steps between fidelity measurements (0: never)
    eval_dense: bool = True  # also 10x more often before the first of them (an early jump); False: only those
    eval_n: int = 32  # held-out outlines/prompts for the fidelity measurement
    eval_prompts: str = "full"  # "full": held-out captions; "empty": "" (what the condition alone achieves)
    eval_steps: int = 20  # sampler steps for it
    guidance_scale: float = 5.0
    checkpoint_every: int = 500
    device: str = "auto"  # "auto", "cpu" or "cuda"
    report_to: str = ""  # "tensorboard" (or another accelerate tracker): loss and fidelity, logged in out/

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        presets = {
            "cpu": {},  # TinySD, 64 px, CPU: the book's default
            "tiny": dict(steps=40, batch=4, n_train=64, eval_every=20, eval_n=4, eval_steps=4, checkpoint_every=20),
            # the original tutorial's settings on SD 1.5 (batch 4, lr 1e-5), with diffusers' memory tricks
            "sd15": dict(sd="stable-diffusion-v1-5/stable-diffusion-v1-5", batch=4, lr=1e-5, steps=10000,
                         mixed_precision="fp16", gradient_checkpointing=True, eval_every=500, eval_n=16,
                         eval_steps=20, guidance_scale=7.5, checkpoint_every=1000),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


@dataclass
class TrainResult:
    controlnet: ControlNet
    history: list[dict]  # {"step", "loss"} rows and {"step", "shape_iou", ...} rows (conditions.measure)
    folder: Path  # out/controlnet (or out/ip-adapter, out/t2i-adapter), in diffusers format
    seconds: float  # the whole call: data encoding, training and evaluations
    step_seconds: float = 0.0  # of which the optimiser steps alone (what a speed comparison wants)
    snapshots: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)  # step -> validation images
    start_step: int = 0  # where this call began: 0, or the step of the checkpoint it resumed from


class StepBatches(torch.utils.data.Sampler):
    """Index batches by step: batch k depends only on (seed, k), so a resumed run reads the same pairs.
    mode "iid": each batch drawn with replacement; "epochs": positions k*batch ... (k+1)*batch of the
    concatenated epochs, each epoch its own permutation (what a shuffling DataLoader does)."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, mode: str = "iid"):
        if mode not in ("iid", "epochs"):
            raise ValueError(f"batches must be 'iid' or 'epochs', got {mode!r}")
        self.n, self.batch, self.seed, self.start, self.stop, self.mode = n, batch, seed, start, stop, mode
        self._perms: dict[int, list[int]] = {}

    def _epoch(self, e: int) -> list[int]:
        """Epoch e's permutation, drawn once (each step of the epoch reads it)."""
        if e not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= e - 1}  # a batch spans at most two
            self._perms[e] = torch.randperm(self.n, generator=step_generator(self.seed, "epoch", e)).tolist()
        return self._perms[e]

    def __iter__(self):
        for k in range(self.start, self.stop):
            if self.mode == "iid":
                yield torch.randint(self.n, (self.batch,), generator=step_generator(self.seed, "data", k)).tolist()
                continue
            positions = range(k * self.batch, (k + 1) * self.batch)
            yield [self._epoch(p // self.n)[p % self.n] for p in positions]

    def __len__(self) -> int:
        return self.stop - self.start


def _as_is(batch):
    return batch  # _Reader already returns whole batches


class _Reader(torch.utils.data.Dataset):
    """What one step reads from the data: the pairs' condition images (and their targets when
    encoding on the fly), fetched per batch: memory O(batch)."""

    def __init__(self, data: Fill50k, targets: bool):
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, idx):
        return {**self.data.batch(idx, targets=self.targets), "idx": torch.tensor(idx)}


def drop_conditions(cond: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each pair's condition (each member's 3 channels, for a stack "a+b") replaced by zeros with
    probability p, independently: a network trained so reads any subset. p = 0 draws nothing, so
    runs without dropout keep their random streams."""
    if p <= 0:
        return cond
    groups = cond.shape[1] // 3 if cond.shape[1] % 3 == 0 else 1
    keep = torch.rand(cond.shape[0], groups, generator=generator) >= p  # (B, k)
    keep = keep.repeat_interleave(cond.shape[1] // groups, dim=1)  # (B, k) -> (B, C)
    return cond * keep.to(cond.device, cond.dtype)[:, :, None, None]


def _target(scheduler, latents, noise, t):
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    if kind == "sample":
        return latents
    raise ValueError(f"unsupported prediction_type {kind!r}")


def build(cfg: TrainConfig, pipe, channels: int = 3, device="cpu") -> tuple[torch.nn.Module, torch.nn.Module]:
    """(what trains, the model the loss calls as model(z_t, t, c_t, c)) for cfg.architecture, found in
    zc.designs: a ControlNet (or a variant) beside the locked UNet, an adapter or branch beside it, or
    the concat model, whose UNet itself trains. Trained weights in fp32 on `device`; with cfg.init, the
    trained module in that folder instead of a fresh one (fine-tuning it: ControlNet++ starts so)."""
    design = designs.by_architecture(cfg.architecture)
    if cfg.init:
        if not hasattr(design.module, "from_pretrained"):
            raise ValueError(f"init fine-tunes a trained module; {design.name} has no saved form to start from")
        net = designs.load(design.name, cfg.init)
        if hasattr(net, "check_unet"):
            net.check_unet(pipe.unet)
    else:
        net = design.build(cfg, pipe, channels)
    net = net.to(device).float()  # .float(), not .to(dtype): diffusers' modules warn on that
    model = design.wrap(pipe.unet, net, cfg)
    if cfg.ip_adapter:
        if not isinstance(model, ControlledUNet):
            raise ValueError(f"ip_adapter attaches a global control beside a ControlNet; the architecture "
                             f"{cfg.architecture!r} has none: train with --architecture controlnet")
        adapter = IPAdapter.from_pretrained(cfg.ip_adapter).to(device, pipe.unet.dtype)
        model = WithGlobal(model, adapter)
    return net, model


def evaluate(pipe, controlnet, eval_set: Fill50k, cfg: TrainConfig, adapter=None) -> tuple[dict, torch.Tensor]:
    """Fidelity to the condition on the held-out set (conditions.measure), and the images it was measured on;
    with `adapter` (cfg.ip_adapter's, attached) reading cfg.ip_condition drawn for the same scenes."""
    was_training = controlnet.training
    controlnet.eval()
    if cfg.eval_prompts not in ("full", "empty"):
        raise ValueError(f"eval_prompts must be 'full' or 'empty', got {cfg.eval_prompts!r}")
    prompts = eval_set.prompts if cfg.eval_prompts == "full" else [""] * len(eval_set)
    controls = [(controlnet, eval_set.conditions())]
    if adapter is not None:  # the attached global control reads its own condition for the same scenes
        controls.append((adapter, global_conditions(cfg, eval_set, range(len(eval_set)))))
    images = sample(pipe, controls, prompts, num_inference_steps=cfg.eval_steps, guidance_scale=cfg.guidance_scale,
                    generator=torch.Generator().manual_seed(cfg.seed))
    controlnet.train(was_training)
    return conditions.measure(images, eval_set.scenes), images


def global_conditions(cfg: TrainConfig, data: Fill50k, idx) -> torch.Tensor:
    """cfg.ip_condition drawn for `data`'s scenes idx, (B, 3, H, W) in [0, 1]: what an attached adapter reads."""
    if data.scenes is None:
        raise ValueError("ip_adapter needs generated pairs (their scenes draw the global condition): "
                         "drop --data, or train the adapter's condition into the data yourself")
    return conditions.draw(cfg.ip_condition, data.scenes[torch.as_tensor(list(idx), dtype=torch.long)], data.size)


@torch.no_grad()
def condition_share(pipe, controlnet, data: Fill50k, timesteps=(100, 500, 900), seed: int = 0) -> list[dict]:
    """How much of the training loss the condition can remove, per timestep: the loss of the
    controlled UNet on `data` (full prompts, latents drawn from the VAE posterior, the same noise
    for both) with the real condition images and with blank ones (all zeros, what the hint
    encoder sees for "no condition"). Rows {t, loss, loss_blank, share = 1 - loss / loss_blank}."""
    from diffusers import DDPMScheduler

    device, dtype = pipe.unet.device, pipe.unet.dtype
    model = ControlledUNet(pipe.unet, controlnet.eval())
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    g = torch.Generator().manual_seed(seed)
    x = (data.targets.float() / 127.5 - 1).to(device, dtype)
    post = pipe.vae.encode(x).latent_dist
    eps = torch.randn(post.mean.shape, generator=g).to(device, post.mean.dtype)
    latents = (post.mean + post.std * eps) * pipe.vae.config.scaling_factor
    text = encode_prompts(pipe.tokenizer, pipe.text_encoder, data.prompts).to(device, dtype)
    cond = data.conditions().to(device, dtype)
    rows = []
    for t in timesteps:
        tt = torch.full((len(data),), t, device=device, dtype=torch.long)
        noise = torch.randn(latents.shape, generator=g).to(device, latents.dtype)
        noisy = scheduler.add_noise(latents, noise, tt)
        target = _target(scheduler, latents, noise, tt).float()
        loss, blank = (F.mse_loss(model(noisy, tt, text, c).float(), target).item()
                       for c in (cond, torch.zeros_like(cond)))
        rows.append({"t": t, "loss": loss, "loss_blank": blank, "share": 1 - loss / blank})
    return rows


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    """Validation images side by side in one PNG."""
    from PIL import Image

    n = min(len(images), columns)
    row = (images[:n].clamp(0, 1) * 255).round().to(torch.uint8).permute(2, 0, 3, 1).reshape(images.shape[-2], -1, 3)
    Image.fromarray(row.numpy()).save(path)


def train(cfg: TrainConfig, stop_after: int | None = None, pipe=None) -> TrainResult | None:
    """Train (or resume) a ControlNet. stop_after: stop with a checkpoint after this many optimiser
    steps of this call (to test resume, or to split a run into time slots). Returns None when stopped
    early.

    Under several processes (`accelerate launch`), each draws its own batches; only the main process
    evaluates and writes the checkpoint, the log and the final ControlNet, and the logged loss is the
    mean over processes."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from diffusers import DDPMScheduler

    t0 = time.time()
    check_device(cfg.device)  # else accelerate would fall back to the CPU without a word
    # accelerate keeps one process-wide state; a second run in the same process (a notebook, the
    # ablation runner) may ask for another precision. The distributed PartialState is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    out = Path(cfg.out)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                              cpu=cfg.device == "cpu", log_with=_trackers(cfg.report_to), project_dir=str(out))
    device, main = accelerator.device, accelerator.is_main_process
    if device.type == "cpu" and cfg.mixed_precision == "fp16":
        raise ValueError("mixed_precision='fp16' on a CPU: use 'no' (zc.sd.precision(device) picks one per device)")
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
    check_resumable(out, cfg)
    accelerator.wait_for_everyone()  # every process has read the old config.json before it is replaced
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(dataclasses.asdict(cfg), indent=2)))

    pipe = pipe or load_sd(cfg.sd, device=device, dtype=weight_dtype)
    pipe.to(device)
    if pipe.unet.dtype != weight_dtype:  # the frozen SD in the training precision (diffusers warns on any cast)
        pipe.to(dtype=weight_dtype)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    kinds = [k.strip() for k in cfg.kinds.split(",") if k.strip()] or None
    data = (Fill50k.load(cfg.data) if cfg.data else
            Fill50k.generate(cfg.n_train, size=size, seed=cfg.seed, condition=cfg.condition, kinds=kinds))
    if data.size != size:
        raise ValueError(f"fill50k images are {data.size} px but this SD works at {size} px: regenerate or resize the data")
    eval_set = Fill50k.generate(cfg.eval_n, size=size, seed=cfg.seed + 10_000, split="test", condition=cfg.condition,
                                kinds=kinds)
    if cfg.encode not in ("cache", "fly"):
        raise ValueError(f"encode must be 'cache' or 'fly', got {cfg.encode!r}")
    if cfg.latent not in ("sample", "mean"):
        raise ValueError(f"latent must be 'sample' (a draw from the VAE posterior) or 'mean', got {cfg.latent!r}")
    cache = None
    if cfg.encode == "cache":  # the main process encodes; the others then open the finished cache
        folder = Path(cfg.cache) if cfg.cache else default_folder(out, data, pipe, weight_dtype)
        if main:
            cache = LatentCache(folder, data, pipe, device, weight_dtype)
        accelerator.wait_for_everyone()
        if not main:
            cache = LatentCache(folder, data, pipe, device, weight_dtype)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    torch.manual_seed(cfg.seed)
    channels = eval_set.batch([0], targets=False)["sources"].shape[1]  # 3, or 3 per member of a stack ("a+b")
    controlnet, model = build(cfg, pipe, channels, device)
    segmenter = None  # ControlNet++'s frozen condition extractor, when the reward is on
    if cfg.reward_weight > 0:
        if cfg.condition_dropout > 0:
            raise ValueError("reward_weight with condition_dropout: the reward would ask for the shape of a condition "
                             "the model was not shown; use one or the other")
        reward.condition_masks(cfg.condition, eval_set.batch([0], targets=False)["sources"])  # ValueError if undefined
        segmenter = reward.load_segmenter().to(device).requires_grad_(False)
        pipe.vae.requires_grad_(False)  # the gradient goes through the decoder, not into it
    design = designs.by_architecture(cfg.architecture)
    if cfg.gradient_checkpointing:  # recompute activations of what trains (the copy, or the whole UNet)
        (pipe.unet if design.through_unet else controlnet).enable_gradient_checkpointing()
    controlnet.train()
    opt = torch.optim.AdamW(model.param_groups(cfg.lr, cfg.decoder_lr), weight_decay=1e-2)
    modules = {"controlnet": controlnet} | ({} if cfg.sd_locked else {"unet": pipe.unet})
    start, history, snapshots = 0, [], {}
    if has_checkpoint(out / "checkpoint"):
        state = load_checkpoint(out / "checkpoint", modules, opt)
        start, history = state["step"], state["history"]
        snapshots = load_snapshots(out, start)
    model, opt = accelerator.prepare(model, opt)
    params = [p for g in opt.param_groups for p in g["params"]]
    if cfg.report_to:
        accelerator.init_trackers("zc-controlnet", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                           if isinstance(v, (int, float, str, bool))})

    def save(step):
        if main:
            save_checkpoint(out / "checkpoint", modules, opt, {"step": step, "history": history})
        accelerator.wait_for_everyone()

    rank_seed = cfg.seed + 7919 * accelerator.process_index  # each process draws its own batches
    loader = iter(torch.utils.data.DataLoader(
        _Reader(data, targets=cache is None), collate_fn=_as_is, num_workers=cfg.num_workers,
        batch_sampler=StepBatches(len(data), cfg.batch, rank_seed, start * cfg.grad_accum, cfg.steps * cfg.grad_accum,
                                  cfg.batches)))
    score = conditions.get(cfg.condition).score
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"training {design.name}",
               **hide_bar(not accelerator.is_local_main_process))
    step_seconds, last_eval = 0.0, {}
    completed = start  # optimiser steps done and logged: what a checkpoint written now would hold
    try:
        for step in bar:
            tick = time.perf_counter()
            if stop_after is not None and step - start >= stop_after:
                save(step)
                accelerator.end_training()
                return None
            losses = []
            for micro in range(cfg.grad_accum):  # one optimiser step = grad_accum batches per process
                g = step_generator(rank_seed, "controlnet", step * cfg.grad_accum + micro)
                b = next(loader)
                with accelerator.accumulate(model):
                    cond = (b["sources"].float() / 255).to(device, weight_dtype)
                    if cfg.ip_adapter:  # the attached adapter's condition last (WithGlobal), dropped as a member
                        glob = global_conditions(cfg, data, b["idx"].tolist()).to(device, weight_dtype)
                        cond = torch.cat([cond, glob], dim=1)
                    drop = torch.rand(cfg.batch, generator=g) < cfg.empty_prompt_prob
                    cond = drop_conditions(cond, cfg.condition_dropout, g)
                    if cache is not None:
                        latents = cache.latents_for(b["idx"], device, generator=g, mean=cfg.latent == "mean")
                        text = cache.text_for(torch.where(drop, cache.empty_id, cache.prompt_ids[b["idx"]]), device)
                    else:
                        with torch.no_grad():
                            x = b["targets"].to(device, weight_dtype) / 127.5 - 1
                            post = pipe.vae.encode(x).latent_dist  # drawn as the cache draws: the same eps
                            eps = torch.randn(post.mean.shape, generator=g).to(device, post.mean.dtype)
                            z = post.mean if cfg.latent == "mean" else post.mean + post.std * eps
                            latents = z * pipe.vae.config.scaling_factor
                            prompts = ["" if d else p for d, p in zip(drop.tolist(), b["prompts"])]
                            text = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts).to(weight_dtype)
                    noise = torch.randn(latents.shape, generator=g).to(device, latents.dtype)
                    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (cfg.batch,), generator=g).to(device)
                    noisy = noise_scheduler.add_noise(latents, noise, t)
                    with accelerator.autocast():
                        pred = model(noisy, t, text, cond)
                    loss = F.mse_loss(pred.float(), _target(noise_scheduler, latents, noise, t).float())
                    near = t < cfg.reward_t_max  # ControlNet++: the reward where the one-step image is good
                    if segmenter is not None and near.any():
                        x0 = reward.predicted_x0(noise_scheduler, noisy[near], pred[near].float(), t[near])
                        masks = reward.condition_masks(cfg.condition, b["sources"][near.cpu()])
                        loss = loss + cfg.reward_weight * reward.reward_loss(pipe, segmenter, x0.to(pipe.vae.dtype),
                                                                             masks)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower --lr, or use "
                                                 "--mixed-precision no / bf16 instead of fp16")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                losses.append(loss.detach())
            mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()  # over processes
            history.append({"step": step, "loss": mean_loss})
            completed = step + 1
            accelerator.log({"loss": mean_loss}, step=step)
            step_seconds += time.perf_counter() - tick
            done = step + 1
            early = cfg.eval_dense and done < cfg.eval_every and done % max(cfg.eval_every // 10, 1) == 0  # an early jump
            if cfg.eval_every and (done % cfg.eval_every == 0 or early or done == cfg.steps):
                if main:
                    unwrapped = accelerator.unwrap_model(model)
                    last_eval, images = evaluate(pipe, controlnet, eval_set, cfg,
                                                 unwrapped.adapter if isinstance(unwrapped, WithGlobal) else None)
                    history.append({"step": done, **last_eval})
                    accelerator.log({f"eval/{k}": v for k, v in last_eval.items()}, step=done)
                    snapshots[done] = images[:8]
                    save_grid(images, out / f"validation_{done:06d}.png")
                accelerator.wait_for_everyone()
            if step % 10 == 0 or done == cfg.steps:
                bar.set_postfix(loss=f"{mean_loss:.4f}", **{k: f"{v:.3f}" for k, v in last_eval.items() if k == score})
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(done)
    except KeyboardInterrupt:  # a stopped kernel; a killed one (a Colab disconnect) keeps its last checkpoint
        if main and completed > start:
            save_checkpoint(out / "checkpoint", modules, opt, {"step": completed, "history": history})
            print(f"interrupted: checkpoint at step {completed} in {out / 'checkpoint'}; run again to resume")
        raise
    final = design.folder  # the trained part's folder
    if main:
        controlnet.save_pretrained(out / final)
        atomic_write(out / "log.jsonl", lambda p: p.write_text("".join(json.dumps(h) + "\n" for h in history)))
        seconds = {"seconds": round(time.time() - t0, 1), "step_seconds": round(step_seconds, 1),
                   "steps_this_call": cfg.steps - start}  # of this call (a resumed run: since the resume)
        atomic_write(out / "time.json", lambda p: p.write_text(json.dumps(seconds)))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(controlnet, history, out / final, time.time() - t0, step_seconds, snapshots, start)


RESUMABLE_FIELDS_MAY_CHANGE = ("steps", "eval_every", "eval_dense", "eval_n", "eval_steps", "checkpoint_every",
                               "device", "report_to", "num_workers", "out", "cache")  # a resumed run may differ in these


def check_resumable(out: Path, cfg: TrainConfig) -> None:
    """A checkpoint in `out` must come from the same recipe: resuming it with another batch, learning
    rate, model or data would silently mix two runs. ValueError names the differences and the fixes."""
    saved = out / "config.json"
    if not (has_checkpoint(out / "checkpoint") and saved.is_file()):
        return
    theirs = json.loads(saved.read_text())
    diff = {k: (theirs.get(k), v) for k, v in dataclasses.asdict(cfg).items()
            if k not in RESUMABLE_FIELDS_MAY_CHANGE and k in theirs and theirs[k] != v}
    if diff:
        said = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"{out} holds a run with other settings ({said}): resume it with its settings, delete "
                         "that folder, or train into another (out=..., or ZC_RUNS for the chapters)")
    done = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    if done > cfg.steps:  # a run never goes back: its weights at cfg.steps are gone
        raise ValueError(f"{out} holds a run already at step {done}, past steps={cfg.steps}: ask for steps >= {done} "
                         "to continue it, or train into another folder (out=..., or ZC_RUNS for the chapters)")


def load_snapshots(out: Path, upto: int) -> dict[int, torch.Tensor]:
    """The validation images of a resumed run's earlier evaluations, read back from the grids
    save_grid wrote (8 per step, as 8-bit PNG: equal to the uninterrupted run's to 1/255)."""
    import numpy as np
    from PIL import Image

    snaps = {}
    for f in sorted(out.glob("validation_*.png")):
        step = int(f.stem.split("_")[1])
        if step <= upto:
            row = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255
            h = row.shape[1]
            snaps[step] = torch.stack(row.split(h, dim=2))  # (3, h, 8h) -> (8, 3, h, h)
    return snaps


def _trackers(report_to: str) -> list[str] | None:
    """accelerate trackers from "--report-to tensorboard" (comma-separated; "" = none)."""
    from accelerate.utils import LoggerType

    names = [n.strip() for n in report_to.split(",") if n.strip()]
    known = sorted(t.value for t in LoggerType)
    for n in names:
        if n not in known:
            raise ValueError(f"--report-to {n!r}: unknown tracker; accelerate knows {known}")
    if "tensorboard" in names:
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise ValueError("--report-to tensorboard needs the tensorboard package: pip install tensorboard")
    return names or None


def format_history(history: list[dict], keys=conditions.SCORES) -> str:
    """The evaluations of a run as one compact table: step, mean training loss since the last
    evaluation, and the fidelity scores (conditions.measure)."""
    evals = [h for h in history if "loss" not in h]
    if not evals:
        return "(no evaluations)"
    keys = [k for k in keys if k in evals[0]]
    lines = [f"{'step':>6s} {'loss':>8s} " + " ".join(f"{k:>17s}" for k in keys)]
    prev = -1
    for e in evals:
        window = [h["loss"] for h in history if "loss" in h and prev < h["step"] < e["step"]]
        loss = f"{sum(window) / len(window):8.4f}" if window else f"{'':8s}"
        lines.append(f"{e['step']:6d} {loss} " + " ".join(f"{e[k]:17.3f}" for k in keys))
        prev = e["step"] - 1
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m zc.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", help="cpu (TinySD), tiny (smoke test) or sd15 (paper settings)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop with a checkpoint after this many steps; the same command later resumes")
    for f in dataclasses.fields(TrainConfig):
        kw = {"action": argparse.BooleanOptionalAction} if f.type in ("bool", bool) else {"type": type(f.default)}
        ap.add_argument("--" + f.name.replace("_", "-"), default=None, **kw)
    args = ap.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    cfg = TrainConfig.preset(args.preset, **overrides)
    r = train(cfg, stop_after=args.stop_after)
    from accelerate import PartialState

    if PartialState().is_main_process:
        if r is None:
            print(f"stopped after {args.stop_after} steps; checkpoint in {Path(cfg.out) / 'checkpoint'} "
                  "(rerun to resume)")
        else:
            print(format_history(r.history))
            print(f"done in {r.seconds:.0f} s; ControlNet in {r.folder}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under `accelerate launch`, everything is written and the process group is destroyed by now.
        # Python's own shutdown after that can hang with gloo (here: 1 launch in 112, the main
        # process printed its last line and never exited, the launcher waiting on it; pytorch/pytorch
        # #75097, #179291): leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
