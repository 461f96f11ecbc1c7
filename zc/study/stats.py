"""The book's statistics, in one place: every number chapters 10-13 and the benchmarks compare is a
mean over seeds with a 95% t-interval, a paired difference (same seed: same data, same test noise)
with its interval, or a verdict read off such intervals by the rules below (TIE's band of no
difference, non-inferiority for claims of no loss). Stored sweeps are read by column name
(read_csv), never by position.

    rows = read_csv("benchmarks/results/cpu/ablations-zoo/results.csv")
    d = paired_difference(rows, "ControlNet", "ControlNet-lite", "none")   # {mean, low, high, seeds}
    interval_verdict([d])                                                 # "reproduced", "partly", ...
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from .. import designs

__all__ = ["TIE", "SETTINGS", "read_csv", "read_table", "t_interval", "summarize", "merge_sweeps", "paired_difference",
           "difference_interval", "welch_difference", "clipped_yerr", "auc", "auc_rows", "sample_efficiency", "CURVE_MEASURES", "curve_key",
           "interval_state", "non_inferiority_state", "interval_verdict",
           "non_inferiority_verdict"]

TIE = 0.02  # score differences whose whole 95% interval lies within +-TIE count as no difference


SETTINGS = ("none", "insufficient", "conflicting", "perfect")  # the prompt settings every control is measured in


def interval_state(d: dict) -> str:
    """One setting of a claim that predicts a difference d (paired_difference, welch_difference) > 0:
    "against" when its whole 95% interval is within +-TIE (no difference, however sure: a gap of
    0.005 +- 0.004 is no effect) or below 0, "supports" when it is above TIE's band and above 0,
    "unclear" otherwise (or with one seed)."""
    if d["seeds"] < 2:
        return "unclear"
    if d["high"] < 0 or (d["low"] > -TIE and d["high"] < TIE):
        return "against"
    return "supports" if d["low"] > 0 else "unclear"


def non_inferiority_state(d: dict) -> str:
    """One setting of a claim that the reference is *not worse* (the paper's "comparable"), d being
    the reference minus the other: "supports" when the whole 95% interval lies above -TIE (at most a
    tie's worth worse), "against" when it lies below -TIE, "unclear" otherwise (or with one seed)."""
    if d["seeds"] < 2:
        return "unclear"
    if d["low"] > -TIE:
        return "supports"
    return "against" if d["high"] < -TIE else "unclear"


def interval_verdict(diffs: list[dict]) -> str:
    """A predicted gain's verdict over its settings (interval_state each): reproduced when every one
    supports it, partly when some do, not reproduced when every one goes against it, else inconclusive."""
    return _aggregate([interval_state(d) for d in diffs])


def _aggregate(state: list[str]) -> str:
    """A claim's verdict from its settings' states: reproduced when every one supports it, partly
    when some do, not reproduced when every one goes against it, inconclusive otherwise."""
    if state and all(x == "supports" for x in state):
        return "reproduced"
    if "supports" in state:
        return "partly"
    if state and all(x == "against" for x in state):
        return "not reproduced"
    return "inconclusive"


def non_inferiority_verdict(diffs: list[dict]) -> str:
    """A claim of no loss over its settings (non_inferiority_state each), aggregated as interval_verdict."""
    return _aggregate([non_inferiority_state(d) for d in diffs])


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a results/curves CSV with numbers as floats."""
    def num(v):
        try:
            return float(v)
        except ValueError:
            return v
    with open(path) as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def clipped_yerr(means, halves, low: float = 0.0, high: float = 1.0):
    """matplotlib's asymmetric yerr [[below], [above]] for intervals mean ± half cut to the measure's
    range [low, high]: a score in [0, 1] never gets a bar above 1 or below 0."""
    means, halves = list(means), list(halves)
    return [[m - max(low, m - h) for m, h in zip(means, halves)], [min(high, m + h) - m for m, h in zip(means, halves)]]


def read_table(path: str | Path) -> list[dict]:
    """Rows of a benchmark's printed table (a header line, a line of dashes or none, then one row per line;
    columns apart by two or more spaces), each a dict by the header's names, numbers as floats. A name the header
    repeats ("x plain") is named after the column before it: "x plain (step ms)"."""
    import re

    lines = Path(path).read_text().splitlines()
    dash = next((i for i, line in enumerate(lines) if line.strip() and set(line.strip()) == {"-"}), None)
    head = dash - 1 if dash is not None else next(i for i, line in enumerate(lines) if line.strip())  # no dashes
    names = re.split(r"\s{2,}", lines[head].strip())
    keys = [n if names.count(n) == 1 else f"{n} ({names[i - 1]})" for i, n in enumerate(names)]
    rows = []
    for line in lines[head + 1 + (dash is not None):]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(keys):
            break  # the table ends at the first line that is not a row of it
        rows.append({k: _number(c) for k, c in zip(keys, cells)})
    return rows


def _number(cell: str):
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return cell


def t_interval(x: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the two-sided t-interval) of `x` over seeds; half-width inf for one value."""
    from scipy import stats

    t = torch.tensor([float(v) for v in x], dtype=torch.float64)
    if len(t) < 2:
        return t.mean().item(), float("inf")
    half = stats.t.ppf(0.5 + level / 2, len(t) - 1) * t.std().item() / len(t) ** 0.5
    return t.mean().item(), float(half)


def summarize(rows: list[dict], columns=SETTINGS + ("sec_per_step",)) -> list[dict]:
    """One row per (condition, run name), in first-seen order: mean, std and 95% t-interval
    half-width (`<column>_ci`) over seeds of each column."""
    out = {}
    for r in rows:
        cond = r.get("condition", "outline")
        out.setdefault((cond, r["name"]), {"condition": cond, "name": r["name"], "group": r["group"],
                                            "values": []})["values"].append(r)
    summary = []
    for s in out.values():
        vals = s.pop("values")
        s["seeds"] = len(vals)
        s["seed_list"] = sorted(int(v["seed"]) for v in vals)
        for c in columns:
            x = [float(v[c]) for v in vals]
            s[c], s[c + "_ci"] = t_interval(x)
            s[c + "_std"] = torch.tensor(x).std().item() if len(x) > 1 else 0.0
        summary.append(s)
    return summary


def merge_sweeps(older: list[dict], newer: list[dict]) -> list[dict]:
    """Rows (results or curves) of two sweeps as one: the newer sweep's rows first, then the older's
    for the conditions the newer has not run at all. Two sweeps never mix within a condition: their
    runner versions, held-out sets and curve measures may differ, and runs are compared with their
    own sweep's reference."""
    have = {r.get("condition", "outline") for r in newer}
    return list(newer) + [r for r in older if r.get("condition", "outline") not in have]


def paired_difference(rows: list[dict], a: str, b: str, setting: str, condition: str = "outline") -> dict:
    """Run a minus run b on `setting`, paired by seed (same seed: same data, same test noise):
    mean difference, its 95% t-interval and the seeds used."""
    by = {(r["name"], int(r["seed"])): float(r[setting]) for r in rows if r.get("condition", "outline") == condition}
    seeds = sorted(s for (n, s) in by if n == a and (b, s) in by)
    return difference_interval([by[a, s] - by[b, s] for s in seeds])


def welch_difference(a: list[float], b: list[float], level: float = 0.95) -> dict:
    """mean(a) - mean(b) for two unpaired samples (two trainers' seeds), with Welch's two-sided
    t-interval: {mean, low, high, seeds} (seeds: the smaller sample), as difference_interval gives."""
    from scipy import stats

    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    mean, n = (x.mean() - y.mean()).item(), min(len(x), len(y))
    if n < 2:
        return {"mean": mean, "low": -float("inf"), "high": float("inf"), "seeds": n}
    va, vb = x.var().item() / len(x), y.var().item() / len(y)
    se = (va + vb) ** 0.5
    dof = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if se else 1.0
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": n}


def difference_interval(diff: list[float]) -> dict:
    """Mean of paired differences, its 95% t-interval and how many pairs: {mean, low, high, seeds}."""
    mean, half = t_interval(diff) if diff else (float("nan"), float("inf"))
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": len(diff)}


def auc(curve: list[tuple[float, float]]) -> float:
    """Mean score over training: the area under a [(step, score)] curve (trapezoids) over its length."""
    pts = sorted(curve)
    area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))
    return area / (pts[-1][0] - pts[0][0]) if len(pts) > 1 else pts[0][1]


def _curves_by_run(curves: list[dict], condition: str | None = None) -> dict:
    """{(condition, name): {seed: [(step, score)]}} of a curves CSV (either schema)."""
    per = {}
    for r in curves:
        cond = r.get("condition", "outline")
        if condition is None or cond == condition:
            per.setdefault((cond, r["name"]), {}).setdefault(int(r["seed"]), []).append((r["step"], r[curve_key([r])]))
    return per


def auc_rows(curves: list[dict]) -> list[dict]:
    """One row per (condition, run, seed) with its "auc" (the mean score over training), shaped like
    results.csv rows so that paired_difference(rows, a, b, "auc", condition) compares two designs'
    sample efficiency, paired by seed."""
    measure = {(r.get("condition", "outline"), r["name"]): curve_key([r]) for r in curves}
    return [{"condition": cond, "name": name, "seed": seed, "auc": auc(curve), "measure": measure[cond, name]}
            for (cond, name), seeds in _curves_by_run(curves).items() for seed, curve in seeds.items()]


def sample_efficiency(curves: list[dict], condition: str = "outline", reference: str = designs.REFERENCE,
                      fraction: float = 0.8) -> list[dict]:
    """How fast each run learns, from its fidelity curve (curves.csv, full prompt), per run name:
    the normalised area under the curve (mean score over training, trapezoids) and the first
    evaluated step at which the score reaches `fraction` of the reference run's mean final score
    (None if never), each with its mean and 95% interval over seeds."""
    per = {name: seeds for (_, name), seeds in _curves_by_run(curves, condition).items()}
    finals = [sorted(c)[-1][1] for c in per.get(reference, {}).values()]
    bar = fraction * sum(finals) / len(finals) if finals else float("nan")
    out = []
    for name, seeds in per.items():
        aucs = [auc(curve) for curve in seeds.values()]
        reach = [next((s for s, v in sorted(curve) if v >= bar), None) for curve in seeds.values()]
        mean, half = t_interval(aucs)
        hit = [x for x in reach if x is not None]
        out.append({"name": name, "seeds": len(seeds), "auc": mean, "auc_ci": half, "reached": f"{len(hit)}/{len(reach)}",
                    "steps_to": t_interval(hit)[0] if hit else None, "bar": bar})
    return out


CURVE_MEASURES = {"score": "condition score", "shape_iou": "shape IoU", "iou": "fill-colour IoU"}  # by curve_key


def curve_key(curves: list[dict]) -> str:
    """The fidelity column of a curves CSV: "score" (the condition's own measure); sweeps stored
    before it existed have the fill-colour IoU as "iou"."""
    return "score" if curves and "score" in curves[0] else "shape_iou" if curves and "shape_iou" in curves[0] else "iou"
