"""A global control: IP-Adapter's decoupled cross-attention (Ye et al. 2023), built from diffusers' pieces.

A ControlNet adds *spatial* residuals to the UNet's features; colour, in TinySD as in SD, is read from
the text tokens through cross-attention. A condition with no "where" (a colour palette) is better
given where colour is read: as extra tokens. Each cross-attention of the locked UNet gets a second
attention over the condition's tokens, added to the text's (IP-Adapter's decoupled cross-attention):

    Z = Attention(Q, K_t, V_t) + λ · Attention(Q, K_c, V_c)
    K_c = c W'_k,  V_c = c W'_v,  c = proj(f(condition))      (c: num_tokens tokens)

f pools the condition image to a small vector (`features`), proj is diffusers' `ImageProjection`
(linear + LayerNorm, as IP-Adapter's), and the attention is diffusers' `IPAdapterAttnProcessor2_0`.
Only proj, W'_k and W'_v train. W'_k starts as the text's W_k (IP-Adapter's init) and W'_v at zero:
at init the adapter adds exactly nothing, and since the attention weights are not zero the first
gradient reaches W'_v (chapter 2's argument for zero convolutions, in another place).

Why this and not Uni-ControlNet's global adapter (the condition's tokens concatenated to the text's):
in one softmax with the text, extra tokens take attention from the prompt even when they carry
nothing, so the base model changes at init, and a palette competes with the prompt's colour words
for the same attention; decoupled, the text's attention is untouched. And diffusers ships every
piece: `save_pretrained` writes the file `pipe.load_ip_adapter` reads, and its pipelines take the
pooled condition as `ip_adapter_image_embeds` (tests/test_ip_adapter.py: same images as zc.sample).

    adapter = IPAdapter.for_unet(pipe.unet)
    images = sample(pipe, [(adapter, palettes)], [""] * 8)
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import designs
from ..controlled_unet import ControlledUNet, refuse_residual_weights
from ..sample import check_condition, condition_name
from ..training_run import Callback, register_extra

__all__ = ["NUM_TOKENS", "WEIGHT_NAME", "features", "cross_attention_names", "cross_attentions",
    "IPAdapter", "IPAdapterEntry", "IPAdapterConditioned", "WithGlobal", "global_conditions",
    "AttachedAdapter"]

NUM_TOKENS = 4  # tokens per condition: diffusers' loader fixes 4 for this ("proj.weight") layout
WEIGHT_NAME = "ip-adapter.safetensors"  # what pipe.load_ip_adapter(folder, subfolder="", weight_name=...) reads


def features(condition: torch.Tensor, grid: int) -> torch.Tensor:
    """f(condition): (B, C, H, W) in [0, 1] -> (B, C * grid * grid), each cell's mean colour. Size-free,
    so the same adapter reads a 64 px or a 512 px palette."""
    return F.adaptive_avg_pool2d(condition.float(), grid).flatten(1)  # (B, C, g, g) -> (B, C g g)


def cross_attention_names(unet) -> list[str]:
    """The UNet's cross-attention processors, in the order diffusers numbers IP-Adapter weights
    (its loader gives the i-th the key 2i + 1)."""
    return [n for n in unet.attn_processors if n.endswith("attn2.processor")]


def cross_attentions(unet) -> list[nn.Module]:
    """The UNet's cross-attention modules, in cross_attention_names' order."""
    return [unet.get_submodule(n.removesuffix(".processor")) for n in cross_attention_names(unet)]


class IPAdapter(nn.Module):
    """The trained part of a decoupled cross-attention adapter; attached to a UNet only while used."""

    def __init__(self, inner_dims: list[int], cross_attention_dim: int, condition_channels: int = 3, grid: int = 4):
        super().__init__()
        from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
        from diffusers.models.embeddings import ImageProjection

        self.config = {"inner_dims": list(inner_dims), "cross_attention_dim": cross_attention_dim,
                       "condition_channels": condition_channels, "grid": grid, "num_tokens": NUM_TOKENS}
        self.image_proj = ImageProjection(condition_channels * grid * grid, cross_attention_dim, NUM_TOKENS)
        self.processors = nn.ModuleList([IPAdapterAttnProcessor2_0(d, cross_attention_dim, num_tokens=NUM_TOKENS)
                                         for d in inner_dims])

    @classmethod
    def for_unet(cls, unet, condition_channels: int = 3, grid: int = 4) -> "IPAdapter":
        """A new adapter for `unet`: W'_k copied from each cross-attention's W_k, W'_v zero."""
        attns = cross_attentions(unet)
        if not attns:
            raise ValueError("this UNet has no cross-attention: an IP-Adapter needs one to add its tokens to")
        adapter = cls([a.to_k.out_features for a in attns], unet.config.cross_attention_dim, condition_channels, grid)
        with torch.no_grad():
            for proc, attn in zip(adapter.processors, attns):
                proc.to_k_ip[0].weight.copy_(attn.to_k.weight)
                proc.to_v_ip[0].weight.zero_()
        return adapter.to(unet.device)

    def check_unet(self, unet) -> None:
        """ValueError unless `unet` has the cross-attentions this adapter was built for."""
        attns = cross_attentions(unet)
        dims = [a.to_k.out_features for a in attns]
        if dims != self.config["inner_dims"] or unet.config.cross_attention_dim != self.config["cross_attention_dim"]:
            raise ValueError(f"this IP-Adapter was built for a UNet with cross-attention widths "
                             f"{self.config['inner_dims']} (text width {self.config['cross_attention_dim']}), this "
                             f"UNet has {dims} ({unet.config.cross_attention_dim}): build one with "
                             "IPAdapter.for_unet(unet)")

    def features(self, condition: torch.Tensor) -> torch.Tensor:
        return features(condition, self.config["grid"])

    @contextlib.contextmanager
    def attached(self, unet):
        """Within the block, `unet` runs with this adapter (its processors and projection); after it,
        exactly as before. Call the UNet with added_cond_kwargs={"image_embeds": [features[:, None]]}."""
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        self.check_unet(unet)
        before = dict(unet.attn_processors)
        mine = dict(zip(cross_attention_names(unet), self.processors))
        old_proj, old_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
        unet.set_attn_processor({n: mine.get(n, p) for n, p in before.items()})
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([self.image_proj])
        unet.register_to_config(encoder_hid_dim_type="ip_image_proj")
        try:
            yield unet
        finally:
            unet.set_attn_processor(before)
            unet.encoder_hid_proj = old_proj
            unet.register_to_config(encoder_hid_dim_type=old_type)

    def set_scale(self, scale: float) -> None:
        """λ of the docstring's equation (1.0 as trained)."""
        for p in self.processors:
            p.scale = [scale]

    # --- diffusers' IP-Adapter file ------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """folder/ip-adapter.safetensors in the layout pipe.load_ip_adapter reads (image_proj.proj.*,
        image_proj.norm.*, ip_adapter.<2i+1>.to_k_ip/to_v_ip.weight), and folder/config.json for zc."""
        from safetensors.torch import save_file

        from ..training_utils import atomic_write

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {"image_proj.proj." + k.removeprefix("image_embeds."): v
                 for k, v in self.image_proj.state_dict().items() if k.startswith("image_embeds.")}
        state |= {"image_proj." + k: v for k, v in self.image_proj.state_dict().items() if k.startswith("norm.")}
        for i, p in enumerate(self.processors):
            state[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = p.to_k_ip[0].weight
            state[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = p.to_v_ip[0].weight
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        atomic_write(out / WEIGHT_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(self.config, indent=2)))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "IPAdapter":
        from safetensors.torch import load_file

        path = Path(folder)
        for f in ("config.json", WEIGHT_NAME):
            if not (path / f).is_file():
                raise FileNotFoundError(f"{path} has no {f}: not an IP-Adapter folder written by "
                                        "IPAdapter.save_pretrained")
        config = json.loads((path / "config.json").read_text())
        config.pop("num_tokens", None)
        adapter = cls(**config)
        state = load_file(str(path / WEIGHT_NAME))
        own = {"image_proj.image_embeds." + k.removeprefix("image_proj.proj."): v
               for k, v in state.items() if k.startswith("image_proj.proj.")}
        own |= {k: v for k, v in state.items() if k.startswith("image_proj.norm.")}
        for i in range(len(adapter.processors)):
            for w in ("to_k_ip", "to_v_ip"):
                key = f"ip_adapter.{2 * i + 1}.{w}.weight"
                if key not in state:
                    raise ValueError(f"{path / WEIGHT_NAME} has no {key}: saved for another UNet than its config.json says")
                own[f"processors.{i}.{w}.0.weight"] = state[key]
        adapter.load_state_dict(own, strict=True)
        return adapter

    # --- what the training loop needs (as a ControlNet's) ----------------------------------------
    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": lr}]


class IPAdapterEntry(designs.Entry):
    """An IP-Adapter in zc.sample: its processors attached for the whole loop, the condition's tokens in
    the conditional branch and zero features ("no condition") in the unconditional one, so CFG
    amplifies the condition as it does the prompt (diffusers' pipelines do the same). The pair's scale
    is λ for this call (default: as the adapter is set, set_scale)."""

    def __init__(self, design, controls, run):
        super().__init__(design, controls, run)
        if len(controls) > 1:
            raise ValueError("one IP-Adapter per call (its tokens are one image's)")
        adapter, c, self.scale = controls[0]
        check_condition(c, (run.batch, adapter.config["condition_channels"], *c.shape[-2:]),
                        condition_name(design, 0, 1))
        if next(adapter.parameters()).dtype != run.dtype or next(adapter.parameters()).device != run.device:
            adapter = copy.deepcopy(adapter).to(run.device, run.dtype)  # the UNet's precision, as its own layers
        self.adapter = adapter
        feats = adapter.features(c).to(run.device, run.dtype)[:, None]  # (B, 1, D)
        self.added = {"image_embeds": [torch.cat([torch.zeros_like(feats), feats]) if run.do_cfg else feats]}

    @contextlib.contextmanager
    def attached(self, unet):
        before = [p.scale for p in self.adapter.processors]
        if self.scale is not None:
            self.adapter.set_scale(self.scale)
        try:
            with self.adapter.attached(unet):
                yield
        finally:
            for p, s in zip(self.adapter.processors, before):
                p.scale = s

    def unet_kwargs(self, step) -> dict:
        return {"added_cond_kwargs": self.added}


class IPAdapterConditioned(nn.Module):
    """The locked UNet with an IP-Adapter, called like ControlledUNet: model(z_t, t, c_t, c_i) -> ε.
    c_i is the condition image (B, C, H, W); an all-zero one means "no condition" (its features are
    zero, what the unconditional branch of CFG gets too)."""

    def __init__(self, unet: nn.Module, adapter: IPAdapter):
        super().__init__()
        adapter.check_unet(unet)
        unet.requires_grad_(False)
        self.unet, self.adapter = unet, adapter

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        return self.adapter.param_groups(lr)

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                guess_mode: bool = False):
        refuse_residual_weights("IP-Adapter", conditioning_scale, guess_mode)
        embeds = self.adapter.features(controlnet_cond).to(sample.dtype)[:, None]  # (B, 1, D): one "image" each
        with self.adapter.attached(self.unet):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                             added_cond_kwargs={"image_embeds": [embeds]}).sample


class WithGlobal(nn.Module):
    """A controlled UNet (zc.ControlledUNet) run with a locked IP-Adapter attached to its UNet: a local
    control trained (or used) on top of a global one, so that it learns to place things while the
    adapter's tokens set the colours. Called like ControlledUNet, model(z_t, t, c_t, c), with c the
    local condition and the adapter's stacked along the channels, the adapter's `condition_channels`
    last (an all-zero global part: no condition, what CFG's unconditional branch gets)."""

    def __init__(self, controlled: nn.Module, adapter: IPAdapter):
        super().__init__()
        adapter.check_unet(controlled.unet)
        adapter.requires_grad_(False)
        self.controlled, self.adapter = controlled, adapter

    def param_groups(self, lr: float, decoder_lr: float | None = None) -> list[dict]:
        return self.controlled.param_groups(lr, decoder_lr)

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                guess_mode: bool = False):
        k = self.adapter.config["condition_channels"]
        local, glob = controlnet_cond[:, :-k], controlnet_cond[:, -k:]  # (B, C - k, H, W), (B, k, H, W)
        embeds = self.adapter.features(glob).to(sample.dtype)[:, None]  # (B, 1, D)
        with self.adapter.attached(self.controlled.unet):
            return self.controlled(sample, timestep, encoder_hidden_states, local, conditioning_scale, guess_mode,
                                   added_cond_kwargs={"image_embeds": [embeds]})


designs.register(designs.Design(
    "IP-Adapter", "ip-adapter", "Ye et al. 2023", "extra tokens in every cross-attention (global)", "once per image",
    True, module=IPAdapter, build=lambda cfg, pipe, channels: IPAdapter.for_unet(pipe.unet),
    wrap=lambda unet, adapter, cfg: IPAdapterConditioned(unet, adapter), enter=IPAdapterEntry,
    folder="ip-adapter", through_unet=True, scale="the pair's scale: λ, its tokens' weight (default: set_scale's)"))


def global_conditions(cfg, data, idx) -> torch.Tensor:
    """cfg.ip_condition drawn for `data`'s scenes idx, (B, 3, H, W) in [0, 1]: what an attached adapter reads."""
    from ..world.conditions import draw

    if data.scenes is None:
        raise ValueError("ip_adapter needs generated pairs (their scenes draw the global condition): "
                         "drop --data, or train the adapter's condition into the data yourself")
    return draw(cfg.ip_condition, data.scenes[torch.as_tensor(list(idx), dtype=torch.long)], data.size)


class AttachedAdapter(Callback):
    """zc.train --ip-adapter FOLDER: a trained IP-Adapter attached, locked, while a ControlNet trains (a
    local control trained on top of a global one: WithGlobal). Each batch's condition gets the adapter's
    (cfg.ip_condition drawn for the same scenes) stacked last; evaluations sample it beside."""

    def __init__(self, cfg, pipe, device):
        self.cfg = cfg
        self.adapter = IPAdapter.from_pretrained(cfg.ip_adapter).to(device, pipe.unet.dtype)

    def wrap(self, model):
        if not isinstance(model, ControlledUNet):
            raise ValueError(f"ip_adapter attaches a global control beside a ControlNet; the architecture "
                             f"{self.cfg.architecture!r} has none: train with --architecture controlnet")
        return WithGlobal(model, self.adapter)

    def condition(self, cond, data, idx):  # the attached adapter's condition last, dropped as a member
        return torch.cat([cond, global_conditions(self.cfg, data, idx).to(cond.device, cond.dtype)], dim=1)

    def eval_controls(self, eval_set) -> list[tuple]:
        return [(self.adapter, global_conditions(self.cfg, eval_set, range(len(eval_set))))]


register_extra(lambda cfg, pipe, eval_set, device: AttachedAdapter(cfg, pipe, device) if cfg.ip_adapter else None)
