"""The ablation sweep's tables and figures (chapters 10 and 12): the summary over seeds as text
(format_table), its scores per prompt setting as bars (plot_settings), its learning curves
(plot_curves), and the whole of one condition's sweep beside its references (show_sweep); two trainers'
learning curves side by side (plot_trainers: benchmarks/curves_vs_script.py's rows, chapters 6 and 14).

    summary = stats.summarize(stats.read_csv("benchmarks/results/cpu/ablations-zoo/results.csv"))
    print(format_table(summary))
"""
from __future__ import annotations

from .. import designs
from ..world import conditions
from .stats import (
    CURVE_MEASURES,
    clipped_yerr,
    curve_key,
    paired_difference,
    sample_efficiency,
)
from .stats import SETTINGS as PROMPTS

__all__ = ["format_table", "plot_settings", "plot_curves", "plot_trainers", "trainer_verdict", "show_sweep"]


def format_table(summary: list[dict], columns=PROMPTS) -> str:
    """Plain-text table, 100 columns: mean ± 95% t-interval half-width over seeds (± - for one seed;
    "exact" where every seed gave the same value)."""
    ci = lambda v: "exact" if v == 0 else f"±{v:4.2f}" if v != float("inf") else "±  - "  # noqa: E731  (exact: every seed the same)
    head = {"insufficient": "insuff.", "conflicting": "conflict.", "base_kind_accuracy": "SD kind",
            "base_colour_accuracy": "SD colour", "final_loss": "train loss", "sec_per_step": "s / step"}
    lines = [f"{'condition':10s}{'run':33s}{'seeds':>4s}" + "".join(f"{head.get(c, c):>13s}" for c in columns)]
    for s in summary:
        lines.append(f"{s['condition'][:9]:10s}{s['name']:33s}{s['seeds']:4d}"
                     + "".join(f"{s[c]:7.3f} {ci(s[c + '_ci'])}" for c in columns))
    return "\n".join(lines)


def plot_settings(summary: list[dict], title: str = "", ax=None):
    """Grouped bars: the condition's score per prompt setting, one bar per run, the 95% t-interval
    over seeds as error bars (none for a single seed)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.4))
    w = 0.8 / len(summary)
    for i, s in enumerate(summary):
        ax.bar([j + i * w for j in range(len(PROMPTS))], [s[p] for p in PROMPTS], w, label=s["name"],
               yerr=clipped_yerr([s[p] for p in PROMPTS], [s[p + "_ci"] for p in PROMPTS]) if s["seeds"] > 1 else None,
               capsize=2)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(PROMPTS))], [f"{p} prompt" for p in PROMPTS])
    keys = {conditions.get(s.get("condition", "outline")).score for s in summary}
    ax.set_ylabel(" / ".join(sorted(k.replace("_", " ").replace("iou", "IoU") for k in keys)) + " (held-out)",
                  fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(title)
    return ax


def plot_curves(curves: list[dict], names=None, ax=None, per_seed: bool = True):
    """Held-out fidelity (perfect prompt) against training steps: a thin line per seed (per_seed),
    a thick mean."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    names = names or list(dict.fromkeys(r["name"] for r in curves))
    key = curve_key(curves)
    for i, name in enumerate(names):
        rows = [r for r in curves if r["name"] == name]
        seeds = sorted({r["seed"] for r in rows})
        for s in seeds if per_seed else ():
            pts = sorted((r["step"], r[key]) for r in rows if r["seed"] == s)
            ax.plot(*zip(*pts), color=f"C{i}", lw=0.6, alpha=0.5)
        steps = sorted({r["step"] for r in rows})
        mean = [sum(r[key] for r in rows if r["step"] == st) / sum(r["step"] == st for r in rows) for st in steps]
        ax.plot(steps, mean, "o-", color=f"C{i}", ms=3, label=f"{name} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
    ax.set_xlabel("training step")
    label = CURVE_MEASURES[key]
    ax.set_ylabel(f"{label} (held-out)", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return ax


def plot_trainers(rows: list[dict], condition: str, ax) -> None:
    """One condition's learning curves of the trainers in benchmarks/curves_vs_script.py's rows (trainer, seed,
    step, value): a thin line per seed, the mean over seeds thick (zc.train blue, the others in the next colours,
    by their order in the rows), and the bounds (rows with no step) as grey lines."""
    rows = [r for r in rows if r["condition"] == condition]
    trainers = list(dict.fromkeys(r["trainer"] for r in rows if r["step"] is not None))
    for i, trainer in enumerate(trainers):
        colour = "C0" if trainer == "zc.train" else f"C{i + 1}"
        runs = [r for r in rows if r["trainer"] == trainer]
        seeds = sorted({r["seed"] for r in runs})
        for s in seeds:
            ax.plot(*zip(*sorted((r["step"], r["value"]) for r in runs if r["seed"] == s)), color=colour, lw=0.5,
                    alpha=0.35)
        steps = sorted({r["step"] for r in runs})
        mean = [sum(r["value"] for r in runs if r["step"] == t) / sum(r["step"] == t for r in runs) for t in steps]
        ax.plot(steps, mean, "o-", color=colour, ms=3, label=f"{trainer}, mean of {len(seeds)} seeds")
    for r, style in zip([r for r in rows if r["step"] is None], (":", "--")):
        ax.axhline(r["value"], color="0.4", ls=style, lw=0.9, label=r["trainer"])
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel(rows[0]["score"].replace("_", " ").replace("iou", "IoU") + " (held-out)")


def trainer_verdict(rows: list[dict], condition: str, ours: str = "zc.train", theirs: str | None = None) -> str:
    """Whether `ours` is no worse than `theirs` (default: the rows' first other trainer, the script), step by step:
    each step's non_inferiority_state of ours − theirs (Welch's 95% interval: the seeds are not paired), and the
    aggregate verdict, as one line: "outline   100 supports, 200 unclear, ...: partly"."""
    from .stats import non_inferiority_state, non_inferiority_verdict, welch_difference

    rows = [r for r in rows if r["condition"] == condition and r["step"] is not None]
    theirs = theirs or next(r["trainer"] for r in rows if r["trainer"] != ours)
    diffs, states = [], []
    for t in sorted({r["step"] for r in rows}):
        a, b = ([r["value"] for r in rows if (r["trainer"], r["step"]) == (tr, t)] for tr in (ours, theirs))
        diffs.append(welch_difference(a, b))
        states.append(f"{t} {non_inferiority_state(diffs[-1])}")
    return f"{condition:9s} {', '.join(states)}: {non_inferiority_verdict(diffs)}"


def show_sweep(summary: list[dict], curves: list[dict], bounds: list[dict], condition: str, names: list[str],
               title: str, columns=PROMPTS, per_seed: bool = True, rows: list[dict] | None = None,
               reference: str = designs.REFERENCE) -> None:
    """A stored sweep on one condition, as chapter 10 and its appendix show it: the table (mean ±
    95% half-width over seeds) ending with the no-control baseline and the ceiling (`bounds`:
    summarize(references rows)), the reference minus each run paired by seed (given the raw
    `rows`), the sample efficiency of each run's curve, and a figure: the prompt settings as bars
    (baseline and ceiling as lines) over the training curves."""
    import matplotlib.pyplot as plt

    part = [s for s in summary if s["condition"] == condition and s["name"] in names]
    if not part:
        print(f"no stored {condition} runs yet: scripts/ablation_sweep.sh")
        return
    ends = [b for b in bounds if b["condition"] == condition]
    print(format_table(part + [{**b, **{c: b.get(c, float("nan")) for c in columns},
                                **{c + "_ci": b.get(c + "_ci", float("inf")) for c in columns}} for b in ends], columns))
    if rows is not None and reference in names:  # the differences the readings quote
        print(f"\n{reference} minus each run, paired by seed: mean [95% interval]")
        for name in names:
            if name != reference and any(s["name"] == name for s in part):
                ds = [paired_difference(rows, reference, name, c, condition) for c in columns]
                print(f"{name:33s}" + "  ".join(f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" for d in ds))
    runs = [r for r in curves if r["condition"] == condition and r["name"] in names]
    print(f"\n{'run':33s}{'mean over training':>19s}{'reached':>9s}{'step':>7s}")
    for e in sample_efficiency(runs, condition):
        ci = f"±{e['auc_ci']:.2f}" if e["seeds"] > 1 else "±  - "
        step = "—" if e["steps_to"] is None else f"{e['steps_to']:.0f}"
        print(f"{e['name']:33s}{e['auc']:13.3f} {ci}{e['reached']:>9s}{step:>7s}")
    fig, ax = plt.subplots(2, 1, figsize=(11, 7))
    plot_settings(part, title, ax=ax[0])
    w = 0.8 / len(part)  # baseline and ceiling: a line across each setting's bars
    for b, style in zip(ends, (":", "--")):
        x0 = [j - w / 2 for j in range(len(PROMPTS))]
        ax[0].hlines([b[p] for p in PROMPTS], x0, [x + 0.8 for x in x0], "0.3", style, lw=1, label=b["name"])
    ax[0].set_ylim(0, 1.3)  # the legend above the bars, not over the ceiling line
    ax[0].set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax[0].legend(fontsize=7, ncol=4, loc="upper center")
    plot_curves(runs, ax=ax[1], per_seed=per_seed)
    ax[1].set_title(f"{condition}: its score during training (perfect prompt"
                    + ("; thin: seeds)" if per_seed else "; means over seeds)"))
    plt.tight_layout()
    plt.show()
