"""Ablation variants of the ControlNet (the book's chapter 9, paper Fig. 8).

Both keep the condition encoder, conv_in and the zero convolutions of `ControlNet`, and replace
only the trainable copy F(·; Θ_c):

- `ControlNetLite` (Fig. 8c, "ControlNet-lite"): each block of the copy is replaced by a single
  3x3 conv (stride 2 where the UNet downsamples). No attention, no text, no timestep: a shallow
  path from the condition to every skip feature.
- `ControlNetDirect`: no trainable copy at all. The input features conv_in(x) + E(c) are
  average-pooled to each skip feature's resolution and added through the zero convs:
  y_c = F(x; Θ) + Z(pool(x + E(c)); Θ_z2). Because E(c) then feeds a zero conv directly, E's own
  last conv is Gaussian-initialised: two zero layers in series never train (chapter 2).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .controlnet import ControlNet, ControlNetConfig


def encoder_steps(config: ControlNetConfig) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) of each skip feature after the first, in UNet order."""
    chs, lpb = config.unet["block_out_channels"], config.unet["layers_per_block"]
    steps, prev = [], chs[0]
    for level, c in enumerate(chs):
        for _ in range(lpb):
            steps.append((prev, c, 1))
            prev = c
        if level < len(chs) - 1:
            steps.append((c, c, 2))
    return steps


class ControlNetLite(ControlNet):
    def _build_copy(self, source) -> None:
        steps = encoder_steps(self.config)
        self.lite_blocks = nn.ModuleList([nn.Conv2d(i, o, 3, stride=s, padding=1) for i, o, s in steps])
        last = steps[-1][1]
        self.lite_mid = nn.Conv2d(last, last, 3, padding=1)

    def trainable_copy(self, h, emb, encoder_hidden_states):
        features = [h]
        for conv in self.lite_blocks:
            h = F.silu(conv(h))
            features.append(h)
        return features, F.silu(self.lite_mid(h))


class ControlNetDirect(ControlNet):
    def _hint_out_init(self) -> str:
        return "gaussian"

    def _build_copy(self, source) -> None:
        factor, self.pool_factors = 1, [1]
        for _, _, stride in encoder_steps(self.config):
            factor *= stride
            self.pool_factors.append(factor)

    def _feature_channels(self) -> list[int]:
        return [self.config.unet["block_out_channels"][0]] * len(self.config.residual_channels())

    def trainable_copy(self, h, emb, encoder_hidden_states):
        features = [F.avg_pool2d(h, k) if k > 1 else h for k in self.pool_factors]
        return features, features[-1]
