"""ControlNet on a transformer: SD3's MMDiT, the way diffusers' `SD3ControlNetModel` builds it (chapter 14).

Chapter 4 copies a UNet's encoder; a transformer has no encoder, so the copy is of its *first N joint
blocks*, and what it adds goes to every block of the base, not to skips:

    x_0   = P(z_t) + Z_in(P_c(c))          P: the base's patch embedding (copied); c: the control image's
                                          latents (through SD3's VAE), patched by P_c, a zero-init PatchEmbed
    x_i, y_i = B_i(x_{i-1}, y_{i-1}, e)    B_i: a copy of the base's joint block i (image tokens x, text
                                          tokens y, the timestep + pooled-text embedding e), i = 1..N
    r_i   = Z_i(x_i)                       Z_i: a zero-initialised Linear (the zero convolution's analogue)
    base block j (of M) adds r_k to its image tokens, k = ⌊j / (M / N)⌋   (residual_index), except the
    last: it keeps no text tokens (context_pre_only) and SD3 adds nothing there. So a copy deeper than
    half the base computes residuals no block adds (used_residuals; all M blocks: the last one)

At step 0 every Z is zero, so the base runs as if alone, as with chapter 2's zero convolutions. The
time/text embedding and the text projection are copied from the base too. The state dict's names are
diffusers' own, so weights load in `SD3ControlNetModel` and back (tests/test_mmdit_controlnet.py checks
both ways, and that the outputs are equal).
"""
from __future__ import annotations

import warnings

import torch
from diffusers import SD3Transformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import JointTransformerBlock
from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings, PatchEmbed
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .. import designs

__all__ = ["residual_index", "used_residuals", "MMDiTControlNet", "ControlledMMDiT", "PixelMMDiTControlNet", "concat_transformer",
           "ConcatMMDiT", "copy_depth"]


def residual_index(block: int, n_blocks: int, n_residuals: int) -> int:
    """Which of the ControlNet's n_residuals outputs base block `block` (of n_blocks) adds: the blocks are
    shared out evenly, as diffusers' SD3Transformer2DModel does (int(block / (n_blocks / n_residuals)))."""
    if not 0 < n_residuals <= n_blocks:
        raise ValueError(f"a ControlNet of {n_residuals} blocks for a base of {n_blocks}: it must have 1 to "
                         f"{n_blocks} (it copies the base's first blocks)")
    return int(block / (n_blocks / n_residuals))


def used_residuals(n_blocks: int, n_residuals: int) -> int:
    """How many of a copy's residuals the base adds (they are the first ones): every block's but the last's,
    which SD3 leaves without a residual. A copy of N blocks does useful work in its first used_residuals."""
    return max(residual_index(j, n_blocks, n_residuals) for j in range(n_blocks - 1)) + 1 if n_blocks > 1 else 1


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class MMDiTControlNet(ModelMixin, ConfigMixin):
    """The copy of an SD3 transformer's first `num_layers` joint blocks, its zero-initialised input patch
    embedding and one zero-initialised Linear per block. Config fields are the base's (SD3Transformer2DModel),
    with num_layers the copy's depth and extra_conditioning_channels beyond the latent channels."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, sample_size: int = 128, patch_size: int = 2, in_channels: int = 16, num_layers: int = 12,
                 attention_head_dim: int = 64, num_attention_heads: int = 18, joint_attention_dim: int = 4096,
                 caption_projection_dim: int = 1152, pooled_projection_dim: int = 2048, out_channels: int = 16,
                 pos_embed_max_size: int = 96, extra_conditioning_channels: int = 0, qk_norm: str | None = None,
                 force_zeros_for_pooled_projection: bool = False, dual_attention_layers: tuple[int, ...] = ()):
        # force_zeros_for_pooled_projection: read by diffusers' StableDiffusion3ControlNetPipeline only. False: it
        # gives the ControlNet the pooled text and shifts the control's latents, as zc trains and samples it
        # (diffusers' default, True, is InstantX's convention: zero pooled text, unshifted latents)
        super().__init__()
        self.gradient_checkpointing = False
        dim = num_attention_heads * attention_head_dim  # the width of every token
        patch = dict(height=sample_size, width=sample_size, patch_size=patch_size, embed_dim=dim)
        self.pos_embed = PatchEmbed(**patch, in_channels=in_channels, pos_embed_max_size=pos_embed_max_size)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(dim, pooled_projection_dim)
        self.context_embedder = nn.Linear(joint_attention_dim, caption_projection_dim)
        # every copied block also returns its text tokens (context_pre_only=False): the next one reads them
        self.transformer_blocks = nn.ModuleList([
            JointTransformerBlock(dim, num_attention_heads, attention_head_dim, context_pre_only=False, qk_norm=qk_norm,
                                  use_dual_attention=i in dual_attention_layers)  # SD3.5's first blocks
            for i in range(num_layers)])
        self.controlnet_blocks = nn.ModuleList([_zero(nn.Linear(dim, dim)) for _ in range(num_layers)])  # Z_i
        self.pos_embed_input = _zero(PatchEmbed(**patch, in_channels=in_channels + extra_conditioning_channels,
                                                pos_embed_type=None))  # Z_in: the control's tokens, no positions

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """diffusers' from_pretrained; a folder whose config does not set force_zeros_for_pooled_projection means
        True to diffusers (InstantX's convention, which zc refuses: ControlledMMDiT), so it is read as True."""
        net = super().from_pretrained(*args, **kwargs)
        if "force_zeros_for_pooled_projection" in net.config.get("_use_default_values", []):  # not in the file
            net.register_to_config(force_zeros_for_pooled_projection=True)
        return net

    @classmethod
    def from_transformer(cls, transformer, num_layers: int = 12, extra_conditioning_channels: int = 0, **kwargs):
        """A ControlNet for `transformer` (an SD3Transformer2DModel): its config, and the weights of its patch
        embedding, time/text embedding, text projection and first `num_layers` joint blocks copied.
        kwargs: a subclass's own config fields."""
        c = transformer.config
        n_base = len(transformer.transformer_blocks)
        residual_index(0, n_base, num_layers)  # a ValueError for a copy deeper than the base
        if used_residuals(n_base, num_layers) < num_layers:
            warnings.warn(f"a copy of {num_layers} of {n_base} blocks: the base adds only its first "
                          f"{used_residuals(n_base, num_layers)} residuals (its last block takes none), so "
                          f"the copy's last {num_layers - used_residuals(n_base, num_layers)} block(s) train "
                          f"nothing; copies of up to {n_base // 2} blocks use every one", stacklevel=2)
        same = ("sample_size", "patch_size", "in_channels", "attention_head_dim", "num_attention_heads",
                "joint_attention_dim", "caption_projection_dim", "pooled_projection_dim", "out_channels",
                "pos_embed_max_size", "qk_norm")
        net = cls(num_layers=num_layers, extra_conditioning_channels=extra_conditioning_channels,
                  dual_attention_layers=tuple(i for i in c.get("dual_attention_layers", ()) if i < num_layers),
                  **{k: c[k] for k in same}, **kwargs)
        for name in ("pos_embed", "time_text_embed", "context_embedder"):
            getattr(net, name).load_state_dict(getattr(transformer, name).state_dict())
        for copy, block in zip(net.transformer_blocks, transformer.transformer_blocks):
            # the base's last block keeps no text tokens (context_pre_only): a copy of every block copies its
            # image half and starts its text half fresh (diffusers' from_transformer stops at a shape mismatch)
            mine = copy.state_dict()
            copy.load_state_dict({k: v for k, v in block.state_dict().items()
                                  if k in mine and mine[k].shape == v.shape}, strict=False)
        return net

    def forward(self, hidden_states: torch.Tensor, controlnet_cond: torch.Tensor, conditioning_scale: float = 1.0,
                encoder_hidden_states: torch.Tensor | None = None, pooled_projections: torch.Tensor | None = None,
                timestep: torch.Tensor | None = None) -> list[torch.Tensor]:
        """z_t (B, C, H, W) latents, c (B, C + extra, H, W) the control's latents -> the N residuals, each
        (B, tokens, dim), times conditioning_scale: SD3Transformer2DModel's block_controlnet_hidden_states."""
        if controlnet_cond.shape[-2:] != hidden_states.shape[-2:]:
            raise ValueError(f"the control's latents are {tuple(controlnet_cond.shape[-2:])}, the image's "
                             f"{tuple(hidden_states.shape[-2:])}: encode the control image at the image's size")
        x = self.pos_embed(hidden_states) + self.pos_embed_input(controlnet_cond)  # (B, tokens, dim)
        e = self.time_text_embed(timestep, pooled_projections)  # (B, dim)
        y = self.context_embedder(encoder_hidden_states)  # (B, text tokens, caption_projection_dim)
        residuals = []
        for block, zero in zip(self.transformer_blocks, self.controlnet_blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:  # recompute in backward (less memory)
                y, x = self._gradient_checkpointing_func(block, x, y, e)
            else:
                y, x = block(hidden_states=x, encoder_hidden_states=y, temb=e)
            residuals.append(zero(x) * conditioning_scale)
        return residuals


# --- how it trains and samples in zc (chapter 14) --------------------------------------------------------
class ControlledMMDiT(nn.Module):
    """The locked SD3 transformer with a trainable control beside it: model(z_t, timestep, text, c) -> v, the
    loss's model and zc.sd3.sample_sd3's. `text` is zc.sd3.pack_text's (tokens with the pooled vector last);
    `c` what the design reads (Design.control_input): the control image's VAE latents for the ControlNet."""

    def __init__(self, transformer, control: nn.Module):
        super().__init__()
        if getattr(control.config, "force_zeros_for_pooled_projection", False):
            raise ValueError("this ControlNet follows InstantX's convention (force_zeros_for_pooled_projection: zero "
                             "pooled text, unshifted control latents), which zc neither trains nor samples: run it "
                             "in diffusers' StableDiffusion3ControlNetPipeline")
        transformer.requires_grad_(False)
        self.transformer, self.control = transformer, control

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        return [{"params": [p for p in self.control.parameters() if p.requires_grad], "lr": lr}]

    def forward(self, hidden_states, timestep, text, controlnet_cond, conditioning_scale: float = 1.0):
        from ..sd3 import unpack_text

        tokens, pooled = unpack_text(text, self.transformer.config.pooled_projection_dim)
        dt = next(self.control.parameters()).dtype  # may differ from the base's (an fp32 control, a bf16 SD3)
        residuals = self.control(hidden_states.to(dt), controlnet_cond.to(dt), conditioning_scale, tokens.to(dt),
                                 pooled.to(dt), timestep)
        residuals = [r.to(hidden_states.dtype) for r in residuals]
        base = self.transformer.dtype
        tokens, pooled = tokens.to(base), pooled.to(base)
        return self.transformer(hidden_states, encoder_hidden_states=tokens, pooled_projections=pooled,
                                timestep=timestep, block_controlnet_hidden_states=residuals).sample


class PixelMMDiTControlNet(MMDiTControlNet):
    """The same ControlNet reading the control image's pixels through the paper's hint encoder E (chapter 3)
    instead of SD3's VAE: E maps (B, 3, H, W) to latent-sized features (B, C, H/f, W/f), then the zero
    PatchEmbed as before. E's last conv starts Gaussian, not zero: two zero layers in a row would pass no
    gradient to each other."""

    @register_to_config
    def __init__(self, sample_size: int = 128, patch_size: int = 2, in_channels: int = 16, num_layers: int = 12,
                 attention_head_dim: int = 64, num_attention_heads: int = 18, joint_attention_dim: int = 4096,
                 caption_projection_dim: int = 1152, pooled_projection_dim: int = 2048, out_channels: int = 16,
                 pos_embed_max_size: int = 96, extra_conditioning_channels: int = 0, qk_norm: str | None = None,
                 force_zeros_for_pooled_projection: bool = False, dual_attention_layers: tuple[int, ...] = (),
                 vae_factor: int = 8, conditioning_channels: int = 3):
        super().__init__(sample_size, patch_size, in_channels, num_layers, attention_head_dim, num_attention_heads,
                         joint_attention_dim, caption_projection_dim, pooled_projection_dim, out_channels,
                         pos_embed_max_size, extra_conditioning_channels, qk_norm, force_zeros_for_pooled_projection,
                         dual_attention_layers)
        from ..condition_encoder import ConditionEncoder, default_channels

        self.hint = ConditionEncoder(in_channels, conditioning_channels, default_channels(vae_factor),
                                     out_init="gaussian")

    def forward(self, hidden_states, controlnet_cond, conditioning_scale=1.0, encoder_hidden_states=None,
                pooled_projections=None, timestep=None):
        return super().forward(hidden_states, self.hint(controlnet_cond), conditioning_scale, encoder_hidden_states,
                               pooled_projections, timestep)


def concat_transformer(transformer, extra_channels: int):
    """Flux Control's way, on SD3: a copy of the base whose patch embedding reads `extra_channels` more input
    channels (the control's latents concatenated to z_t), their weights zero so that at step 0 it is the base;
    the whole copy then trains."""
    c = dict(transformer.config)
    wide = SD3Transformer2DModel.from_config({**c, "in_channels": c["in_channels"] + extra_channels,
                                              "out_channels": c["out_channels"] or c["in_channels"]})
    state = transformer.state_dict()
    w = state["pos_embed.proj.weight"]  # (dim, C, p, p) -> (dim, C + extra, p, p)
    state["pos_embed.proj.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra_channels, *w.shape[2:])], dim=1)
    wide.load_state_dict(state)
    return wide


class ConcatMMDiT(nn.Module):
    """model(z_t, timestep, text, c) = the widened copy's v for [z_t, c] (channel concatenation)."""

    def __init__(self, wide):
        super().__init__()
        self.wide = wide

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        return [{"params": list(self.wide.parameters()), "lr": lr}]

    def forward(self, hidden_states, timestep, text, controlnet_cond, conditioning_scale: float = 1.0):
        from ..sd3 import unpack_text

        tokens, pooled = unpack_text(text, self.wide.config.pooled_projection_dim)
        dt = self.wide.dtype  # may differ from the sampler's (an fp32 fine-tune, bf16 sampling)
        x = torch.cat([hidden_states, controlnet_cond.to(hidden_states.dtype) * conditioning_scale], dim=1)
        return self.wide(x.to(dt), encoder_hidden_states=tokens.to(dt), pooled_projections=pooled.to(dt),
                         timestep=timestep).sample.to(hidden_states.dtype)


def copy_depth(cfg, transformer) -> int:
    """The blocks a ControlNet copies: cfg.copy_depth; 0: half the base's (diffusers' 12 of SD3-medium's 24);
    -1: all of them."""
    n, depth = len(transformer.transformer_blocks), getattr(cfg, "copy_depth", 0)
    if not -1 <= depth <= n:
        raise ValueError(f"copy_depth {depth}: give 1 to {n} blocks of this base, 0 (half) or -1 (all)")
    return n if depth == -1 else depth or max(1, n // 2)


class OwnTransformerEntry(designs.Entry):
    alone = True  # it calls a fine-tuned transformer of its own: no other control joins it, and "no control" is
    # that transformer with a blank control image


def _vae_factor(pipe) -> int:
    return pipe.vae_scale_factor


_SD3 = "Zhang et al. 2023 as diffusers carries it to SD3 (SD3ControlNetModel)"
designs.register(designs.Design(
    "MMDiT ControlNet", "mmdit", _SD3, "every joint block's image tokens (a copy of the first N blocks)",
    "every step", True, module=MMDiTControlNet,
    build=lambda cfg, pipe, channels: MMDiTControlNet.from_transformer(pipe.transformer,
                                                                       copy_depth(cfg, pipe.transformer)),
    wrap=lambda transformer, net, cfg: ControlledMMDiT(transformer, net), enter=designs.Entry,
    backbone="transformer", control_input="latents",
    # how deep must the copy be? (chapter 14's sweep; the reference run copies half, as diffusers' default)
    sweep=tuple(designs.SweepRun("transformer", ("sd3",), {"copy_depth": d}, s)
                for d, s in ((0, ""), (1, ", 1 block"), (2, ", 2 blocks"), (-1, ", all blocks")))))
designs.register(designs.Design(
    "MMDiT ControlNet, hint E", "mmdit-pixel", _SD3 + " with the paper's hint encoder E",
    "every joint block's image tokens; the control read by E, not the VAE", "every step", True,
    module=PixelMMDiTControlNet,
    build=lambda cfg, pipe, channels: PixelMMDiTControlNet.from_transformer(
        pipe.transformer, copy_depth(cfg, pipe.transformer), vae_factor=_vae_factor(pipe),
        conditioning_channels=channels),
    wrap=lambda transformer, net, cfg: ControlledMMDiT(transformer, net), enter=designs.Entry,
    backbone="transformer", control_input="pixels", sweep=(designs.SweepRun("transformer", ("sd3",)),)))
designs.register(designs.Design(
    "MMDiT concat", "mmdit-concat", "Flux Control's channel concatenation (Black Forest Labs 2024), on SD3",
    "the input: control latents concatenated to z_t, the whole transformer fine-tuned", "every step", True,
    module=SD3Transformer2DModel,
    build=lambda cfg, pipe, channels: concat_transformer(pipe.transformer, pipe.transformer.config.in_channels),
    wrap=lambda transformer, wide, cfg: ConcatMMDiT(wide), enter=OwnTransformerEntry,
    folder="transformer", backbone="transformer", control_input="latents",
    sweep=(designs.SweepRun("transformer", ("sd3",)),)))
