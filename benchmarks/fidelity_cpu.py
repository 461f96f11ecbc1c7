"""The fill50k bar on the CPU default: train a ControlNet on TinySD for a fixed budget, then compare
condition fidelity on held-out outlines/prompts with and without the ControlNet.

    python benchmarks/fidelity_cpu.py --steps 3500 --out benchmarks/results/cpu --ship

Trains in --run (checkpoints, latent cache, validation images), then prints a table and writes
under --out: run/log.jsonl + run/config.json + run/time.json (the training log, dense evaluations
before step eval_every), summary.json (the final table, and under "curve_set" the no-control
baseline and ceiling on the curve's own held-out scenes), table.txt and curve.png (shape IoU and
loss against steps, the convergence step marked: zc.world.fidelity.convergence_step). --ship copies the trained ControlNet to
zc/weights/fill50k-controlnet (the one chapters 7 and 10 use).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import zc  # noqa: E402
from zc import train as zt  # noqa: E402
from zc.sample import sample  # noqa: E402
from zc.world import conditions  # noqa: E402
from zc.world.fidelity import condition_fidelity, convergence_step, plot_history  # noqa: E402
from zc.world.pairs import PairedData  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3500)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--n-test", type=int, default=64, help="held-out outlines/prompts for the final table")
    ap.add_argument("--out", default="benchmarks/results/cpu")
    ap.add_argument("--run", default="runs/fidelity_cpu", help="the training run's folder")
    ap.add_argument("--ship", action="store_true", help="copy the ControlNet to zc/weights/fill50k-controlnet")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cfg = zt.TrainConfig.preset("cpu", steps=args.steps, lr=args.lr, batch=args.batch, eval_every=args.eval_every,
                                out=args.run, checkpoint_every=500)
    t0 = time.time()
    result = zt.train(cfg)
    train_s = time.time() - t0
    import shutil

    (out / "run").mkdir(parents=True, exist_ok=True)
    for name in ("log.jsonl", "config.json", "time.json"):
        shutil.copy(Path(args.run) / name, out / "run" / name)
    if args.ship:
        shutil.rmtree(zc.sd.FILL50K_CONTROLNET, ignore_errors=True)
        shutil.copytree(Path(args.run) / "controlnet", zc.sd.FILL50K_CONTROLNET)
    pipe = zc.load_sd()
    test = PairedData.generate(args.n_test, size=64, seed=12345, split="test")
    cond = torch.stack([test[i]["conditioning"] for i in range(len(test))])
    rows = {}
    for name, cn in [("TinySD alone (no ControlNet)", None), ("TinySD + ControlNet", result.module.eval())]:
        images = sample(pipe, cn, test.prompts, cond if cn is not None else None, num_inference_steps=25,
                        guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
        rows[name] = condition_fidelity(images, test)
    # the curve's own scenes (the loop's held-out set, train.evaluate's protocol): its baseline and ceiling
    evalset = PairedData.generate(cfg.eval_n, size=64, seed=cfg.seed + 10_000, split="test")
    alone = sample(pipe, None, evalset.prompts, None, num_inference_steps=cfg.eval_steps,
                   guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed))
    curve_refs = {"n": cfg.eval_n, "no control (TinySD alone)": conditions.measure(alone, evalset.scenes),
                  "ceiling (ground truth)": conditions.measure(evalset.targets.float() / 255, evalset.scenes)}
    baseline = curve_refs["no control (TinySD alone)"]["shape_iou"]
    step = convergence_step(result.history, "shape_iou", baseline)
    import datetime
    import sys

    lines = [f"$ python benchmarks/fidelity_cpu.py {' '.join(sys.argv[1:] if argv is None else argv)}",
             f"{datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"training {args.steps} steps x batch {args.batch} took {train_s / 60:.1f} min (incl. data encoding and "
             f"evaluations)", "",
             f"{'':30s} {'shape IoU':>9s} {'fill acc':>9s} {'bg acc':>7s}   ({args.n_test} held-out outlines and prompts)"]
    for name, r in rows.items():
        lines.append(f"{name:30s} {r['shape_iou']:9.3f} {r['fill_accuracy']:9.3f} {r['background_accuracy']:7.3f}")
    lines.append(f"convergence step (shape IoU at or above the no-control {baseline:.3f} + 70% of the way to its final "
                 f"value from then on, on the loop's {cfg.eval_n} held-out outlines): {step}")
    print("\n".join(lines))
    (out / "table.txt").write_text("\n".join(lines) + "\n")
    ax = plot_history(result.history, baseline)
    ax.set_title(f"ControlNet on TinySD, CPU: shape IoU and loss ({args.steps} steps, batch {args.batch})")
    plt.tight_layout()
    plt.savefig(out / "curve.png", dpi=90)
    (out / "summary.json").write_text(json.dumps({
        "steps": args.steps, "batch": args.batch, "lr": args.lr, "train_minutes": train_s / 60, "convergence_step": step,
        **rows, "curve_set": curve_refs}, indent=2))


if __name__ == "__main__":
    main()
