"""Chapter 14's figures and table: ControlNet on SD3's transformer (MMDiT), from the model's config and the
stored sweep (`python -m zc.study.ablations --preset sd3`).

    draw_mmdit(transformer.config, depth, ax)     the base's joint blocks, the copy, and which residual each
                                                  base block adds (residual_index)
    depth_table(rows, curves, speed)              per design: trainable parameters, s/step, s/image, the
                                                  score at steps 300 and 1000 (95% intervals over seeds)
"""
from __future__ import annotations

import statistics
from pathlib import Path

from .. import designs
from ..controls.mmdit_controlnet import residual_index
from .stats import TIE, interval_state, non_inferiority_state, paired_difference, read_csv, t_interval

__all__ = ["REFERENCE", "draw_mmdit", "score_at", "depth_table", "format_depth_table", "unet_reference",
           "bounds_text", "plot_curves", "plot_final", "verdicts", "sudden", "ASSUMED_MFU", "budget"]

REFERENCE = designs.reference_for("transformer").name  # the sweep's reference run: the copy of half the blocks


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
        box(j * step, 2.45, 0.8, 1.3, f"B{j}", locked)
    arrow((-0.8, 2.0), (-0.4, 2.0))
    arrow((-0.8, 2.9), (-0.4, 2.9))
    box(-1.3, 0.2, 1.0, 0.5, "Z_in(P_c(c))", zero)
    for i in range(depth):
        box(i * step, 0.2, 0.8, 0.8, f"copy B{i}", control)
        box(i * step, 1.0, 0.6, 0.3, f"Z{i}", zero)
        arrow((i * step, 0.6), (i * step, 0.85))
    arrow((-0.8, 0.2), (-0.4, 0.2))
    for j in range(m - 1):  # residual i feeds base block j: drawn from Z_i's top to block j's bottom
        i = residual_index(j, m, depth)
        arrow((i * step, 1.15), (j * step, 1.8), connectionstyle="arc3,rad=0.0")
    ax.text((m - 1) * step, 1.55, "no residual\n(last block)", ha="center", fontsize=6)
    ax.text(-1.8, 3.6, f"{m} joint blocks, {side}x{side} = {side * side} image tokens of width {width}; the "
            f"ControlNet copies {depth}: block j adds Z_i, i = floor(j / ({m} / {depth})), but the last", fontsize=7)
    ax.set_xlim(-2.0, m * step)
    ax.set_ylim(-0.4, 3.9)
    ax.axis("off")


def score_at(curves: list[dict], name: str, step: int, key: str = "shape_iou") -> list[float]:
    """One run's score from the loop's own evaluations (curves.csv) at `step`, one value per seed."""
    return [float(r[key]) for r in curves if r["name"] == name and int(r["step"]) == step]


def depth_table(rows: list[dict], curves: list[dict], speed: list[dict] | None = None,
                params: dict[str, int] | None = None) -> list[dict]:
    """Per run name (in the sweep's order): seconds per training step (the sweep's own, median over seeds),
    the cost rows of designs_speed (by design name) where given, the loop's shape IoU at steps 300 and
    1000 (mean and 95% half-width over seeds), and the final score with no prompt and the full prompt."""
    names = list(dict.fromkeys(r["name"] for r in rows))
    cost = {r["design"]: r for r in speed or []}
    out = []
    for name in names:
        mine = [r for r in rows if r["name"] == name]
        row = {"name": name, "seeds": len(mine), "trainable": (params or {}).get(name, 0),  # median: a run slowed
               "sec_per_step": statistics.median(float(r["sec_per_step"]) for r in mine)}  # by another job moves less
        if name in cost:  # designs_speed times each design as registered (the copy of half the blocks)
            row["image_s"] = cost[name]["image_s"]
        for step in (300, 1000):
            row[f"iou_{step}"] = t_interval(score_at(curves, name, step))
        for setting in ("none", "perfect"):
            row[setting] = t_interval([float(r[setting]) for r in mine])
        out.append(row)
    return out


def format_depth_table(table: list[dict]) -> str:
    """The table as chapter 14 prints it: mean ± 95% half-width over seeds."""
    head = (f"{'design':30s} {'trainable':>10s} {'s/step':>7s} {'s/image':>7s} {'IoU @300':>12s} {'IoU @1000':>12s}"
            f" {'no prompt':>12s} {'full prompt':>12s}")
    lines = [head, "-" * len(head)]
    for r in table:
        cells = [f"{m:.2f} ± {h:.2f}" for m, h in (r["iou_300"], r["iou_1000"], r["none"], r["perfect"])]
        image = f"{r['image_s']:7.3f}" if "image_s" in r else f"{'':7s}"
        lines.append(f"{r['name']:30s} {r['trainable']:10,d} {r['sec_per_step']:7.3f} {image} "
                     + " ".join(f"{c:>12s}" for c in cells))
    lines.append("(IoU @step: the loop's own evaluations, full prompt, 16 scenes; no / full prompt: after 1000 "
                 "steps, 32 other scenes; s/step: the sweep's, median over seeds; s/image: designs_speed's)")
    return "\n".join(lines)


def unet_reference(folder: Path, name: str = designs.REFERENCE) -> str:
    """The UNet ControlNet on TinySD under the same protocol (chapter 10's recheck sweep: 1000 steps, batch 16,
    5k pairs, the same 32 scenes), as one line beside the table. Its loop evaluated at step 250, not 300."""
    rows = [r for r in read_csv(Path(folder) / "results.csv") if r["name"] == name and r["condition"] == "outline"]
    curves = [r for r in read_csv(Path(folder) / "curves.csv") if r["condition"] == "outline"]
    cells = [t_interval(score_at(curves, name, 250)), t_interval(score_at(curves, name, 1000)),
             *(t_interval([float(r[k]) for r in rows]) for k in ("none", "perfect"))]
    step = statistics.median(float(r["sec_per_step"]) for r in rows)
    return (f"{name + ' on TinySD (UNet)':30s} {'':>10s} {step:7.3f} {'':7s} "
            + " ".join(f"{f'{m:.2f} ± {h:.2f}':>12s}" for m, h in cells) + "   (IoU @250, not @300)")


def bounds_text(folder: Path) -> str:
    """What every score sits between, on the sweep's scenes: the base alone and the training renders
    (references.csv, written by the sweep's --references run), mean over seeds."""
    rows = read_csv(Path(folder) / "references.csv")
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        none, perfect = (sum(float(r[k]) for r in mine) / len(mine) for k in ("none", "perfect"))
        out.append(f"{name}: {none:.2f} with no prompt, {perfect:.2f} with the full prompt")
    return "bounds — " + "; ".join(out)


def plot_curves(curves: list[dict], ax) -> None:
    """Each run's mean shape IoU over training (the loop's evaluations), with its 95% band over seeds."""
    for i, name in enumerate(dict.fromkeys(r["name"] for r in curves)):
        per: dict[int, list[float]] = {}
        for r in curves:
            if r["name"] == name:
                per.setdefault(int(r["step"]), []).append(float(r["shape_iou"]))
        steps = sorted(per)
        stats = [t_interval(per[s]) for s in steps]
        mean = [m for m, _ in stats]
        half = [h if h != float("inf") else 0.0 for _, h in stats]
        ax.plot(steps, mean, color=f"C{i}", label=name, lw=2 if name == REFERENCE else 1)
        ax.fill_between(steps, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)],
                        color=f"C{i}", alpha=0.12)
    ax.set_xlabel("training step")
    ax.set_ylabel("shape IoU (full prompt)")
    ax.set_title("during training (mean ± 95% over 3 seeds)", fontsize=9)
    ax.legend(fontsize=6)


def plot_final(table: list[dict], ax) -> None:
    """Each run's final shape IoU with no prompt and the full prompt, with 95% intervals."""
    x = range(len(table))
    for k, (setting, label) in enumerate((("none", "no prompt"), ("perfect", "full prompt"))):
        ax.errorbar([i + 0.15 * (2 * k - 1) for i in x], [r[setting][0] for r in table],
                    yerr=[r[setting][1] for r in table], fmt="o", capsize=3, label=label)
    ax.set_xticks(list(x), [r["name"].replace("MMDiT ", "").replace(", ", ",\n") for r in table], fontsize=7)
    ax.set_ylabel("shape IoU after 1000 steps")
    ax.set_title("at the end (mean ± 95% over 3 seeds)", fontsize=9)
    ax.legend(fontsize=7)


def verdicts(rows: list[dict], settings=("none", "perfect")) -> list[str]:
    """Each run against the reference (half the blocks copied), paired by seed, by the book's interval rules
    (zc.study.stats): "better" when the difference (run − reference) would support a claimed gain
    (interval_state: its whole 95% interval above 0 and not inside the ±TIE band), "worse" when it would for
    the reference, "no worse" when it passes the non-inferiority rule (whole interval above −TIE) without
    being better, "unclear" otherwise."""
    def word(d):
        flipped = {"mean": -d["mean"], "low": -d["high"], "high": -d["low"], "seeds": d["seeds"]}
        if interval_state(d) == "supports":
            return "better"
        if interval_state(flipped) == "supports":
            return "worse"
        return "no worse" if non_inferiority_state(d) == "supports" else "unclear"

    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        if name == REFERENCE:
            continue
        parts = []
        for setting in settings:
            d = paired_difference(rows, name, REFERENCE, setting)
            parts.append(f"{setting} {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] {word(d)}")
        out.append(f"{name:29s} " + "; ".join(parts))
    out.append(f"(run minus {REFERENCE}, half the blocks copied, paired by seed; tie band ±{TIE})")
    return out


def sudden(curves: list[dict], names: list[str] | None = None) -> list[str]:
    """Chapter 6's measure of sudden convergence per run and seed: the largest rise of the loop's shape IoU
    within a tenth of the run (claims.suddenness), as a share of its whole rise, and where it happened."""
    from .claims import suddenness

    out = []
    for name in names or list(dict.fromkeys(r["name"] for r in curves)):
        parts = []
        for seed in sorted({int(r["seed"]) for r in curves if r["name"] == name}):
            curve = sorted((int(r["step"]), float(r["shape_iou"])) for r in curves
                           if r["name"] == name and int(r["seed"]) == seed)
            window = curve[-1][0] / 10
            share = suddenness(curve, window)
            jump = max(zip(curve, curve[1:]), key=lambda p: p[1][1] - p[0][1])
            parts.append(f"seed {seed}: {share:.0%} of the rise within {window:.0f} steps "
                         f"(largest jump {jump[0][1]:.2f} -> {jump[1][1]:.2f}, steps {jump[0][0]}-{jump[1][0]})"
                         if share is not None else f"seed {seed}: too sparse to tell")
        out.append(f"{name}: " + "; ".join(parts))
    return out


ASSUMED_MFU = 0.4  # share of a GPU's peak half-precision FLOP/s a large transformer reaches: assumed, not measured


def budget(pipe, depth: int, train_steps: int, batch: int, images: int, sample_steps: int = 20,
           text_tokens: int | None = None) -> str:
    """What chapter 14's live run would cost on each GPU of zc.study.budget, estimated from FLOPs: per image and
    step, 2 FLOPs per parameter per token forward; training runs the base forward and back through its
    activations (~4x) and the copy forward and back through activations and weights (~6x); a CFG sampler step
    runs both forward twice. Tokens: the image's patches and the text's (CLIPs' and T5 slot). At ASSUMED_MFU of
    each card's peak: an estimate, nothing here measured on a GPU."""
    from .budget import PEAK_FLOPS
    from ..sd3 import t5_tokens

    c = pipe.transformer.config
    base = sum(p.numel() for p in pipe.transformer.parameters())
    per_block = sum(p.numel() for p in pipe.transformer.transformer_blocks[0].parameters())
    copy = depth * per_block
    tokens = (c.sample_size // c.patch_size) ** 2 + (text_tokens or pipe.tokenizer.model_max_length + t5_tokens(pipe))
    train = train_steps * batch * tokens * (4 * base + 6 * copy)
    sample = images * sample_steps * 2 * tokens * 2 * (base + copy)
    lines = [f"{'GPU':16s} {'train min':>10s} {'sample min':>11s}  basis"]
    for gpu, peak in PEAK_FLOPS.items():
        speed = peak * ASSUMED_MFU
        lines.append(f"{gpu:16s} {train / speed / 60:10.1f} {sample / speed / 60:11.1f}  estimate: FLOPs at "
                     f"{ASSUMED_MFU:.0%} of peak")
    lines.append(f"({base / 1e9:.2f}B-parameter transformer, a copy of {depth} blocks ({copy / 1e9:.2f}B), {tokens} "
                 f"tokens; {train_steps} steps at batch {batch}, {images} images x {sample_steps} steps with CFG)")
    return "\n".join(lines)
