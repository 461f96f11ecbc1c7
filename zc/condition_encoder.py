"""The condition encoder E(·) (the original repo's "hint block").

It turns a condition image c_i (B, 3, H, W) in [0, 1] into a feature map c_f with the shape of
the UNet's first feature map, (B, C0, H/f, W/f), where f is the VAE's downsampling factor.

Layer for layer it is the original repo's `input_hint_block` and diffusers'
`ControlNetConditioningEmbedding` (same parameter names, so weights load both ways):

    conv_in   3x3  cond_ch -> ch[0]                 + SiLU
    blocks    for each step i: 3x3 ch[i] -> ch[i]   + SiLU
                               3x3 ch[i] -> ch[i+1], stride 2 + SiLU
    conv_out  3x3  ch[-1] -> C0, zero-initialised   (the paper's Z(c; Θ_z1))

With SD's widths (16, 32, 96, 256) there are three stride-2 convs: 512 px -> 64 latent, 8x, the
factor of SD's VAE. The paper's text describes "four 4x4 convs, 16/32/64/128, ReLU"; the released
code is the version above, and that is what every public checkpoint contains.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .zero_conv import ZeroConv

__all__ = ["default_channels", "ConditionEncoder", "receptive_field"]


def default_channels(vae_factor: int) -> tuple[int, ...]:
    """SD's widths (16, 32, 96, 256), cut to log2(vae_factor) stride-2 convs: 8x -> all four, 4x -> three."""
    steps = vae_factor.bit_length() - 1
    if 2**steps != vae_factor or not 1 <= steps <= 3:
        raise ValueError(f"VAE factor must be 2, 4 or 8, got {vae_factor}")
    return (16, 32, 96, 256)[: steps + 1]


class ConditionEncoder(nn.Module):
    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        out_init: str = "zero",  # its last conv: "zero" (the paper's zero convolution) or "gaussian"
    ):
        super().__init__()
        if len(block_out_channels) < 1:
            raise ValueError("conditioning_embedding_out_channels needs at least one width")
        self.conditioning_channels = conditioning_channels
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList([])
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = ZeroConv(block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, init=out_init)

    @property
    def downsampling_factor(self) -> int:
        """Pixel-to-feature factor: 2 ** (number of stride-2 convs)."""
        return 2 ** (len(self.blocks) // 2)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        if conditioning.ndim != 4 or conditioning.shape[1] != self.conditioning_channels:
            raise ValueError(
                f"condition image must have shape (B, {self.conditioning_channels}, H, W), got "
                f"{tuple(conditioning.shape)}; pass a batch of images in [0, 1] with "
                f"{self.conditioning_channels} channels, or build the ControlNet with "
                f"conditioning_channels={conditioning.shape[1] if conditioning.ndim == 4 else '...'}"
            )
        h = F.silu(self.conv_in(conditioning))
        for block in self.blocks:
            h = F.silu(block(h))  # every second block halves H and W
        return self.conv_out(h)  # (B, C0, H / factor, W / factor)


def receptive_field(encoder: ConditionEncoder) -> int:
    """Pixels of the condition image that one output feature sees: 1 + Σ (k - 1) · (product of
    the strides before that conv), over conv_in, the blocks and conv_out."""
    convs = [encoder.conv_in, *encoder.blocks, encoder.conv_out]
    rf, jump = 1, 1
    for conv in convs:
        rf += (conv.kernel_size[0] - 1) * jump
        jump *= conv.stride[0]
    return rf
