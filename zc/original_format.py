"""The original repo's checkpoint layout (lllyasviel/ControlNet, `control_*.pth`), both ways.

The original ControlNet is written in the LDM code base, so its parameter names are LDM's. The map
to zc / diffusers names, for a UNet with L levels and `layers_per_block` = n (SD: L = 4, n = 2):

    control_model.time_embed.{0,2}                  time_embedding.linear_{1,2}
    control_model.input_blocks.0.0                  conv_in
    control_model.input_blocks.{k}.0  (ResBlock)    down_blocks.{l}.resnets.{j}       k = 1 + l(n+1) + j
    control_model.input_blocks.{k}.1  (attention)   down_blocks.{l}.attentions.{j}
    control_model.input_blocks.{k}.0.op             down_blocks.{l}.downsamplers.0.conv   k = 1 + l(n+1) + n
    control_model.middle_block.{0,1,2}              mid_block.resnets.0, attentions.0, resnets.1
    control_model.input_hint_block.{2i}             condition encoder: conv_in, blocks.*, conv_out
    control_model.zero_convs.{i}.0                  controlnet_down_blocks.{i}
    control_model.middle_block_out.0                controlnet_mid_block

Inside a ResBlock: in_layers.0 -> norm1, in_layers.2 -> conv1, emb_layers.1 -> time_emb_proj,
out_layers.0 -> norm2, out_layers.3 -> conv2, skip_connection -> conv_shortcut. Attention
(SpatialTransformer) names are the same in both code bases.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["PREFIX", "RESNET", "block_map", "original_to_zc", "zc_to_original", "read_checkpoint",
    "load_original"]

PREFIX = "control_model."
RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
          "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def block_map(unet_config: dict, hint_widths) -> dict[str, str]:
    """{original module prefix: zc module prefix} for one ControlNet config."""
    m = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
         "input_blocks.0.0": "conv_in", "middle_block.0": "mid_block.resnets.0",
         "middle_block.1": "mid_block.attentions.0", "middle_block.2": "mid_block.resnets.1",
         "middle_block_out.0": "controlnet_mid_block"}
    n, levels = unet_config["layers_per_block"], len(unet_config["block_out_channels"])
    k = 0
    for level in range(levels):
        for j in range(n):
            k += 1
            m[f"input_blocks.{k}.0"] = f"down_blocks.{level}.resnets.{j}"
            m[f"input_blocks.{k}.1"] = f"down_blocks.{level}.attentions.{j}"
        if level < levels - 1:
            k += 1
            m[f"input_blocks.{k}.0.op"] = f"down_blocks.{level}.downsamplers.0.conv"
    for i in range(k + 1):
        m[f"zero_convs.{i}.0"] = f"controlnet_down_blocks.{i}"
    hint = ["conv_in"] + [f"blocks.{b}" for b in range(2 * (len(hint_widths) - 1))] + ["conv_out"]
    for i, name in enumerate(hint):  # the original interleaves SiLU modules: convs sit at even indices
        m[f"input_hint_block.{2 * i}"] = f"controlnet_cond_embedding.{name}"
    return m


def _rename(key: str, mapping: dict[str, str]) -> str | None:
    # longest matching module prefix wins ("input_blocks.3.0.op" before "input_blocks.3.0")
    for old in sorted((o for o in mapping if key.startswith(o + ".")), key=len, reverse=True):
        rest = key[len(old) + 1:]
        new = mapping[old]
        if ".resnets." in new:
            for a, b in RESNET.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
        return f"{new}.{rest}"
    return None


def original_to_zc(state_dict: dict, unet_config: dict, hint_widths) -> dict:
    """Rename an original-layout state dict (with or without the control_model. prefix)."""
    if any(k.startswith(PREFIX) for k in state_dict):
        state_dict = {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    mapping = block_map(unet_config, hint_widths)
    out, unknown = {}, []
    for k, v in state_dict.items():
        new = _rename(k, mapping)
        (unknown.append(k) if new is None else out.__setitem__(new, v))
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the checkpoint have no place in this ControlNet, e.g. {unknown[:3]}")
    return out


def zc_to_original(state_dict: dict, unet_config: dict, hint_widths) -> dict:
    """The inverse map: a zc/diffusers ControlNet state dict in the original layout (with prefix)."""
    inverse = {v: k for k, v in block_map(unet_config, hint_widths).items()}
    res_inv = {b: a for a, b in RESNET.items()}
    out = {}
    for k, v in state_dict.items():
        for new in sorted((n for n in inverse if k.startswith(n + ".")), key=len, reverse=True):
            rest = k[len(new) + 1:]
            if ".resnets." in new:
                head, _, tail = rest.partition(".")
                rest = f"{res_inv.get(head, head)}.{tail}"
            out[PREFIX + f"{inverse[new]}.{rest}"] = v
            break
        else:
            raise ValueError(f"{k} has no original-layout name")
    return out


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read .safetensors, or .pth/.ckpt with torch.load(weights_only=True) (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read checkpoint {path}: corrupted, or not a weights-only torch/safetensors file ({e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"{path} does not hold a flat dict of tensors")
    return sd


def load_original(cls, path_or_state_dict, unet, conditioning_channels: int | None = None,
                  conditioning_embedding_out_channels=(16, 32, 96, 256), **ablation):
    """Build `cls.from_unet(unet)` and fill it with an original-layout checkpoint."""
    sd = path_or_state_dict if isinstance(path_or_state_dict, dict) else read_checkpoint(path_or_state_dict)
    source = "state dict" if isinstance(path_or_state_dict, dict) else str(path_or_state_dict)
    if conditioning_channels is None:  # read it off the first hint conv
        w = sd.get(PREFIX + "input_hint_block.0.weight", sd.get("input_hint_block.0.weight"))
        if w is None:
            raise ValueError(f"{source} has no input_hint_block.0.weight: not an original ControlNet checkpoint")
        conditioning_channels = w.shape[1]
    model = cls.from_unet(unet, conditioning_channels, conditioning_embedding_out_channels, **ablation)
    renamed = original_to_zc(sd, model.config.unet, model.config.conditioning_embedding_out_channels)
    model.load_state_dict_checked(renamed, source=source)
    return model
