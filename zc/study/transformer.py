"""Chapter 14's figures and table: ControlNet on SD3's transformer (MMDiT), from the model's config and the
stored sweep (`python -m zc.study.ablations --preset sd3`).

    draw_mmdit(transformer.config, depth, ax)     the base's joint blocks, the copy, and which residual each
                                                  base block adds (residual_index)
    depth_table(rows, curves, speed)              per design: trainable parameters, s/step, s/image, the
                                                  score at steps 300 and 1000 (95% intervals over seeds)
"""
from __future__ import annotations

from ..controls.mmdit_controlnet import residual_index
from .stats import t_interval

__all__ = ["draw_mmdit", "score_at", "depth_table", "format_depth_table"]


def draw_mmdit(config, depth: int, ax) -> None:
    """The locked MMDiT's joint blocks left to right (blue: image tokens and text tokens side by side),
    the ControlNet's copy of the first `depth` below (orange), each copied block's zero Linear Z_i, and an
    arrow from residual i to every base block j with residual_index(j, M, depth) = i. Sizes from `config`
    (an SD3Transformer2DModel's)."""
    from matplotlib.patches import FancyBboxPatch

    m = config.num_layers
    residual_index(0, m, depth)  # a ValueError for a copy deeper than the base
    locked, control, zero = "#cfe2f3", "#fce5cd", "#f4cccc"
    width = config.num_attention_heads * config.attention_head_dim
    side = config.sample_size // config.patch_size

    def box(x, y, w, h, text, colour):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, "round,pad=0.02", fc=colour, ec="0.3"))
        ax.text(x, y, text, ha="center", va="center", fontsize=7)

    def arrow(a, b, **kw):
        ax.annotate("", b, a, arrowprops={"arrowstyle": "->", "lw": 0.7, "color": "0.3", **kw})

    step = 1.0
    box(-1.3, 2, 1.0, 0.5, "P(z_t)", "white")
    box(-1.3, 2.9, 1.0, 0.5, "text", "white")
    for j in range(m):
        box(j * step, 2.45, 0.8, 1.3, f"B{j + 1}", locked)
    arrow((-0.8, 2.0), (-0.4, 2.0))
    arrow((-0.8, 2.9), (-0.4, 2.9))
    box(-1.3, 0.2, 1.0, 0.5, "Z_in(P_c(c))", zero)
    for i in range(depth):
        box(i * step, 0.2, 0.8, 0.8, f"copy B{i + 1}", control)
        box(i * step, 1.0, 0.6, 0.3, f"Z{i + 1}", zero)
        arrow((i * step, 0.6), (i * step, 0.85))
    arrow((-0.8, 0.2), (-0.4, 0.2))
    for j in range(m):  # residual i feeds base block j: drawn from Z_i's top to block j's bottom
        i = residual_index(j, m, depth)
        arrow((i * step, 1.15), (j * step, 1.8), connectionstyle="arc3,rad=0.0")
    ax.text(-1.8, 3.6, f"{m} joint blocks, {side}x{side} = {side * side} image tokens of width {width}; the "
            f"ControlNet copies {depth}: block j adds Z_i, i = floor(j / ({m} / {depth}))", fontsize=7)
    ax.set_xlim(-2.0, m * step)
    ax.set_ylim(-0.4, 3.9)
    ax.axis("off")


def score_at(curves: list[dict], name: str, step: int, key: str = "shape_iou") -> list[float]:
    """One run's score from the loop's own evaluations (curves.csv) at `step`, one value per seed."""
    return [float(r[key]) for r in curves if r["name"] == name and int(r["step"]) == step]


def depth_table(rows: list[dict], curves: list[dict], speed: list[dict] | None = None) -> list[dict]:
    """Per run name (in the sweep's order): seconds per training step (the sweep's own, mean over seeds),
    the cost rows of designs_speed (by design name) where given, the loop's shape IoU at steps 300 and
    1000 (mean and 95% half-width over seeds), and the final score with no prompt and the full prompt."""
    names = list(dict.fromkeys(r["name"] for r in rows))
    cost = {r["design"]: r for r in speed or []}
    out = []
    for name in names:
        mine = [r for r in rows if r["name"] == name]
        row = {"name": name, "seeds": len(mine),
               "sec_per_step": sum(float(r["sec_per_step"]) for r in mine) / len(mine)}
        base = name.split(",")[0]
        if base in cost:
            row["image_s"] = cost[base]["image_s"]
        for step in (300, 1000):
            row[f"iou_{step}"] = t_interval(score_at(curves, name, step))
        for setting in ("none", "perfect"):
            row[setting] = t_interval([float(r[setting]) for r in mine])
        out.append(row)
    return out


def format_depth_table(table: list[dict], params: dict[str, int]) -> str:
    """The table as chapter 14 prints it; params: trainable parameters by run name."""
    head = (f"{'design':30s} {'trainable':>10s} {'s/step':>7s} {'IoU @300':>15s} {'IoU @1000':>15s} "
            f"{'no prompt':>15s} {'full prompt':>15s}")
    lines = [head, "-" * len(head)]
    for r in table:
        cells = [f"{m:.2f} ± {h:.2f}" for m, h in (r["iou_300"], r["iou_1000"], r["none"], r["perfect"])]
        lines.append(f"{r['name']:30s} {params.get(r['name'], 0):10,d} {r['sec_per_step']:7.3f} "
                     + " ".join(f"{c:>15s}" for c in cells))
    return "\n".join(lines)


