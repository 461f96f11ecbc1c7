"""The shapes world: procedural images of one filled shape on a plain background.

TinySD (tinysd.py) is pretrained on it, and the fill50k task (fill50k.py) is a slice of it.
A caption names the fill colour, the kind of shape and the background colour, e.g.
"burly wood circle with orange background", never where the shape is or how big it is: text
controls colour and kind, and position is what a ControlNet will add.

Colours are the 148 CSS colour names, written as words the way fill50k writes them
("burlywood" -> "burly wood"). Rendering is batched and anti-aliased with signed distance
functions, in torch, so a batch of 256 images costs milliseconds.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

__all__ = ["KINDS", "colours", "colour_names", "colour_table", "colour_index", "MIN_CONTRAST",
    "HELD_OUT_EVERY", "held_out_pair", "Scenes", "sample_scenes", "POLYGONS", "TOP", "border_points",
    "coverage", "STYLES", "SHADE", "render"]

KINDS = ("circle", "square", "triangle", "diamond")

# Pieces the CSS names are made of (every CSS name is a concatenation of these).
_PIECES = """alice blue antique white aqua marine azure beige bisque black blanched almond violet brown
burly wood cadet chartreuse chocolate coral corn flower silk crimson cyan dark golden rod gray grey green
khaki magenta olive orange orchid red salmon sea slate turquoise deep pink sky dim dodger fire brick
floral forest fuchsia gainsboro ghost gold honeydew hot indian indigo ivory lavender blush lawn lemon
chiffon light lime linen maroon medium spring midnight mint cream misty rose moccasin navajo navy old lace
drab pale papaya whip peach puff peru plum powder purple rebecca rosy royal saddle sandy shell sienna
silver snow steel tan teal thistle tomato wheat smoke yellow""".split()


def _split(name: str) -> str:
    """'lightgoldenrodyellow' -> 'light golden rod yellow' (fewest pieces)."""
    best = {0: []}
    for end in range(1, len(name) + 1):
        options = [best[s] + [name[s:end]] for s in range(end) if s in best and name[s:end] in _PIECES]
        if options:
            best[end] = min(options, key=len)
    if len(name) not in best:
        raise ValueError(f"cannot split CSS colour name {name!r}")
    return " ".join(best[len(name)])


@functools.lru_cache(maxsize=None)
def colours() -> tuple[tuple[str, tuple[float, float, float]], ...]:
    """The 148 CSS colours as (words, rgb in [0, 1]), sorted by CSS name."""
    from matplotlib.colors import CSS4_COLORS, to_rgb

    return tuple((_split(n), tuple(float(v) for v in to_rgb(h))) for n, h in sorted(CSS4_COLORS.items()))


def colour_names() -> list[str]:
    return [n for n, _ in colours()]


def colour_table() -> torch.Tensor:
    """(148, 3) RGB in [0, 1], rows in colour_names() order."""
    return torch.tensor([rgb for _, rgb in colours()])


def colour_index(name: str) -> int:
    names = colour_names()
    if name not in names:
        raise ValueError(f"unknown colour {name!r}; colours are CSS names written as words, e.g. {names[:3]}")
    return names.index(name)


MIN_CONTRAST = 0.3  # fill and background colours are at least this far apart in RGB ([0,1], Euclidean)
HELD_OUT_EVERY = 16  # one (fill, background) pair in 16 never appears in training: the held-out prompts


def held_out_pair(fill: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Deterministic mask of the (fill, background) colour pairs reserved for evaluation."""
    return ((fill * 7919 + bg * 104729) % 1000003) % HELD_OUT_EVERY == 0


@dataclass
class Scenes:
    """A batch of scene parameters; `render` turns it into images."""

    kind: torch.Tensor  # (B,) index into KINDS
    fill: torch.Tensor  # (B,) index into colours()
    bg: torch.Tensor  # (B,) index into colours()
    center: torch.Tensor  # (B, 2) x, y in [0, 1] (x to the right, y down)
    radius: torch.Tensor  # (B,) in [0, 1] units of the image side
    seed: torch.Tensor | None = None  # (B,) int64 per-scene seed for randomly drawn conditions (scribbles)

    def __len__(self) -> int:
        return len(self.kind)

    def item_seeds(self) -> torch.Tensor:
        """(B,) per-scene seeds: `seed` when set, else a hash of the scene's own numbers (deterministic)."""
        if self.seed is not None:
            return self.seed
        q = lambda x: (x.double() * 1e6).round().long()  # noqa: E731
        return (self.kind * 7 + self.fill * 7919 + self.bg * 104729 + q(self.center[:, 0]) * 31
                + q(self.center[:, 1]) * 17 + q(self.radius)) % (2**31)

    def prompts(self) -> list[str]:
        names = colour_names()
        return [f"{names[f]} {KINDS[k]} with {names[b]} background"
                for k, f, b in zip(self.kind.tolist(), self.fill.tolist(), self.bg.tolist())]

    def __getitem__(self, i) -> "Scenes":
        return Scenes(self.kind[i], self.fill[i], self.bg[i], self.center[i], self.radius[i],
                      None if self.seed is None else self.seed[i])

    def to(self, device) -> "Scenes":
        return Scenes(*(t.to(device) for t in (self.kind, self.fill, self.bg, self.center, self.radius)),
                      None if self.seed is None else self.seed.to(device))


def sample_scenes(n: int, generator: torch.Generator, split: str = "train", kinds=KINDS,
                  radius=(0.12, 0.3)) -> Scenes:
    """n random scenes. split='train' never yields a held-out colour pair, 'test' only those."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    table = colour_table()
    kind_ids = torch.tensor([KINDS.index(k) for k in kinds])
    kind = kind_ids[torch.randint(len(kind_ids), (n,), generator=generator)]
    fill = torch.randint(len(table), (n,), generator=generator)
    bg = torch.randint(len(table), (n,), generator=generator)
    for _ in range(1000):  # resample the pairs that break a rule, until none does
        bad = (table[fill] - table[bg]).norm(dim=1) < MIN_CONTRAST
        bad |= held_out_pair(fill, bg) if split == "train" else ~held_out_pair(fill, bg)
        if not bad.any():
            break
        m = int(bad.sum())
        fill[bad] = torch.randint(len(table), (m,), generator=generator)
        bg[bad] = torch.randint(len(table), (m,), generator=generator)
    r = radius[0] + (radius[1] - radius[0]) * torch.rand(n, generator=generator)
    center = r[:, None] + (1 - 2 * r[:, None]) * torch.rand(n, 2, generator=generator)
    return Scenes(kind, fill, bg, center, r)


def _box(px, py, half):
    qx, qy = px.abs() - half, py.abs() - half
    return torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.maximum(qx, qy).clamp(max=0)


def _circle(x, y, r):
    return torch.sqrt(x**2 + y**2) - r


def _square(x, y, r):
    return _box(x, y, 0.8 * r)


def _diamond(x, y, r):
    c = math.sqrt(0.5)
    return _box(c * (x + y), c * (y - x), 0.75 * r)


def _triangle(x, y, r):
    """Upright equilateral triangle of circumradius r (Inigo Quilez's sdEquilateralTriangle)."""
    k = math.sqrt(3.0)
    side = r * k / 2
    tx, ty = x.abs() - side, -y + side / k
    flip = tx + k * ty > 0
    tx, ty = torch.where(flip, (tx - k * ty) / 2, tx), torch.where(flip, (-k * tx - ty) / 2, ty)
    tx = tx - torch.minimum(torch.maximum(tx, -2 * side), torch.zeros_like(tx))
    return -torch.sqrt(tx**2 + ty**2) * torch.sign(ty)


_SDF = {"circle": _circle, "square": _square, "triangle": _triangle, "diamond": _diamond}

# Each kind's border as a closed polygon around its centre, in units of the radius (y down); the
# circle as a 64-gon. These are the shapes _SDF draws: square half-side 0.8 r, diamond half-diagonal
# 0.75 r * sqrt(2), triangle of circumradius r with its apex up.
_D = 0.75 * math.sqrt(2)
POLYGONS = {
    "circle": [(math.cos(2 * math.pi * i / 64), math.sin(2 * math.pi * i / 64)) for i in range(64)],
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.0), (math.sqrt(3) / 2, 0.5), (-math.sqrt(3) / 2, 0.5)],
    "diamond": [(0.0, -_D), (_D, 0.0), (0.0, _D), (-_D, 0.0)],
}
TOP = {k: -min(y for _, y in pts) for k, pts in POLYGONS.items()}  # the topmost point is TOP[kind] * r above the centre


def border_points(kind: int, n: int) -> torch.Tensor:
    """(n, 2) points evenly spaced by arc length along the border of KINDS[kind] (unit radius, centre 0)."""
    v = torch.tensor(POLYGONS[KINDS[kind]] + POLYGONS[KINDS[kind]][:1], dtype=torch.float64)  # closed
    seg = (v[1:] - v[:-1]).norm(dim=1)
    at = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])  # arc length at each vertex
    u = torch.arange(n, dtype=torch.float64) / n * at[-1]
    i = (torch.searchsorted(at, u, right=True) - 1).clamp(max=len(seg) - 1)
    return (v[i] + (v[i + 1] - v[i]) * ((u - at[i]) / seg[i])[:, None]).float()


def _sdf(kind: torch.Tensor, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (image units, negative inside) of each scene's shape, centred at 0.
    p: (B, H, W, 2) positions relative to the centre; r: (B, 1, 1)."""
    out = torch.empty(p.shape[:-1], device=p.device)
    for k, name in enumerate(KINDS):  # each kind's formula only on the scenes of that kind
        idx = (kind == k).nonzero().flatten()
        if len(idx):
            out[idx] = _SDF[name](p[idx, ..., 0], p[idx, ..., 1], r[idx])
    return out


def coverage(scenes: Scenes, size: int, outline: float | None = None) -> torch.Tensor:
    """(B, H, W) in [0, 1]: how much of each pixel the shape covers (anti-aliased).
    outline=w gives instead a ring of width w pixels along the shape's border."""
    ticks = (torch.arange(size, device=scenes.center.device) + 0.5) / size
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), dim=-1)  # (H, W, 2) x, y
    d = _sdf(scenes.kind, grid[None] - scenes.center[:, None, None, :], scenes.radius[:, None, None]) * size
    if outline is not None:
        d = d.abs() - outline / 2  # distance to the border, in pixels
    return (0.5 - d).clamp(0, 1)


STYLES = ("flat", "shaded")  # "shaded": lit from above, the style of TinySD's fine-tuned variant
SHADE = 0.6  # "shaded": the fill darkens by this fraction from the top of the shape to its bottom


def render(scenes: Scenes, size: int = 64, style: str = "flat") -> torch.Tensor:
    """(B, 3, size, size) RGB images in [0, 1]."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    table = colour_table().to(scenes.center.device)
    a = coverage(scenes, size)[:, None]  # (B, 1, H, W)
    fill, bg = table[scenes.fill][:, :, None, None], table[scenes.bg][:, :, None, None]
    if style == "shaded":  # brightness falls linearly down the shape's height
        y = ((torch.arange(size, device=a.device) + 0.5) / size)[None, None, :, None]  # (1, 1, H, 1)
        top, height = (scenes.center[:, 1] - scenes.radius), 2 * scenes.radius
        fill = fill * (1 - SHADE * ((y - top[:, None, None, None]) / height[:, None, None, None]).clamp(0, 1))
    return a * fill + (1 - a) * bg
