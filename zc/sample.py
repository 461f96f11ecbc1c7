"""Sampling with controls: the loop of diffusers' StableDiffusionControlNetPipeline, written out.

Per step, with classifier-free guidance (CFG) of weight g:

    ε_u = ε_θ(z_t, t, ∅,   control?)        unconditional branch
    ε_c = ε_θ(z_t, t, c_t, control)         conditional branch
    ε   = ε_u + g (ε_c − ε_u)

Where a ControlNet's residuals go, and how strongly, is the whole menu of options:
- default: the control enters both branches (original repo and diffusers), scaled by
  `conditioning_scale` (a float, or one value per residual);
- `guess_mode`: the control enters the conditional branch only, residual i scaled by
  10**(-1 + i/12) (0.1 at the first skip, 1.0 at the middle: diffusers' torch.logspace(-1, 0, 13),
  the original's 0.825**(12 - i));
- `cfg_rw` (the paper's "CFG resolution weighting"): conditional branch only, residual i weighted
  w_i = 64 / h_i, i.e. (first skip's size) / h_i: ×1 at the top, ×8 at SD's middle block. Taken
  literally (`cfg_rw=True` or "literal") this over-drives the deep residuals far beyond anything
  seen in training (original issue #582); `cfg_rw="normalised"` divides the weights by their
  largest, so they rise from 1/8 to 1 like guess mode's; chapter 7 measures both;
- `control_guidance_start/end`: the fraction of the steps during which the control is on.

Every control is given the same way, as (module, condition) pairs, or (module, condition, scale):

    sample(pipe, controlnet, prompts, outlines)                        # a ControlNet (diffusers' form)
    sample(pipe, [(controlnet, keypoints), (ip_adapter, palettes)], prompts)   # any designs together

How each design enters the locked UNet lives with the design (its `Entry` in zc.designs' registry:
ControlNets in zc/controlled_unet.py, the others in their own modules); this loop only merges what
each entry adds to the UNet's call. `conditioning_scale`, `guess_mode` and `cfg_rw` weight ControlNet
residuals and are refused where no control has any; another design's strength is the third element of
its pair (a T2I-Adapter's features, a branch's scale, an IP-Adapter's λ).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from . import designs
from .sd3 import is_sd3, sample_sd3
from .sd import image_size

__all__ = ["sample", "Run", "Step", "as_controls", "weights_residuals", "check_condition", "cfg_rw_weights"]


@dataclass
class Run:
    """What every control's entry needs to know about one call of `sample`."""
    unet: torch.nn.Module  # the locked UNet
    batch: int  # images (prompts)
    size: int  # their side in pixels: the size every spatial condition must have
    vae_scale_factor: int
    device: torch.device
    dtype: torch.dtype  # the UNet's
    do_cfg: bool  # two branches per step, [unconditional, conditional]
    text: torch.Tensor  # (2B or B, 77, D) text features, [unconditional, conditional] with CFG
    scheduler: object
    conditioning_scale: float | Sequence = 1.0  # ControlNet residuals' multiplier
    guess_mode: bool = False
    cfg_rw: bool | str = False


@dataclass
class Step:
    """One denoising step, as the entries see it."""
    i: int
    t: torch.Tensor
    latents: torch.Tensor  # z_t, (B, 4, h, w)
    model_in: torch.Tensor  # the UNet's input: z_t (twice with CFG), scaled by the scheduler
    on: bool  # inside [control_guidance_start, control_guidance_end]


@torch.no_grad()
def sample(
    pipe,  # a StableDiffusionPipeline (zc.load_sd): vae, text_encoder, tokenizer, unet, scheduler
    controls,  # None; a ControlNet (or a list of them) with `conditions`; or (module, condition[, scale]) pairs
    prompts: Sequence[str],
    conditions: torch.Tensor | Sequence[torch.Tensor] | None = None,  # (B, 3, H, W) in [0, 1], one per ControlNet
    num_inference_steps: int = 25,
    guidance_scale: float = 5.0,
    conditioning_scale: float | Sequence = 1.0,
    guess_mode: bool = False,
    cfg_rw: bool | str = False,  # False, True / "literal" (w_i = 64/h_i), or "normalised" (w_i / max w)
    control_guidance_start: float = 0.0,
    control_guidance_end: float = 1.0,
    negative_prompt: str = "",
    generator: torch.Generator | None = None,
    scheduler=None,  # default: pipe.scheduler (DDIM for TinySD); any diffusers scheduler works
    progress: bool = False,
    callback=None,  # called as callback(step, num_steps) after each sampler step (a widget's progress bar)
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1].

    Several controls compose as the paper's §3.4 composes ControlNets: ControlNets' residuals are
    summed (MultiControlNet); T2I-Adapters' features are summed, each times its scale (diffusers'
    MultiAdapter); ControlNeXt / ControlNet-XS branches each hook into the UNet in list order, each
    adding its own correction; an IP-Adapter's tokens join any of them."""
    from tqdm.auto import tqdm

    check_inputs(cfg_rw, control_guidance_start, control_guidance_end)
    if is_sd3(pipe):  # chapter 14's base: one control, the SD3 pipeline's loop (zc.sd3.sample_sd3)
        options = dict(guess_mode=guess_mode, cfg_rw=cfg_rw, control_guidance_start=control_guidance_start,
                       control_guidance_end=control_guidance_end, scheduler=scheduler, callback=callback)
        defaults = dict(guess_mode=False, cfg_rw=False, control_guidance_start=0.0, control_guidance_end=1.0,
                        scheduler=None, callback=None)
        if options != defaults:
            raise ValueError(f"on an SD3 zc.sample takes no {[k for k in options if options[k] != defaults[k]]}")
        return _sample_transformer(pipe, as_controls(controls, conditions), list(prompts), num_inference_steps,
                                   guidance_scale, conditioning_scale, negative_prompt, generator, progress)
    run, entries = prepare(pipe, as_controls(controls, conditions), list(prompts), guidance_scale,
                           conditioning_scale, guess_mode, cfg_rw, negative_prompt, scheduler)
    sched = run.scheduler
    sched.set_timesteps(num_inference_steps, device=run.device)
    latents = _initial_latents(pipe, run, generator)
    step_args = inspect.signature(sched.step).parameters  # eta (DDIM) and generator, where taken
    extra = {k: v for k, v in (("eta", 0.0), ("generator", generator)) if k in step_args}
    n = len(sched.timesteps)
    with contextlib.ExitStack() as attached:  # hooks and attention processors, for the loop only
        for e in entries:
            attached.enter_context(e.attached(pipe.unet))
        for i, t in enumerate(tqdm(sched.timesteps, disable=not progress, desc="sampling")):
            model_in = sched.scale_model_input(torch.cat([latents] * 2) if run.do_cfg else latents, t)
            on = control_guidance_start <= i / n and (i + 1) / n <= control_guidance_end
            step = Step(i, t, latents, model_in, on)
            kw = {k: v for e in entries for k, v in e.unet_kwargs(step).items()}  # what each control adds
            pred = pipe.unet(model_in, t, encoder_hidden_states=run.text, **kw).sample
            if run.do_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance_scale * (cond - uncond)
            latents = sched.step(pred, t, latents, **extra, return_dict=False)[0]
            if callback is not None:
                callback(i + 1, n)
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    if not torch.isfinite(images).all():  # clamp would turn NaN into black images without a word
        warnings.warn(f"the decoded images contain NaN or inf ({run.dtype}): a half-precision overflow in the "
                      "UNet or the VAE; sample in bf16 or fp32 (zc.load_sd(..., dtype=torch.float32))", stacklevel=2)
    return (images / 2 + 0.5).clamp(0, 1).float().cpu()  # on the CPU, where every measure and plot works


def _sample_transformer(pipe, controls, prompts, steps, guidance_scale, conditioning_scale, negative_prompt,
                        generator, progress) -> torch.Tensor:
    """zc.sample on an SD3: the base alone, or one control through its design's wrapped transformer."""
    if len(controls) > 1:
        raise ValueError(f"{len(controls)} controls: zc samples an SD3 with one at a time")
    if not controls:
        return sample_sd3(pipe, None, prompts, None, steps, guidance_scale, negative_prompt, generator,
                          progress=progress)
    module, cond, scale = controls[0]
    design = designs.of(module)
    designs.check_backbone(design, pipe)
    model = functools.partial(design.wrap(pipe.transformer, module, None),
                              conditioning_scale=conditioning_scale if scale is None else scale)
    return sample_sd3(pipe, model, prompts, cond, steps, guidance_scale, negative_prompt, generator,
                      design.control_input, progress)


def check_inputs(cfg_rw, control_guidance_start: float, control_guidance_end: float) -> None:
    if cfg_rw not in (False, True, "literal", "normalised"):
        raise ValueError(f"cfg_rw must be False, True / 'literal' or 'normalised', got {cfg_rw!r}")
    if not 0.0 <= control_guidance_start < control_guidance_end <= 1.0:
        raise ValueError("need 0 <= control_guidance_start < control_guidance_end <= 1")


def as_controls(controls, conditions=None) -> list[tuple]:
    """(module, condition, scale or None) triples from what `sample` accepts: None; a ControlNet, a
    list of them or a MultiControlNet, with `conditions` (one batch each); or pairs / triples."""
    if controls is None or (isinstance(controls, (list, tuple)) and not controls):
        return []  # the SD alone (conditions, if any, have nothing to read them)
    if hasattr(controls, "nets"):  # a MultiControlNet
        controls = list(controls.nets)
    if not isinstance(controls, (list, tuple)) or isinstance(controls[0], torch.nn.Module):
        modules = controls if isinstance(controls, (list, tuple)) else [controls]
        if conditions is None:
            raise ValueError(f"a {type(modules[0]).__name__} needs condition images")
        several = isinstance(conditions, (list, tuple))
        conds = list(conditions) if several else [conditions]
        if len(conds) != len(modules) or (isinstance(controls, (list, tuple)) and not several):
            raise ValueError(f"{len(modules)} {designs.of(modules[0]).name} modules need a list of {len(modules)} "
                             f"condition batches, one each; got {len(conds) if several else 'one tensor'}")
        return [(m, c, None) for m, c in zip(modules, conds)]
    if conditions is not None:
        raise ValueError("give each control its condition in its pair, (module, condition), not in `conditions`")
    out = []
    for pair in controls:
        if not isinstance(pair, (list, tuple)) or len(pair) not in (2, 3) or pair[1] is None:
            raise ValueError("each control is a pair (module, condition) or a triple (module, condition, scale); "
                             f"got {pair!r:.80}")
        out.append((pair[0], pair[1], pair[2] if len(pair) == 3 else None))
    return out


def prepare(pipe, controls: list[tuple], prompts: list[str], guidance_scale: float, conditioning_scale,
            guess_mode: bool, cfg_rw, negative_prompt: str, scheduler) -> tuple[Run, list]:
    """The text features ([unconditional, conditional], as the pipeline does) and one entry per design
    among the controls (zc.designs: each design's Entry checks its modules and conditions)."""
    device, dtype, batch = pipe.unet.device, pipe.unet.dtype, len(prompts)
    do_cfg = guidance_scale > 1.0
    prompt_embeds, negative_embeds = pipe.encode_prompt(prompts, device, 1, do_cfg, [negative_prompt] * batch)
    text = torch.cat([negative_embeds, prompt_embeds]) if do_cfg else prompt_embeds
    run = Run(pipe.unet, batch, image_size(pipe), pipe.vae_scale_factor,
              device, dtype, do_cfg, text, scheduler or pipe.scheduler, conditioning_scale, guess_mode, cfg_rw)
    groups: dict = {}  # design -> its controls, in the order given
    for m, c, s in controls:
        groups.setdefault(designs.of(m), []).append((m, c, s))
    for d in groups:
        designs.check_backbone(d, pipe)
    alone = [d for d in groups if d.enter.alone]
    if alone and len(controls) > 1:
        raise ValueError(f"{alone[0].name} calls its own fine-tuned UNet: it takes no other control")
    if weights_residuals(conditioning_scale, guess_mode, cfg_rw) and not any(d.enter.residuals for d in groups):
        names = ", ".join(d.name for d in groups) or "no control"
        raise ValueError(f"conditioning_scale, guess_mode and cfg_rw weight ControlNet residuals; {names} has none "
                         "(a design's own strength is the third element of its pair: (module, condition, scale))")
    return run, [d.enter(d, group, run) for d, group in groups.items()]


def weights_residuals(conditioning_scale, guess_mode: bool = False, cfg_rw=False) -> bool:
    """Whether a call asks for what only ControlNet residuals can take: a conditioning scale other than
    1 (or one per residual), guess mode or CFG-RW."""
    return bool(guess_mode or cfg_rw or isinstance(conditioning_scale, (list, tuple)) or conditioning_scale != 1.0)


def _initial_latents(pipe, run: Run, generator) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    h = pipe.unet.config.sample_size
    shape = (run.batch, pipe.unet.config.in_channels, h, h)
    return randn_tensor(shape, generator=generator, device=run.device, dtype=run.dtype) * run.scheduler.init_noise_sigma


def cfg_rw_weights(sizes: Sequence[int], mode: bool | str = "literal") -> list[float]:
    """The paper's CFG resolution weights w_i = (first residual's size) / h_i for residuals of sides
    `sizes` (12 skips then the middle); "normalised": divided by the largest, so at most 1."""
    w = [sizes[0] / h for h in sizes]
    return [x / max(w) for x in w] if mode == "normalised" else w


def check_condition(c: torch.Tensor, shape: tuple[int, ...], name: str = "condition images") -> None:
    """ValueError unless `c` is a finite (B, C, H, W) tensor of the expected shape with values in [0, 1]."""
    if not torch.is_tensor(c):
        raise ValueError(f"{name} must be a torch tensor {shape} in [0, 1], got {type(c).__name__}")
    if tuple(c.shape) != tuple(shape):
        b, ch, h, w = shape
        raise ValueError(f"{name} must be ({b}, {ch}, {h}, {w}): {b} to match the prompts, {ch} channels for this "
                         f"control, {h} px for this SD; got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError(f"{name} contain NaN or inf ({int((~torch.isfinite(c)).sum())} values): "
                         "a condition must be a finite image in [0, 1]")
    lo, hi = c.min().item(), c.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (0..255 pixels? divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")


def condition_name(design, i: int, n: int) -> str:
    """How errors name the i-th of n conditions of a design."""
    return f"condition images of {design.name}" + (f" [{i}]" if n > 1 else "")
