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


class ConcatConditioned(nn.Module):
    """The baseline the paper argues against: no ControlNet, no locked copy. As in SD's depth-to-image
    model, the condition (area-resized to the latent grid) is concatenated to the UNet's input, through
    extra zero-initialised input weights (so the start is the base model), and the *whole* UNet is
    fine-tuned on the task's data: what a small dataset can make it forget is then measurable.

    Called like ControlledUNet: model(z_t, t, c_t, c_i) -> the UNet's prediction."""

    def __init__(self, unet: nn.Module, conditioning_channels: int = 3):
        super().__init__()
        from types import SimpleNamespace

        from .zero_conv import ZeroConv

        self.unet = unet
        self.cond_in = ZeroConv(conditioning_channels, unet.conv_in.out_channels, kernel_size=unet.conv_in.kernel_size[0])
        self.config = SimpleNamespace(conditioning_channels=conditioning_channels)
        unet.requires_grad_(True)

    def check_unet(self, unet) -> None:
        if unet is not self.unet:
            raise ValueError("a ConcatConditioned model fine-tuned its own UNet: sample with a pipeline whose "
                             "unet is model.unet")

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": lr}]

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs):
        extra = self.cond_in(F.interpolate(controlnet_cond.to(sample.dtype), size=sample.shape[-2:], mode="area"))
        hook = self.unet.conv_in.register_forward_hook(lambda module, inputs, out: out + extra.to(out.dtype))
        try:
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
        finally:
            hook.remove()

    def save_pretrained(self, folder) -> None:
        """The fine-tuned UNet in diffusers' format (unet/) and the extra input weights (cond_in.safetensors)."""
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.cond_in.state_dict().items()},
                  str(folder / "cond_in.safetensors"))
