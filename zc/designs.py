"""Every way of adding a control that zc trains, in one registry: ControlNet, the ablations of
chapter 10 and its successors (an adapter or branch beside the locked UNet).

Each design is registered once, by the module that defines it, with everything the rest of zc
needs to know about it (the protocol):

    build(cfg, pipe, channels) -> module        a fresh trainable module for this SD (fp32)
    wrap(unet, module, cfg)    -> model         model(z_t, t, c_t, c) -> ε: how it enters the locked UNet
    module.from_pretrained(folder)              how a trained one loads (module.save_pretrained writes it)
    enter(design, controls, run) -> Entry       how zc.sample feeds it to the locked UNet, step by step
    scale                                       what sets its strength in zc.sample
    conditioning_scale                          what zc.sample's conditioning_scale means for it

`zc.train`, `zc.sample`'s callers, the ablation runner and the chapters find designs only here:

    python -c "import zc; from zc import designs; print(designs.table())"
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["Design", "Entry", "DESIGNS", "register", "get", "by_architecture", "of", "load", "sample_kwargs", "table"]


class Entry:
    """How one design's controls enter the locked UNet while zc.sample denoises (the protocol's
    sampling half). Built once per call from that design's (module, condition, scale) triples and
    the call's settings `run` (zc.sample.Run), checking both; the loop then runs inside every entry's
    `attached(unet)` and merges every entry's `unet_kwargs(step)` into the UNet's call."""
    residuals = False  # it adds ControlNet residuals: conditioning_scale, guess_mode and cfg_rw weight them
    alone = False  # it calls a UNet of its own (a fine-tuned one): no other control can join it

    def __init__(self, design: "Design", controls: list[tuple], run):
        self.design, self.controls, self.run = design, controls, run

    def attached(self, unet):
        """Hooks or attention processors for the whole loop (none by default)."""
        return contextlib.nullcontext()

    def unet_kwargs(self, step) -> dict:
        """What this step adds to the UNet's call (residuals, features, tokens), as its keywords."""
        return {}


@dataclass(frozen=True)
class Design:
    name: str  # the sweep's row label and the registry key
    architecture: str  # TrainConfig.architecture that trains it
    paper: str  # where it comes from
    enters: str  # where the control enters the locked UNet
    runs: str  # "every step" or "once per image"
    zero_init: bool  # at step 0 the model is exactly the SD alone
    module: type  # the trained module's class: module.from_pretrained(folder) loads what train saved
    build: Callable  # (TrainConfig, pipe, channels) -> a fresh trainable module for this SD
    wrap: Callable  # (unet, module, TrainConfig) -> model(z_t, t, c_t, c) -> ε, the loss's model
    enter: type  # its Entry: how zc.sample feeds it to the locked UNet
    folder: str = "controlnet"  # the trained module's folder in a run (run/<folder>)
    through_unet: bool = False  # the gradient flows through the UNet's blocks: checkpoint the UNet, not the module
    scale: str = "conditioning_scale: every residual"  # what sets its strength in zc.sample


DESIGNS: dict[str, Design] = {}  # name -> Design, in registration order


def register(design: Design) -> Design:
    """Add a design (each control's own module calls this once, when zc is imported)."""
    if design.name in DESIGNS or any(d.architecture == design.architecture for d in DESIGNS.values()):
        raise ValueError(f"design {design.name!r} ({design.architecture!r}) is registered twice")
    DESIGNS[design.name] = design
    return design


def get(name: str) -> Design:
    if name not in DESIGNS:
        raise ValueError(f"unknown design {name!r}; choose from {list(DESIGNS)}")
    return DESIGNS[name]


def by_architecture(architecture: str) -> Design:
    """The design that TrainConfig.architecture `architecture` trains."""
    for d in DESIGNS.values():
        if d.architecture == architecture:
            return d
    raise ValueError(f"unknown architecture {architecture!r}; choose from {[d.architecture for d in DESIGNS.values()]}")


def of(module) -> Design:
    """The design a trained module belongs to (by its class; a MultiControlNet: its ControlNets')."""
    if hasattr(module, "nets"):  # a MultiControlNet
        module = module.nets[0]
    exact = [d for d in DESIGNS.values() if type(module) is d.module]
    loose = [d for d in DESIGNS.values() if isinstance(module, d.module)]
    if not exact + loose:
        raise ValueError(f"{type(module).__name__} is no registered design's module; designs: {list(DESIGNS)}")
    return (exact + loose)[0]


def load(name: str, folder, device="cpu"):
    """A trained module of design `name` from the folder zc.train wrote (run/<design.folder>)."""
    from pathlib import Path

    design = get(name)  # a ValueError names the designs
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no trained module in {folder} (config.json missing): train it with "
                                f"python -m zc.train --architecture {design.architecture}")
    return design.module.from_pretrained(folder).to(device).eval()


def sample_kwargs(module, condition) -> dict:
    """zc.sample's arguments for `module` reading `condition`: sample(pipe, prompts=..., **these).
    A list of modules with a list of conditions compose (zc.sample's docstring); None: the SD alone."""
    if module is None:
        return {"controls": None}
    if isinstance(module, (list, tuple)):
        if not isinstance(condition, (list, tuple)) or len(condition) != len(module):
            raise ValueError(f"{len(module)} {of(module[0]).name} modules need a list of {len(module)} condition "
                             "batches, one each")
        return {"controls": list(zip(module, condition))}
    return {"controls": [(module, condition)]}


def table() -> str:
    """One line per design: how it enters, how often it runs, and whether it starts as the SD alone."""
    lines = [f"{'design':26s} {'architecture':13s} {'runs':15s} {'zero init':9s}  enters"]
    for d in DESIGNS.values():
        lines.append(f"{d.name:26s} {d.architecture:13s} {d.runs:15s} {'yes' if d.zero_init else 'no':9s}  {d.enters}")
    return "\n".join(lines)
