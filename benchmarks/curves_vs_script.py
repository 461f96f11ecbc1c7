"""Learning curves of zc.train and diffusers' examples/controlnet/train_controlnet.py, side by side:
the same TinySD, the same pairs, batch, learning rate and prompt dropout, several training seeds per
trainer, and one harness scoring both (issue #28). Each trainer's ControlNet is saved at every
`--at` step (the script: --checkpointing_steps, its checkpoint-N/controlnet; zc: the run resumed to
the next step, which the tests show ends with an uninterrupted run's weights) and scored on held-out
scenes with full prompts (20 DDIM steps, CFG 5, sampler seed 0) by the condition's score.

    python benchmarks/curves_vs_script.py --script <diffusers>/examples/controlnet/train_controlnet.py \
        --conditions outline scribble --seeds 0 1 2 3 4 --out benchmarks/results/cpu/curves_vs_script.txt

Rows go to `--out`.partial.jsonl as each run ends; a rerun skips the (condition, seed, trainer) runs
already there, so an interrupted sweep loses at most one run. The seeds of the two trainers are not
paired (each draws its own batches and noise), so the difference is Welch's interval.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _results  # benchmarks/_results.py
import torch
from vs_diffusers_script import run, script_command, script_copy, to_diffusers_layout

TRAINERS = ("diffusers train_controlnet.py", "zc.train")
BOUNDS = ("no control (TinySD alone)", "ceiling (training renders)")


def main(argv=None):
    import zc
    from zc import train as zt
    from zc.sample import sample
    from zc.study.stats import t_interval, welch_difference
    from zc.world import conditions
    from zc.world.pairs import PairedData

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", required=True, help="diffusers' examples/controlnet/train_controlnet.py")
    ap.add_argument("--conditions", nargs="+", default=["outline", "scribble"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--at", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600], help="steps to score")
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/cpu/curves_vs_script.txt")
    args = ap.parse_args(argv)
    at = sorted(args.at)
    every = at[0]
    if any(s % every for s in at):
        raise SystemExit(f"--at steps must be multiples of the first ({every}): the script checkpoints every {every}")
    partial = Path(args.out).with_suffix(".partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in partial.read_text().splitlines()] if partial.is_file() else []
    done = {(r["condition"], r["seed"], r["trainer"]) for r in rows}
    pipe = zc.load_sd()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        script, env = script_copy(args.script, tmp)
        zc.ControlNet.for_pipeline(pipe).save_pretrained(tmp / "init")  # TinySD's 4x condition encoder
        for cond in args.conditions:
            data = tmp / cond / "fill50k"
            PairedData.generate(args.pairs, size=64, seed=0, condition=cond).save(data)
            to_diffusers_layout(data, tmp / cond / "hf")
            test = PairedData.generate(args.n_test, size=64, seed=12345, split="test", condition=cond)
            key = conditions.get(cond).score

            def score(folder, test=test, key=key):
                cn = zc.ControlNet.from_pretrained(folder).eval() if folder is not None else None
                images = sample(pipe, cn, test.prompts, test.conditions() if cn is not None else None,
                                num_inference_steps=20, generator=torch.Generator().manual_seed(0))
                return round(conditions.measure(images, test.scenes)[key], 4)

            if (cond, None, BOUNDS[0]) not in done:  # what every score sits between, on the same scenes
                ceiling = round(conditions.measure(test.targets.float() / 255, test.scenes)[key], 4)
                new = [{"condition": cond, "seed": None, "trainer": name, "step": None, "score": key, "value": v}
                       for name, v in zip(BOUNDS, (score(None), ceiling))]
                rows += new
                with partial.open("a") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in new))

            for seed in args.seeds:
                for trainer in TRAINERS:
                    if (cond, seed, trainer) in done:
                        continue
                    out = tmp / cond / f"{trainer.split()[0]}_{seed}"
                    curve = {}
                    if trainer == TRAINERS[0]:
                        run(script_command(script, tmp / "init", tmp / cond / "hf", out, at[-1], args.batch, args.lr,
                                           seed, checkpointing_steps=every), env)
                        for s in at:
                            curve[s] = score(out / f"checkpoint-{s}" / "controlnet")
                    else:
                        for s in at:  # resumed to each step: the same weights as one run (tests/test_train.py)
                            cfg = zt.TrainConfig(condition=cond, data=str(data), steps=s, batch=args.batch, lr=args.lr,
                                                 seed=seed, eval_every=0, checkpoint_every=every, device="cpu",
                                                 out=str(out), cache=str(tmp / cond / "cache"))
                            curve[s] = score(zt.train(cfg, pipe=pipe).folder)
                    new = [{"condition": cond, "seed": seed, "trainer": trainer, "step": s, "score": key,
                            "value": v} for s, v in curve.items()]
                    rows += new
                    with partial.open("a") as f:
                        f.write("".join(json.dumps(r) + "\n" for r in new))
                    print(cond, seed, trainer, curve, flush=True)
    lines = [f"$ python benchmarks/curves_vs_script.py --script <diffusers>/examples/controlnet/train_controlnet.py "
             f"--conditions {' '.join(args.conditions)} --seeds {' '.join(map(str, args.seeds))} "
             f"--at {' '.join(map(str, at))} --pairs {args.pairs}",
             f"{_results.machine()}; TinySD, {args.pairs} generated pairs per condition (64 px, the same for both "
             f"trainers), batch {args.batch}, lr {args.lr}, 50% empty prompts; each ControlNet scored on "
             f"{args.n_test} held-out scenes, full prompts, 20 DDIM steps, CFG 5; mean ± 95% t half-width over "
             f"{len(args.seeds)} training seeds; zc - script: Welch's 95% interval", ""]
    for cond in args.conditions:
        key = conditions.get(cond).score
        bounds = {r["trainer"]: r["value"] for r in rows if r["condition"] == cond and r["trainer"] in BOUNDS}
        lines += [f"{cond} ({key}; " + ", ".join(f"{k}: {v:.3f}" for k, v in bounds.items()) + ")",
                  f"{'step':>5s} {'script':>14s} {'zc.train':>14s} {'zc - script, 95% interval':>28s}"]
        for s in at:
            v = {t: [r["value"] for r in rows if (r["condition"], r["trainer"], r["step"]) == (cond, t, s)
                     and r["seed"] in args.seeds] for t in TRAINERS}
            (ms, hs), (mz, hz) = t_interval(v[TRAINERS[0]]), t_interval(v[TRAINERS[1]])
            w = welch_difference(v[TRAINERS[1]], v[TRAINERS[0]])
            d, hd = w["mean"], w["high"] - w["mean"]
            lines.append(f"{s:5d} {ms:8.3f} ±{hs:4.2f} {mz:8.3f} ±{hz:4.2f} {d:+9.3f} [{d - hd:+.3f}, {d + hd:+.3f}]")
        lines.append("")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
