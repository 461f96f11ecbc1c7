"""Every way of adding a control that zc trains, in one registry: ControlNet, the ablations of
chapter 9 (zc/variants.py) and its successors (an adapter or branch beside the locked UNet). Each
entry says where the control enters the UNet, how often it runs, whether it starts as the SD
alone, and which `TrainConfig.architecture` trains it; `sample_kwargs` turns a trained module and
its condition into the arguments of zc.sample, so one evaluation loop serves them all.

    python -c "from zc import designs; print(designs.table())"
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Design:
    name: str  # the sweep's row label
    architecture: str  # TrainConfig.architecture that trains it
    paper: str  # where it comes from
    enters: str  # where the control enters the locked UNet
    runs: str  # "every step" or "once per image"
    zero_init: bool  # at step 0 the model is exactly the SD alone
    sample_arg: str  # zc.sample's keyword for the trained module
    condition_arg: str  # and for the condition it reads


DESIGNS = {d.name: d for d in (
    Design("ControlNet", "controlnet", "Zhang et al. 2023", "residuals on every skip and the middle block",
           "every step", True, "controlnet", "conditions"),
    Design("ControlNet-lite", "lite", "Zhang et al. 2023, Fig. 8", "the same residuals, from one conv per block",
           "every step", True, "controlnet", "conditions"),
    Design("condition added directly", "direct", "Zhang et al. 2023, Fig. 8",
           "conv_in(z_t) + E(c), pooled into every skip", "every step", True, "controlnet", "conditions"),
    Design("UNet fine-tuned, concat", "concat", "Flux Control's channel concat",
           "the UNet's input (all of the UNet trains)", "every step", True, "controlnet", "conditions"),
    Design("T2I-Adapter", "t2i-adapter", "Mou et al. 2023", "inside each down block, before its downsampler",
           "once per image", False, "t2i_adapter", "t2i_condition"),
    Design("ControlNeXt-style", "controlnext", "Peng et al. 2024", "the first down block's output, cross-normalised",
           "every step", False, "controlnext", "controlnext_condition"),
    Design("ControlNet-XS-style", "controlnet-xs", "Zavadski et al. 2023",
           "every down block's and the middle block's output, read back by the control", "every step", True,
           "controlnet_xs", "controlnet_xs_condition"),
    Design("IP-Adapter", "ip-adapter", "Ye et al. 2023", "extra tokens in every cross-attention (global)",
           "once per image", True, "ip_adapter", "ip_condition"),
)}


def get(name: str) -> Design:
    if name not in DESIGNS:
        raise ValueError(f"unknown design {name!r}; choose from {list(DESIGNS)}")
    return DESIGNS[name]


def of(module) -> Design:
    """The design a trained module belongs to (by its class)."""
    from diffusers import T2IAdapter

    from .controlnet_xs import ControlNetXS
    from .controlnext import ControlNeXt
    from .ip_adapter import IPAdapter

    for cls, name in ((T2IAdapter, "T2I-Adapter"), (ControlNeXt, "ControlNeXt-style"),
                      (ControlNetXS, "ControlNet-XS-style"), (IPAdapter, "IP-Adapter")):
        if isinstance(module, cls):
            return DESIGNS[name]
    return DESIGNS["ControlNet"]  # a ControlNet, a variant of it, a MultiControlNet or a concat model


def sample_kwargs(module, condition: torch.Tensor | None) -> dict:
    """zc.sample's arguments for `module` reading `condition`: sample(pipe, prompts=..., **these)."""
    d = of(module) if module is not None else DESIGNS["ControlNet"]
    kw = {"controlnet": None, "conditions": None}
    kw.update({d.sample_arg: module, d.condition_arg: condition if module is not None else None})
    return kw


def table() -> str:
    """One line per design: how it enters, how often it runs, and whether it starts as the SD alone."""
    lines = [f"{'design':26s} {'architecture':13s} {'runs':15s} {'zero init':9s}  enters"]
    for d in DESIGNS.values():
        lines.append(f"{d.name:26s} {d.architecture:13s} {d.runs:15s} {'yes' if d.zero_init else 'no':9s}  {d.enters}")
    return "\n".join(lines)
