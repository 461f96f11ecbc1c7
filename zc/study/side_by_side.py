"""The successors side by side: what each design costs and how well it controls, read from the stored
sweeps (benchmarks/results/<machine>/), as the text table and the two-panel plot chapter 13 prints; the
wiring diagrams that show where each design meets the locked UNet; and whether two controls of one
design compose (the paper's §3.4).

    rows, baselines = stored_rows("benchmarks/results/cpu")
    print(format_side_by_side(side_by_side(rows, speed)))
"""
from __future__ import annotations

import torch

from .. import designs
from ..sd import image_size
from .stats import clipped_yerr

__all__ = ["SUCCESSORS", "BASELINES", "WIRING", "composition", "stored_rows", "side_by_side",
           "format_side_by_side", "plot_side_by_side", "draw_wiring"]


def composition(pipe, modules: dict, test, seed: int = 0, steps: int = 20) -> dict:
    """Whether two controls of one design compose (the paper's §3.4 for ControlNets): `modules` maps
    two conditions to their trained modules; `test` (a PairedData) gives the scenes, and each module reads
    its own condition drawn for them. With an empty prompt, each control alone and both together;
    each condition's own measure (conditions.get(c).score) on each image set.
    Returns {"<c> alone": {measure: score}, "both": {measure: score}}."""
    from ..sample import sample
    from ..world import conditions

    size = image_size(pipe)
    conds = {c: conditions.draw(c, test.scenes, size) for c in modules}
    keys = [conditions.get(c).score for c in modules]
    runs = {f"{c} alone": ([m], [conds[c]]) for c, m in modules.items()}
    runs["both"] = (list(modules.values()), list(conds.values()))
    out = {}
    for label, (mods, cs) in runs.items():
        single = len(mods) == 1
        kw = designs.sample_kwargs(mods[0] if single else mods, cs[0] if single else cs)
        x = sample(pipe, prompts=[""] * len(test), num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(seed), **kw)
        m = conditions.measure(x, test.scenes)
        out[label] = {k: m[k] for k in keys}
    return out



# the side-by-side's rows: the reference and the designs the sweep trains as its successors (zc.designs)
SUCCESSORS = [designs.REFERENCE, *(d.name for d, _ in designs.in_sweep("successors"))]
# chapters 10 and 12's baselines (the paper's Fig. 8 designs, the whole UNet fine-tuned), with their reference
BASELINES = [designs.REFERENCE, *dict.fromkeys(d.name for g in ("architecture", "locked copy")
                                               for d, _ in designs.in_sweep(g))]
# the recheck's one baseline beside the successors: the cheapest control it reran on draws, the condition added
# directly (the architecture run that only the cpu preset trains; lite, also rerun, is in the ci preset too)
DIRECT = next(d.name for d, r in designs.in_sweep("architecture") if "ci" not in r.presets)


def stored_rows(results) -> tuple[list[dict], list[dict]]:
    """The stored sweeps the side-by-side reads, under `results` (benchmarks/results/<machine>/):
    1. the successors' sweep (successors/results.csv, its ControlNet rows from the recheck on draws),
       with the recheck's "condition added directly" rows on the same conditions (same protocol,
       seeds, data and held-out scenes);
    2. the baselines of chapter 10's stored sweep as they are (ablations-zoo/results.csv: latents from
       the VAE posterior's mean, before #28's fix), with that sweep's own ControlNet rows as their
       reference: compare within a block, not across."""
    from pathlib import Path

    from .stats import read_csv

    results = Path(results)
    rows = read_csv(results / "successors" / "results.csv")
    conds = {r["condition"] for r in rows}
    rows += [r for r in read_csv(results / "sweep-recheck" / "results.csv")
             if r["name"] == DIRECT and r["condition"] in conds]
    baselines = [r for r in read_csv(results / "ablations-zoo" / "results.csv") if r["name"] in BASELINES]
    rank = {c: i for i, c in enumerate(dict.fromkeys(r["condition"] for r in rows))}
    baselines.sort(key=lambda r: rank.get(r["condition"], len(rank)))  # the successors' conditions first
    return rows, baselines


def side_by_side(rows: list[dict], speed: list[dict], settings=("none", "perfect")) -> list[dict]:
    """One row per design of a sweep (the ablation runner's results.csv rows, every condition) joined
    with what it costs (benchmarks/designs_speed.py rows: params, pct_unet, train_s, image_s): its
    trainable parameters and % of the UNet, s per training step and per image (and x ControlNet's),
    and per condition and prompt setting the final score's mean and 95% half-width over seeds."""
    from .stats import summarize

    cost = {r["design"]: r for r in speed}
    ref = cost.get(designs.REFERENCE)
    summary = summarize(rows, settings)
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        c = cost.get(name, {})
        row = {"design": name, "params": c.get("params"), "pct_unet": c.get("pct_unet"),
               "train_s": c.get("train_s"), "image_s": c.get("image_s"),
               "train_x": c["train_s"] / ref["train_s"] if c and ref else None,
               "image_x": c["image_s"] / ref["image_s"] if c and ref else None, "scores": {}}
        for s in summary:
            if s["name"] == name:
                row["scores"][s["condition"]] = {p: (s[p], s[p + "_ci"], s["seeds"]) for p in settings}
        out.append(row)
    return out


def format_side_by_side(table: list[dict], settings=("none", "perfect")) -> str:
    """The side-by-side as text that fits the book's width: what each design costs, then its score per
    condition and prompt setting (mean ± 95% half-width over seeds; "—" where it has no run)."""
    from ..world.conditions import get as condition
    from ..world.conditions import name as measure_name

    w = max(22, 2 + max(len(r["design"]) for r in table))  # the design column
    lines = [f"{'design':{w}s}{'trainable':>11s}{'% UNet':>8s}{'s/step':>8s}{'x':>6s}{'s/image':>9s}{'x':>6s}"]
    for r in table:
        x = [f"{v:6.2f}" if v is not None else f"{'—':>6s}" for v in (r["train_x"], r["image_x"])]
        lines.append(f"{r['design']:{w}s}" + (f"{r['params']:11,d}{r['pct_unet']:8.1f}{r['train_s']:8.3f}{x[0]}"
                                             f"{r['image_s']:9.3f}{x[1]}" if r["params"] is not None
                                             else f"{'(not timed)':>48s}"))
    conds = list(dict.fromkeys(c for r in table for c in r["scores"]))
    for i in range(0, len(conds), 2):  # two conditions a block: the book's width
        block = conds[i:i + 2]
        lines += ["", f"{'':{w}s}" + "".join(f"{c:^{14 * len(settings)}s}" for c in block),
                  f"{'':{w}s}" + "".join(f"{'no prompt' if p == 'none' else p:>14s}" for _ in block for p in settings)]
        for r in table:
            cells = []
            for c in block:
                for p in settings:
                    m, half, n = r["scores"].get(c, {}).get(p, (None, None, 0))
                    cells.append(f"{'—':>14s}" if n == 0 else f"{m:8.3f} exact" if n > 1 and half == 0
                                 else f"{m:8.3f} ±{half:4.2f}" if n > 1 else f"{m:8.3f} 1 run")
            lines.append(f"{r['design']:{w}s}" + "".join(cells))
    keys = ", ".join(f"{c}: {measure_name(condition(c).score)}" for c in conds)
    lines += ["(x: against ControlNet; scores: mean ± 95% half-width over seeds)", f"({keys})"]
    return "\n".join(lines)


def plot_side_by_side(table: list[dict], setting: str = "none", bounds: dict | None = None):
    """Two panels a reader takes in at a glance: each design's final score (one marker per condition,
    95% interval as a bar) against its trainable parameters, and against its seconds per image.
    `bounds`: {condition: (no control, ceiling)} drawn as dotted / dashed lines."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    conds = list(dict.fromkeys(c for r in table for c in r["scores"]))
    markers = dict(zip(conds, "osD^v"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    colour = {r["design"]: f"C{i}" for i, r in enumerate(table)}  # one colour per design in both panels
    for ax, key, label in ((axes[0], "params", "trainable parameters (log scale)"),
                           (axes[1], "image_s", "seconds per image (20 steps, CFG)")):
        for r in (t for t in table if t[key] is not None):
            for c in conds:
                if c in r["scores"]:
                    m, half, n = r["scores"][c][setting]
                    ax.errorbar(r[key], m, yerr=clipped_yerr([m], [half]) if n > 1 else None, fmt=markers[c],
                                color=colour[r["design"]], capsize=3)
        # what each score sits between; labels a few hundredths apart go one above, one below their lines
        lines = sorted((y, ls, f"{what}, {c}") for c, (low, high) in (bounds or {}).items()
                       for y, ls, what in ((low, ":", "no control"), (high, "--", "ceiling")))
        for i, (y, ls, text) in enumerate(lines):
            ax.axhline(y, color="0.4", ls=ls, lw=1)
            crowded = i + 1 < len(lines) and lines[i + 1][0] - y < 0.06
            ax.annotate(text, (0.99, y), xycoords=("axes fraction", "data"), fontsize=8, ha="right",
                        va="top" if crowded else "bottom", color="0.3")
        ax.set_xlabel(label)
        if key == "params":
            ax.set_xscale("log")
    axes[0].set_ylabel(f"score, {'no' if setting == 'none' else setting} prompt (held-out)")
    axes[0].set_ylim(0, 1.05)
    # one key for the colours (designs) and one for the markers (conditions), not one per pair
    handles = [Line2D([0], [0], color=colour[r["design"]], lw=4) for r in table]
    handles += [Line2D([0], [0], marker=markers[c], color="0.3", ls="") for c in conds]
    fig.legend(handles, [r["design"] for r in table] + conds, fontsize=9, ncol=min(len(handles), 4),
               loc="lower center")  # below the panels, clear of the title
    fig.tight_layout(rect=(0, 0.16, 1, 0.93))  # room for the legend below and a title above
    return fig


# what each design changes in ControlNet's y_c = F(x; Θ) + Z(F(x + Z(c); Θc); Z), as a panel title
WIRING = {d.name: d.wiring for d in designs.DESIGNS.values() if d.wiring and d.name in SUCCESSORS}


def draw_wiring(name: str, unet_config, ax) -> None:
    """Where design `name` meets the locked UNet, drawn as chapter 4 draws ControlNet (the paper's
    Fig. 3): the locked encoder going down (blue), the middle block, the decoder going up with a skip
    from each level, and the control (orange) with its arrows; "+" marks where something is added.
    The levels come from the UNet's config (TinySD: 3, SD 1.5: 4)."""
    from matplotlib.patches import FancyBboxPatch

    if name not in WIRING:
        raise ValueError(f"no wiring drawn for {name!r}; choose from {list(WIRING)}")
    drawn = designs.get(name).drawn_as
    locked, control, cond = "#cfe2f3", "#fce5cd", "#d9ead3"
    n = len(unet_config.block_out_channels)

    def box(x, y, w, text, colour, h=0.55):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, "round,pad=0.03", fc=colour, ec="0.3"))
        ax.text(x, y, text, ha="center", va="center", fontsize=7)

    def arrow(a, b, plus=False, style="->", ls="-", rad=0.0):
        ax.annotate("", b, a, arrowprops={"arrowstyle": style, "lw": 0.8, "color": "0.25", "ls": ls,
                                          "connectionstyle": f"arc3,rad={rad}"})
        if plus:
            ax.text(*b, "+", ha="center", va="center", fontsize=8, weight="bold",
                    bbox={"boxstyle": "circle,pad=0.08", "fc": "white", "ec": "0.25"})

    ys = [n - i for i in range(n)]  # level i's row; the middle block below the last
    for i, y in enumerate(ys):
        box(0, y, 1.1, f"enc L{i + 1}", locked)
        box(3.2, y, 1.1, f"dec L{i + 1}", locked)
        arrow((0.6, y), (2.6, y), ls="--")  # the skip
        if i:
            arrow((0, ys[i - 1] - 0.3), (0, y + 0.3))
            arrow((3.2, y + 0.3), (3.2, ys[i - 1] - 0.3), style="<-")
    box(1.6, 0, 1.1, "middle", locked)
    arrow((0, ys[-1] - 0.3), (1.05, 0))
    arrow((2.15, 0), (3.2, ys[-1] - 0.3))
    box(0, n + 1, 0.9, "z_t", "white")
    arrow((0, n + 0.7), (0, ys[0] + 0.3))
    if drawn != "copy":
        box(-2.6, n + 1, 0.9, "c", cond)
    if drawn == "copy":  # the copy on the right, as chapter 4 draws it: z_t and c enter it at the top
        for i, y in enumerate(ys):
            box(5.3, y, 1.1, f"copy L{i + 1}", control)
            arrow((4.75, y), (3.75, y), plus=True)  # Z(copy's feature) added to the skip this level receives
            if i:
                arrow((5.3, ys[i - 1] - 0.3), (5.3, y + 0.3))
        box(5.3, 0, 1.1, "copy mid", control)
        arrow((5.3, ys[-1] - 0.3), (5.3, 0.3))
        arrow((4.75, 0), (2.15, 0), plus=True)
        box(6.5, n + 1, 0.9, "c", cond)
        arrow((6.5, n + 0.7), (5.3, ys[0] + 0.3), plus=True)
        arrow((0.45, n + 1), (5.3, ys[0] + 0.3))  # z_t into the copy too
    elif drawn == "pyramid":
        for i, y in enumerate(ys):
            box(-1.7, y, 1.1, f"adapter {i + 1}", control)
            arrow((-1.15, y), (-0.55, y), plus=True)
            if i:
                arrow((-1.7, ys[i - 1] - 0.3), (-1.7, y + 0.3))
        arrow((-2.6, n + 0.7), (-1.7, ys[0] + 0.3))
        ax.text(-1.7, 0, "once per image", ha="center", fontsize=7, style="italic")
    elif drawn == "one point":
        box(-1.7, ys[0], 1.1, "branch (c, t)", control)
        arrow((-2.6, n + 0.7), (-1.7, ys[0] + 0.3))
        arrow((-1.7, ys[0] - 0.3), (0, (ys[0] + ys[1]) / 2 if n > 1 else ys[0] - 0.5), plus=True)
        ax.text(-1.7, ys[0] - 0.75, "cross-normalised", ha="center", fontsize=7, style="italic")
    elif drawn == "beside":
        for i, y in enumerate(ys):
            box(-1.7, y, 0.8, f"xs {i + 1}", control)
            arrow((-0.55, y + 0.1), (-1.3, y + 0.1))  # the control reads the base
            arrow((-1.3, y - 0.1), (-0.55, y - 0.1), plus=True)  # and corrects it
            arrow((-1.7, y - 0.3), (2.65, y - 0.2), plus=True, ls=":", rad=0.25)  # its skip joins the decoder
            if i:
                arrow((-1.7, ys[i - 1] - 0.3), (-1.7, y + 0.3))
        box(-1.7, 0, 0.8, "xs mid", control)
        arrow((-1.3, 0), (1.05, 0), plus=True)
        arrow((-1.7, ys[-1] - 0.3), (-1.7, 0.3))
        arrow((-2.6, n + 0.7), (-1.7, ys[0] + 0.3))
    ax.set_xlim((-0.8, 7.2) if drawn == "copy" else (-3.3, 4.0))
    ax.set_ylim(-0.6, n + 1.5)
    ax.set_title(f"{name}: {WIRING[name]}", fontsize=8)
    ax.axis("off")
