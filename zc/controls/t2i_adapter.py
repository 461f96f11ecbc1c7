"""T2I-Adapter (Mou et al. 2023): a small conv pyramid reads the condition once per generation, and
its features are added inside the locked UNet's down blocks.

    F_c = A(c)                     once per image, not once per sampler step
    h_i <- h_i + s * F_c^i         after down block i's layers (a cross-attention block: before its
                                   downsampler; a plain DownBlock2D: after it)

A ControlNet runs a trainable copy of the encoder at every step and adds its residuals to the skips;
the adapter runs once, is smaller (on SD 1.5 77M parameters against the ControlNet's 361M; on
TinySD 0.54M against 1.26M), and adds to the encoder's own features, so they travel through the
rest of the encoder as well as through the skip. Nothing starts at zero: an untrained
adapter already changes the UNet's output (tests/test_t2i_adapter.py measures by how much).

diffusers ships the design: `T2IAdapter` (pixel-unshuffle the condition, then one block of resnets
per UNet down block; its "full_adapter" layout halves the size between blocks, its SDXL layout
"full_adapter_xl", which TinySD's block types need, keeps the first two at one size) and the
UNet's `down_intrablock_additional_residuals`. This module only sizes it for an SD, checks the
fit, and wraps it for zc.train; zc.sample runs it (`[(adapter, condition, scale)]`) as diffusers'
StableDiffusionAdapterPipeline does (a parity test checks the images).
"""
from __future__ import annotations

import torch
from diffusers import T2IAdapter

from .. import designs
from ..controlled_unet import HookedConditioned, refuse_residual_weights
from ..sample import check_condition, condition_name

__all__ = ["intrablock_shapes", "feature_shapes", "check_unet", "for_pipeline", "features", "AdapterEntry",
    "AdapterConditioned"]


def intrablock_shapes(unet, latent: int) -> list[tuple[int, int]]:
    """(channels, side) of what each down block of `unet` adds an adapter feature to, for a latent of
    side `latent`: a cross-attention block adds before its downsampler, a plain DownBlock2D after it
    (diffusers' UNet2DConditionModel), so the sizes depend on the block types, not only the depth."""
    kinds, widths = unet.config.down_block_types, unet.config.block_out_channels
    shapes, side = [], latent
    for i, (kind, width) in enumerate(zip(kinds, widths)):
        last = i == len(kinds) - 1
        shapes.append((width, side if "CrossAttn" in kind or last else side // 2))
        side = side if last else side // 2
    return shapes


def feature_shapes(adapter: T2IAdapter, size: int) -> list[tuple[int, int]]:
    """(channels, side) of each feature the adapter gives for a condition of `size` px (from its config)."""
    cfg = adapter.config
    side = size // cfg.downscale_factor
    if cfg.adapter_type == "full_adapter_xl":  # one downsampling block, the third
        return [(c, side if i < 2 else side // 2) for i, c in enumerate(cfg.channels)]
    return [(c, side // 2**i) for i, c in enumerate(cfg.channels)]


def check_unet(adapter: T2IAdapter, unet, vae_scale_factor: int) -> None:
    """ValueError unless the adapter's features land on this UNet: one per down block with that block's
    channels and size (intrablock_shapes), and at most one more, which the UNet adds to the middle
    block's output when it has the middle block's shape (as SDXL's adapters do)."""
    latent = unet.config.sample_size
    want = intrablock_shapes(unet, latent)
    got = feature_shapes(adapter, latent * vae_scale_factor)
    mid = (unet.config.block_out_channels[-1], want[-1][1])
    if got[: len(want)] != want or len(got) > len(want) + 1 or (len(got) > len(want) and got[-1] != mid):
        raise ValueError(f"this T2I-Adapter gives features of (channels, side) {got}, but this UNet's down blocks take "
                         f"{want} (and the middle block {mid}): build one for this SD with t2i_adapter.for_pipeline")


def for_pipeline(pipe, condition_channels: int = 3, num_res_blocks: int = 2, seed: int = 0) -> T2IAdapter:
    """A fresh (untrained) T2I-Adapter for `pipe`'s SD, in the first of diffusers' two layouts that fits
    its UNet (check_unet): "full_adapter" (SD 1.x: a feature per down block, halving in size, condition
    unshuffled to the latent size; for SD 1.5 the released adapters' configuration) or "full_adapter_xl"
    (SDXL's, and TinySD's: the first block is a plain DownBlock2D that adds after its downsampler, so
    the first two features share one size; a fourth goes to the middle block). Random init from
    `seed` (the global generator is left as it was)."""
    unet, f = pipe.unet, pipe.vae_scale_factor
    widths = list(unet.config.block_out_channels)
    layouts = [dict(channels=widths, downscale_factor=f, adapter_type="full_adapter")]
    if len(widths) == 3:  # diffusers' XL layout has four features: the three blocks' and the middle's
        layouts.append(dict(channels=[*widths, widths[-1]], downscale_factor=2 * f, adapter_type="full_adapter_xl"))
    for layout in layouts:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapter = T2IAdapter(in_channels=condition_channels, num_res_blocks=num_res_blocks, **layout)
        try:
            check_unet(adapter, unet, f)
            return adapter
        except ValueError:
            continue
    raise ValueError(f"neither of diffusers' T2I-Adapter layouts fits this UNet (down blocks take "
                     f"{intrablock_shapes(unet, unet.config.sample_size)})")


def features(adapter: T2IAdapter, condition: torch.Tensor, scale: float = 1.0) -> list[torch.Tensor]:
    """The adapter's feature maps for a (B, C, H, W) condition in [0, 1], one per down block, scaled."""
    dtype = next(adapter.parameters()).dtype
    return [f * scale for f in adapter(condition.to(dtype))]


class AdapterEntry(designs.Entry):
    """T2I-Adapters in zc.sample: each reads its condition once, before the loop; the features (summed
    over adapters, each times its scale: diffusers' MultiAdapter) are added inside the UNet's down
    blocks at every step and in both CFG branches, as diffusers' StableDiffusionAdapterPipeline does."""

    def __init__(self, design, controls, run):
        super().__init__(design, controls, run)
        self.features = None
        for i, (adapter, c, s) in enumerate(controls):
            check_unet(adapter, run.unet, run.vae_scale_factor)
            check_condition(c, (run.batch, adapter.config.in_channels, run.size, run.size),
                            condition_name(design, i, len(controls)))
            feats = [f.to(run.device, run.dtype) for f in features(adapter, c.to(run.device), 1.0 if s is None else s)]
            self.features = feats if self.features is None else [a + b for a, b in zip(self.features, feats)]
        if run.do_cfg:  # the same features in both branches
            self.features = [torch.cat([f, f]) for f in self.features]

    def unet_kwargs(self, step) -> dict:
        return {"down_intrablock_additional_residuals": [f.clone() for f in self.features]}  # the UNet pops them


class AdapterConditioned(HookedConditioned):
    """The locked UNet with a T2I-Adapter (`self.branch`), called like ControlledUNet: model(z_t, t, c_t, c)
    -> ε. Only the adapter trains; the gradient reaches it through the UNet's down blocks and decoder.
    Unlike the hooked branches it enters through the UNet's own argument, not a hook."""

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                guess_mode: bool = False):
        refuse_residual_weights("T2I-Adapter", conditioning_scale, guess_mode)
        feats = [f.to(sample.dtype) for f in features(self.branch, controlnet_cond)]  # the UNet pops from this list
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         down_intrablock_additional_residuals=feats).sample


designs.register(designs.Design(
    "T2I-Adapter", "t2i-adapter", "Mou et al. 2023", "inside each down block, before its downsampler",
    "once per image", False, module=T2IAdapter,
    build=lambda cfg, pipe, channels: for_pipeline(pipe, channels, seed=cfg.seed),
    wrap=lambda unet, adapter, cfg: AdapterConditioned(unet, adapter), enter=AdapterEntry,
    folder="t2i-adapter", through_unet=True, scale="the pair's scale: its features (adapter_conditioning_scale)",
    # trained as its paper trains it: timesteps weighted to high noise (§3.4's cubic schedule)
    sweep=(designs.SweepRun("successors", train={"timesteps": "cubic"}),),
    claims=(designs.Claim("comparable", "T2I-Adapter controls comparably to ControlNet, far smaller (Mou et al. 2023)"),
            designs.Claim("cheaper per image", "T2I-Adapter runs once per image, so its control costs less per image "
                                               "than ControlNet's (Mou et al. 2023)")),
    wiring="a small pyramid A(c), run once per image\n(no z_t, t or text); added inside the encoder", drawn_as="pyramid"))
