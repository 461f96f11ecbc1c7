"""A ControlNet-XS-style control (Zavadski et al. 2023): a *narrow* control encoder that runs beside
the locked UNet's encoder block for block, with information flowing both ways.

    c_0 = E(c)                                    the condition, at the latent size
    for each down block i (and the middle block):
        c_i = D^c_i([c_{i-1}, Z^{b→c}_i(h_{i-1})])    the control block reads the base's input too
        h_i = D_i(h_{i-1}) + Z^{c→b}_i(c_i)           the base block's output gets the control's
    in the decoder, before each resnet reads skip s:
        h <- h + Z^{dec}_s(c-skip_s)                  the control's own skips join the base's decoder

D^c_i has the base block's structure (resnets, attention, downsampler) at `ratio` of its width, so
its skips line up with the base's one for one; every Z is a zero convolution, so at step 0 the
model is exactly the SD alone, as with ControlNet. A ControlNet's copy never sees what the base
computes and talks to it only through the skips; here the control reads the base at every block
(b→c) and corrects it before the next block reads it (c→b), which is why XS can be narrow: the
paper reaches ControlNet's quality with about 1.6% of SD's UNet parameters, "about twice as fast".
Here the default ratio is 0.125, the paper's share (parameters go with width squared: 0.125² ≈
1.6%): on TinySD the control blocks and zero convolutions are 1.5% of the UNet's parameters; the
hint block E, the same as a ControlNet's, adds a fixed 48k (1.8% of TinySD's tiny UNet; 0.01% of
SD 1.5's), so the whole is 3.2% on TinySD (87.5k parameters; its ControlNet: 46%).

diffusers ships `ControlNetXSAdapter` / `UNetControlNetXSModel`, but they hard-code SD's two layers
per down block (`num_layers = 2  # only support sd + sdxl`), which TinySD does not have, so zc
implements the idea itself. What differs from the paper: the encoder connections are per block,
not per layer (inside a block, the base's resnet and attention outputs before the downsampler do
not get the control; with TinySD's one layer per block, only the downsampler lies between), and the
control has no time embedding of its own (it reads the base's). The hooks (forward pre-hooks and
hooks on the UNet's down blocks, middle block and decoder resnets) leave the UNet's code as it is.
"""
from __future__ import annotations

import contextlib

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import (
    UNetMidBlock2DCrossAttn,
    get_down_block,
)
from torch import nn

from .. import designs
from ..condition_encoder import ConditionEncoder, default_channels
from ..controlled_unet import HookedConditioned, HookedEntry
from ..zero_conv import ZeroConv

__all__ = ["ControlNetXS"]


def _narrow(width: int, ratio: float, groups: int) -> int:
    """`ratio` of a base width, rounded up to a multiple of the norm groups (at least one group)."""
    return max(groups, -(-int(width * ratio) // groups) * groups)


def skip_channels(widths, layers: int, downsamples) -> list[int]:
    """The widths of an encoder's skips in the order it makes them: conv_in's (the hint's, for the
    control), then each down block's resnet outputs and its downsampler's."""
    out = [widths[0]]
    for w, down in zip(widths, downsamples):
        out += [w] * (layers + int(down))
    return out


def decoder_channels(block_out_channels, layers: int) -> list[int]:
    """The width of the hidden state each decoder resnet reads beside its skip, in the order the
    decoder runs them (diffusers' up blocks: the block before's output, then the block's own)."""
    rev = list(reversed(block_out_channels))
    return [rev[max(b - 1, 0)] if j == 0 else rev[b] for b in range(len(rev)) for j in range(layers + 1)]


class ControlNetXS(ModelMixin, ConfigMixin):
    """The control encoder and its two-way zero convolutions, for a UNet of the given config."""

    @register_to_config
    def __init__(self, down_block_types: tuple[str, ...], block_out_channels: tuple[int, ...],
                 layers_per_block: int = 1, temb_channels: int = 1280, cross_attention_dim: int = 768,
                 ratio: float = 0.125, groups: int = 4, conditioning_channels: int = 3,
                 encoder_channels: tuple[int, ...] = (16, 32, 96, 256), downsamples: tuple[bool, ...] = (),
                 decoder: bool = True):
        super().__init__()
        widths = [_narrow(w, ratio, groups) for w in block_out_channels]
        self.controlnet_cond_embedding = ConditionEncoder(widths[0], conditioning_channels, tuple(encoder_channels))
        self.base_to_ctrl, self.ctrl_to_base, self.blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        ctrl_in = widths[0]
        for i, (kind, width, base) in enumerate(zip(down_block_types, widths, block_out_channels)):
            base_in = block_out_channels[max(i - 1, 0)]  # what the base block reads
            self.base_to_ctrl.append(ZeroConv(base_in, ctrl_in))
            self.blocks.append(get_down_block(
                kind, num_layers=layers_per_block, in_channels=2 * ctrl_in, out_channels=width,
                temb_channels=temb_channels, add_downsample=downsamples[i], resnet_eps=1e-5, resnet_act_fn="silu",
                resnet_groups=groups, cross_attention_dim=cross_attention_dim, num_attention_heads=1,
                attention_head_dim=width, downsample_padding=1))
            self.ctrl_to_base.append(ZeroConv(width, base))
            ctrl_in = width
        base = block_out_channels[-1]
        self.base_to_ctrl.append(ZeroConv(base, ctrl_in))  # the middle block
        self.mid_block = UNetMidBlock2DCrossAttn(2 * ctrl_in, temb_channels, out_channels=ctrl_in, resnet_eps=1e-5,
                                                 resnet_groups=groups, num_attention_heads=1,
                                                 cross_attention_dim=cross_attention_dim)
        self.ctrl_to_base.append(ZeroConv(ctrl_in, base))
        # the decoder connections: one zero conv per decoder resnet, from the control skip it pairs with
        ctrl_skips, hidden = skip_channels(widths, layers_per_block, downsamples), decoder_channels(
            block_out_channels, layers_per_block)
        self.ctrl_to_decoder = nn.ModuleList(
            [ZeroConv(ctrl_skips[-1 - k], c) for k, c in enumerate(hidden)] if decoder else [])

    @classmethod
    def for_pipeline(cls, pipe, conditioning_channels: int = 3, ratio: float = 0.125, seed: int = 0) -> ControlNetXS:
        """Sized for `pipe`'s UNet (block types, widths, depth, time and text widths; the hint block for its
        VAE factor). Random init from `seed` (the global generator is kept)."""
        c = pipe.unet.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(tuple(c.down_block_types), tuple(c.block_out_channels), c.layers_per_block,
                       pipe.unet.time_embedding.linear_2.out_features, c.cross_attention_dim, ratio,
                       conditioning_channels=conditioning_channels,
                       encoder_channels=default_channels(pipe.vae_scale_factor),
                       downsamples=tuple(b.downsamplers is not None for b in pipe.unet.down_blocks))

    def _run(self, block, h, temb, text):
        """One control block -> (hidden, its skips): a down block returns both, the middle block no skips."""
        cross = "CrossAttn" in type(block).__name__
        out = block(h, temb.to(self.dtype), **({"encoder_hidden_states": text.to(self.dtype)} if cross else {}))
        return (out[0], list(out[1])) if isinstance(out, tuple) else (out, [])

    @contextlib.contextmanager
    def attached(self, unet, condition: torch.Tensor, scale: float = 1.0):
        """Inside the block, every call of `unet` runs the control beside its encoder (condition: the
        batch of the UNet's calls, doubled for CFG by the caller)."""
        state = {}
        stages = list(unet.down_blocks) + [unet.mid_block]

        def before(i):
            def hook(block, args, kwargs):
                # the UNet calls its down blocks with keywords, its middle block with (sample, emb, ...)
                h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
                temb = kwargs["temb"] if "temb" in kwargs else args[1]
                if i == 0:  # a new UNet call: the control starts from the condition
                    state["c"] = self.controlnet_cond_embedding(condition.to(self.dtype))
                    state["skips"] = [state["c"]]
                x = torch.cat([state["c"], self.base_to_ctrl[i](h.to(self.dtype))], dim=1)
                block_c = self.blocks[i] if i < len(self.blocks) else self.mid_block
                state["c"], skips = self._run(block_c, x, temb, kwargs.get("encoder_hidden_states"))
                state["skips"] += skips
            return hook

        def decoder(k, conv):
            def hook(resnet, args):  # the resnet reads cat([h, skip]): the control's skip joins h
                x, rest = args[0], args[1:]
                skip = state["skips"][-1 - k]
                n = conv.out_channels
                x = torch.cat([x[:, :n] + scale * conv(skip).to(x.dtype), x[:, n:]], dim=1)
                return (x, *rest)
            return hook

        def after(i):
            def hook(block, args, kwargs, output):
                add = lambda h: h + scale * self.ctrl_to_base[i](state["c"]).to(h.dtype)  # noqa: E731
                if isinstance(output, tuple):  # a down block: (hidden, skips); its output is also its last skip
                    hidden, skips = output
                    return add(hidden), (*skips[:-1], add(skips[-1]))
                return add(output)
            return hook

        resnets = [r for up in unet.up_blocks for r in up.resnets]  # in the order the decoder runs them
        if self.ctrl_to_decoder and len(resnets) != len(self.ctrl_to_decoder):
            raise ValueError(f"this ControlNet-XS was built for a UNet with {len(self.ctrl_to_decoder)} decoder "
                             f"resnets, this one has {len(resnets)}: build it with ControlNetXS.for_pipeline")
        handles = []
        for i, stage in enumerate(stages):
            handles.append(stage.register_forward_pre_hook(before(i), with_kwargs=True))
            handles.append(stage.register_forward_hook(after(i), with_kwargs=True))
        for k, (r, conv) in enumerate(zip(resnets, self.ctrl_to_decoder)):
            handles.append(r.register_forward_pre_hook(decoder(k, conv)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


designs.register(designs.Design(
    "ControlNet-XS-style", "controlnet-xs", "Zavadski et al. 2023",
    "every down block's and the middle block's output, read back; its skips into the decoder", "every step", True,
    module=ControlNetXS, build=lambda cfg, pipe, channels: ControlNetXS.for_pipeline(pipe, channels, seed=cfg.seed),
    wrap=lambda unet, branch, cfg: HookedConditioned(unet, branch),
    enter=HookedEntry, folder="controlnet-xs", through_unet=True, hooks_in_blocks=True,
    scale="the pair's scale: its corrections (default 1)",
    sweep=(designs.SweepRun("successors"),),
    claims=(designs.Claim("comparable", "ControlNet-XS controls as well as ControlNet with a few % of the UNet "
                                        "(Zavadski et al. 2023)"),
            designs.Claim("faster per image", "ControlNet-XS is about twice as fast as ControlNet at inference "
                                              "(Zavadski et al. 2023)", factor=2.0)),
    wiring="a narrow encoder beside the base, reading it (Z),\ncorrecting it (Z) and joining its decoder (Z)",
    drawn_as="beside"))
