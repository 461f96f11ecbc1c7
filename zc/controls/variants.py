"""Ablation variants of the ControlNet (the book's chapter 10, paper Fig. 8).

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

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .. import designs
from ..controlled_unet import (
    ControlNetEntry,
    build_for_training,
    refuse_residual_weights,
    wrap_for_training,
)
from ..controlnet import ControlNet, ControlNetConfig
from ..sample import check_condition

__all__ = ["encoder_steps", "ControlNetLite", "ControlNetDirect", "ConcatConditioned", "ConcatEntry"]


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

        from ..zero_conv import ZeroConv

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

    def extra_input(self, condition, sample):
        """What the condition adds to conv_in's output: Z(area-resized c), (B, C0, h, w)."""
        return self.cond_in(F.interpolate(condition.to(sample.dtype), size=sample.shape[-2:], mode="area"))

    @contextlib.contextmanager
    def reading(self, extra):
        """Within the block, the UNet's conv_in output gets extra() added (a hook)."""
        hook = self.unet.conv_in.register_forward_hook(lambda module, inputs, out: out + extra().to(out.dtype))
        try:
            yield
        finally:
            hook.remove()

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                guess_mode: bool = False):
        refuse_residual_weights("ConcatConditioned model", conditioning_scale, guess_mode)
        extra = self.extra_input(controlnet_cond, sample)
        with self.reading(lambda: extra):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample

    def save_pretrained(self, folder) -> None:
        """The fine-tuned UNet in diffusers' format (unet/) and the extra input weights (cond_in.safetensors)."""
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.cond_in.state_dict().items()},
                  str(folder / "cond_in.safetensors"))


class ConcatEntry(designs.Entry):
    """A ConcatConditioned model in zc.sample: its UNet (which must be the pipeline's) reads the
    condition through the extra input weights at every step, in both CFG branches; outside
    control_guidance_start/end it reads a blank one."""
    alone = True

    def __init__(self, design, controls, run):
        super().__init__(design, controls, run)
        if len(controls) > 1:
            raise ValueError("one ConcatConditioned model at a time: each fine-tuned its own UNet")
        self.model, c, _ = controls[0]
        self.model.check_unet(run.unet)
        check_condition(c, (run.batch, self.model.config.conditioning_channels, run.size, run.size))
        c = c.to(run.device, next(self.model.parameters()).dtype)
        self.cond, self.extra = torch.cat([c, c]) if run.do_cfg else c, None

    def attached(self, unet):
        return self.model.reading(lambda: self.extra)

    def unet_kwargs(self, step) -> dict:
        c = self.cond if step.on else torch.zeros_like(self.cond)
        self.extra = self.model.extra_input(c, step.model_in)  # what the hook on conv_in adds this step
        return {}


def _build_concat(cfg, pipe, channels: int) -> ConcatConditioned:
    pipe.unet.to(torch.float32)  # all of it trains: trained weights stay fp32
    return ConcatConditioned(pipe.unet, channels)


designs.register(designs.Design(
    "ControlNet-lite", "lite", "Zhang et al. 2023, Fig. 8", "the same residuals, from one conv per block",
    "every step", True, module=ControlNetLite, build=build_for_training, wrap=wrap_for_training,
    enter=ControlNetEntry, sweep=(designs.SweepRun("architecture", ("ci", "cpu")),),
    claims=(designs.Claim("worse", "ControlNet-lite fails with no or an insufficient prompt", ("none", "insufficient")),
            designs.Claim("learns slower", "the trainable copy learns control faster than ControlNet-lite"))))
designs.register(designs.Design(
    "condition added directly", "direct", "Zhang et al. 2023, Fig. 8", "conv_in(z_t) + E(c), pooled into every skip",
    "every step", True, module=ControlNetDirect, build=build_for_training, wrap=wrap_for_training,
    enter=ControlNetEntry, sweep=(designs.SweepRun("architecture"),),
    claims=(designs.Claim("worse", "adding the condition directly (no trainable copy) is worse"),
            designs.Claim("learns slower", "the trainable copy learns control faster than the condition added directly"))))
designs.register(designs.Design(
    "UNet fine-tuned, concat", "concat", "Flux Control's channel concat", "the UNet's input (all of the UNet trains)",
    "every step", True, module=ConcatConditioned, build=_build_concat, wrap=lambda unet, model, cfg: model,
    enter=ConcatEntry, through_unet=True, scale="none: a fine-tuned UNet has no residual to weight",
    # the baseline that justifies the locked copy, on 5k and on 1k pairs (where the paper expects it to matter)
    sweep=(designs.SweepRun("locked copy"), designs.SweepRun("locked copy", train={"n_train": 1000}, suffix=", 1k pairs")),
    # the paper (Sec. 4.4, against SD v2 depth-to-image) claims comparable control at a far lower cost, not better
    claims=(designs.Claim("not worse", "a ControlNet on the locked SD controls comparably to fine-tuning the whole UNet"),
            designs.Claim("forgets", "fine-tuning the whole UNet on the task makes SD forget; the locked SD does not",
                          ("base_kind_accuracy", "base_colour_accuracy")))))
