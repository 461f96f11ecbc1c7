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


def load(name: str, folder, device="cpu"):
    """A trained module of design `name` from the folder zc.train wrote (run/<architecture or controlnet>)."""
    from pathlib import Path

    from diffusers import T2IAdapter

    from .controlnet import ControlNet
    from .controlnet_xs import ControlNetXS
    from .controlnext import ControlNeXt

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no trained module in {folder} (config.json missing): train it with "
                                f"python -m zc.train --architecture {get(name).architecture}")
    cls = {"T2I-Adapter": T2IAdapter, "ControlNeXt-style": ControlNeXt,
           "ControlNet-XS-style": ControlNetXS}.get(name, ControlNet)
    return cls.from_pretrained(folder).to(device).eval()


def sample_kwargs(module, condition: torch.Tensor | None) -> dict:
    """zc.sample's arguments for `module` reading `condition`: sample(pipe, prompts=..., **these).
    Lists of modules of one design with a list of conditions compose (zc.sample's docstring)."""
    first = module[0] if isinstance(module, (list, tuple)) else module
    d = of(first) if first is not None else DESIGNS["ControlNet"]
    kw = {"controlnet": None, "conditions": None}
    kw.update({d.sample_arg: module, d.condition_arg: condition if module is not None else None})
    return kw


def composition(pipe, modules: dict, test, seed: int = 0, steps: int = 20) -> dict:
    """Whether two controls of one design compose (the paper's §3.4 for ControlNets): `modules` maps
    two conditions to their trained modules; `test` (a Fill50k) gives the scenes, and each module reads
    its own condition drawn for them. With an empty prompt, each control alone and both together;
    each condition's own measure (conditions.get(c).score) on each image set.
    Returns {"<c> alone": {measure: score}, "both": {measure: score}}."""
    from . import conditions
    from .sample import sample

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    conds = {c: conditions.draw(c, test.scenes, size) for c in modules}
    keys = [conditions.get(c).score for c in modules]
    runs = {f"{c} alone": ([m], [conds[c]]) for c, m in modules.items()}
    runs["both"] = (list(modules.values()), list(conds.values()))
    out = {}
    for label, (mods, cs) in runs.items():
        single = len(mods) == 1
        kw = sample_kwargs(mods[0] if single else mods, cs[0] if single else cs)
        x = sample(pipe, prompts=[""] * len(test), num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(seed), **kw)
        m = conditions.measure(x, test.scenes)
        out[label] = {k: m[k] for k in keys}
    return out


def table() -> str:
    """One line per design: how it enters, how often it runs, and whether it starts as the SD alone."""
    lines = [f"{'design':26s} {'architecture':13s} {'runs':15s} {'zero init':9s}  enters"]
    for d in DESIGNS.values():
        lines.append(f"{d.name:26s} {d.architecture:13s} {d.runs:15s} {'yes' if d.zero_init else 'no':9s}  {d.enters}")
    return "\n".join(lines)
