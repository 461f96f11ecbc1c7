"""The condition zoo: what a ControlNet can be told about a shapes-world scene, and how to check that a
generated image obeyed.

The paper trains one architecture on many spatial conditions (Canny edges, Hough lines, scribbles,
segmentation, pose, depth, ...). Here each condition is one small function, scene -> condition image
(B, 3, H, W) in [0, 1], and every generated image is scored by `measure`, which re-reads the scene
from the image the way ControlNet++ re-extracts a condition (edges -> F1, segmentation -> mIoU,
pose -> keypoint error):

    name        draws                                         carries           scored by
    outline     the shape's border, white on black (fill50k)  where, size, kind shape_iou
    silhouette  the filled shape, coloured by its kind        where, size, kind shape_iou
    lowres      the filled shape at 1/8 resolution, blocky     where, size       shape_iou
    scribble    a jittered stroke along 40-70% of the border   part of the shape shape_iou
    keypoints   two dots: the centre and the topmost point     where, size       keypoint_accuracy
    palette     left half fill colour, right half background   colours only      colour_accuracy

From dense to sparse: an outline or a silhouette draws the answer; a scribble leaves the network to
complete it; keypoints draw nothing of the shape, so the ControlNet must turn two dots into a filled
shape of the prompt's kind; a palette says nothing about where.

    cond = draw("scribble", scenes, 64)            # (B, 3, 64, 64) in [0, 1]
    scores = measure(images, scenes)               # every measure below, means over the batch
    scores[CONDITIONS["scribble"].score]           # the one that condition is judged by
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import metrics, shapes

__all__ = ["OUTLINE_WIDTH", "KIND_COLOURS", "KEYPOINT_COLOURS", "KEYPOINT_TOLERANCE", "Condition",
    "CONDITIONS", "register", "get", "members", "draw", "outline", "silhouette", "lowres", "scribble",
    "keypoints", "palette", "palette_image", "keypoint_positions", "ROBUST_ABOVE", "robust_for",
    "shape_regions", "measure", "SCORES", "NAMES", "name", "AREA", "kind_of"]

OUTLINE_WIDTH = 2.0  # pixels at 64 px, scaled with the image size (fill50k's ring)
KIND_COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # per shapes.KINDS
KEYPOINT_COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # centre red, top green
KEYPOINT_TOLERANCE = 3.0  # pixels at 64 px: a keypoint within this distance counts as hit


@dataclass(frozen=True)
class Condition:
    name: str
    draw: Callable[[shapes.Scenes, int], torch.Tensor]  # (scenes, size) -> (B, 3, size, size) in [0, 1]
    score: str  # the key of measure() this condition is judged by (higher is better, in [0, 1])
    kinds: tuple[str, ...]  # the shape kinds its dataset draws by default
    about: str  # what it carries, for tables


CONDITIONS: dict[str, Condition] = {}


def register(name: str, score: str, about: str, kinds: tuple[str, ...] = shapes.KINDS):
    def wrap(fn):
        CONDITIONS[name] = Condition(name, fn, score, kinds, about)
        return fn
    return wrap


def get(name: str) -> Condition:
    """A registered condition, or a stack of them: "keypoints+scribble" draws each one's image and
    concatenates them along the channels, (B, 3k, H, W), the input of one network for several
    conditions (Uni-ControlNet's local adapter; zeros where a condition is not given). A stack is
    judged by its first member's measure."""
    if "+" in name:
        parts = [get(n) for n in name.split("+")]
        if len({p.name for p in parts}) < len(parts) or any(p.name == "palette" for p in parts):
            raise ValueError(f"a stack takes distinct spatial conditions, got {name!r} (the palette has no "
                             "'where': give it to an IP-Adapter, zc/controls/ip_adapter.py)")
        return Condition(name, lambda scenes, size: torch.cat([p.draw(scenes, size) for p in parts], dim=1),
                         parts[0].score, tuple(dict.fromkeys(k for p in parts for k in p.kinds)),
                         " + ".join(p.name for p in parts))
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; choose from {sorted(CONDITIONS)}, or a stack of them "
                         "joined by '+'")
    return CONDITIONS[name]


def members(name: str) -> list[str]:
    """The conditions of a stack ("keypoints+scribble" -> ["keypoints", "scribble"]); [name] for one."""
    return [get(n).name for n in name.split("+")]


def draw(name: str, scenes: shapes.Scenes, size: int) -> torch.Tensor:
    """(B, 3, size, size) condition images in [0, 1] for `scenes`."""
    return get(name).draw(scenes, size).clamp(0, 1)


# --- the conditions -------------------------------------------------------------------------------
def _grey(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, None].expand(-1, 3, -1, -1)  # (B, H, W) -> (B, 3, H, W)


@register("outline", "shape_iou", "the border: where, size and kind", kinds=("circle",))
def outline(scenes, size):
    """fill50k's condition: the shape's border as a white ring on black (circles only by default)."""
    return _grey(shapes.coverage(scenes, size, outline=OUTLINE_WIDTH * size / 64))


@register("silhouette", "shape_iou", "the filled shape, coloured by kind (segmentation)")
def silhouette(scenes, size):
    """A segmentation map: the shape's mask in its kind's colour (circle red, square green, triangle
    blue, diamond yellow), so the kind comes from the condition even with no prompt."""
    return shapes.coverage(scenes, size)[:, None] * KIND_COLOURS.to(scenes.kind.device)[scenes.kind][:, :, None, None]


@register("lowres", "shape_iou", "a blocky 1/8-resolution mask: where and size, roughly")
def lowres(scenes, size):
    """The mask averaged over 8x8 blocks and shown blocky: a coarse, depth-map-like layout."""
    block = max(size // 8, 1)
    coarse = torch.nn.functional.avg_pool2d(shapes.coverage(scenes, size)[:, None], block)
    return _grey(torch.nn.functional.interpolate(coarse, scale_factor=block, mode="nearest")[:, 0])


@register("scribble", "shape_iou", "a rough stroke along part of the border: must be completed")
def scribble(scenes, size):
    """A hand-drawn-looking stroke along a random 40-70% of the border, wobbling by ~1 px: the
    network has to complete the shape. Deterministic per scene (Scenes.item_seeds)."""
    n = 96  # points along the whole border
    strokes = []
    for k, c, r, seed in zip(scenes.kind.tolist(), scenes.center.cpu(), scenes.radius.cpu(),
                             scenes.item_seeds().tolist()):
        g = torch.Generator().manual_seed(int(seed))
        pts = shapes.border_points(k, n)  # (n, 2), unit radius
        start, frac = torch.randint(n, (1,), generator=g).item(), 0.4 + 0.3 * torch.rand(1, generator=g).item()
        pts = pts[(start + torch.arange(int(frac * n))) % n]
        normal = pts / pts.norm(dim=1, keepdim=True).clamp(min=1e-6)  # outward, near enough for a wobble
        t = torch.linspace(0, 1, len(pts))
        phase, freq = 2 * math.pi * torch.rand(2, generator=g), 2 + 3 * torch.rand(2, generator=g)
        wobble = 0.5 * (torch.sin(freq[0] * 2 * math.pi * t + phase[0]) + torch.sin(freq[1] * 2 * math.pi * t + phase[1]))
        strokes.append(c + r * pts + (1.2 / 64) * wobble[:, None] * normal)  # image units
    return _grey(_polylines(strokes, size, width=OUTLINE_WIDTH * size / 64).to(scenes.center.device))


@register("keypoints", "keypoint_accuracy", "two dots (centre, top): where and size, no shape")
def keypoints(scenes, size):
    """A pose-like condition: a red dot on the shape's centre and a green dot on its topmost point.
    Nothing of the shape is drawn: the ControlNet must grow a filled shape around two dots."""
    centre, top = keypoint_positions(scenes)
    ticks = (torch.arange(size, device=centre.device) + 0.5) / size
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), dim=-1)  # (H, W, 2) x, y
    out = torch.zeros(len(scenes), 3, size, size, device=centre.device)
    for point, colour in zip((centre, top), KEYPOINT_COLOURS.to(centre.device)):
        d = (grid[None] - point[:, None, None]).norm(dim=-1) * size  # pixels
        dot = (0.5 - (d - 2.5 * size / 64)).clamp(0, 1)  # a disc of radius 2.5 px at 64 px
        out = torch.maximum(out, dot[:, None] * colour[None, :, None, None])
    return out


@register("palette", "colour_accuracy", "the fill and background colours, no position")
def palette(scenes, size):
    """A colour control (the toy analogue of the colour/shuffle ControlNets): the left half in the fill
    colour, the right half in the background colour. It says nothing about where the shape is."""
    table = shapes.colour_table().to(scenes.center.device)
    return palette_image(table[scenes.fill], table[scenes.bg], size)


def palette_image(fill: torch.Tensor, bg: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, size, size): the palette's layout from (B, 3) RGB colours in [0, 1], fill left, background right."""
    left = (torch.arange(size, device=fill.device) < size // 2)[None, None, None, :]  # (1, 1, 1, W)
    return torch.where(left, fill[:, :, None, None], bg[:, :, None, None]).expand(-1, -1, size, -1)


def _polylines(lines: list[torch.Tensor], size: int, width: float) -> torch.Tensor:
    """(B, H, W) anti-aliased strokes of `width` pixels along each polyline (points in image units)."""
    ticks = (torch.arange(size) + 0.5) / size
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), dim=-1).reshape(-1, 1, 2)  # (HW, 1, 2)
    out = []
    for pts in lines:
        a, b = pts[:-1][None], pts[1:][None]  # (1, S, 2) segment ends
        ab = b - a
        t = (((grid - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)  # (HW, S)
        d = (grid - (a + t[..., None] * ab)).norm(dim=-1).min(dim=1).values * size  # pixels to the stroke
        out.append((0.5 - (d - width / 2)).clamp(0, 1).reshape(size, size))
    return torch.stack(out)


def keypoint_positions(scenes: shapes.Scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, top): (B, 2) each, image units; top = the shape's topmost point."""
    top_offset = torch.tensor([shapes.TOP[k] for k in shapes.KINDS], device=scenes.center.device)[scenes.kind]
    top = scenes.center - torch.stack([torch.zeros_like(scenes.radius), top_offset * scenes.radius], dim=1)
    return scenes.center, top


# --- measuring a generated image ------------------------------------------------------------------
ROBUST_ABOVE = 64  # px: larger images (SD 1.5's 512 px, the stand-ins') are measured robustly (below)


def robust_for(images: torch.Tensor) -> bool:
    """The measures' default: the flat-world path at TinySD's 64 px, where every stored result of
    this book was measured, and the robust path for larger images, i.e. a realistic SD's."""
    return images.shape[-1] > ROBUST_ABOVE


def _median3(images: torch.Tensor) -> torch.Tensor:
    from scipy import ndimage

    return torch.from_numpy(ndimage.median_filter(images.float().cpu().numpy(), size=(1, 1, 3, 3), mode="nearest"))


def shape_regions(images: torch.Tensor, near: float = metrics.NEAR, robust: bool | None = None) -> torch.Tensor:
    """(B, H, W) bool: pixels unlike the image's background, whatever the colours. Needs no prompt,
    so it says where the shape is under an empty or a conflicting prompt too.

    robust=False: the background is the border's median colour and a pixel is "unlike" it beyond
    `near` (exact on flat renders; breaks on noise, texture or light, benchmarks/fidelity_robustness.py).
    robust=True (the default above 64 px: robust_for) keeps that on flat renders (within 0.005 IoU)
    and degrades gracefully on images that are not:
    a 3x3 median filter first (noise, JPEG speckle); a background that may change linearly across the
    image (light: fitted to the medians of the four border sides); a threshold that rises with the
    border's own spread (texture: 3 robust standard deviations of its distances, at least `near`).
    Where each path holds and breaks, on renders with known truth: benchmarks/fidelity_robustness.py."""
    robust = robust_for(images) if robust is None else robust
    x = (_median3(images) if robust else images.float().cpu()).permute(0, 2, 3, 1)  # (B, H, W, 3)
    sides = (x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1])  # top, bottom, left, right: (B, W, 3) each
    border = torch.cat(sides, dim=1)  # (B, 4W, 3)
    bg = border.median(dim=1).values[:, None, None]  # (B, 1, 1, 3)
    if not robust:
        return (x - bg).norm(dim=-1) > near
    top, bottom, left, right = (s.median(dim=1).values[:, None, None] for s in sides)
    h, w = x.shape[1:3]
    ys = ((torch.arange(h) + 0.5) / h - 0.5)[None, :, None, None]
    xs = ((torch.arange(w) + 0.5) / w - 0.5)[None, None, :, None]
    bg = bg + (bottom - top) * ys + (right - left) * xs  # (B, H, W, 3): a plane through the sides
    d = (x - bg).norm(dim=-1)  # (B, H, W)
    edge = torch.cat([d[:, 0], d[:, -1], d[:, :, 0], d[:, :, -1]], dim=1)  # the border's own spread
    mad = (edge - edge.median(dim=1, keepdim=True).values).abs().median(dim=1).values
    thresh = torch.clamp(3 * 1.4826 * mad, min=near)[:, None, None]
    return d > thresh


def measure(images: torch.Tensor, scenes: shapes.Scenes, per_item: bool = False, robust: bool | None = None) -> dict:
    """Every fidelity measure of generated `images` (B, 3, H, W) in [0, 1] against the `scenes` they
    should show; means over the batch (lists per image with per_item=True).

    shape_iou          IoU of the drawn shape (shape_regions: colour-free) and the scene's shape
    kind_accuracy      the drawn shape overlaps the scene's kind best among the 4 kinds at its place
    fill_accuracy      pixels of the drawn shape near the scene's fill colour (metrics.colour_accuracy)
    background_accuracy  the other pixels near the background colour (so swapped colours score ~0)
    colour_accuracy    the mean of the two
    centre_error       pixels between the drawn shape's centroid and the scene's centre
    top_error          pixels between the drawn shape's topmost point and the scene's
    keypoint_accuracy  both keypoints within KEYPOINT_TOLERANCE (scaled to the image size)

    robust (default: robust_for(images), i.e. above 64 px): shape_regions' robust path, and the
    colours judged on the 3x3-median-filtered image (noise, JPEG speckle).

    Where they hold, on renders with known truth (benchmarks/results/cpu/fidelity_robustness.txt:
    the largest perturbation strength with every score within 0.05 of the flat render's, at 512 px,
    robust path): shape IoU and keypoint accuracy under light falling by up to 80% down the image,
    per-pixel noise up to std 0.05 (shape IoU 0.1), JPEG down to quality 24; colour accuracy only
    under light up to 10% and noise up to std 0.1. Both paths break on texture beyond 0.05 (smooth
    patterns of a few % of the range): a textured SD 1.5 image's scores are lower bounds."""
    scenes = scenes.to("cpu")
    b, _, size, _ = images.shape
    robust = robust_for(images) if robust is None else robust
    drawn = shape_regions(images, robust=robust)
    truth = shapes.coverage(scenes, size) > 0.5
    per_kind = torch.stack([metrics.iou(drawn, shapes.coverage(shapes.Scenes(
        torch.full_like(scenes.kind, k), scenes.fill, scenes.bg, scenes.center, scenes.radius), size) > 0.5)
        for k in range(len(shapes.KINDS))], dim=1)  # (B, 4)
    table = shapes.colour_table()
    seen = _median3(images) if robust else images.float().cpu()
    fill_acc, bg_acc = metrics.colour_accuracy(seen, table[scenes.fill], table[scenes.bg], blob=drawn)
    centre, top = keypoint_positions(scenes)
    found_centre = metrics.centroids(drawn)  # NaN where nothing is drawn
    rows = torch.arange(size).float()[None, :, None]
    has_row = drawn.any(dim=2)  # (B, H)
    found_top_y = torch.where(has_row, rows[:, :, 0], torch.inf).min(dim=1).values  # first drawn row
    found_top = torch.stack([found_centre[:, 0], (found_top_y + 0.5) / size], dim=1)
    far = torch.tensor(float(size))  # an empty image misses by the whole side
    centre_err = torch.nan_to_num((found_centre - centre).norm(dim=1) * size, nan=far.item(), posinf=far.item())
    top_err = torch.nan_to_num((found_top - top).norm(dim=1) * size, nan=far.item(), posinf=far.item())
    tol = KEYPOINT_TOLERANCE * size / 64
    out = {
        "shape_iou": metrics.iou(drawn, truth),
        "kind_accuracy": (per_kind.argmax(dim=1) == scenes.kind).float() * (per_kind.max(dim=1).values > 0),
        "fill_accuracy": fill_acc,
        "background_accuracy": bg_acc,
        "colour_accuracy": (fill_acc + bg_acc) / 2,
        "centre_error": centre_err,
        "top_error": top_err,
        "keypoint_accuracy": ((centre_err <= tol) & (top_err <= tol)).float(),
    }
    return {k: v.tolist() for k, v in out.items()} if per_item else {k: v.mean().item() for k, v in out.items()}


SCORES = ("shape_iou", "kind_accuracy", "colour_accuracy", "keypoint_accuracy")  # the [0, 1] measures, higher better
NAMES = {  # the one name the book gives each measure (book/glossary.md defines them; tables print these)
    "shape_iou": "shape IoU", "kind_accuracy": "kind accuracy", "fill_accuracy": "fill accuracy",
    "background_accuracy": "background accuracy", "colour_accuracy": "colour accuracy",
    "centre_error": "centre error", "top_error": "top error", "keypoint_accuracy": "keypoint accuracy",
    "base_kind_accuracy": "SD-alone kind accuracy", "base_colour_accuracy": "SD-alone colour accuracy",
    "final_loss": "final training loss", "sec_per_step": "seconds per step",
}


def name(key: str) -> str:
    """The book's name of a measure key (NAMES); the key itself when it has none."""
    return NAMES.get(key, key)


AREA = {"circle": math.pi, "square": 1.6**2, "triangle": 3 * math.sqrt(3) / 4, "diamond": 1.5**2}  # area / r^2


def kind_of(images: torch.Tensor) -> torch.Tensor:
    """(B,) index into shapes.KINDS of the shape each image draws, wherever it is: the drawn shape
    (shape_regions) against each kind of the same area centred on its centroid, best IoU wins; -1
    when nothing is drawn. For what TinySD draws with no condition at all (chapter 10's forgetting)."""
    drawn = shape_regions(images)
    size = drawn.shape[-1]
    centre = metrics.centroids(drawn)
    area = drawn.flatten(1).float().mean(1)  # in units of the image side squared
    ious = []
    for k, name in enumerate(shapes.KINDS):
        r = (area / AREA[name]).sqrt()
        ghost = shapes.Scenes(torch.full_like(r, k, dtype=torch.long), torch.zeros_like(r, dtype=torch.long),
                              torch.zeros_like(r, dtype=torch.long), torch.nan_to_num(centre, nan=0.5), r)
        ious.append(metrics.iou(drawn, shapes.coverage(ghost, size) > 0.5))
    best = torch.stack(ious, 1).argmax(1)
    return torch.where(area > 0, best, torch.full_like(best, -1))
