"""Everything a training run needs around zc.train's loop: the module that trains and the model the loss
calls (built from zc.designs' registry), the callbacks controls add (register_extra), accelerate, the
locked SD, the data and its latent cache, the optimiser, checkpoints and resume, and the final save.

    run = setup(cfg, pipe)        # all of it, resumed from out/checkpoint where one is
    ... the loop (zc.train.train) ...
    finish(run, ...)              # out/<folder>, log.jsonl, time.json
"""
from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import designs
from .latent_cache import LatentCache, default_folder
from .sd import check_device, image_size, precision
from .sd3 import denoiser, is_sd3, load_base
from .training_utils import (
    TIMESTEP_SCHEDULES,
    BatchReader,
    StepBatches,
    atomic_write,
    check_resumable,
    has_checkpoint,
    load_checkpoint,
    load_snapshots,
    save_checkpoint,
    trackers,
    whole_batches,
)
from .world.pairs import PairedData

__all__ = ["Callback", "EXTRAS", "register_extra", "build", "Run", "setup", "finish", "keep_until_exit"]


class Callback:
    """What the loop lets a control add to training, fastai-style (each a no-op here). Controls register a
    factory with `register_extra`: called as factory(cfg, pipe, eval_set, device), it returns a Callback
    when the config asks for it (reward_weight, ip_adapter) and None otherwise."""

    def wrap(self, model):
        """The model the loss calls (an attached control around it)."""
        return model

    def condition(self, cond: torch.Tensor, data, idx: list[int]) -> torch.Tensor:
        """The batch's condition images as the model reads them (before condition dropout)."""
        return cond

    def extra_loss(self, batch, out) -> torch.Tensor | None:
        """A term added to the objective's loss for this batch (zc.train.Batch; out: zc.train.Denoised,
        what the objective computed), or None."""
        return None

    def eval_controls(self, eval_set) -> list[tuple]:
        """(module, condition) pairs sampled beside the trained module when it is evaluated."""
        return []


EXTRAS: list = []  # the factories of the registered callbacks, in registration order


def register_extra(factory):
    EXTRAS.append(factory)
    return factory


def build(cfg, pipe, channels: int = 3, device="cpu") -> tuple[torch.nn.Module, torch.nn.Module]:
    """(what trains, the model the loss calls as model(z_t, t, c_t, c)) for cfg.architecture, found in
    zc.designs: a ControlNet (or a variant) beside the locked UNet, an adapter or branch beside it, or
    the concat model, whose UNet itself trains. Trained weights in fp32 on `device`; with cfg.init, the
    trained module in that folder instead of a fresh one (fine-tuning it: ControlNet++ starts so)."""
    design = designs.by_architecture(cfg.architecture)
    designs.check_backbone(design, pipe)
    if design.control_input == "latents" and channels != 3:
        raise ValueError(f"{design.name} reads the control image through the VAE, which takes RGB images: a condition "
                         f"of {channels} channels (a stack) needs a design that reads pixels")
    if cfg.init:
        if not hasattr(design.module, "from_pretrained"):
            raise ValueError(f"init fine-tunes a trained module; {design.name} has no saved form to start from")
        net = designs.load(design.name, cfg.init)
        if hasattr(net, "check_unet"):
            net.check_unet(pipe.unet)
    else:
        net = design.build(cfg, pipe, channels)
    net = net.to(device).float()  # .float(), not .to(dtype): diffusers' modules warn on that
    return net, design.wrap(denoiser(pipe), net, cfg)


def _accelerator(cfg):
    """accelerate for this run (device, mixed precision, accumulation, trackers), after checking the
    device and that out/ holds no run with other settings; writes out/config.json. (accelerator, the
    frozen SD's dtype)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, GradientState

    check_device(cfg.device)  # else accelerate would fall back to the CPU without a word
    if cfg.mixed_precision not in ("no", "fp16", "bf16", "auto"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16', 'bf16' or 'auto', got {cfg.mixed_precision!r}")
    mixed = precision(cfg.device) if cfg.mixed_precision == "auto" else cfg.mixed_precision
    # only_mid_control leaves the skip zero convs without gradient: several processes (DDP) must expect that
    ddp = [DistributedDataParallelKwargs(find_unused_parameters=True)] if cfg.only_mid_control else []
    # accelerate keeps one process-wide state; a second run in the same process (a notebook, the
    # ablation runner) may ask for another precision. The distributed PartialState is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    out = Path(cfg.out)
    accelerator = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg.grad_accum,
                              cpu=cfg.device == "cpu", log_with=trackers(cfg.report_to), project_dir=str(out),
                              kwargs_handlers=ddp)
    if accelerator.device.type == "cpu" and mixed == "fp16":
        raise ValueError("mixed_precision='fp16' on a CPU: use 'no' (zc.sd.precision(device) picks one per device)")
    check_resumable(out, cfg)
    accelerator.wait_for_everyone()  # every process has read the old config.json before it is replaced
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(dataclasses.asdict(cfg), indent=2)))
    if cfg.report_to:
        accelerator.init_trackers("zc-controlnet", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                           if isinstance(v, (int, float, str, bool))})
    return accelerator, {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)


def _locked_sd(cfg, pipe, device, dtype):
    """The frozen SD on `device` in the training precision (diffusers warns on any cast)."""
    pipe = pipe or load_base(cfg.sd, device=device, dtype=dtype)  # an SD 1.x, or an SD3 (chapter 14)
    pipe.to(device)
    if denoiser(pipe).dtype != dtype:
        pipe.to(dtype=dtype)
    return pipe


def _data(cfg, pipe, accelerator, dtype):
    """(training pairs, held-out pairs, the latent cache or None). The main process encodes the cache;
    the others then open the finished one."""
    size = image_size(pipe)
    kinds = [k.strip() for k in cfg.kinds.split(",") if k.strip()] or None
    data = (PairedData.load(cfg.data) if cfg.data else
            PairedData.generate(cfg.n_train, size=size, seed=cfg.seed, condition=cfg.condition, kinds=kinds))
    if data.size != size:
        raise ValueError(f"fill50k images are {data.size} px but this SD works at {size} px: regenerate or resize the data")
    eval_set = PairedData.generate(cfg.eval_n, size=size, seed=cfg.seed + 10_000, split="test", condition=cfg.condition,
                                kinds=kinds)
    if cfg.encode not in ("cache", "fly"):
        raise ValueError(f"encode must be 'cache' or 'fly', got {cfg.encode!r}")
    if cfg.latent not in ("sample", "mean"):
        raise ValueError(f"latent must be 'sample' (a draw from the VAE posterior) or 'mean', got {cfg.latent!r}")
    if cfg.flow_target not in ("velocity", "sample"):
        raise ValueError(f"flow_target must be 'velocity' (SD3's loss) or 'sample' (diffusers' SD3 scripts' "
                         f"precondition_outputs=1), got {cfg.flow_target!r}")
    if cfg.timesteps not in TIMESTEP_SCHEDULES:
        raise ValueError(f"timesteps must be 'uniform' (the paper) or 'cubic' (T2I-Adapter's), got {cfg.timesteps!r}")
    cache = None
    if cfg.encode == "cache":
        folder = Path(cfg.cache) if cfg.cache else default_folder(cfg.out, data, pipe, dtype)
        if accelerator.is_main_process:
            cache = LatentCache(folder, data, pipe, accelerator.device, dtype)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            cache = LatentCache(folder, data, pipe, accelerator.device, dtype)
    return data, eval_set, cache


def _loader(cfg, data, cache, rank_seed: int, start: int):
    """The batches from step `start` on: batch k depends only on (rank_seed, k) (StepBatches)."""
    sampler = StepBatches(len(data), cfg.batch, rank_seed, start * cfg.grad_accum, cfg.steps * cfg.grad_accum,
                          cfg.batches)
    return iter(torch.utils.data.DataLoader(BatchReader(data, targets=cache is None), collate_fn=whole_batches,
                                            num_workers=cfg.num_workers, batch_sampler=sampler))


class Checkpoints:
    """out/checkpoint: what trains, the optimiser, the step and the history, written atomically by the
    main process; read back to resume (with the validation images of the evaluations before it)."""

    def __init__(self, out: Path, modules: dict, opt, main: bool):
        self.out, self.modules, self.opt, self.main = out, modules, opt, main

    def resume(self) -> tuple[int, list, dict]:
        if not has_checkpoint(self.out / "checkpoint"):
            return 0, [], {}
        state = load_checkpoint(self.out / "checkpoint", self.modules, self.opt)
        return state["step"], state["history"], load_snapshots(self.out, state["step"])

    def save(self, step: int, history: list, accelerator) -> None:
        if self.main:
            save_checkpoint(self.out / "checkpoint", self.modules, self.opt, {"step": step, "history": history})
        accelerator.wait_for_everyone()

    def interrupted(self, completed: int, start: int, history: list) -> None:
        if self.main and completed > start:
            save_checkpoint(self.out / "checkpoint", self.modules, self.opt, {"step": completed, "history": history})
            print(f"interrupted: checkpoint at step {completed} in {self.out / 'checkpoint'}; run again to resume")


def finish(run: "Run", t0: float, step_seconds: float) -> Path:
    """The trained module in out/<design.folder> (diffusers' format), the log and the times; the folder."""
    cfg, accelerator, history, start = run.cfg, run.accelerator, run.history, run.start
    out = Path(cfg.out)
    folder = run.design.folder
    if accelerator.is_main_process:
        run.module.save_pretrained(out / folder)
        atomic_write(out / "log.jsonl", lambda p: p.write_text("".join(json.dumps(h) + "\n" for h in history)))
        seconds = {"seconds": round(time.time() - t0, 1), "step_seconds": round(step_seconds, 1),
                   "steps_this_call": cfg.steps - start}  # of this call (a resumed run: since the resume)
        atomic_write(out / "time.json", lambda p: p.write_text(json.dumps(seconds)))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    keep_until_exit(run)
    return out / folder


LAUNCHED: list = []  # the runs of a process launched with several others, kept until it exits


def keep_until_exit(run: "Run") -> None:
    """Under several processes, keep what a run built alive until the process exits: freeing the DDP
    model once the process group is gone can deadlock in gloo (the main thread joins gloo's worker
    thread while holding the GIL, and the worker needs the GIL to free a finished barrier's tensors;
    seen in tests/test_multiprocess.py). `python -m zc.train` then leaves with os._exit."""
    if run.accelerator.num_processes > 1:
        LAUNCHED.append(run)


@dataclass
class Run:
    """What zc.train's loop works with, set up by `setup`."""
    cfg: object  # the TrainConfig
    accelerator: object
    dtype: torch.dtype  # the frozen SD's (the training precision)
    pipe: object  # the locked SD
    data: PairedData  # the training pairs
    eval_set: PairedData  # the held-out pairs
    cache: LatentCache | None  # their VAE latents and text features, encoded once (None: encode on the fly)
    scheduler: object  # the training noise schedule (DDPM, from the SD's)
    design: designs.Design
    module: torch.nn.Module  # what trains (a ControlNet, an adapter, a branch, or the concat model)
    model: torch.nn.Module  # what the loss calls: model(z_t, t, c_t, c) -> ε, inside accelerate
    extras: list  # the callbacks (reward, an attached adapter)
    opt: torch.optim.Optimizer
    checkpoints: Checkpoints
    start: int  # the step this call starts from (a checkpoint's, or 0)
    history: list  # {"step", "loss"} and evaluation rows so far
    snapshots: dict  # step -> 8 validation images
    rank_seed: int  # this process's seed for its batches
    loader: object  # the batches from `start` on


def setup(cfg, pipe=None) -> Run:
    """Everything for the loop, in order: accelerate (and out/config.json), the locked SD, the data and
    cache, the module built from the registry (seeded by cfg.seed), the callbacks wrapped around the
    model, gradient checkpointing, the optimiser, the checkpoint resumed, and the batches from there."""
    from diffusers import DDPMScheduler

    accelerator, dtype = _accelerator(cfg)
    device, main = accelerator.device, accelerator.is_main_process
    pipe = _locked_sd(cfg, pipe, device, dtype)
    data, eval_set, cache = _data(cfg, pipe, accelerator, dtype)
    if is_sd3(pipe):  # flow matching: the objective draws logit-normal t (zc.sd3.flow_draw)
        if cfg.timesteps != "uniform" or not cfg.sd_locked or cfg.reward_weight or cfg.ip_adapter:
            raise ValueError("on an SD3 zc trains with flow matching's timesteps, the base locked and no reward or "
                             "attached IP-Adapter: leave timesteps, sd_locked, reward_weight and ip_adapter as default")
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    else:
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    torch.manual_seed(cfg.seed)
    design = designs.by_architecture(cfg.architecture)
    module, model = build(cfg, pipe, eval_set.batch([0], targets=False)["sources"].shape[1], device)
    extras = [cb for make in EXTRAS if (cb := make(cfg, pipe, eval_set, device)) is not None]  # reward, attached
    for cb in extras:
        model = cb.wrap(model)
    if cfg.gradient_checkpointing and design.hooks_in_blocks:
        warnings.warn(f"gradient_checkpointing is off for {design.name}: its hooks inside the UNet's blocks are "
                      "removed before backward, so a recomputed block would differ (more memory instead)")
    elif cfg.gradient_checkpointing:  # recompute activations of what trains (the copy, or the whole UNet)
        (denoiser(pipe) if design.through_unet else module).enable_gradient_checkpointing()
    module.train()
    opt = torch.optim.AdamW(model.param_groups(cfg.lr, cfg.decoder_lr), weight_decay=1e-2)
    ckpt = Checkpoints(Path(cfg.out), {"controlnet": module} | ({} if cfg.sd_locked else {"unet": pipe.unet}),
                       opt, main)
    start, history, snapshots = ckpt.resume()
    model, opt = accelerator.prepare(model, opt)
    rank_seed = cfg.seed + 7919 * accelerator.process_index  # each process draws its own batches
    return Run(cfg, accelerator, dtype, pipe, data, eval_set, cache, scheduler, design, module, model, extras,
               opt, ckpt, start, history, snapshots, rank_seed, _loader(cfg, data, cache, rank_seed, start))

