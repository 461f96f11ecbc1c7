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
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Design", "Entry", "SweepRun", "Claim", "REFERENCE", "DESIGNS", "register", "get", "by_architecture", "of",
           "load", "check_backbone", "reference_for", "sample_kwargs", "table", "in_sweep", "claims_of"]

REFERENCE = "ControlNet"  # the paper's design: the row every sweep and claim compares the others with


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
class SweepRun:
    """One run of a design in the ablation sweep (zc.study.ablations), beside the reference ControlNet."""
    group: str  # the question it answers there: "architecture", "locked copy", "successors"
    presets: tuple[str, ...] = ("cpu",)  # the ablation presets that train it ("ci": chapter 10's live run too)
    train: dict = field(default_factory=dict)  # TrainConfig fields beside its architecture (its paper's recipe)
    suffix: str = ""  # added to the design's name for a second run of it (", 1k pairs")


@dataclass(frozen=True)
class Claim:
    """A claim of the design's paper that zc.study tests against the reference ControlNet, by a named rule:
    "worse" (a gap in `settings`), "not worse" (comparable: non-inferiority), "forgets" (the base's own
    measures in `settings`), "learns slower" (the mean score over training), "comparable" (a successor,
    non-inferiority over the prompt settings), "converges faster", "faster per image" (by `factor`),
    "cheaper per image", "composes"."""
    rule: str
    text: str  # the claim as the book prints it (with its source)
    settings: tuple = ()  # the prompt settings or measures the rule reads, where it needs them
    factor: float | None = None  # a claimed speed-up


@dataclass(frozen=True, eq=False)  # each design is one object: compared and hashed by identity
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
    hooks_in_blocks: bool = False  # it hooks modules inside the UNet's checkpointed blocks (resnets, attention):
    # the hooks are gone by backward, so a recomputed block would differ; the UNet is then not checkpointed
    scale: str = "conditioning_scale: every residual"  # what sets its strength in zc.sample
    sweep: tuple[SweepRun, ...] = ()  # its runs in the ablation sweep (chapters 10 and 13)
    claims: tuple[Claim, ...] = ()  # its paper's claims that the study tests
    wiring: str = ""  # what it changes in ControlNet's equation, as chapter 13's panel title
    drawn_as: str = ""  # how chapter 13 draws where it enters: "copy", "pyramid", "one point", "beside"
    backbone: str = "unet"  # the locked base it controls: "unet" (SD 1.x) or "transformer" (SD3's MMDiT, chapter 14)
    control_input: str = "pixels"  # what it reads of the control image: "pixels", or "latents" (through the
    # base's VAE, as SD3's ControlNet reads it)

    @property
    def recipe(self) -> dict:
        """Its paper's TrainConfig settings beside its architecture (its first sweep run's; {} for none)."""
        return dict(self.sweep[0].train) if self.sweep else {}


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


def check_backbone(design: Design, pipe) -> None:
    """A ValueError when `design` controls another kind of base than `pipe`'s (a UNet ControlNet given an
    SD3, an SD3 ControlNet given an SD 1.x)."""
    from .sd3 import is_sd3

    has = "transformer" if is_sd3(pipe) else "unet"
    if design.backbone != has:
        kinds = {"unet": "an SD 1.x (a UNet)", "transformer": "an SD3 (an MMDiT transformer)"}
        other = [d.architecture for d in DESIGNS.values() if d.backbone == has]
        raise ValueError(f"{design.name} controls {kinds[design.backbone]}, but this base is {kinds[has]}: pick an "
                         f"architecture for it ({', '.join(other)}) or another base (TrainConfig.sd / ZC_SD)")


def reference_for(backbone: str) -> Design:
    """The ControlNet of a kind of base: the first design registered for it (REFERENCE for a UNet)."""
    for d in DESIGNS.values():
        if d.backbone == backbone:
            return d
    raise ValueError(f"no design controls a {backbone!r}; backbones: {sorted({d.backbone for d in DESIGNS.values()})}")


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


def in_sweep(group: str | None = None, preset: str | None = None) -> list[tuple[Design, SweepRun]]:
    """The designs' sweep runs (in registration order), of one group and/or one preset."""
    return [(d, r) for d in DESIGNS.values() for r in d.sweep
            if (group is None or r.group == group) and (preset is None or preset in r.presets)]


def claims_of(*rules: str) -> list[tuple[Design, Claim]]:
    """Every registered design's claims read by one of `rules`, in registration order."""
    return [(d, c) for d in DESIGNS.values() for c in d.claims if c.rule in rules]
