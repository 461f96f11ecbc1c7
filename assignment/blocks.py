"""Assignment: ControlNet's three building blocks, by hand. Fill in every TODO.

    y_c = F(x; Θ) + Z(F(x + Z(c; Θ_z1); Θ_c); Θ_z2)          (the paper's eq. 2)

1. make_zero_conv: Z(·; Θ_z), a 1x1 convolution whose weight and bias start at exactly zero.
2. make_trainable_copy: F(·; Θ_c), a copy of the locked UNet's encoder (conv_in, the time
   embedding, the down blocks and the middle block) whose weights start equal to the UNet's
   and are trainable, while the UNet itself stays untouched.
3. controlnet_residuals: run the copy on conv_in(z_t) + the encoded condition and return one
   residual per skip feature and one for the middle block, each through its zero convolution.
4. inject: the locked UNet's noise prediction with the residuals added.

Check your work (a lecturer runs the same):

    python -m pytest assignment/check.py                       # your blocks.py
    ZC_ASSIGNMENT=path/to/blocks.py python -m pytest assignment/check.py

The check grades each TODO on two SD1.x layouts (TinySD's and SD 1.5's block types), and runs one
backward pass from the noise prediction: it must reach the condition encoder, the copy and the zero
convolutions, and not the locked UNet (nothing detached, nothing under torch.no_grad).

Chapters 2 (zero convolutions) and 4 (the ControlNet) of the book cover everything needed. You
may read zc/ but not import it here: the check fails a blocks.py that imports zc in any form.
"""
from __future__ import annotations

import torch
from torch import nn


def make_zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 nn.Conv2d from in_channels to out_channels, weight and bias exactly zero."""
    raise NotImplementedError("TODO 1: build the zero convolution")


def make_trainable_copy(unet) -> nn.ModuleDict:
    """nn.ModuleDict with keys conv_in, time_proj, time_embedding, down_blocks, mid_block: copies
    (not the same modules) of the UNet's, with requires_grad True; the UNet itself unchanged."""
    raise NotImplementedError("TODO 2: copy the encoder")


def controlnet_residuals(copy: nn.ModuleDict, zero_convs: nn.ModuleList, mid_zero_conv: nn.Conv2d,
                         hint: torch.Tensor, sample: torch.Tensor, emb: torch.Tensor,
                         text: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(down_block_res_samples, mid_block_res_sample) of one ControlNet forward pass.

    hint: the encoded condition E(c), (B, C0, h, w); sample: z_t, (B, 4, h, w); emb: the time
    embedding (B, D); text: c_t, (B, L, D_text). The skip features are conv_in's output plus
    every down block's residual outputs, in order (12 on SD 1.5); a down block with cross
    attention (`block.has_cross_attention`) also takes `encoder_hidden_states=text`."""
    raise NotImplementedError("TODO 3: the ControlNet forward pass")


def inject(unet, sample: torch.Tensor, timestep, text: torch.Tensor, down: list[torch.Tensor],
           mid: torch.Tensor) -> torch.Tensor:
    """The locked UNet's prediction (its `.sample`) with the ControlNet's residuals added."""
    raise NotImplementedError("TODO 4: add the residuals to the locked UNet")
