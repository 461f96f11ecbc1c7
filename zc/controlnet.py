"""ControlNet: a trainable copy of Stable Diffusion's encoder, wired to the locked model by zero convolutions.

The paper's equation (Zhang, Rao & Agrawala 2023, eq. 2), for one network block F with parameters Θ:

    y_c = F(x; Θ) + Z(F(x + Z(c; Θ_z1); Θ_c); Θ_z2)

and where each term lives in this file:

    F(x; Θ)             the locked UNet block: diffusers' UNet2DConditionModel, frozen, not here
    Z(c; Θ_z1)          condition encoder ending in a zero conv   -> self.controlnet_cond_embedding
    x + Z(c; Θ_z1)      conv_in(x) + E(c)                          -> ControlNet.forward
    F(·; Θ_c)           the trainable copy of the encoder          -> conv_in, time_embedding,
                                                                      down_blocks, mid_block
    Z(·; Θ_z2)          one zero conv per skip feature + middle    -> controlnet_down_blocks,
                                                                      controlnet_mid_block
    F(x; Θ) + ...       the locked UNet adds the 13 residuals      -> controlled_unet.py

Parameter names are diffusers' `ControlNetModel` names, so the state dict is the same and
`save_pretrained` writes a folder that `diffusers.ControlNetModel.from_pretrained` loads.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import designs
from .condition_encoder import ConditionEncoder
from .zero_conv import ZeroConv

__all__ = ["COPY_KEYS", "UNSUPPORTED_KEYS", "architectures", "copy_config", "ControlNetConfig", "ControlNet"]

# The UNet config keys that fix the shape of the trainable copy (the ones diffusers'
# ControlNetModel.from_unet copies).
COPY_KEYS = (
    "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
    "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn",
    "norm_num_groups", "norm_eps", "cross_attention_dim", "transformer_layers_per_block",
    "attention_head_dim", "num_attention_heads", "use_linear_projection", "upcast_attention",
    "resnet_time_scale_shift", "mid_block_type",
)
# SDXL/Kandinsky-style extras that an SD1.x ControlNet does not have.
UNSUPPORTED_KEYS = (
    "class_embed_type", "num_class_embeds", "addition_embed_type", "addition_time_embed_dim",
    "encoder_hid_dim", "encoder_hid_dim_type", "projection_class_embeddings_input_dim",
)


def architectures() -> list[str]:
    """The ControlNetConfig.architecture values: the registered designs whose module is a ControlNet
    (the paper's and chapter 10's variants of its trainable copy, zc/controls/variants.py)."""
    return [d.architecture for d in designs.DESIGNS.values()
            if isinstance(d.module, type) and issubclass(d.module, ControlNet)]


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def copy_config(unet_config) -> dict:
    """The part of a UNet2DConditionModel config that the trainable copy inherits."""
    cfg = dict(unet_config)
    bad = {k: cfg[k] for k in UNSUPPORTED_KEYS if cfg.get(k) is not None}
    if bad:
        raise ValueError(f"zc supports SD1.x-style UNets only; this UNet sets {bad} (SDXL-style extras)")
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"zc needs mid_block_type='UNetMidBlock2DCrossAttn', got {cfg['mid_block_type']!r}")
    if not isinstance(cfg.get("layers_per_block", 2), int):
        raise ValueError("zc needs an int layers_per_block (one value for every level)")
    return {k: _plain(cfg[k]) for k in COPY_KEYS if k in cfg}


@dataclass
class ControlNetConfig:
    unet: dict  # copy_config() of the locked UNet: fixes the trainable copy's shape
    conditioning_channels: int = 3  # channels of the condition image c_i (3: RGB edge/outline map)
    conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256)  # hint-block widths; len-1 stride-2 convs
    architecture: str = "controlnet"  # "controlnet" (the paper's), or a variant of the copy (architectures())
    zero_conv_init: str = "zero"  # "zero" (paper) or "gaussian" (Fig. 8b ablation)
    only_mid_control: bool = False  # True: only the middle residual reaches the locked UNet (original repo flag)
    global_pool_conditions: bool = False  # True: every residual averaged over space (ControlNet 1.1 shuffle)

    def __post_init__(self):
        self.conditioning_embedding_out_channels = tuple(self.conditioning_embedding_out_channels)
        if self.architecture not in architectures():
            raise ValueError(f"architecture must be one of {architectures()}, got {self.architecture!r}")
        if self.zero_conv_init not in ("zero", "gaussian"):
            raise ValueError(f"zero_conv_init must be 'zero' or 'gaussian', got {self.zero_conv_init!r}")

    # --- the diffusers ControlNetModel config.json, both ways ---------------------------------
    def to_diffusers(self) -> dict:
        import diffusers

        d = {"_class_name": "ControlNetModel", "_diffusers_version": diffusers.__version__}
        d.update(self.unet)
        d.update({k: None for k in UNSUPPORTED_KEYS})
        d.update(
            conditioning_channels=self.conditioning_channels,
            conditioning_embedding_out_channels=list(self.conditioning_embedding_out_channels),
            controlnet_conditioning_channel_order="rgb",
            global_pool_conditions=self.global_pool_conditions,
        )
        zc_fields = {k: getattr(self, k) for k in ("architecture", "zero_conv_init", "only_mid_control")}
        if zc_fields != {"architecture": "controlnet", "zero_conv_init": "zero", "only_mid_control": False}:
            d["zc"] = zc_fields  # ablation variants only; diffusers ignores (and cannot load) them
        return d

    @classmethod
    def from_diffusers(cls, d: dict) -> "ControlNetConfig":
        if d.get("_class_name", "ControlNetModel") != "ControlNetModel":
            raise ValueError(f"expected a ControlNetModel config, got _class_name={d['_class_name']!r}")
        if d.get("controlnet_conditioning_channel_order", "rgb") != "rgb":
            raise ValueError("zc supports the rgb channel order only (controlnet_conditioning_channel_order='bgr' "
                             "is not supported: convert the condition images and the config to rgb)")
        return cls(
            unet=copy_config(d),
            conditioning_channels=d.get("conditioning_channels", 3),
            global_pool_conditions=bool(d.get("global_pool_conditions", False)),
            conditioning_embedding_out_channels=tuple(d.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)),
            **d.get("zc", {}),
        )

    def unet_skeleton_config(self) -> dict:
        """A full UNet2DConditionModel config with this encoder (the decoder mirrored)."""
        up = {"CrossAttnDownBlock2D": "CrossAttnUpBlock2D", "DownBlock2D": "UpBlock2D"}
        return dict(self.unet, out_channels=self.unet["in_channels"],
                    up_block_types=[up[t] for t in reversed(self.unet["down_block_types"])])

    def residual_channels(self) -> list[int]:
        """Channels of the 12 (SD) skip features, in the order the UNet hands them out."""
        chs, lpb = self.unet["block_out_channels"], self.unet["layers_per_block"]
        out = [chs[0]]  # conv_in
        for level, c in enumerate(chs):
            out += [c] * lpb  # resnet (+ attention) outputs
            if level < len(chs) - 1:
                out.append(c)  # downsampler output
        return out


class ControlNet(nn.Module):
    """The ControlNet of the paper (see the module docstring for the equation)."""

    def __init__(self, config: ControlNetConfig, unet: nn.Module | None = None):
        super().__init__()
        self.config = config
        if type(self) is ControlNet and config.architecture != "controlnet":
            raise ValueError("use ControlNet.from_config() to build the 'lite' or 'direct' variants")
        c0 = config.unet["block_out_channels"][0]
        self.controlnet_cond_embedding = ConditionEncoder(
            c0, config.conditioning_channels, config.conditioning_embedding_out_channels,
            out_init=self._hint_out_init(),
        )
        source = unet if unet is not None else self._random_unet()
        # F(·; Θ_c): the trainable copy starts as an exact copy of the locked encoder.
        self.conv_in = copy.deepcopy(source.conv_in)
        self.time_proj = copy.deepcopy(source.time_proj)
        self.time_embedding = copy.deepcopy(source.time_embedding)
        self._build_copy(source)
        # Z(·; Θ_z2): one zero conv per skip feature and one for the middle block.
        chs = config.residual_channels()
        self.controlnet_down_blocks = nn.ModuleList(
            [ZeroConv(c_in, c, init=config.zero_conv_init) for c_in, c in zip(self._feature_channels(), chs)]
        )
        self.controlnet_mid_block = ZeroConv(self._feature_channels()[-1], chs[-1], init=config.zero_conv_init)
        self.requires_grad_(True)  # the copy is trainable even when copied from a locked (frozen) UNet

    # --- hooks the ablation variants (variants.py) override ----------------------------------
    def _hint_out_init(self) -> str:
        return self.config.zero_conv_init

    def _build_copy(self, source: nn.Module) -> None:
        self.down_blocks = copy.deepcopy(source.down_blocks)
        self.mid_block = copy.deepcopy(source.mid_block)

    def _feature_channels(self) -> list[int]:
        """Input channels of each zero conv (the copy's feature widths)."""
        return self.config.residual_channels()

    def trainable_copy(self, h, emb, encoder_hidden_states):
        """F(h; Θ_c): run the copied encoder; return its 12 skip features and the middle output."""
        features = (h,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=encoder_hidden_states)
            else:
                h, res = block(hidden_states=h, temb=emb)
            features += res
        h = self.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states)
        return list(features), h

    # --- construction ------------------------------------------------------------------------
    def _random_unet(self):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel(**self.config.unet_skeleton_config())

    @classmethod
    def from_config(cls, config: ControlNetConfig, unet: nn.Module | None = None) -> "ControlNet":
        return designs.by_architecture(config.architecture).module(config, unet)

    @classmethod
    def from_unet(
        cls,
        unet,
        conditioning_channels: int = 3,
        conditioning_embedding_out_channels: Sequence[int] = (16, 32, 96, 256),
        **ablation,
    ) -> "ControlNet":
        """Copy conv_in, the time embedding, the down blocks and the mid block of `unet`.

        `ablation` takes the other ControlNetConfig fields: architecture, zero_conv_init, only_mid_control,
        global_pool_conditions.
        """
        config = ControlNetConfig(copy_config(unet.config), conditioning_channels,
                                  tuple(conditioning_embedding_out_channels), **ablation)
        return cls.from_config(config, unet)

    @classmethod
    def for_pipeline(cls, pipe, copy: bool = True, **kwargs) -> "ControlNet":
        """from_unet(pipe.unet) with a condition encoder that downsamples by the VAE's factor.
        copy=False: the same network with random weights instead of the UNet's (an ablation: what the
        copy's pretrained weights are worth)."""
        from .condition_encoder import default_channels

        kwargs.setdefault("conditioning_embedding_out_channels", default_channels(pipe.vae_scale_factor))
        if copy:
            return cls.from_unet(pipe.unet, **kwargs).to(pipe.device)
        channels = tuple(kwargs.pop("conditioning_embedding_out_channels"))
        config = ControlNetConfig(copy_config(pipe.unet.config), kwargs.pop("conditioning_channels", 3), channels, **kwargs)
        return cls.from_config(config).to(pipe.device)

    def check_unet(self, unet) -> None:
        """Raise ValueError when `unet` is not the kind of UNet this ControlNet was copied from."""
        theirs = copy_config(unet.config)
        diff = {k: (v, theirs.get(k)) for k, v in self.config.unet.items() if theirs.get(k) != v}
        if diff:
            raise ValueError(
                "this ControlNet was built for a different UNet; mismatched config "
                + ", ".join(f"{k}: controlnet {a} vs unet {b}" for k, (a, b) in diff.items())
                + ". Build it with ControlNet.from_unet(unet) for this UNet."
            )

    # --- the forward pass: the paper's equation -----------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_residuals(self) -> int:
        return len(self.controlnet_down_blocks) + 1

    def embed_time(self, timestep, sample: torch.Tensor) -> torch.Tensor:
        """Sinusoidal timestep features -> MLP, broadcast to the batch (as diffusers does)."""
        t = timestep
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.float64 if isinstance(t, float) else torch.int64, device=sample.device)
        elif t.ndim == 0:
            t = t[None].to(sample.device)
        t = t.expand(sample.shape[0])
        return self.time_embedding(self.time_proj(t).to(dtype=sample.dtype))

    def residual_scales(self, conditioning_scale, guess_mode: bool, device) -> list:
        """One multiplier per residual (12 skips, then the middle).

        guess mode: 10**linspace(-1, 0, 13) = 0.1 ... 1.0, diffusers' `torch.logspace(-1, 0, 13)`
        (not with global_pool_conditions: diffusers then scales every residual alike).
        The original repo writes the same geometric series as 0.825**(12 - i) (0.825 ≈ 10**(-1/12)
        = 0.8254); we use the logspace form so results match diffusers bit for bit.
        """
        n = self.num_residuals
        guess_mode = guess_mode and not self.config.global_pool_conditions
        if isinstance(conditioning_scale, (list, tuple)) or (torch.is_tensor(conditioning_scale) and conditioning_scale.ndim):
            if len(conditioning_scale) != n:
                raise ValueError(f"conditioning_scale list must have {n} entries (one per residual), got {len(conditioning_scale)}")
            per = torch.as_tensor(conditioning_scale, dtype=torch.float32, device=device)
            return list(torch.logspace(-1, 0, n, device=device) * per) if guess_mode else list(per)
        if guess_mode:
            return list(torch.logspace(-1, 0, n, device=device) * conditioning_scale)
        return [conditioning_scale] * n

    def forward(
        self,
        sample: torch.Tensor,  # z_t, (B, 4, h, w) noisy latent
        timestep,  # t, int / float / (B,) tensor
        encoder_hidden_states: torch.Tensor,  # c_t, (B, 77, D) text features
        controlnet_cond: torch.Tensor,  # c_i, (B, 3, H, W) condition image in [0, 1], H = h * VAE factor
        conditioning_scale: float | Sequence[float] = 1.0,
        guess_mode: bool = False,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return (down_block_res_samples, mid_block_res_sample) for UNet2DConditionModel's
        `down_block_additional_residuals` / `mid_block_additional_residual`."""
        if sample.ndim != 4 or sample.shape[1] != self.config.unet["in_channels"]:
            raise ValueError(f"sample must be (B, {self.config.unet['in_channels']}, h, w) latents, got {tuple(sample.shape)}")
        emb = self.embed_time(timestep, sample)
        cond = self.controlnet_cond_embedding(controlnet_cond)  # Z(c; Θ_z1): (B, C0, h, w)
        x = self.conv_in(sample)  # (B, C0, h, w)
        if cond.shape[-2:] != x.shape[-2:]:
            f = self.controlnet_cond_embedding.downsampling_factor
            raise ValueError(
                f"condition image is {tuple(controlnet_cond.shape[-2:])} but the latent is {tuple(sample.shape[-2:])}: "
                f"the condition encoder downsamples by {f}, so the condition must be "
                f"{(sample.shape[-2] * f, sample.shape[-1] * f)} (latent size x {f}). Resize the condition, "
                f"or give conditioning_embedding_out_channels one width per factor of 2 of the VAE, plus one."
            )
        features, mid = self.trainable_copy(x + cond, emb, encoder_hidden_states)  # F(x + Z(c); Θ_c)
        down = [zero_conv(f) for zero_conv, f in zip(self.controlnet_down_blocks, features)]  # Z(·; Θ_z2)
        mid = self.controlnet_mid_block(mid)
        scales = self.residual_scales(conditioning_scale, guess_mode, sample.device)
        down = [d * s for d, s in zip(down, scales)]
        mid = mid * scales[-1]
        if self.config.only_mid_control:
            down = [torch.zeros_like(d) for d in down]  # the locked UNet only sees the middle residual
        if self.config.global_pool_conditions:  # a condition with no "where": one vector per residual
            down = [d.mean(dim=(2, 3), keepdim=True) for d in down]  # (B, C, h, w) -> (B, C, 1, 1)
            mid = mid.mean(dim=(2, 3), keepdim=True)
        return down, mid

    # --- memory ------------------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Recompute the copy's blocks in the backward pass (diffusers blocks support it)."""
        import functools

        from torch.utils.checkpoint import checkpoint

        for m in self.modules():
            if hasattr(m, "gradient_checkpointing"):
                m._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
                m.gradient_checkpointing = True

    # --- the diffusers folder format ---------------------------------------------------------
    WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write config.json + diffusion_pytorch_model.safetensors (diffusers' ControlNetModel layout)."""
        from safetensors.torch import save_file

        from .training_utils import atomic_write

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(out / self.WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
        atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(self.config.to_diffusers(), indent=2)))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, subfolder: str | None = None) -> "ControlNet":
        """Load a diffusers-format ControlNet: a local folder, or a hub id (needs a network)."""
        from accelerate import init_empty_weights
        from safetensors.torch import load_file

        path = Path(name_or_path)
        if not path.exists():
            from .sd import looks_like_hub_id

            if not looks_like_hub_id(str(name_or_path)):
                raise FileNotFoundError(f"no ControlNet folder at {str(name_or_path)!r}")
            from huggingface_hub import snapshot_download

            sub = f"{subfolder}/" if subfolder else ""
            path = Path(snapshot_download(str(name_or_path), allow_patterns=[f"{sub}config.json", f"{sub}{cls.WEIGHTS_NAME}"]))
        if subfolder:
            path = path / subfolder
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a diffusers ControlNet folder")
        if not (path / cls.WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"{path} has no {cls.WEIGHTS_NAME}; zc loads safetensors only (never pickles). Convert with "
                "diffusers.ControlNetModel.from_pretrained(path).save_pretrained(path, safe_serialization=True)"
            )
        try:
            raw = json.loads((path / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path / 'config.json'} is not valid JSON ({e}): restore it, or save the ControlNet "
                             "again with save_pretrained") from e
        if not isinstance(raw, dict) or "block_out_channels" not in raw:
            raise ValueError(f"{path / 'config.json'} is not a ControlNet config (no block_out_channels): is this "
                             "the config.json of a diffusers ControlNetModel?")
        config = ControlNetConfig.from_diffusers(raw)
        state = _load_safetensors(path / cls.WEIGHTS_NAME, load_file)
        with init_empty_weights():
            model = cls.from_config(config)
        model.load_state_dict_checked(state, source=str(path))
        return model

    def load_state_dict_checked(self, state: dict, source: str) -> None:
        """load_state_dict(strict, assign) with an error that names what is wrong."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
        if missing or unexpected or shapes:
            raise ValueError(
                f"weights in {source} do not fit this ControlNet: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(shapes)} of another shape "
                f"(e.g. {shapes[:3]}). Is the config the one these weights were saved with?"
            )
        self.load_state_dict(state, strict=True, assign=True)

    @classmethod
    def from_original(cls, path_or_state_dict, unet, **config_kwargs) -> "ControlNet":
        """Load a checkpoint in the original lllyasviel layout (control_model.*), see original_format.py."""
        from .original_format import load_original

        return load_original(cls, path_or_state_dict, unet, **config_kwargs)


def _load_safetensors(path: Path, load_file) -> dict:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated/garbled files
        raise ValueError(f"could not read {path}: the file is corrupted or not safetensors ({e})") from e

