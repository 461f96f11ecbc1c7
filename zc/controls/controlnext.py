"""A light control in the spirit of ControlNeXt (Peng et al. 2024): a small conv branch instead of the
trainable copy, added at ONE point of the locked UNet, with cross normalisation instead of zero init.

    x_c = B(E(c), temb)          E: the ControlNet's condition encoder (its conv_out not zero);
                                 B: one resnet block fed the UNet's own time embedding, and the
                                 first down block's downsampler when it has one
    h_1 = D_1(z_t)               the first down block's output, what the second one reads
    h_1 <- h_1 + s * (σ(h_1) (x_c - μ(x_c)) / σ(x_c) + μ(h_1))      μ, σ per sample, over C, H, W

Cross normalisation gives the control the main branch's statistics from the first step, so it
neither starts at zero (a ControlNet's zero convolutions) nor at an arbitrary scale: the paper's
argument is that this converges faster than zero init. Unlike a ControlNet there is no copy of
the encoder and no residual on the skips: the control enters the features every later block
reads. Its branch: 0.10M parameters on TinySD (ControlNet 1.26M), 4.3M on SD 1.5 (ControlNet 361M).
Like the paper, it also fine-tunes a subset of the UNet's own weights, the attention output
projections (`to_out`, as its SD 1.5 training script selects them), at a tenth of the branch's
learning rate (the script trains the branch at 10x): stored as increments ΔW, zero at the start
(the script's `--save_load_weights_increaments`), added while the control is attached, so the
UNet on disk is never changed and the SD alone is still the SD alone. On TinySD: 14 projections,
0.10M of increments beside the 0.10M branch (7.5% of the UNet together; ControlNet 46%).
Why this design and not a LoRA on the copy: it is the opposite end of the size scale (no copy at
all), and it tests the one idea, normalisation instead of zero init, that chapter 10's zero-vs-
Gaussian ablation leaves open.
"""
from __future__ import annotations

import contextlib

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from torch.nn import functional as F

from .. import designs
from ..condition_encoder import ConditionEncoder, default_channels
from ..controlled_unet import HookedConditioned, HookedEntry

__all__ = ["cross_normalise", "ControlNeXt"]


def cross_normalise(control: torch.Tensor, main: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`control` standardised per sample, then given `main`'s per-sample mean and std (over C, H, W)."""
    dims = tuple(range(1, control.ndim))
    mu_c, sd_c = control.mean(dims, keepdim=True), control.std(dims, keepdim=True)
    mu_m, sd_m = main.mean(dims, keepdim=True), main.std(dims, keepdim=True)
    return (control - mu_c) / (sd_c + eps) * sd_m + mu_m


def _key(module: str, param: str) -> str:
    """The increment's name in the ParameterDict (whose keys take no dots) for `module`'s weight or bias."""
    return f"{module.replace('.', '__')}__{param}"


class ControlNeXt(ModelMixin, ConfigMixin):
    """The branch: condition image (B, C, H, W) in [0, 1] and the UNet's time embedding (B, T) ->
    a feature map with the shape of the UNet's first down block's output."""

    @register_to_config
    def __init__(self, conditioning_channels: int = 3, channels: int = 320, temb_channels: int = 1280,
                 encoder_channels: tuple[int, ...] = (16, 32, 96, 256), downsample: bool = True,
                 scale: float = 1.0, tuned: tuple[tuple[str, int, int], ...] = ()):
        super().__init__()
        # the UNet subset the paper fine-tunes, as increments: (module name, out, in) per Linear
        self.increments = nn.ParameterDict()
        for name, n_out, n_in in tuned:
            self.increments[_key(name, "weight")] = nn.Parameter(torch.zeros(n_out, n_in))
            self.increments[_key(name, "bias")] = nn.Parameter(torch.zeros(n_out))
        # E with a Gaussian-initialised last conv: a zero one has no spread to normalise
        self.controlnet_cond_embedding = ConditionEncoder(channels, conditioning_channels, tuple(encoder_channels),
                                                          out_init="gaussian")
        self.resnet = ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=temb_channels,
                                    groups=min(32, channels))
        # the first down block's downsampler, as a plain stride-2 conv (diffusers' Downsample2D)
        self.downsampler = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if downsample else None

    @classmethod
    def for_pipeline(cls, pipe, conditioning_channels: int = 3, scale: float = 1.0, seed: int = 0,
                     tune_unet: bool = True) -> ControlNeXt:
        """Sized for `pipe`'s UNet: its first block's width, time-embedding width and downsampler,
        the hint block for its VAE factor, and (tune_unet) an increment for each attention output
        projection. Random init from `seed` (the global generator is kept)."""
        unet = pipe.unet
        first = unet.down_blocks[0]
        tuned = tuple((n, m.out_features, m.in_features) for n, m in unet.named_modules()
                      if n.endswith("to_out.0") and isinstance(m, nn.Linear)) if tune_unet else ()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(conditioning_channels, unet.config.block_out_channels[0], unet.time_embedding.linear_2.out_features,
                       default_channels(pipe.vae_scale_factor), first.downsamplers is not None, scale, tuned)

    def param_groups(self, lr: float) -> list[dict]:
        """The branch at `lr`, the UNet increments at lr / 10 (the paper's script: branch at 10x)."""
        tuned = set(self.increments.parameters())
        return [{"params": [p for p in self.parameters() if p not in tuned], "lr": lr},
                *([{"params": list(self.increments.parameters()), "lr": lr / 10}] if tuned else [])]

    def forward(self, condition: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.controlnet_cond_embedding(condition.to(self.dtype))  # (B, C0, latent, latent)
        x = self.resnet(x, temb.to(self.dtype))
        return self.downsampler(x) if self.downsampler is not None else x

    @contextlib.contextmanager
    def attached(self, unet, condition: torch.Tensor, scale: float | None = None):
        """Inside the block, every call of `unet` adds the cross-normalised control to its first down
        block's output. `condition` has the batch of the UNet's calls (doubled for CFG by the caller)."""
        s = self.config.scale if scale is None else scale

        def inject(block, args, kwargs, output):
            hidden, skips = output
            control = self(condition, kwargs["temb"])
            return hidden + s * cross_normalise(control, hidden).to(hidden.dtype), skips

        def increment(name):
            def hook(linear, args, output):  # W x + b -> (W + ΔW) x + (b + Δb)
                w, b = self.increments[_key(name, "weight")], self.increments[_key(name, "bias")]
                return output + F.linear(args[0], w.to(output.dtype), b.to(output.dtype))
            return hook

        handles = [unet.down_blocks[0].register_forward_hook(inject, with_kwargs=True)]
        for name, _, _ in self.config.tuned:
            handles.append(unet.get_submodule(name).register_forward_hook(increment(name)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


designs.register(designs.Design(
    "ControlNeXt-style", "controlnext", "Peng et al. 2024", "the first down block's output, cross-normalised; attention outputs tuned",
    "every step", False, module=ControlNeXt,
    build=lambda cfg, pipe, channels: ControlNeXt.for_pipeline(pipe, channels, seed=cfg.seed),
    wrap=lambda unet, branch, cfg: HookedConditioned(unet, branch),
    enter=HookedEntry, folder="controlnext", through_unet=True, hooks_in_blocks=True,
    scale="the pair's scale: the cross-normalised branch (default: its config.scale)",
    sweep=(designs.SweepRun("successors"),),
    claims=(designs.Claim("comparable", "ControlNeXt controls comparably to ControlNet with a fraction of its parameters "
                                        "(Peng et al. 2024)"),
            designs.Claim("converges faster", "ControlNeXt converges faster than ControlNet (Peng et al. 2024)")),
    wiring="a small branch B(c, t), cross-normalised, added at one\npoint; the UNet's attention outputs tuned (ΔW)",
    drawn_as="one point"))
