"""ControlNet and its successors side by side (issue #27, chapter 13), from one sweep of the ablation runner:

    python benchmarks/successors.py --runs runs/successors --out benchmarks/results/cpu/successors

1. stores the sweep's results.csv and curves.csv (every design x condition x seed, zc.study.ablations' columns);
2. whether two controls of each design compose: for each design and seed, its outline- and keypoints-trained
   modules from that sweep, each alone and both together (side_by_side.composition: empty prompt, 32 held-out
   outline scenes, each condition's own measure) -> composition.txt / .json;
3. the side-by-side table (side_by_side.side_by_side: cost from designs_speed.json, score ± 95% interval per
   condition), then chapter 10's baselines as stored, in their own block (side_by_side.stored_rows) -> side_by_side.txt
   (alone, from the stored files: --table-only).
Sampling only (minutes); the modules are read from --runs (and --more-runs, where the reference
ControlNets of the same protocol were trained: the sweep recheck of issue #28).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402

import zc  # noqa: E402
from zc import designs  # noqa: E402
from zc.study import side_by_side, stats  # noqa: E402
from zc.world.pairs import PairedData  # noqa: E402


def module_folder(dirs: list[Path], condition: str, design: str, seed: int) -> Path:
    """The trained module of a sweep run (the runner's out/<condition>_<run>_seed<seed>/<design's folder>)."""
    sub = designs.get(design).folder
    for d in dirs:
        folder = d / f"{condition}_{design.replace(' ', '_')}_seed{seed}" / sub
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"no {design} trained on {condition} with seed {seed} in {[str(d) for d in dirs]}: "
                            "run scripts/successors_sweep.sh first")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/successors", help="the sweep's folder (results.csv, curves.csv, runs)")
    ap.add_argument("--more-runs", nargs="*", default=["runs/sweep-recheck"], help="other folders with runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pair", nargs=2, default=["outline", "keypoints"], help="the two conditions composed")
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/cpu/successors")
    ap.add_argument("--table-only", action="store_true", help="only side_by_side.txt, from the stored results")
    ap.add_argument("--stored", nargs="*", default=[],
                    help="designs whose composition rows are kept from --out's stored composition.json (a design "
                         "whose code and runs have not changed since, when its modules are not at hand)")
    args = ap.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        compose(args, runs, out, argv)
    stored = Path(__file__).parent / "results" / "cpu"
    speed = json.loads((stored / "designs_speed.json").read_text())["rows"]
    rows, baselines = side_by_side.stored_rows(stored)
    tables = [side_by_side.format_side_by_side(side_by_side.side_by_side(r, speed)) for r in (rows, baselines)]
    (out / "side_by_side.txt").write_text(
        "$ python benchmarks/successors.py --table-only (from benchmarks/results/cpu: successors/ and sweep-recheck/, "
        "then ablations-zoo/; ../designs_speed.json)\n"
        f"{_results.machine()}; TinySD, the ablation runner's cpu preset (1000 steps, 5k pairs, 32 held-out scenes)\n\n"
        + tables[0] + "\n\nThe baselines of chapters 10 and 12 as stored (latents from the posterior's mean, before #28's fix; "
        "their own ControlNet rows):\n\n" + tables[1] + "\n")
    print("\n\n".join(tables))


def compose(args, runs: Path, out: Path, argv) -> None:
    for f in ("results.csv", "curves.csv"):
        shutil.copy(runs / f, out / f)
    dirs = [runs, *map(Path, args.more_runs)]

    pipe = zc.load_sd()
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    # the first condition's held-out scenes (outlines: circles, what its modules were trained on)
    test = PairedData.generate(args.n_test, size=size, seed=777, split="test", condition=args.pair[0])
    rows = []
    if args.stored:
        kept = json.loads((out / "composition.json").read_text())["rows"]
        rows = [r for r in kept if r["design"] in args.stored]
        if {r["design"] for r in rows} != set(args.stored):
            raise ValueError(f"no stored composition rows for {sorted(set(args.stored) - {r['design'] for r in rows})}")
    for design in side_by_side.SUCCESSORS:
        if design in args.stored:
            continue
        for seed in args.seeds:
            mods = {c: designs.load(design, module_folder(dirs, c, design, seed)) for c in args.pair}
            result = side_by_side.composition(pipe, mods, test, seed=seed)
            rows += [{"design": design, "seed": seed, "label": label, "measure": k, "score": round(v, 4)}
                     for label, scores in result.items() for k, v in scores.items()]
            print(design, seed, json.dumps(result))
    cmd = f"$ python benchmarks/successors.py {' '.join(argv or sys.argv[1:])}".rstrip()
    lines = [cmd, f"{_results.machine()}; TinySD; each design's {args.pair[0]} and {args.pair[1]} modules of one seed, "
             f"alone and together, empty prompt, {args.n_test} held-out {args.pair[0]} scenes, 20 DDIM steps, CFG 5",
             "", f"{'design':21s}{'measure':20s}{'alone':>16s}{'both':>16s}{'both - alone':>26s}"]
    for design in side_by_side.SUCCESSORS:
        for c in args.pair:
            key = zc.world.conditions.get(c).score
            pick = {lab: {r["seed"]: r["score"] for r in rows if r["design"] == design and r["measure"] == key
                          and r["label"] == lab} for lab in (f"{c} alone", "both")}
            a, b = (stats.t_interval(list(pick[lab].values())) for lab in (f"{c} alone", "both"))
            d = stats.difference_interval([pick["both"][s] - pick[f"{c} alone"][s] for s in args.seeds])
            lines.append(f"{design:21s}{key:20s}{a[0]:10.3f} ±{a[1]:4.2f}{b[0]:10.3f} ±{b[1]:4.2f}"
                         f"{d['mean']:+12.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
    lines.append("(mean ± 95% half-width over seeds; 'both': the two modules together, each reading its own condition)")
    _results.write(out / "composition.txt", lines, rows)

if __name__ == "__main__":
    main()
