"""The controlled UNet: ε_θ(z_t, t, c_t, c_i) = locked UNet + the residuals of one or more ControlNets.

    down, mid = controlnet(z_t, t, c_t, c_i)          # 12 skip residuals + 1 middle residual
    ε = unet(z_t, t, c_t, down_block_additional_residuals=down, mid_block_additional_residual=mid)

Several ControlNets (paper §3.4, "multiple conditions") simply add their residuals, each with its
own conditioning scale.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

from . import designs
from .controlnet import ControlNet
from .sample import cfg_rw_weights, check_condition, condition_name, weights_residuals

__all__ = ["MultiControlNet", "lock", "ControlledUNet", "HookedConditioned", "refuse_residual_weights",
    "samples_in_guess_mode", "ControlNetEntry", "HookedEntry", "build_for_training", "wrap_for_training"]


class MultiControlNet(nn.Module):
    """Sum of several ControlNets' residuals (like diffusers' MultiControlNetModel)."""

    def __init__(self, controlnets: Sequence[ControlNet]):
        super().__init__()
        if len(controlnets) == 0:
            raise ValueError("MultiControlNet needs at least one ControlNet")
        self.nets = nn.ModuleList(controlnets)

    def check_unet(self, unet) -> None:
        for net in self.nets:
            net.check_unet(unet)

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond: Sequence[torch.Tensor],
                conditioning_scale=1.0, guess_mode: bool = False):
        n = len(self.nets)
        if not isinstance(controlnet_cond, (list, tuple)) or len(controlnet_cond) != n:
            raise ValueError(f"MultiControlNet with {n} ControlNets needs a list of {n} condition images")
        scales = conditioning_scale if isinstance(conditioning_scale, (list, tuple)) else [conditioning_scale] * n
        if len(scales) != n:
            raise ValueError(f"conditioning_scale must be one value (or per-residual list) per ControlNet: {n}, got {len(scales)}")
        down, mid = None, None
        for net, cond, scale in zip(self.nets, controlnet_cond, scales):
            d, m = net(sample, timestep, encoder_hidden_states, cond, scale, guess_mode)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        return down, mid


def lock(unet: nn.Module, sd_locked: bool = True) -> list[nn.Parameter]:
    """Freeze the SD UNet. With sd_locked=False its decoder (up blocks + output layers) trains too,
    as in the original repo's `sd_locked=False`. Returns the UNet parameters left trainable."""
    unet.requires_grad_(False)
    if sd_locked:
        return []
    decoder = [unet.up_blocks, unet.conv_norm_out, unet.conv_out]
    for m in decoder:
        m.requires_grad_(True)
    return [p for m in decoder for p in m.parameters()]


class ControlledUNet(nn.Module):
    """Locked UNet + ControlNet(s), one call from latents to the noise prediction."""

    def __init__(self, unet: nn.Module, controlnet: ControlNet | MultiControlNet | Sequence[ControlNet],
                 sd_locked: bool = True):
        super().__init__()
        if isinstance(controlnet, (list, tuple)):
            controlnet = MultiControlNet(controlnet)
        controlnet.check_unet(unet)
        self.unet = unet
        self.controlnet = controlnet
        self.sd_locked = sd_locked
        self.unet_trainable = lock(unet, sd_locked)

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        """AdamW groups: the ControlNet at `lr`, plus the UNet decoder at `decoder_lr` if unlocked."""
        groups = [{"params": [p for p in self.controlnet.parameters() if p.requires_grad], "lr": lr}]
        if self.unet_trainable:
            groups.append({"params": self.unet_trainable, "lr": decoder_lr if decoder_lr is not None else lr})
        return groups

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                guess_mode: bool = False, added_cond_kwargs: dict | None = None) -> torch.Tensor:
        """added_cond_kwargs: passed to the UNet only (an attached IP-Adapter's image_embeds)."""
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states, controlnet_cond,
                                    conditioning_scale, guess_mode)
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
            added_cond_kwargs=added_cond_kwargs,
        ).sample


class HookedConditioned(nn.Module):
    """The locked UNet with a branch that hooks into its blocks (zc.controls.controlnext.ControlNeXt,
    zc.controls.controlnet_xs.ControlNetXS: each has `attached(unet, condition)`), called like ControlledUNet:
    model(z_t, t, c_t, c) -> ε. Only the branch trains. zc.controls.t2i_adapter.AdapterConditioned changes only
    how the branch enters (forward)."""

    def __init__(self, unet: nn.Module, branch: nn.Module):
        super().__init__()
        unet.requires_grad_(False)
        self.unet, self.branch = unet, branch

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        if hasattr(self.branch, "param_groups"):  # a branch that sets its own (ControlNeXt's UNet increments)
            return self.branch.param_groups(lr)
        return [{"params": [p for p in self.branch.parameters() if p.requires_grad], "lr": lr}]

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                guess_mode: bool = False):
        refuse_residual_weights(type(self.branch).__name__, conditioning_scale, guess_mode)
        with self.branch.attached(self.unet, controlnet_cond):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


def refuse_residual_weights(what: str, conditioning_scale, guess_mode: bool) -> None:
    """ValueError when conditioning_scale or guess_mode (which weight ControlNet residuals) reach a
    model that has no residuals, instead of dropping them."""
    if weights_residuals(conditioning_scale, guess_mode):
        raise ValueError(f"conditioning_scale and guess_mode weight ControlNet residuals; a {what} has none "
                         "(in zc.sample a design's own strength is the third element of its pair)")


def samples_in_guess_mode(controlnet, guess_mode: bool = False) -> bool:
    """Whether zc.sample runs `controlnet` (one, a list or a MultiControlNet; None: no control) in guess
    mode: when asked, or when the first ControlNet is global (pooled), as in diffusers' pipeline."""
    if controlnet is None:
        return False
    first = controlnet.nets[0] if isinstance(controlnet, MultiControlNet) else \
        controlnet[0] if isinstance(controlnet, (list, tuple)) else controlnet
    return bool(guess_mode or first.config.global_pool_conditions)


class ControlNetEntry(designs.Entry):
    """ControlNets in zc.sample: their residuals (several: summed, as MultiControlNet) added to the
    UNet's skips and middle block at every step, in both CFG branches, or in the conditional one only
    (guess mode, CFG-RW), scaled by conditioning_scale (a pair's own scale: that ControlNet's)."""
    residuals = True

    def __init__(self, design, controls, run):
        super().__init__(design, controls, run)
        nets = [m for m, _, _ in controls]
        self.net = MultiControlNet(nets) if len(nets) > 1 else nets[0]
        self.net.check_unet(run.unet)
        for i, (net, c, _) in enumerate(controls):
            check_condition(c, (run.batch, net.config.conditioning_channels, run.size, run.size),
                            f"condition images{f' [{i}]' if len(nets) > 1 else ''}")
        own = [s for _, _, s in controls]
        self.scale = run.conditioning_scale if all(s is None for s in own) else \
            [run.conditioning_scale if s is None else s for s in own]  # one per ControlNet
        self.guess_mode = samples_in_guess_mode(nets, run.guess_mode)
        self.cond_only = run.do_cfg and bool(self.guess_mode or run.cfg_rw)  # no control in the unconditional branch
        self.dtype = next(self.net.parameters()).dtype  # may differ from the UNet's (fp32 ControlNet, fp16 SD)
        conds = [c.to(run.device, self.dtype) for _, c, _ in controls]
        if run.do_cfg and not self.cond_only:
            conds = [torch.cat([c, c]) for c in conds]  # the control goes into both branches
        self.cond = conds if len(nets) > 1 else conds[0]

    def unet_kwargs(self, step) -> dict:
        run = self.run
        if self.cond_only:
            x, text = run.scheduler.scale_model_input(step.latents, step.t), run.text.chunk(2)[1]
        else:
            x, text = step.model_in, run.text
        scale = self.scale if step.on else _zero_like(self.scale)
        down, mid = self.net(x.to(self.dtype), step.t, text.to(self.dtype), self.cond, scale, self.guess_mode)
        down, mid = [d.to(run.dtype) for d in down], mid.to(run.dtype)
        if run.cfg_rw:  # w_i = (size of the first skip) / h_i, or that over its largest
            *w_down, w_mid = cfg_rw_weights([d.shape[-1] for d in down] + [mid.shape[-1]], run.cfg_rw)
            down = [d * w for d, w in zip(down, w_down)]
            mid = mid * w_mid
        if self.cond_only:  # nothing for the unconditional half
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def _zero_like(scale):
    return [_zero_like(s) for s in scale] if isinstance(scale, (list, tuple)) else 0.0


class HookedEntry(designs.Entry):
    """Branches that hook into the UNet's blocks (ControlNeXt, ControlNet-XS) in zc.sample: each one's
    `attached(unet, condition, scale)` for the whole loop, in list order, in both CFG branches."""

    def __init__(self, design, controls, run):
        super().__init__(design, controls, run)
        self.hooked = []
        for i, (branch, c, s) in enumerate(controls):
            check_condition(c, (run.batch, branch.config.conditioning_channels, run.size, run.size),
                            condition_name(design, i, len(controls)))
            c = c.to(run.device)
            self.hooked.append((branch, torch.cat([c, c]) if run.do_cfg else c, s))

    def attached(self, unet):
        stack = contextlib.ExitStack()
        for branch, c, s in self.hooked:
            stack.enter_context(branch.attached(unet, c, **({} if s is None else {"scale": s})))
        return stack


def build_for_training(cfg, pipe, channels: int) -> ControlNet:
    return ControlNet.for_pipeline(pipe, copy=cfg.copy_weights, architecture=cfg.architecture,
                                   conditioning_channels=channels, zero_conv_init=cfg.zero_conv_init,
                                   only_mid_control=cfg.only_mid_control, global_pool_conditions=cfg.global_pool)


def wrap_for_training(unet, controlnet: ControlNet, cfg) -> ControlledUNet:
    model = ControlledUNet(unet, controlnet, sd_locked=cfg.sd_locked)
    if not cfg.sd_locked:
        unet.to(torch.float32)  # the decoder trains: trained weights stay fp32
    return model


designs.register(designs.Design(
    "ControlNet", "controlnet", "Zhang et al. 2023", "residuals on every skip and the middle block", "every step",
    True, module=ControlNet, build=build_for_training, wrap=wrap_for_training, enter=ControlNetEntry,
    wiring="a trainable copy F(·; Θc) of the encoder;\nzero convs Z into every skip and the middle", drawn_as="copy"))
