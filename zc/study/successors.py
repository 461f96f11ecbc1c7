"""The claims of ControlNet's successors (chapter 13), read from a sweep that trained each beside the
reference ControlNet on one base, by the same rules as the paper's own (zc.study.claims): "comparable
control" by non-inferiority over the four prompt settings, "converges faster" from the mean score over
training, speed from the interleaved benchmark, composition by the one-sided rule, ControlNet++'s reward
from its fine-tuning benchmark; a claim the toy scale cannot test says so, with the reason.
"""
from __future__ import annotations

from .. import designs
from ..world.conditions import get as get_condition
from .claims import NOT_AT_SCALE, PREREGISTERED_SEEDS, SETTINGS, _fmt, _row, auc_claims, design_claims
from .stats import (
    auc_rows,
    difference_interval,
    interval_verdict,
    non_inferiority_verdict,
    paired_difference,
)

__all__ = ["SUCCESSOR_COMPARABLE", "SUCCESSOR_FASTER", "SD_SCALE", "OUTLINE_CEILING", "REWARD_ROOM",
           "successor_claims"]


# --- the successors' own claims (chapter 13), read from the same kind of sweep --------------------------------


SUCCESSOR_COMPARABLE = [(c, d) for c, d, _ in design_claims("comparable")]  # comparable control, far smaller
SUCCESSOR_FASTER = [(c, d) for c, d, _ in design_claims("converges faster")]  # mean score over training


SD_SCALE = 100e6  # UNet parameters below which a claim about SD-sized arithmetic is not tested (SD 1.5: 860M)


OUTLINE_CEILING = 0.96  # shape IoU of the outline renders themselves (chapter 6's ceiling, 0.959)


REWARD_ROOM = 0.1  # a reward run starting closer than this to the ceiling leaves no room for its claimed gain


def _unet_params(speed: list[dict]) -> float | None:
    """The UNet's parameter count behind a speed benchmark (ControlNet's params / its % of the UNet)."""
    ref = next((r for r in speed if r["design"] == designs.REFERENCE and r.get("params") and r.get("pct_unet")), None)
    return None if ref is None else ref["params"] * 100 / ref["pct_unet"]


def _speed_ratio(speed: list[dict], design: str, column: str) -> float | None:
    """ControlNet's seconds over `design`'s in the side-by-side speed benchmark (> 1: the design is faster)."""
    by = {r["design"]: r for r in speed}
    if design not in by or designs.REFERENCE not in by:
        return None
    return by[designs.REFERENCE][column] / by[design][column]


def successor_claims(rows: list[dict], curves: list[dict] | None = None, speed: list[dict] | None = None,
                     composition: list[dict] | None = None, reward: list[dict] | None = None) -> list[dict]:
    """The successors' testable claims against the reference ControlNet trained in the same sweep.
    rows / curves: the runner's results.csv / curves.csv (ControlNet and the successors, per condition);
    speed: benchmarks/designs_speed.py's rows (interleaved rounds, one machine); composition: rows
    {design, seed, label ("<condition> alone" / "both"), measure, score} (side_by_side.composition per run);
    reward: benchmarks/reward_finetune.py's rows. Rules: "comparable" by non_inferiority_verdict over the
    four prompt settings (the successor minus ControlNet, paired by seed); "faster convergence" and
    ControlNet++'s "better controllability" by interval_verdict; speed claims by the benchmark's ratio
    (reproduced at >= 90% of the claimed factor, partly when faster at all (>= x1.05), not reproduced
    otherwise); composition: each condition's measure with both controls at most a tie below its own
    control alone (non_inferiority_verdict on both - alone)."""
    return [*_comparable_rows(rows), *_faster_rows(curves or []), *_speed_rows(speed or []),
            *_composition_rows(composition or []), _reward_row(reward)]


def _comparable_rows(rows: list[dict]) -> list[dict]:
    """"Comparable control": the successor minus ControlNet per prompt setting, non-inferiority."""
    out = []
    registered = [r for r in rows if int(r["seed"]) < PREREGISTERED_SEEDS]
    conds = list(dict.fromkeys(r.get("condition", "outline") for r in rows))
    have = {(r.get("condition", "outline"), r["name"]) for r in rows}
    for claim, design in SUCCESSOR_COMPARABLE:
        tested = False
        for cond in conds:
            if {(cond, designs.REFERENCE), (cond, design)} <= have:
                diffs = {p: paired_difference(registered, design, designs.REFERENCE, p, cond) for p in SETTINGS}
                out.append(_row(claim, f"{design} minus ControlNet: " + ", ".join(_fmt(p, d, "no loss")
                                                                                  for p, d in diffs.items())
                                + f" ({diffs['none']['seeds']} seeds)", non_inferiority_verdict(list(diffs.values())), cond))
                tested = True
        if not tested:
            out.append(_row(claim, f"no '{design}' run beside a ControlNet", "not tested"))
    return out


def _faster_rows(curves: list[dict]) -> list[dict]:
    """"Converges faster": the mean score over training, successor minus ControlNet, paired by seed."""
    aucs = [r for r in auc_rows(curves) if int(r["seed"]) < PREREGISTERED_SEEDS]
    return auc_claims(SUCCESSOR_FASTER, aucs, reference_first=False)


def _speed_rows(speed: list[dict]) -> list[dict]:
    """Speed claims from the interleaved benchmark; XS's arithmetic saving not tested below SD's size."""
    out = []
    for d, c in designs.claims_of("faster per image", "cheaper per image"):  # a claimed factor, or "costs less"
        claim, design, column, factor = c.text, d.name, "image_s", c.factor
        ratio = _speed_ratio(speed, design, column)
        if ratio is None:
            out.append(_row(claim, "no side-by-side speed benchmark", "not tested"))
            continue
        train = _speed_ratio(speed, design, "train_s")
        needed = 0.9 * factor if factor else 1.05  # a claimed factor, or "costs less" at all
        verdict = "reproduced" if ratio >= needed else "partly" if ratio >= 1.05 else "not reproduced"
        measured = (f"ControlNet's seconds over {design}'s: per image x{ratio:.2f}, per training step x{train:.2f} "
                    "(benchmarks/designs_speed.py)")
        unet = _unet_params(speed)
        if factor and unet is not None and unet < SD_SCALE:  # a saving of arithmetic, timed where it cannot show
            verdict = NOT_AT_SCALE
            measured += (f"; the UNet has {unet / 1e6:.1f}M parameters, on a CPU: the claim is about the copy's "
                         "arithmetic at SD's size (860M) on a GPU, which this does not time")
        out.append(_row(claim, measured, verdict))
    return out


def _composition_rows(composition: list[dict]) -> list[dict]:
    """Two controls of one design together: each condition's measure at most a tie below its control alone."""
    out, by = [], {}
    for r in composition:
        by.setdefault(r["design"], {}).setdefault((r["label"], r["measure"]), {})[int(r["seed"])] = float(r["score"])
    for design, cells in by.items():
        diffs, parts = [], []
        # each measure against the control of the condition it belongs to, alone
        own = {get_condition(lab.removesuffix(" alone")).score: lab for lab, _ in cells if lab != "both"}
        for (label, measure), scores in cells.items():
            if label == "both":
                alone = cells[own[measure], measure]
                seeds = sorted(set(scores) & set(alone))
                d = difference_interval([scores[s] - alone[s] for s in seeds])
                diffs.append(d)
                parts.append(_fmt(measure, d, "no loss"))
        out.append(_row(f"two {design}s trained apart compose (each condition's measure, both minus alone)",
                        ", ".join(parts) + f" ({diffs[0]['seeds']} seeds)", non_inferiority_verdict(diffs)))
    return out


def _reward_row(reward: list[dict] | None) -> dict:
    """ControlNet++'s reward against the same steps without it; not tested from a start near the ceiling."""
    claim = "reward fine-tuning (ControlNet++) improves controllability (Li et al. 2024)"
    if not reward:
        return _row(claim, "no reward fine-tuning run stored (benchmarks/reward_finetune.py)", "not tested")
    seeds = sorted({int(r["seed"]) for r in reward if r["run"] == "reward"})
    val = {(r["run"], int(r["seed"]), k): float(r[k]) for r in reward for k in r if k not in ("run", "seed")}
    diffs = {k: difference_interval([val["reward", s, k] - val["more steps", s, k] for s in seeds])
             for k in ("shape_iou_full", "shape_iou_none")}
    fill = difference_interval([val["reward", s, "fill_accuracy"] - val["more steps", s, "fill_accuracy"] for s in seeds])

    def fmt3(what, d):  # three decimals: the differences are small
        return f"{what} {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    measured = ("reward minus the same steps without it: shape IoU, "
                + ", ".join(fmt3(k.replace("shape_iou_", "prompt "), d) for k, d in diffs.items())
                + f"; its cost, {fmt3('fill accuracy', fill)} ({len(seeds)} seeds)")
    verdict = interval_verdict(list(diffs.values()))
    start = next((r for r in reward if r["run"] == "start"), None)
    if start is not None and OUTLINE_CEILING - float(start["shape_iou_full"]) < REWARD_ROOM:
        verdict = NOT_AT_SCALE
        measured += (f"; from shape IoU {float(start['shape_iou_full']):.2f}, {OUTLINE_CEILING:.2f} being the "
                     "renders' own: no room for a gain to show; the paper fine-tunes ControlNets far from it")
    return _row(claim, measured, verdict, "outline")
