"""The fill50k task: from a circle's outline (the condition), draw the filled circle.

Each item: source = the circle's outline, white on black (the condition c_i, in [0, 1]);
target = the filled circle on its background (the image, in [-1, 1]); prompt = "<fill colour>
circle with <background colour> background" in CSS colour names written as words.

    ds = Fill50k.generate(1000, size=64, seed=0)        # in memory, deterministic
    ds.save("data/fill1k")                              # the original layout: prompt.json + source/ + target/
    ds = Fill50k.load("data/fill1k")                    # ... or an original fill50k folder
    ds = Fill50k.from_columns(hf_dataset)               # diffusers' copy: image / conditioning_image / text

Splits: "train" and "test" use disjoint (fill, background) colour pairs (shapes.held_out_pair), so
held-out prompts never appear in training.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from . import shapes

OUTLINE_WIDTH = 2.0  # pixels at 64 px; scaled with the image size


class Fill50k(torch.utils.data.Dataset):
    """Items are dicts: pixel_values (3, H, W) in [-1, 1], conditioning (3, H, W) in [0, 1], prompt."""

    def __init__(self, targets: torch.Tensor, sources: torch.Tensor, prompts: list[str],
                 scenes: shapes.Scenes | None = None):
        if not (len(targets) == len(sources) == len(prompts)):
            raise ValueError(f"targets, sources and prompts differ in length: {len(targets)}, {len(sources)}, {len(prompts)}")
        self.targets = targets  # (N, 3, H, W) uint8
        self.sources = sources  # (N, 3, H, W) uint8
        self.prompts = list(prompts)
        self.scenes = scenes  # the generating parameters, when known (for exact fidelity masks)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i):
        return {"pixel_values": self.targets[i].float() / 127.5 - 1, "conditioning": self.sources[i].float() / 255,
                "prompt": self.prompts[i]}

    def conditions(self) -> torch.Tensor:
        """(N, 3, H, W) every item's conditioning in [0, 1]: the batch a sampler takes."""
        return self.sources.float() / 255

    @property
    def size(self) -> int:
        return self.targets.shape[-1]

    # --- making it --------------------------------------------------------------------------
    @classmethod
    def generate(cls, n: int, size: int = 64, seed: int = 0, split: str = "train") -> "Fill50k":
        scenes = shapes.sample_scenes(n, torch.Generator().manual_seed(seed), split=split, kinds=("circle",))
        return cls.from_scenes(scenes, size)

    @classmethod
    def from_scenes(cls, scenes: shapes.Scenes, size: int) -> "Fill50k":
        target = shapes.render(scenes, size)
        ring = shapes.coverage(scenes, size, outline=OUTLINE_WIDTH * size / 64)[:, None].expand(-1, 3, -1, -1)
        to8 = lambda x: (x * 255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
        return cls(to8(target), to8(ring), scenes.prompts(), scenes)

    # --- the original on-disk format --------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        (folder / "source").mkdir(parents=True, exist_ok=True)
        (folder / "target").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(len(self)):
            Image.fromarray(self.sources[i].permute(1, 2, 0).numpy()).save(folder / "source" / f"{i}.png")
            Image.fromarray(self.targets[i].permute(1, 2, 0).numpy()).save(folder / "target" / f"{i}.png")
            lines.append(json.dumps({"source": f"source/{i}.png", "target": f"target/{i}.png", "prompt": self.prompts[i]}))
        tmp = folder / "prompt.json.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(folder / "prompt.json")  # written last: a folder with prompt.json is complete
        return folder

    @classmethod
    def load(cls, folder: str | Path, limit: int | None = None) -> "Fill50k":
        folder = Path(folder)
        index = folder / "prompt.json"
        if not index.is_file():
            raise FileNotFoundError(f"{index} not found: a fill50k folder has prompt.json (JSON Lines) beside source/ and target/")
        rows = []
        for n, line in enumerate(index.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append((row["source"], row["target"], row["prompt"]))
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index} line {n + 1} is not a {{source, target, prompt}} JSON object: {line[:80]!r}") from e
            if limit and len(rows) >= limit:
                break
        return cls.from_columns({"conditioning_image": folder / s, "image": folder / t, "text": p} for s, t, p in rows)

    @classmethod
    def from_columns(cls, rows: Iterable[dict]) -> "Fill50k":
        """Rows with diffusers' fill50k columns: image, conditioning_image (PIL images or paths), text."""
        targets, sources, prompts = [], [], []
        for row in rows:
            targets.append(_rgb(row["image"]))
            sources.append(_rgb(row["conditioning_image"]))
            prompts.append(row["text"])
        if not prompts:
            raise ValueError("no rows: the dataset is empty")
        sizes = {t.shape for t in targets} | {s.shape for s in sources}
        if len(sizes) != 1:
            raise ValueError(f"images differ in size {sorted(sizes)}: resize them to one square size first")
        return cls(torch.stack(targets), torch.stack(sources), prompts)


def _rgb(image) -> torch.Tensor:
    """(3, H, W) uint8 from a PIL image or a path; read as RGB like the original loader."""
    if not isinstance(image, Image.Image):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} listed in prompt.json does not exist")
        image = Image.open(path)
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def disc_masks(sources: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the filled disc an outline implies (its inside, flood-filled from the border).

    Works on any outline image, so fidelity can be measured on loaded folders too."""
    from scipy import ndimage

    scale = 255.0 if sources.dtype == torch.uint8 else 1.0
    ring = (sources.float().mean(1) > 0.5 * scale).cpu().numpy()
    grow = max(1, round(OUTLINE_WIDTH * ring.shape[-1] / 64 / 2))  # back out to the ring's centre line
    masks = []
    for r in ring:
        inside = ndimage.binary_fill_holes(r) & ~r
        masks.append(ndimage.binary_dilation(inside, iterations=grow) if inside.any() else inside)
    return torch.from_numpy(np.stack(masks))
