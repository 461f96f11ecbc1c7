"""Issue #28: the 73-run ablation sweep trained on the VAE posterior's mean (zc before the fix). Does
any verdict of the claims table change when the same designs train on draws from it? A subset is
rerun with today's zc.train (same preset, seeds, data and held-out scenes; only the latents differ)
and the claims table is computed from the stored rows and from the new ones, claim by claim.

    python benchmarks/sweep_recheck.py --condition outline \
        --runs ControlNet "condition added directly" "prompt dropout 0%" --seeds 0 1 2
    python benchmarks/sweep_recheck.py --condition scribble --runs ControlNet "condition added directly"
    python benchmarks/sweep_recheck.py --condition keypoints --runs ControlNet "condition added directly"

Runs resume (the runner skips finished rows in --work); ~4.5 min a run on 2 CPU cores.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import _results  # benchmarks/_results.py

from zc.study import ablations, claims, stats

STORED = Path("benchmarks/results/cpu/ablations-zoo")


def verdicts(rows: list[dict], curves: list[dict], condition: str) -> dict[str, dict]:
    """claim -> its claims-table row, for the claims decided on `condition` from these rows alone."""
    out = {}
    for r in claims.paper_claims(rows, curves=curves):
        if r["condition"] == condition and r["verdict"] != "not tested":
            out[r["claim"]] = r
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--condition", default="outline")
    ap.add_argument("--runs", nargs="+", default=["ControlNet", "condition added directly", "prompt dropout 0%"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="runs/sweep-recheck", help="the new runs (resumable)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/cpu/sweep_recheck_<condition>.txt")
    args = ap.parse_args(argv)
    args.out = args.out or f"benchmarks/results/cpu/sweep_recheck_{args.condition}.txt"
    ablations.main(["--preset", "cpu", "--conditions", args.condition, "--seeds", *map(str, args.seeds),
                    "--out", args.work, "--runs", *args.runs])

    def subset(rows):
        return [r for r in rows if r.get("condition", "outline") == args.condition and r["name"] in args.runs
                and int(r["seed"]) in args.seeds]

    old = {k: subset(stats.read_csv(STORED / f"{k}.csv")) for k in ("results", "curves")}
    new = {k: subset(stats.read_csv(Path(args.work) / f"{k}.csv")) for k in ("results", "curves")}
    before = verdicts(old["results"], old["curves"], args.condition)
    after = verdicts(new["results"], new["curves"], args.condition)
    runs = " ".join(f'"{r}"' for r in args.runs)
    lines = [f"$ python benchmarks/sweep_recheck.py --condition {args.condition} --runs {runs} "
             f"--seeds {' '.join(map(str, args.seeds))}",
             f"{_results.machine()}; cpu preset (1000 steps, batch 16, 5k pairs, 32 held-out scenes); stored rows: "
             f"{STORED} (latents = the posterior's mean), new rows: {args.work} (draws)", ""]
    rows, changed = [], 0
    for claim in before.keys() | after.keys():
        b, a = before.get(claim), after.get(claim)
        same = b is not None and a is not None and b["verdict"] == a["verdict"]
        changed += not same
        rows.append({"claim": claim, "mean": b, "sample": a, "same": same})
        lines += [f"{claim}  [{'same verdict' if same else 'VERDICT CHANGED'}]",
                  f"  mean (stored):  {b['verdict'] if b else '-'}: {b['measured'] if b else ''}",
                  f"  sample (new):   {a['verdict'] if a else '-'}: {a['measured'] if a else ''}", ""]
    score = "perfect"  # the per-run scores under the perfect prompt, side by side
    lines.append(f"per run, {score} prompt (stored mean -> new sample):")
    for name in args.runs:
        for seed in args.seeds:
            o = [r for r in old["results"] if r["name"] == name and int(r["seed"]) == seed]
            n = [r for r in new["results"] if r["name"] == name and int(r["seed"]) == seed]
            if o and n:
                lines.append(f"  {name:28s} seed {seed}: {float(o[0][score]):.3f} -> {float(n[0][score]):.3f}")
    lines.append(f"\n{changed} of {len(rows)} verdicts changed")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
