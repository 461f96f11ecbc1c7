"""Paired data in fill50k's form, for every condition: (condition image, target image, prompt) triples.

The original fill50k: condition = a circle's outline, white on black; target = the filled circle on its
background; prompt = "<fill colour> circle with <background colour> background" in CSS colour names
written as words. `PairedData.generate(..., condition=...)` makes the same kind of set for every condition
of the zoo (conditions.py) over the four kinds of the shapes world.

    ds = PairedData.generate(1000, size=64, seed=0)                 # fill50k: circle outlines
    ds = PairedData.generate(1000, condition="scribble")             # any condition, all four kinds
    ds.save("data/fill1k")                                        # the original layout: prompt.json + source/ + target/
    ds = PairedData.load("data/fill1k")                              # ... or an original fill50k folder
    ds = PairedData.from_columns(hf_dataset)                         # diffusers' copy: image / conditioning_image / text

Memory is O(batch), not O(dataset): a generated set keeps only its scene parameters (7 numbers a pair)
and draws pairs when asked; a folder keeps its prompt list and reads the PNGs of the pairs asked for;
a column dataset (a `datasets.Dataset` or a list of rows) is indexed, never copied. `batch(idx)` is
the one way in; `ds[i]` and `ds.sources` / `ds.targets` (small sets only) are built on it.

Splits: "train" and "test" use disjoint (fill, background) colour pairs (shapes.held_out_pair), so
held-out prompts never appear in training.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..training_utils import atomic_write, hide_bar
from . import conditions, shapes
from .conditions import OUTLINE_WIDTH  # noqa: F401  (fill50k's ring width, kept importable from here)

__all__ = ["MATERIALISE_LIMIT", "PairedData", "disc_masks"]

MATERIALISE_LIMIT = 4096  # .sources / .targets stack every pair: only for evaluation-sized sets


def _to8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


class PairedData(torch.utils.data.Dataset):
    """Items are dicts: pixel_values (3, H, W) in [-1, 1], conditioning (3, H, W) in [0, 1], prompt."""

    prompts: list[str]
    size: int  # side of the square images, pixels
    scenes: shapes.Scenes | None = None  # the generating parameters, when known (exact fidelity masks)
    condition: str | None = None  # the zoo condition the sources show, when known

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, idx: Sequence[int], targets: bool = True, sources: bool = True) -> dict:
        """{"targets", "sources"}: (B, 3, H, W) uint8 of the pairs `idx` (each only if asked), "prompts"."""
        raise NotImplementedError

    def __getitem__(self, i):
        b = self.batch([int(i)])
        return {"pixel_values": b["targets"][0].float() / 127.5 - 1, "conditioning": b["sources"][0].float() / 255,
                "prompt": b["prompts"][0]}

    def __getitems__(self, idx):  # DataLoader's batched fetch: one call per batch
        return self.batch(idx)

    # --- whole (small) sets, for evaluation -------------------------------------------------
    def _all(self, key: str) -> torch.Tensor:
        if len(self) > MATERIALISE_LIMIT:
            raise ValueError(f"{len(self)} pairs are too many to stack ({key}); read them with .batch(idx)")
        return self.batch(range(len(self)), targets=key == "targets", sources=key == "sources")[key]

    @property
    def sources(self) -> torch.Tensor:
        """(N, 3, H, W) uint8: every condition image (small sets only)."""
        return self._all("sources")

    @property
    def targets(self) -> torch.Tensor:
        """(N, 3, H, W) uint8: every target image (small sets only)."""
        return self._all("targets")

    def conditions(self) -> torch.Tensor:
        """(N, 3, H, W) every item's conditioning in [0, 1]: the batch a sampler takes."""
        return self.sources.float() / 255

    def fingerprint(self) -> dict:
        """What identifies the targets and prompts (a latent cache is valid for the same fingerprint)."""
        raise NotImplementedError

    # --- making it --------------------------------------------------------------------------
    @classmethod
    def generate(cls, n: int, size: int = 64, seed: int = 0, split: str = "train", condition: str = "outline",
                 kinds: Sequence[str] | None = None) -> "PairedData":
        """n pairs of a zoo condition, deterministic by (seed, index). kinds: the condition's default
        (circles for the outline, i.e. fill50k; all four kinds for the others)."""
        cond = conditions.get(condition)
        kinds = tuple(kinds or cond.kinds)
        g = torch.Generator().manual_seed(seed)
        scenes = shapes.sample_scenes(n, g, split=split, kinds=kinds)
        scenes.seed = torch.randint(2**31 - 1, (n,), generator=g)  # per-pair randomness of the condition
        return _Generated(scenes, size, condition, {"n": n, "size": size, "seed": seed, "split": split,
                                                    "kinds": list(kinds)})

    @classmethod
    def from_scenes(cls, scenes: shapes.Scenes, size: int, condition: str = "outline") -> "PairedData":
        return _Generated(scenes, size, condition, None)

    # --- the original on-disk format --------------------------------------------------------
    def save(self, folder: str | Path, chunk: int = 256) -> Path:
        """Write prompt.json + source/i.png + target/i.png, chunk by chunk (memory O(chunk)).
        prompt.json is written last: a folder with prompt.json is complete."""
        from tqdm.auto import tqdm

        folder = Path(folder)
        (folder / "source").mkdir(parents=True, exist_ok=True)
        (folder / "target").mkdir(parents=True, exist_ok=True)
        for start in tqdm(range(0, len(self), chunk), desc=f"writing {folder.name}", **hide_bar(len(self) <= chunk),
                          leave=False):
            b = self.batch(range(start, min(start + chunk, len(self))))
            for j, (s, t) in enumerate(zip(b["sources"], b["targets"])):
                Image.fromarray(s.permute(1, 2, 0).numpy()).save(folder / "source" / f"{start + j}.png")
                Image.fromarray(t.permute(1, 2, 0).numpy()).save(folder / "target" / f"{start + j}.png")
        lines = [json.dumps({"source": f"source/{i}.png", "target": f"target/{i}.png", "prompt": p})
                 for i, p in enumerate(self.prompts)]
        atomic_write(folder / "prompt.json", lambda p: p.write_text("\n".join(lines) + "\n"))
        return folder

    @classmethod
    def load(cls, folder: str | Path, limit: int | None = None) -> "PairedData":
        """A fill50k-style folder (prompt.json JSON Lines + the PNGs it names), read lazily."""
        return _Folder(folder, limit)

    @classmethod
    def from_columns(cls, rows) -> "PairedData":
        """diffusers' fill50k columns: image, conditioning_image (PIL images or paths), text. `rows` is a
        `datasets.Dataset` or any sequence of such dicts; rows are read when a batch asks for them."""
        return _Columns(rows)


class _Generated(PairedData):
    def __init__(self, scenes: shapes.Scenes, size: int, condition: str, spec: dict | None):
        conditions.get(condition)
        self.scenes, self.size, self.condition, self._spec = scenes, size, condition, spec
        self.prompts = scenes.prompts()

    def batch(self, idx, targets=True, sources=True):
        s = self.scenes[torch.as_tensor(list(idx), dtype=torch.long)]
        out = {"prompts": s.prompts()}
        if targets:
            out["targets"] = _to8(shapes.render(s, self.size))
        if sources:
            out["sources"] = _to8(conditions.draw(self.condition, s, self.size))
        return out

    def fingerprint(self):
        if self._spec is None:  # made from scenes: identify by their numbers
            s = self.scenes
            digest = sum(float(t.double().sum()) * (i + 1) for i, t in enumerate((s.kind, s.fill, s.bg, s.center, s.radius)))
            return {"generated": "scenes", "n": len(self), "size": self.size, "digest": round(digest, 6)}
        return {"generated": "shapes", **self._spec}  # the targets do not depend on the condition


class _Folder(PairedData):
    def __init__(self, folder, limit=None):
        self.folder = Path(folder)
        index = self.folder / "prompt.json"
        if not index.is_file():
            raise FileNotFoundError(f"{index} not found: a fill50k folder has prompt.json (JSON Lines) beside "
                                    "source/ and target/")
        self.rows, self.prompts = [], []  # (source, target) paths relative to the folder; prompts
        for n, line in enumerate(index.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.rows.append((row["source"], row["target"]))
                self.prompts.append(str(row["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{index} line {n + 1} is not a {{source, target, prompt}} JSON object: "
                                 f"{line[:80]!r}") from e
            if limit and len(self.rows) >= limit:
                break
        if not self.rows:
            raise ValueError(f"{index} lists no pairs")
        missing = [p for s, t in self.rows for p in (s, t) if not (self.folder / p).is_file()]
        if missing:
            raise FileNotFoundError(f"image {self.folder / missing[0]} listed in prompt.json does not exist "
                                    f"({len(missing)} missing in all)")
        self.size = _check_square(_rgb(self.folder / self.rows[0][1]), _rgb(self.folder / self.rows[0][0]), "row 0")

    def batch(self, idx, targets=True, sources=True):
        idx = list(idx)
        out = {"prompts": [self.prompts[i] for i in idx]}
        for key, col, want in (("sources", 0, sources), ("targets", 1, targets)):
            if want:
                out[key] = _stack([_rgb(self.folder / self.rows[i][col]) for i in idx], self.size, idx)
        return out

    def fingerprint(self):
        st = (self.folder / "prompt.json").stat()
        return {"folder": str(self.folder.resolve()), "n": len(self), "prompt_json_bytes": st.st_size,
                "prompt_json_mtime": int(st.st_mtime)}


class _Columns(PairedData):
    def __init__(self, rows):
        if not hasattr(rows, "__getitem__") or not hasattr(rows, "__len__"):
            rows = list(rows)  # a one-shot iterable: keep its rows (their images stay as given)
        if len(rows) == 0:
            raise ValueError("no rows: the dataset is empty")
        self.rows = rows
        text = rows["text"] if _is_hf(rows) else [r["text"] for r in rows]  # a column read is cheap
        self.prompts = list(text)
        first = rows[0]
        self.size = _check_square(_rgb(first["image"]), _rgb(first["conditioning_image"]), "row 0")

    def batch(self, idx, targets=True, sources=True):
        idx = list(idx)
        got = [self.rows[i] for i in idx]
        out = {"prompts": [self.prompts[i] for i in idx]}
        if sources:
            out["sources"] = _stack([_rgb(r["conditioning_image"]) for r in got], self.size, idx)
        if targets:
            out["targets"] = _stack([_rgb(r["image"]) for r in got], self.size, idx)
        return out

    def fingerprint(self):
        fp = getattr(self.rows, "_fingerprint", None)  # a datasets.Dataset names its content
        if fp is None:
            fp = hash(tuple(self.prompts)) & 0xFFFFFFFF
        return {"columns": str(fp), "n": len(self)}


def _is_hf(rows) -> bool:
    return hasattr(rows, "column_names")


def _rgb(image) -> torch.Tensor:
    """(3, H, W) uint8 from a PIL image or a path; read as RGB like the original loader."""
    if not isinstance(image, Image.Image):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        image = Image.open(path)
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def _check_square(target: torch.Tensor, source: torch.Tensor, where: str) -> int:
    if target.shape != source.shape or target.shape[1] != target.shape[2]:
        raise ValueError(f"images differ in size or are not square at {where} (target {tuple(target.shape[1:])}, "
                         f"condition {tuple(source.shape[1:])}): resize them to one square size first")
    return target.shape[-1]


def _stack(images: list[torch.Tensor], size: int, idx: list[int]) -> torch.Tensor:
    for i, im in zip(idx, images):
        if im.shape != (3, size, size):
            raise ValueError(f"images differ in size: pair {i} is {tuple(im.shape[1:])}, the first is {(size, size)}; "
                             "resize them to one square size first")
    return torch.stack(images)


def disc_masks(sources: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the filled region an outline implies (its inside, flood-filled from the border).

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
