"""The controlled UNet: ε_θ(z_t, t, c_t, c_i) = locked UNet + the residuals of one or more ControlNets.

    down, mid = controlnet(z_t, t, c_t, c_i)          # 12 skip residuals + 1 middle residual
    ε = unet(z_t, t, c_t, down_block_additional_residuals=down, mid_block_additional_residual=mid)

Several ControlNets (paper §3.4, "multiple conditions") simply add their residuals, each with its
own conditioning scale.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .controlnet import ControlNet


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
    """The locked UNet with a branch that hooks into its blocks (zc.controlnext.ControlNeXt,
    zc.controlnet_xs.ControlNetXS: each has `attached(unet, condition)`), called like ControlledUNet:
    model(z_t, t, c_t, c) -> ε. Only the branch trains. zc.t2i_adapter.AdapterConditioned changes only
    how the branch enters (forward)."""

    def __init__(self, unet: nn.Module, branch: nn.Module):
        super().__init__()
        unet.requires_grad_(False)
        self.unet, self.branch = unet, branch

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        return [{"params": [p for p in self.branch.parameters() if p.requires_grad], "lr": lr}]

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs):
        with self.branch.attached(self.unet, controlnet_cond):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
