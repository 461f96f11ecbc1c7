"""Sampling with a ControlNet: the loop of diffusers' StableDiffusionControlNetPipeline, written out.

Per step, with classifier-free guidance (CFG) of weight g:

    ε_u = ε_θ(z_t, t, ∅,   control?)        unconditional branch
    ε_c = ε_θ(z_t, t, c_t, control)         conditional branch
    ε   = ε_u + g (ε_c − ε_u)

Where the control goes, and how strongly, is the whole menu of options:
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

A global condition (`ip_adapter`, `ip_condition`: zc/ip_adapter.py) enters through extra tokens in
the UNet's cross-attentions instead; as in diffusers' pipelines, the unconditional branch of CFG gets
zero features ("no condition"), so CFG amplifies it as it does the prompt. It composes with any
ControlNet above.

A T2I-Adapter (`t2i_adapter`, `t2i_condition`: zc/t2i_adapter.py) reads its condition once, before the
loop; its features, times `adapter_conditioning_scale`, are added inside the UNet's down blocks at
every step and in both branches, as in diffusers' StableDiffusionAdapterPipeline. A ControlNeXt-style
branch (`controlnext`, `controlnext_condition`: zc/controlnext.py) runs at every step, in both branches,
and adds to the first down block's output; a ControlNet-XS-style control (`controlnet_xs`,
`controlnet_xs_condition`: zc/controlnet_xs.py) runs beside every down block and the middle block.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
from typing import Sequence

import torch

from .controlled_unet import MultiControlNet
from .controlnet import ControlNet


def samples_in_guess_mode(controlnet, guess_mode: bool = False) -> bool:
    """Whether `sample` runs `controlnet` (one, a list or a MultiControlNet; None: no control) in guess
    mode: when asked, or when the first ControlNet is global (pooled), as in diffusers' pipeline."""
    if controlnet is None:
        return False
    first = controlnet.nets[0] if isinstance(controlnet, MultiControlNet) else \
        controlnet[0] if isinstance(controlnet, (list, tuple)) else controlnet
    return bool(guess_mode or first.config.global_pool_conditions)


@torch.no_grad()
def sample(
    pipe,  # a StableDiffusionPipeline (zc.load_sd): vae, text_encoder, tokenizer, unet, scheduler
    controlnet: ControlNet | MultiControlNet | Sequence[ControlNet] | None,
    prompts: Sequence[str],
    conditions: torch.Tensor | Sequence[torch.Tensor] | None,  # (B, 3, H, W) in [0, 1], one per ControlNet
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
    ip_adapter=None,  # a zc.ip_adapter.IPAdapter: a global condition as extra cross-attention tokens
    ip_condition: torch.Tensor | None = None,  # (B, C, H, W) in [0, 1]: the image the adapter reads
    t2i_adapter=None,  # a diffusers T2IAdapter (zc.t2i_adapter): features added inside the down blocks
    t2i_condition: torch.Tensor | None = None,  # (B, C, H, W) in [0, 1]: the condition it reads, once
    adapter_conditioning_scale: float | Sequence[float] = 1.0,  # multiplies the T2I-Adapter's features
    controlnext=None,  # a zc.controlnext.ControlNeXt: a small branch added after the first down block
    controlnext_condition: torch.Tensor | None = None,  # (B, C, H, W) in [0, 1]: the condition it reads
    controlnet_xs=None,  # a zc.controlnet_xs.ControlNetXS: a narrow control beside the encoder, both ways
    controlnet_xs_condition: torch.Tensor | None = None,  # (B, C, H, W) in [0, 1]: the condition it reads
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1].

    Several controls of one design compose as the paper's §3.4 composes ControlNets: pass a list of
    modules and a list of conditions, one each. ControlNets' residuals are summed (MultiControlNet);
    T2I-Adapters' features are summed, each times its adapter_conditioning_scale (diffusers'
    MultiAdapter with those weights); ControlNeXt / ControlNet-XS branches each hook into the UNet
    in list order, each adding its own correction (a ControlNeXt branch is cross-normalised to the
    features as the branches before it left them, so for ControlNeXt the order matters a little)."""
    from diffusers.utils.torch_utils import randn_tensor
    from tqdm.auto import tqdm

    from .variants import ConcatConditioned

    if isinstance(controlnet, (list, tuple)):
        controlnet = MultiControlNet(controlnet)
    concat = isinstance(controlnet, ConcatConditioned)  # a fine-tuned UNet that reads the condition itself
    if concat and (guess_mode or cfg_rw):
        raise ValueError("guess_mode and cfg_rw weight ControlNet residuals; a ConcatConditioned model has none")
    if concat and any(a is not None for a in (ip_adapter, t2i_adapter, controlnext, controlnet_xs)):
        raise ValueError("a ConcatConditioned model calls its own UNet; it cannot take an adapter")
    if cfg_rw not in (False, True, "literal", "normalised"):
        raise ValueError(f"cfg_rw must be False, True / 'literal' or 'normalised', got {cfg_rw!r}")
    if not 0.0 <= control_guidance_start < control_guidance_end <= 1.0:
        raise ValueError("need 0 <= control_guidance_start < control_guidance_end <= 1")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    scheduler = scheduler or pipe.scheduler
    prompts = list(prompts)
    batch = len(prompts)
    do_cfg = guidance_scale > 1.0
    if controlnet is not None and not concat:
        guess_mode = samples_in_guess_mode(controlnet, guess_mode)
    control_cond_only = do_cfg and (guess_mode or cfg_rw)
    h = pipe.unet.config.sample_size
    size = h * pipe.vae_scale_factor

    if controlnet is not None:
        if conditions is None:
            raise ValueError("a ControlNet needs condition images")
        controlnet.check_unet(pipe.unet)
        nets = list(controlnet.nets) if isinstance(controlnet, MultiControlNet) else [controlnet]
        conds = list(conditions) if isinstance(controlnet, MultiControlNet) else [conditions]
        if len(conds) != len(nets):
            raise ValueError(f"{len(nets)} ControlNets need {len(nets)} condition batches, got {len(conds)}")
        for i, (net, c) in enumerate(zip(nets, conds)):
            check_condition(c, (batch, net.config.conditioning_channels, size, size),
                            f"condition images{f' [{i}]' if len(nets) > 1 else ''}")
        cdtype = next(controlnet.parameters()).dtype  # may differ from the UNet's (fp32 ControlNet, fp16 SD)
        conds = [c.to(device, cdtype) for c in conds]
        if not control_cond_only and do_cfg:
            conds = [torch.cat([c, c]) for c in conds]  # the control goes into both branches
        cond_arg = conds if isinstance(controlnet, MultiControlNet) else conds[0]

    # text: [unconditional, conditional], as the pipeline does
    prompt_embeds, negative_embeds = pipe.encode_prompt(prompts, device, 1, do_cfg, [negative_prompt] * batch)
    text = torch.cat([negative_embeds, prompt_embeds]) if do_cfg else prompt_embeds

    added = None  # the global condition's features, [unconditional, conditional] as the text
    if (ip_adapter is None) != (ip_condition is None):
        raise ValueError("ip_adapter and ip_condition go together: pass both (a global condition) or neither")
    if ip_adapter is not None:
        check_condition(ip_condition, (batch, ip_adapter.config["condition_channels"], *ip_condition.shape[-2:]),
                        "ip_condition")
        if next(ip_adapter.parameters()).dtype != dtype or next(ip_adapter.parameters()).device != device:
            ip_adapter = copy.deepcopy(ip_adapter).to(device, dtype)  # the UNet's precision, as its own layers
        feats = ip_adapter.features(ip_condition).to(device, dtype)[:, None]  # (B, 1, D)
        added = {"image_embeds": [torch.cat([torch.zeros_like(feats), feats]) if do_cfg else feats]}
    attached = ip_adapter.attached(pipe.unet) if ip_adapter is not None else contextlib.nullcontext()

    intrablock = None  # the T2I-Adapter's features, computed once for the whole loop
    if (t2i_adapter is None) != (t2i_condition is None):
        raise ValueError("t2i_adapter and t2i_condition go together: pass both or neither")
    if t2i_adapter is not None:
        from .t2i_adapter import check_unet, features

        adapters, t2i_conds = _several("t2i_adapter", t2i_adapter, t2i_condition)
        scales = list(adapter_conditioning_scale) if isinstance(adapter_conditioning_scale, (list, tuple)) \
            else [adapter_conditioning_scale] * len(adapters)
        if len(scales) != len(adapters):
            raise ValueError(f"{len(adapters)} T2I-Adapters need {len(adapters)} adapter_conditioning_scale values")
        for i, (adapter, c, s) in enumerate(zip(adapters, t2i_conds, scales)):
            check_unet(adapter, pipe.unet, pipe.vae_scale_factor)
            check_condition(c, (batch, adapter.config.in_channels, size, size),
                            f"t2i_condition{f' [{i}]' if len(adapters) > 1 else ''}")
            feats = [f.to(device, dtype) for f in features(adapter, c.to(device), s)]
            intrablock = feats if intrablock is None else [a + b for a, b in zip(intrablock, feats)]  # summed
        if do_cfg:  # the same features in both branches
            intrablock = [torch.cat([f, f]) for f in intrablock]

    hooked = []  # branches that hook into the UNet's blocks (ControlNeXt, XS), with their conditions
    for name, branch, c in (("controlnext", controlnext, controlnext_condition),
                            ("controlnet_xs", controlnet_xs, controlnet_xs_condition)):
        if (branch is None) != (c is None):
            raise ValueError(f"{name} and {name}_condition go together: pass both or neither")
        if branch is not None:
            branches, conds_b = _several(name, branch, c)
            for i, (b, cb) in enumerate(zip(branches, conds_b)):
                check_condition(cb, (batch, b.config.conditioning_channels, size, size),
                                f"{name}_condition{f' [{i}]' if len(branches) > 1 else ''}")
                cb = cb.to(device)
                hooked.append((b, torch.cat([cb, cb]) if do_cfg else cb))

    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    shape = (batch, pipe.unet.config.in_channels, h, h)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * scheduler.init_noise_sigma
    step_args = inspect.signature(scheduler.step).parameters  # eta (DDIM) and generator, where taken
    extra = {k: v for k, v in (("eta", 0.0), ("generator", generator)) if k in step_args}

    with attached, contextlib.ExitStack() as hooks:  # the IP-Adapter's processors, the hooks: for the loop only
        for branch, c in hooked:
            hooks.enter_context(branch.attached(pipe.unet, c))
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling")):
            model_in = torch.cat([latents] * 2) if do_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            down = mid = None
            on = not (i / len(timesteps) < control_guidance_start or (i + 1) / len(timesteps) > control_guidance_end)
            if concat:  # the condition enters the UNet's input; control start/end switch it to a blank one
                c = cond_arg if on else torch.zeros_like(cond_arg)
                pred = controlnet(model_in, t, text, c)
            elif controlnet is not None:
                if control_cond_only:
                    ctrl_in, ctrl_text = scheduler.scale_model_input(latents, t), text.chunk(2)[1]
                else:
                    ctrl_in, ctrl_text = model_in, text
                scale = conditioning_scale if on else _zero_like(conditioning_scale)
                down, mid = controlnet(ctrl_in.to(cdtype), t, ctrl_text.to(cdtype), cond_arg, scale, guess_mode)
                down, mid = [d.to(dtype) for d in down], mid.to(dtype)
                if cfg_rw:  # w_i = (size of the first skip) / h_i, or that over its largest
                    *w_down, w_mid = cfg_rw_weights([d.shape[-1] for d in down] + [mid.shape[-1]], cfg_rw)
                    down = [d * w for d, w in zip(down, w_down)]
                    mid = mid * w_mid
                if control_cond_only:  # nothing for the unconditional half
                    down = [torch.cat([torch.zeros_like(d), d]) for d in down]
                    mid = torch.cat([torch.zeros_like(mid), mid])
            if not concat:
                pred = pipe.unet(model_in, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                                 mid_block_additional_residual=mid, added_cond_kwargs=added,
                                 down_intrablock_additional_residuals=None if intrablock is None else
                                 [f.clone() for f in intrablock]).sample  # the UNet pops from the list
            if do_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(pred, t, latents, **extra, return_dict=False)[0]
            if callback is not None:
                callback(i + 1, len(timesteps))

    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (images / 2 + 0.5).clamp(0, 1).float().cpu()  # on the CPU, where every measure and plot works


def _several(name: str, modules, conditions) -> tuple[list, list]:
    """One module and its condition, or lists of both (composition), as two lists of equal length."""
    if not isinstance(modules, (list, tuple)):
        return [modules], [conditions]
    conditions = list(conditions) if isinstance(conditions, (list, tuple)) else None
    if conditions is None or len(conditions) != len(modules):
        raise ValueError(f"{len(modules)} {name} modules need a list of {len(modules)} condition batches, one each")
    return list(modules), conditions


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
                         f"ControlNet, {h} px for this SD; got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError(f"{name} contain NaN or inf ({int((~torch.isfinite(c)).sum())} values): "
                         "a condition must be a finite image in [0, 1]")
    lo, hi = c.min().item(), c.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (0..255 pixels? divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")


def _zero_like(scale):
    if isinstance(scale, (list, tuple)):
        return [_zero_like(s) for s in scale]
    return 0.0
