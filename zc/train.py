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
import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from tqdm.auto import tqdm

from . import designs
from .controlled_unet import ControlledUNet
from .sample import sample
from .sd3 import denoiser, flow_draw, scale_latents, text_features, to_latents
from .tinysd import encode_prompts
from .training_run import build, finish, keep_until_exit, register_extra, setup  # noqa: F401  (build, register_extra: here too)
from .training_utils import (  # noqa: F401  (StepBatches and check_resumable: importable from here too)
    StepBatches,
    check_resumable,
    hide_bar,
    draw_timesteps,
    posterior_draw,
    prediction_target,
    save_grid,
    step_generator,
)
from .world import conditions
from .world.pairs import PairedData

__all__ = ["TrainConfig", "TrainResult", "build", "drop_conditions", "Batch", "Denoised", "draw_timesteps", "objective", "read_batch",
    "evaluate", "condition_share", "train", "evaluations", "evaluates_at", "format_history", "main"]


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
    timesteps: str = "uniform"  # t ~ U{0..T-1} (the paper, SD); "cubic": T2I-Adapter's t = (1 - u³)·T, u ~ U(0, 1),
    # which draws more of the high-noise steps where the layout is decided (its paper §3.4)
    sd_locked: bool = True  # False: the UNet decoder trains too (original repo's sd_locked=False)
    decoder_lr: float = 2e-6  # its learning rate when unlocked
    only_mid_control: bool = False  # only the middle residual reaches the UNet
    global_pool: bool = False  # residuals averaged over space: for conditions with no "where" (palette)
    architecture: str = "controlnet"  # which design trains: one of zc.designs' architectures (the paper's
    # "controlnet", chapter 10's variants, the successors): python -c "import zc; print(zc.designs.table())"
    copy_depth: int = 0  # an SD3 ControlNet's copied joint blocks (0: half the base's, as diffusers' 12 of 24; -1: all)
    flow_target: str = "velocity"  # on an SD3: "velocity", SD3's own loss on v = ε − z_0; "sample": diffusers' SD3
    # scripts' default (precondition_outputs=1), the loss on the z_0 that v implies (v's loss weighted by t²)
    condition_dropout: float = 0.0  # per pair (and per member of a stack "a+b"), the condition replaced by zeros
    copy_weights: bool = True  # the trainable copy starts as the locked encoder (paper); False: random weights
    zero_conv_init: str = "zero"  # "zero" or "gaussian" (ablation)
    init: str = ""  # a trained ControlNet folder to start from instead of a copy of the UNet (fine-tuning it)
    ip_adapter: str = ""  # a trained IP-Adapter folder, locked and attached while the ControlNet trains (a
    # local control trained on top of a global one: zc.controls.ip_adapter.WithGlobal); it reads ip_condition
    ip_condition: str = "palette"  # the global condition the attached adapter reads, drawn for the same scenes
    reward_weight: float = 0.0  # ControlNet++'s cycle-consistency loss, times this (reward.py); 0: off
    reward_t_max: int = 200  # the reward only where t < this: the one-step estimate of the image is good there
    mixed_precision: str = "no"  # "no", "fp16", "bf16" (the frozen SD in half precision, what trains in fp32)
    # or "auto": zc.sd.precision of the device (bf16 from compute capability 8.0, fp16 below, no on a CPU)
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
            # TinySD3 (chapter 14), CPU: its ControlNet, the transformer's copy
            "sd3": dict(sd="tinysd3", architecture=designs.reference_for("transformer").architecture),
            "tiny": dict(steps=40, batch=4, n_train=64, eval_every=20, eval_n=4, eval_steps=4, checkpoint_every=20),
            # the original tutorial's settings on SD 1.5 (batch 4, lr 1e-5), with diffusers' memory tricks
            "sd15": dict(sd="stable-diffusion-v1-5/stable-diffusion-v1-5", batch=4, lr=1e-5, steps=10000,
                         mixed_precision="auto", gradient_checkpointing=True, eval_every=500, eval_n=16,
                         eval_steps=20, guidance_scale=7.5, checkpoint_every=1000),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


@dataclass
class TrainResult:
    module: torch.nn.Module  # what trained: a ControlNet, or any design's module (zc.designs)
    history: list[dict]  # {"step", "loss"} rows and {"step", "shape_iou", ...} rows (conditions.measure)
    folder: Path  # out/<the design's folder>: out/controlnet, out/t2i-adapter, ...; diffusers' format
    seconds: float  # the whole call: data encoding, training and evaluations
    step_seconds: float = 0.0  # of which the optimiser steps alone (what a speed comparison wants)
    snapshots: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)  # step -> validation images
    start_step: int = 0  # where this call began: 0, or the step of the checkpoint it resumed from


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


@dataclass
class Batch:
    """One micro-batch as the objective reads it."""
    latents: torch.Tensor  # z_0, (B, 4, h, w): a draw from each target's VAE posterior, x scaling_factor
    text: torch.Tensor  # c_t, (B, 77, D): the prompts' features, each prompt "" with the paper's 50%
    cond: torch.Tensor  # c_f, (B, C, H, W) in [0, 1]: the condition images
    sources: torch.Tensor  # the condition images as read, (B, C, H, W) uint8


@dataclass
class Denoised:
    """What the objective computed: the noised latents, their timesteps and the model's prediction."""
    noisy: torch.Tensor  # z_t
    t: torch.Tensor  # (B,)
    pred: torch.Tensor  # ε_θ(z_t, t, c_t, c_f) (or v, or z_0)


def objective(model, scheduler, batch: Batch, generator: torch.Generator, autocast=contextlib.nullcontext,
              timesteps: str = "uniform", flow_target: str = "velocity"):
    """The paper's objective, SD's own: L = || target − ε_θ(z_t, t, c_t, c_f) ||², with
    ε ~ N(0, I) and t ~ U{0, ..., T−1} drawn from `generator`, z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε, and
    target = ε (or v, or z_0: the SD's prediction type). On an SD3 (a flow-matching scheduler) the same
    loss with SD3's flow: z_t = (1 − t) z_0 + t ε, t logit-normal, target ε − z_0 (zc.sd3.flow_draw); with
    flow_target="sample", diffusers' SD3 scripts' default (precondition_outputs=1): the loss on the z_0 the
    predicted velocity implies, z_t − t v_θ, against z_0, which is the velocity's loss weighted by t².
    Returns (loss, Denoised)."""
    latents = batch.latents
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):  # an SD3's
        noisy, t, target = flow_draw(latents, generator, scheduler.config.shift)
        with autocast():
            pred = model(noisy, t, batch.text, batch.cond)
        if flow_target == "sample":
            sigma = (t / 1000).view(-1, *[1] * (latents.dim() - 1))
            return F.mse_loss((noisy - sigma * pred).float(), latents.float()), Denoised(noisy, t, pred)
        return F.mse_loss(pred.float(), target.float()), Denoised(noisy, t, pred)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    t = draw_timesteps(len(latents), scheduler.config.num_train_timesteps, generator, timesteps).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    with autocast():
        pred = model(noisy, t, batch.text, batch.cond)
    loss = F.mse_loss(pred.float(), prediction_target(scheduler, latents, noise, t).float())
    return loss, Denoised(noisy, t, pred)


def read_batch(b: dict, cfg: TrainConfig, data, cache, pipe, extras, g: torch.Generator, dtype) -> Batch:
    """A loader batch as the objective reads it: the condition (any attached control's appended, then
    each dropped with cfg.condition_dropout), the prompts (each dropped to "" with cfg.empty_prompt_prob)
    and z_0 (from the latent cache, or encoded now: one draw from the VAE posterior either way)."""
    device = denoiser(pipe).device
    cond = (b["sources"].float() / 255).to(device, dtype)
    for cb in extras:
        cond = cb.condition(cond, data, b["idx"].tolist())
    drop = torch.rand(cfg.batch, generator=g) < cfg.empty_prompt_prob  # the paper's prompt dropout
    cond = drop_conditions(cond, cfg.condition_dropout, g)
    if designs.by_architecture(cfg.architecture).control_input == "latents":  # SD3's ControlNet reads latents
        with torch.no_grad():
            cond = to_latents(pipe.vae, cond * 2 - 1, generator=g, mean=cfg.latent == "mean")
    if cache is not None:
        latents = cache.latents_for(b["idx"], device, generator=g, mean=cfg.latent == "mean")
        text = cache.text_for(torch.where(drop, cache.empty_id, cache.prompt_ids[b["idx"]]), device)
        return Batch(latents, text, cond, b["sources"])
    with torch.no_grad():
        post = pipe.vae.encode(b["targets"].to(device, dtype) / 127.5 - 1).latent_dist  # drawn as the cache draws
        latents = scale_latents(pipe.vae, posterior_draw(post.mean, post.std, g, cfg.latent == "mean"))
        prompts = ["" if d else p for d, p in zip(drop.tolist(), b["prompts"])]
        text = text_features(pipe, prompts).to(dtype)
    return Batch(latents, text, cond, b["sources"])


def evaluate(pipe, module, eval_set: PairedData, cfg: TrainConfig, extras=()) -> tuple[dict, torch.Tensor]:
    """Fidelity to the condition on the held-out set (conditions.measure), and the images it was measured
    on; any control a callback attaches (an IP-Adapter) sampled beside, reading its own condition."""
    was_training = module.training
    module.eval()
    if cfg.eval_prompts not in ("full", "empty"):
        raise ValueError(f"eval_prompts must be 'full' or 'empty', got {cfg.eval_prompts!r}")
    prompts = eval_set.prompts if cfg.eval_prompts == "full" else [""] * len(eval_set)
    controls = [(module, eval_set.conditions())] + [c for cb in extras for c in cb.eval_controls(eval_set)]
    device = denoiser(pipe).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # what draws from the global RNG (SD3's control latents, as its pipeline)
        images = sample(pipe, controls, prompts, num_inference_steps=cfg.eval_steps,
                        guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed))
    module.train(was_training)
    return conditions.measure(images, eval_set.scenes), images


@torch.no_grad()
def condition_share(pipe, controlnet, data: PairedData, timesteps=(100, 500, 900), seed: int = 0) -> list[dict]:
    """How much of the training loss the condition can remove, per timestep: the loss of the
    controlled UNet on `data` (full prompts, latents drawn from the VAE posterior, the same noise
    for both) with the real condition images and with blank ones (all zeros, what the hint
    encoder sees for "no condition"). Rows {t, loss, loss_blank, share = 1 - loss / loss_blank}."""
    from diffusers import DDPMScheduler

    device, dtype = pipe.unet.device, pipe.unet.dtype
    model = ControlledUNet(pipe.unet, controlnet.eval())
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    g = torch.Generator().manual_seed(seed)
    post = pipe.vae.encode((data.targets.float() / 127.5 - 1).to(device, dtype)).latent_dist
    latents = posterior_draw(post.mean, post.std, g) * pipe.vae.config.scaling_factor
    text = encode_prompts(pipe.tokenizer, pipe.text_encoder, data.prompts).to(device, dtype)
    cond = data.conditions().to(device, dtype)
    rows = []
    for t in timesteps:
        tt = torch.full((len(data),), t, device=device, dtype=torch.long)
        noise = torch.randn(latents.shape, generator=g).to(device, latents.dtype)
        noisy = scheduler.add_noise(latents, noise, tt)
        target = prediction_target(scheduler, latents, noise, tt).float()
        loss, blank = (F.mse_loss(model(noisy, tt, text, c).float(), target).item()
                       for c in (cond, torch.zeros_like(cond)))
        rows.append({"t": t, "loss": loss, "loss_blank": blank, "share": 1 - loss / blank})
    return rows


def train(cfg: TrainConfig, stop_after: int | None = None, pipe=None) -> TrainResult | None:
    """Train (or resume) a ControlNet, or any design of zc.designs. stop_after: stop with a checkpoint after
    this many optimiser steps of this call (to test resume, or to split a run into time slots). Returns
    None when stopped early.

    Under several processes (`accelerate launch`), each draws its own batches; only the main process
    evaluates and writes the checkpoint, the log and the final module, and the logged loss is the
    mean over processes. Everything around the loop is zc.training_run's."""
    t0 = time.time()
    run = setup(cfg, pipe)
    acc, model, opt, history = run.accelerator, run.model, run.opt, run.history
    params = [p for g in opt.param_groups for p in g["params"]]
    bar = tqdm(range(run.start, cfg.steps), initial=run.start, total=cfg.steps, desc=f"training {run.design.name}",
               **hide_bar(not acc.is_local_main_process))
    score, last_eval = conditions.get(cfg.condition).score, {}
    step_seconds, completed = 0.0, run.start  # completed: the steps a checkpoint written now would hold
    try:
        for step in bar:
            tick = time.perf_counter()
            if stop_after is not None and step - run.start >= stop_after:
                run.checkpoints.save(step, history, acc)
                acc.end_training()
                keep_until_exit(run)
                return None
            losses = []
            for micro in range(cfg.grad_accum):  # one optimiser step = grad_accum batches per process
                g = step_generator(run.rank_seed, "controlnet", step * cfg.grad_accum + micro)
                with acc.accumulate(model):
                    batch = read_batch(next(run.loader), cfg, run.data, run.cache, run.pipe, run.extras, g, run.dtype)
                    loss, denoised = objective(model, run.scheduler, batch, g, acc.autocast, cfg.timesteps,
                                               cfg.flow_target)
                    for extra in (cb.extra_loss(batch, denoised) for cb in run.extras):  # the reward's term
                        loss = loss if extra is None else loss + extra
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower --lr, or use "
                                                 "--mixed-precision no / bf16 instead of fp16")
                    acc.backward(loss)
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                losses.append(loss.detach())
            mean_loss = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()  # over processes
            history.append({"step": step, "loss": mean_loss})
            completed = done = step + 1
            acc.log({"loss": mean_loss}, step=step)
            step_seconds += time.perf_counter() - tick
            if evaluates_at(cfg, done):
                last_eval = _evaluate_now(run, done) or last_eval
            if step % 10 == 0 or done == cfg.steps:
                bar.set_postfix(loss=f"{mean_loss:.4f}", **{k: f"{v:.3f}" for k, v in last_eval.items() if k == score})
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                run.checkpoints.save(done, history, acc)
    except KeyboardInterrupt:  # a stopped kernel; a killed one (a Colab disconnect) keeps its last checkpoint
        run.checkpoints.interrupted(completed, run.start, history)
        raise
    folder = finish(run, t0, step_seconds)
    return TrainResult(run.module, history, folder, time.time() - t0, step_seconds, run.snapshots, run.start)


def evaluations(cfg: TrainConfig, start: int = 0) -> int:
    """How many fidelity evaluations a run of `cfg` makes from step `start` on (what a budget counts)."""
    return sum(evaluates_at(cfg, done) for done in range(start + 1, cfg.steps + 1))


def evaluates_at(cfg: TrainConfig, done: int) -> bool:
    """Whether the loop measures fidelity after `done` steps: every eval_every steps and at the end, and
    (eval_dense) 10x more often before the first of them, where an early jump would hide."""
    early = cfg.eval_dense and done < cfg.eval_every and done % max(cfg.eval_every // 10, 1) == 0
    return bool(cfg.eval_every) and (done % cfg.eval_every == 0 or early or done == cfg.steps)


def _evaluate_now(run, done: int) -> dict:
    """On the main process: measure, log, keep 8 images and write the validation grid; {} elsewhere."""
    scores = {}
    if run.accelerator.is_main_process:
        scores, images = evaluate(run.pipe, run.module, run.eval_set, run.cfg, run.extras)
        run.history.append({"step": done, **scores})
        run.accelerator.log({f"eval/{k}": v for k, v in scores.items()}, step=done)
        run.snapshots[done] = images[:8]
        save_grid(images, Path(run.cfg.out) / f"validation_{done:06d}.png")
    run.accelerator.wait_for_everyone()
    return scores


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
        # Tearing down what the run built after that can hang with gloo (the DDP model's reducer:
        # keep_until_exit), and so can Python's own shutdown (1 launch in 112, the main process
        # printed its last line and never exited; pytorch/pytorch #75097, #179291): leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
