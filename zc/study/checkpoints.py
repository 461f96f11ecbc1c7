"""Which ControlNet a chapter uses for the chosen SD, found without wiring paths.

For one condition ("fill50k" = chapter 6's outlines of circles, or any condition of conditions.py)
and one SD (ZC_SD), the first of these that exists:

1. an explicit folder or hub id (ZC_CONTROLNET, or ZC_ZOO/<condition>-controlnet);
2. the ControlNets shipped with zc, when the SD is TinySD or its fine-tune tinysd-shaded;
3. the one chapter 6 (or `python -m zc.train`) trained for this SD: run_folder(sd, condition), i.e.
   <ZC_RUNS or ./runs>/<model slug>/<condition>-controlnet/controlnet;
4. the original authors' public checkpoint for SD 1.5 on the hub (PUBLIC: one per condition, with
   how the toy condition is converted to the image it was trained on); only when its config fits
   the SD's UNet, which is checked before the ~1.4 GB of weights are fetched;
5. otherwise FileNotFoundError naming both ways: train it (chapter 6) or the public checkpoint.

    found = checkpoints.find(pipe, "fill50k", model=MODEL)
    images = sample(pipe, found.controlnet, prompts, found.convert(test.conditions()))
    print(found)                     # which path ran, in one sentence
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..controlnet import ControlNet, ControlNetConfig, copy_config
from ..resources import WEIGHTS
from ..sd import SHIPPED, looks_like_hub_id, sd_location
from ..world import conditions

__all__ = ["ADE20K", "KIND_CLASSES", "as_is", "to_ade20k", "Public", "SCRIBBLE", "PUBLIC", "NO_PUBLIC",
    "model_slug", "runs_dir", "run_folder", "is_tinysd", "shipped_folder", "Found", "find", "public_fits",
    "missing_message", "available", "standin_hub_cache"]

# --- the original authors' SD 1.5 ControlNets, one table ---------------------------------------------
# The toy conditions are drawn in [0, 1] as conditions.py says; each checkpoint reads the images of its
# model card (checked against the cards of lllyasviel/sd-controlnet-* and control_v11*_sd15_*).
ADE20K = {  # class -> RGB in the ADE20K palette the seg ControlNets were trained on (mmseg's ade_palette)
    "wall": (120, 120, 120), "ball": (255, 0, 163), "box": (0, 255, 20), "toy": (255, 0, 31), "vase": (0, 255, 204),
}
KIND_CLASSES = ("ball", "box", "toy", "vase")  # per shapes.KINDS: circle, square, triangle, diamond


def as_is(c: torch.Tensor) -> torch.Tensor:
    return c


def to_ade20k(c: torch.Tensor) -> torch.Tensor:
    """A silhouette (kind colours on black, conditions.silhouette) -> the same regions in ADE20K class
    colours: each pixel takes the class of its nearest colour, the black background is 'wall'."""
    refs = torch.cat([torch.zeros(1, 3), conditions.KIND_COLOURS]).to(c)  # (5, 3): background + kinds
    palette = torch.tensor([ADE20K["wall"]] + [ADE20K[k] for k in KIND_CLASSES]).to(c) / 255
    nearest = (c.permute(0, 2, 3, 1)[..., None, :] - refs).norm(dim=-1).argmin(-1)  # (B, H, W)
    return palette[nearest].permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Public:
    hub_id: str  # the checkpoint on the hub (diffusers format, SD 1.5)
    convert: Callable[[torch.Tensor], torch.Tensor]  # toy condition -> the image this checkpoint reads
    how: str  # what convert does, for the chapter's prose


SCRIBBLE = Public("lllyasviel/control_v11p_sd15_scribble", as_is,
                  "white strokes on black, as its model card asks: the condition as it is")
PUBLIC = {
    "fill50k": SCRIBBLE, "outline": SCRIBBLE, "scribble": SCRIBBLE,
    "silhouette": Public("lllyasviel/control_v11p_sd15_seg", to_ade20k,
                         "an ADE20K segmentation map: circle 'ball', square 'box', triangle 'toy', diamond 'vase' "
                         "in their class colours, the background 'wall'"),
    "lowres": Public("lllyasviel/control_v11f1p_sd15_depth", as_is,
                     "a depth map (near = bright): the blocky mask as it is, the shape near, the background far"),
}
NO_PUBLIC = {  # conditions no public SD 1.5 ControlNet reads, and why
    "keypoints": "the public pose ControlNets (openpose) read skeletons of people, not two dots",
    "palette": "no public SD 1.5 ControlNet reads a colour palette (shuffle re-arranges a whole image)",
}


# --- where chapter 6 keeps its runs --------------------------------------------------------------------
def model_slug(model: str | os.PathLike | None = None) -> str:
    """A folder name for an SD: 'tinysd', the folder's name, or a hub id with '/' as '--'."""
    name = str(model or os.environ.get("ZC_SD") or "tinysd")
    if name in SHIPPED:
        return name
    if looks_like_hub_id(name) and not Path(name).exists():
        return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--"))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).expanduser().resolve().name) or "sd"


def runs_dir() -> Path:
    """$ZC_RUNS, else ./runs (in Colab: point ZC_RUNS at a Drive folder so a disconnect keeps the run)."""
    return Path(os.environ.get("ZC_RUNS") or "runs").expanduser()


def run_folder(model: str | os.PathLike | None = None, condition: str = "fill50k") -> Path:
    """Where chapter 6 trains `condition` on `model`: checkpoints, log, and the final controlnet/."""
    return runs_dir() / model_slug(model) / f"{_checked(condition)}-controlnet"


def is_tinysd(model: str | os.PathLike | None = None) -> bool:
    """TinySD or its fine-tune: the SDs zc's shipped ControlNets were trained for (or transfer to)."""
    where = Path(sd_location(model)).expanduser()
    return where.exists() and any(where.resolve() == Path(p).resolve() for p in SHIPPED.values())


def shipped_folder(condition: str) -> Path:
    return WEIGHTS / f"{_checked(condition)}-controlnet"


def _checked(condition: str) -> str:
    if condition != "fill50k":
        conditions.get(condition)  # ValueError naming the known ones
    return condition


# --- finding one ---------------------------------------------------------------------------------------
@dataclass
class Found:
    controlnet: ControlNet
    condition: str
    source: str  # "explicit", "shipped", "trained" (chapter 6's run) or "public"
    where: str  # its folder or hub id
    convert: Callable[[torch.Tensor], torch.Tensor] = field(default=as_is)  # toy condition -> its input
    how: str = "the condition as it is"

    def __str__(self) -> str:
        said = {"explicit": "the ControlNet you named", "shipped": "the ControlNet shipped with zc for TinySD",
                "trained": "the ControlNet chapter 6 trained for this SD",
                "public": "the original authors' public SD 1.5 checkpoint"}[self.source]
        return f"{self.condition}: {said} ({self.where}); input: {self.how}"


def find(pipe, condition: str = "fill50k", model: str | os.PathLike | None = None, device=None,
         explicit: str | os.PathLike | None = None) -> Found:
    """The ControlNet for `condition` on `pipe` (the SD loaded from `model`), by the order above,
    checked against pipe.unet, on `device` (default: the pipe's) in eval mode."""
    _checked(condition)
    device = device or pipe.device
    found = _locate(pipe, condition, model, explicit)
    found.controlnet.check_unet(pipe.unet)
    found.controlnet = found.controlnet.to(device).eval()
    return found


def _locate(pipe, condition, model, explicit) -> Found:
    if explicit:
        return Found(ControlNet.from_pretrained(explicit), condition, "explicit", str(explicit))
    zoo = os.environ.get("ZC_ZOO")
    if zoo and condition != "fill50k" and (Path(zoo) / f"{condition}-controlnet" / "config.json").is_file():
        where = Path(zoo) / f"{condition}-controlnet"
        return Found(ControlNet.from_pretrained(where), condition, "explicit", str(where))
    if is_tinysd(model) and (shipped_folder(condition) / "config.json").is_file():
        return Found(ControlNet.from_pretrained(shipped_folder(condition)), condition, "shipped",
                     str(shipped_folder(condition)))
    trained = run_folder(model, condition) / "controlnet"
    if (trained / "config.json").is_file():
        return Found(ControlNet.from_pretrained(trained), condition, "trained", str(trained))
    if not is_tinysd(model) and condition in PUBLIC:
        p = PUBLIC[condition]
        fits, why = public_fits(p.hub_id, pipe.unet)
        if fits:
            return Found(ControlNet.from_pretrained(p.hub_id), condition, "public", p.hub_id, p.convert, p.how)
    else:
        why = NO_PUBLIC.get(condition, "zc's shipped ControlNets are for TinySD" if is_tinysd(model) else "")
    raise FileNotFoundError(missing_message(condition, model, why))


def public_fits(hub_id: str, unet) -> tuple[bool, str]:
    """Whether the public checkpoint's config fits `unet` (fetches config.json only: ~1 kB), and why not."""
    from huggingface_hub import hf_hub_download

    try:
        raw = json.loads(Path(hf_hub_download(hub_id, "config.json")).read_text())
    except Exception as e:  # offline and not in the hub cache, no network, no such repo
        from huggingface_hub.errors import LocalEntryNotFoundError

        if isinstance(e, LocalEntryNotFoundError):
            return False, f"{hub_id} is not in the hub cache and the hub cannot be reached"
        return False, f"{hub_id} could not be fetched ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    theirs, ours = ControlNetConfig.from_diffusers(raw).unet, copy_config(unet.config)
    diff = sorted(k for k, v in theirs.items() if ours.get(k) != v)
    if diff:
        return False, f"{hub_id} is for SD 1.5's UNet and this SD's differs ({', '.join(diff)})"
    return True, ""


def missing_message(condition: str, model, why: str = "") -> str:
    from .budget import train_seconds

    cost = ("about 2 min on 2 CPU cores (450 steps)" if is_tinysd(model) else
            f"5000 steps at batch 4: about {train_seconds(5000, 4, 'A100 (40/80 GB)') / 60:.0f} min on an A100, "
            f"{train_seconds(5000, 4, 'T4 (16 GB)') / 60:.0f} on a T4, estimated by zc.study.budget")
    cmd = (f"python -m zc.train --sd {sd_location(model)} --condition {'outline' if condition == 'fill50k' else condition}"
           f" --out {run_folder(model, condition)}")
    public = PUBLIC.get(condition)
    lines = [f"no {condition} ControlNet for the SD {sd_location(model)!r}."]
    if why:
        lines.append(f"  Public checkpoint: {why}.")
    lines.append(f"  Train one: run chapter 6 with this ZC_SD ({cost}), or `{cmd}`; the chapters "
                 f"then find it in {run_folder(model, condition)}.")
    if public:
        lines.append(f"  Or, for SD 1.5 and its fine-tunes, the public checkpoint {public.hub_id} (needs the "
                     "network once; it is then in the hub cache).")
    lines.append("  Or name a ControlNet folder / hub id: ZC_CONTROLNET (fill50k) or ZC_ZOO (a folder of "
                 "<condition>-controlnet/).")
    return "\n".join(lines)


def available(pipe, model=None, names=None, device=None) -> tuple[dict[str, Found], dict[str, str]]:
    """find() for each condition (default: the registry's): ({name: Found}, {name: why missing})."""
    found, missing = {}, {}
    for name in names or list(conditions.CONDITIONS):
        try:
            found[name] = find(pipe, name, model=model, device=device)
        except FileNotFoundError as e:  # what is missing, and why the public one does not serve
            missing[name] = " ".join(line.strip() for line in str(e).splitlines()[:2])
    return found, missing


def standin_hub_cache(cache: str | os.PathLike, pipe, hub_ids=None, seed: int = 0) -> Path:
    """A hub cache laid out as huggingface_hub expects (models--owner--name/refs/main, snapshots/<sha>/)
    holding ControlNets shaped for `pipe`'s UNet under the public checkpoints' ids, so the real loading
    code runs offline (HF_HUB_CACHE=cache HF_HUB_OFFLINE=1). Their weights are random: a rehearsal."""
    import hashlib

    cache = Path(cache)
    for hub_id in hub_ids or sorted({p.hub_id for p in PUBLIC.values()}):
        torch.manual_seed(seed)
        cn = ControlNet.for_pipeline(pipe)
        sha = hashlib.sha1(hub_id.encode()).hexdigest()
        repo = cache / f"models--{hub_id.replace('/', '--')}"
        snap = repo / "snapshots" / sha
        cn.save_pretrained(snap)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(sha)
    return cache


