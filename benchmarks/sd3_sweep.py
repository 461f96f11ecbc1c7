"""Chapter 14's sweep: ControlNet on TinySD3's transformer, how deep the copy must be, the control through the VAE
or the paper's hint encoder E, and channel concatenation (Flux Control's way) as the non-ControlNet baseline.

    python benchmarks/sd3_sweep.py --runs runs/sd3-sweep --out benchmarks/results/cpu/sd3-sweep

1. trains and measures every run of the ablation runner's sd3 preset for each seed (zc.study.ablations: 1000 steps
   of batch 16 on 5k generated outline pairs, shape IoU every 100 steps, 32 held-out scenes under the four prompt
   settings at the end; resumable: finished runs are skipped), and copies results.csv and curves.csv;
2. the bounds on the same scenes: TinySD3 alone and the training renders (references.csv);
3. each run's trainable parameters (params.json);
4. each design's cost, timed in interleaved rounds (benchmarks/designs_speed.py --sd tinysd3 -> designs_speed.txt).
The machine and the date are written beside them (README.md).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402
import designs_speed  # noqa: E402

import zc  # noqa: E402,F401  (registers every design)
from zc import designs  # noqa: E402
from zc import train as zt  # noqa: E402
from zc.sd3 import load_base  # noqa: E402
from zc.study import ablations  # noqa: E402


def trainable(sd: str) -> dict[str, int]:
    """Trainable parameters of each run of the sd3 preset, built on `sd` (what the optimiser gets)."""
    base, runs = ablations.runs_for("sd3")
    out = {}
    for run in runs:
        cfg = zt.TrainConfig(**{**{k: v for k, v in base.items() if k in zt.TrainConfig.__dataclass_fields__},
                                **run.overrides})
        _, model = zt.build(cfg, load_base(sd))
        out[run.name] = sum(p.numel() for g in model.param_groups(cfg.lr) for p in g["params"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/sd3-sweep")
    ap.add_argument("--out", default="benchmarks/results/cpu/sd3-sweep")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sd", default="tinysd3")
    ap.add_argument("--skip-train", action="store_true", help="only the bounds, parameters and speed")
    args = ap.parse_args(argv)
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_train:
        ablations.run_all("sd3", str(runs), tuple(args.seeds), args.sd)
    for name in ("results.csv", "curves.csv"):
        shutil.copy(runs / name, out / name)
    refs = ablations.references("outline", tuple(args.seeds), ablations.PRESETS["sd3"][1], args.sd)
    (out / "references.csv").unlink(missing_ok=True)
    ablations._append(out / "references.csv", list(refs[0]), refs)
    (out / "params.json").write_text(json.dumps(trainable(args.sd), indent=1))
    designs_speed.main(["--sd", args.sd, "--out", str(out / "designs_speed.txt")])
    (out / "README.md").write_text(
        "# Chapter 14's sweep: ControlNet on TinySD3's transformer\n\n"
        f"    python benchmarks/sd3_sweep.py --runs {args.runs} --out {args.out} --seeds "
        f"{' '.join(map(str, args.seeds))}\n\n"
        f"Machine: {_results.machine()}.\n\n"
        "results.csv, curves.csv: zc.study.ablations' sd3 preset (1000 steps, batch 16, 5k outline pairs, "
        "3 seeds); references.csv: TinySD3 alone and the training renders on the same 32 scenes; params.json: "
        "trainable parameters per run; designs_speed.txt/.json: s/step and s/image per design (interleaved rounds).\n"
        f"Designs: {', '.join(n for n, d in designs.DESIGNS.items() if d.backbone == 'transformer')}.\n")


if __name__ == "__main__":
    main()
