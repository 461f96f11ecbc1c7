"""The fidelity measures on images that are not flat renders, against a known answer.

Ground truth: the shapes world's renders of held-out scenes (every kind), perturbed by each of
zc.world.fidelity.PERTURBATIONS (lighting, texture, noise, JPEG) at strengths 0.05 to 0.8; each measure of
conditions.measure is computed with the flat-world path (robust=False, the stored results' measure)
and the robust one (robust=True, the default above 64 px), at 64 px and at SD 1.5's 512 px. A measure
"holds" at a strength while it stays within 0.05 of its value on the flat render.

    python benchmarks/fidelity_robustness.py --out benchmarks/results/cpu/fidelity_robustness.txt
"""
from __future__ import annotations

import argparse

import _results  # benchmarks/_results.py
import torch

from zc.study import zoo
from zc.world import conditions, fidelity, shapes

KEYS = ("shape_iou", "kind_accuracy", "colour_accuracy", "keypoint_accuracy")
STRENGTHS = (0.05, 0.1, 0.2, 0.4, 0.8)
TOLERANCE = 0.05


def table(n: int, size: int) -> list[dict]:
    test = zoo.test_set("outline", n, size)
    truth = shapes.render(test.scenes, size)
    rows = []
    for robust in (False, True):
        flat = conditions.measure(truth, test.scenes, robust=robust)
        rows.append({"size": size, "path": "robust" if robust else "flat-world", "perturbation": "none",
                     "strength": 0.0, **{k: round(flat[k], 3) for k in KEYS}})
        for name, fn in fidelity.PERTURBATIONS.items():
            for s in STRENGTHS:
                x = fn(truth, s, torch.Generator().manual_seed(0))
                m = conditions.measure(x, test.scenes, robust=robust)
                rows.append({"size": size, "path": rows[-1]["path"], "perturbation": name, "strength": s,
                             **{k: round(m[k], 3) for k in KEYS}})
    return rows


def holds_up_to(rows: list[dict]) -> list[dict]:
    """Per size, path, perturbation and measure: the largest strength (of those tried, in order) up
    to which the measure stays within TOLERANCE of its flat value."""
    out = []
    for size in sorted({r["size"] for r in rows}):
        for path in ("flat-world", "robust"):
            flat = next(r for r in rows if r["size"] == size and r["path"] == path and r["perturbation"] == "none")
            for name in fidelity.PERTURBATIONS:
                part = [r for r in rows if r["size"] == size and r["path"] == path and r["perturbation"] == name]
                row = {"size": size, "path": path, "perturbation": name}
                for k in KEYS:
                    ok = 0.0
                    for r in sorted(part, key=lambda r: r["strength"]):
                        if abs(r[k] - flat[k]) > TOLERANCE:
                            break
                        ok = r["strength"]
                    row[k] = ok
                out.append(row)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="held-out scenes per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--out", default="benchmarks/results/cpu/fidelity_robustness.txt")
    args = ap.parse_args(argv)
    rows = [r for size in args.sizes for r in table(args.n, size)]
    holds = holds_up_to(rows)
    lines = [f"$ python benchmarks/fidelity_robustness.py --n {args.n} --sizes {' '.join(map(str, args.sizes))}",
             f"{_results.machine()}; renders of {args.n} held-out scenes (all kinds) with known truth", "",
             f"holds up to: the largest strength at which the measure stays within {TOLERANCE} of its value on the "
             "flat render (0.0: it breaks at the first strength tried, 0.05)", "",
             f"{'size':>4s} {'path':10s} {'perturbation':12s} " + " ".join(f"{k:>17s}" for k in KEYS)]
    lines += [f"{h['size']:4d} {h['path']:10s} {h['perturbation']:12s} " + " ".join(f"{h[k]:17.2f}" for k in KEYS)
              for h in holds]
    lines += ["", "every measurement:", f"{'size':>4s} {'path':10s} {'perturbation':12s} {'strength':>8s} "
              + " ".join(f"{k:>17s}" for k in KEYS)]
    lines += [f"{r['size']:4d} {r['path']:10s} {r['perturbation']:12s} {r['strength']:8.2f} "
              + " ".join(f"{r[k]:17.3f}" for k in KEYS) for r in rows]
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
