"""Reference solution of assignment/blocks.py (for lecturers; not part of the book)."""
from __future__ import annotations

import copy as copy_module

import torch
from torch import nn


def make_zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def make_trainable_copy(unet) -> nn.ModuleDict:
    parts = {name: copy_module.deepcopy(getattr(unet, name))
             for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block")}
    out = nn.ModuleDict(parts)
    out.requires_grad_(True)
    return out


def controlnet_residuals(copy: nn.ModuleDict, zero_convs: nn.ModuleList, mid_zero_conv: nn.Conv2d,
                         hint: torch.Tensor, sample: torch.Tensor, emb: torch.Tensor,
                         text: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    h = copy["conv_in"](sample) + hint  # x + Z(c; Θ_z1)
    features = [h]
    for block in copy["down_blocks"]:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=text)
        else:
            h, res = block(hidden_states=h, temb=emb)
        features += list(res)
    h = copy["mid_block"](h, emb, encoder_hidden_states=text)
    return [z(f) for z, f in zip(zero_convs, features)], mid_zero_conv(h)


def inject(unet, sample: torch.Tensor, timestep, text: torch.Tensor, down: list[torch.Tensor],
           mid: torch.Tensor) -> torch.Tensor:
    return unet(sample, timestep, encoder_hidden_states=text, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample
