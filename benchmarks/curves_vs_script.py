"""Learning curves of zc.train and diffusers' examples/controlnet/train_controlnet.py, side by side:
the same TinySD, the same pairs, batch, learning rate and prompt dropout, several training seeds per
trainer, and one harness scoring both (issue #28). Each trainer's ControlNet is saved at every
`--at` step (the script: --checkpointing_steps, its checkpoint-N/controlnet; zc: the run resumed to
the next step, which the tests show ends with an uninterrupted run's weights) and scored on held-out
scenes with full prompts (20 sampler steps, CFG 5, sampler seed 0) by the condition's score.

    python benchmarks/curves_vs_script.py --script <diffusers>/examples/controlnet/train_controlnet.py \
        --conditions outline scribble --seeds 0 1 2 3 4 --out benchmarks/results/cpu/curves_vs_script.txt

`--base tinysd3` does the same for the transformer (chapter 14, issue #40): TinySD3, diffusers'
examples/controlnet/train_controlnet_sd3.py made runnable on it as benchmarks/vs_diffusers_sd3_script.py says, both
trainers starting from the same MMDiT ControlNet (half the blocks copied), velocity loss:

    python benchmarks/curves_vs_script.py --base tinysd3 --script <diffusers>/examples/controlnet/train_controlnet_sd3.py \
        --conditions outline --seeds 0 1 2 3 4 --out benchmarks/results/cpu/curves_vs_sd3_script.txt

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
import vs_diffusers_sd3_script as sd3_script
from vs_diffusers_script import run, script_command, script_copy, to_diffusers_layout

SCRIPTS = {"tinysd": "train_controlnet.py", "tinysd3": "train_controlnet_sd3.py"}  # base -> diffusers' script


def trainer_names(base: str) -> tuple[str, ...]:
    """The reference script first, zc.train last; for SD3 between them the script with one change each
    (vs_diffusers_sd3_script.VARIANTS): its prompt dropout drawn every step instead of once per pair when it
    precomputes the text embeddings; its control images VAE-encoded in [-1, 1], the pipeline's range."""
    script = f"diffusers {SCRIPTS[base]}"
    if base != "tinysd3":
        return script, "zc.train"
    return script, *(f"{script}, {v}" for v in sd3_script.VARIANTS), "zc.train"


def variant_of(trainer: str) -> str | None:
    """Which of vs_diffusers_sd3_script.VARIANTS a trainer's name ends with (None: the script as it is, or zc)."""
    return next((v for v in sd3_script.VARIANTS if trainer.endswith(", " + v)), None)


def bound_names(base: str) -> tuple[str, str]:
    return f"no control ({'TinySD3' if base == 'tinysd3' else 'TinySD'} alone)", "ceiling (training renders)"


def main(argv=None):
    import zc
    from zc import train as zt
    from zc.sample import sample
    from zc.study.stats import t_interval, welch_difference
    from zc.world import conditions
    from zc.controls.mmdit_controlnet import MMDiTControlNet
    from zc.sd3 import load_base
    from zc.world.pairs import PairedData

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", required=True, help="diffusers' examples/controlnet/train_controlnet.py "
                    "(--base tinysd3: train_controlnet_sd3.py)")
    ap.add_argument("--base", choices=sorted(SCRIPTS), default="tinysd", help="TinySD's UNet or TinySD3's transformer")
    ap.add_argument("--conditions", nargs="+", default=["outline", "scribble"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--at", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600], help="steps to score")
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--out", help="default: benchmarks/results/cpu/curves_vs_script.txt (tinysd3: "
                    "curves_vs_sd3_script.txt)")
    args = ap.parse_args(argv)
    args.out = args.out or f"benchmarks/results/cpu/curves_vs_{'sd3_' if args.base == 'tinysd3' else ''}script.txt"
    at = sorted(args.at)
    every = at[0]
    if any(s % every for s in at):
        raise SystemExit(f"--at steps must be multiples of the first ({every}): the script checkpoints every {every}")
    partial = Path(args.out).with_suffix(".partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in partial.read_text().splitlines()] if partial.is_file() else []
    done = {(r["condition"], r["seed"], r["trainer"]) for r in rows}
    sd3 = args.base == "tinysd3"
    TRAINERS, BOUNDS = trainer_names(args.base), bound_names(args.base)
    if Path(args.script).name != SCRIPTS[args.base]:
        raise SystemExit(f"--base {args.base} compares with diffusers' {SCRIPTS[args.base]}, not {args.script}")
    pipe = load_base(args.base)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if sd3:  # the script's copies, TinySD3 with a zero T5 for them, the half copy every trainer starts from
            script, env, base = sd3_script.prepare(args.script, tmp, pipe)
            copies = {v: sd3_script.prepare(args.script, tmp, pipe, v)[0] for v in sd3_script.VARIANTS} | {None: script}
            sd3_script.half_copy(pipe).save_pretrained(tmp / "init")
            loader = MMDiTControlNet
        else:
            script, env = script_copy(args.script, tmp)
            zc.ControlNet.for_pipeline(pipe).save_pretrained(tmp / "init")  # TinySD's 4x condition encoder
            loader = zc.ControlNet
        for cond in args.conditions:
            data = tmp / cond / "fill50k"
            PairedData.generate(args.pairs, size=64, seed=0, condition=cond).save(data)
            to_diffusers_layout(data, tmp / cond / "hf")
            test = PairedData.generate(args.n_test, size=64, seed=12345, split="test", condition=cond)
            key = conditions.get(cond).score

            def score(folder, test=test, key=key):
                controls = [(loader.from_pretrained(folder).eval(), test.conditions())] if folder is not None else None
                images = sample(pipe, controls, test.prompts, num_inference_steps=20,
                                generator=torch.Generator().manual_seed(0))
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
                    out = tmp / cond / f"{trainer.split()[0]}{TRAINERS.index(trainer)}_{seed}"  # one per trainer
                    curve = {}
                    if trainer != "zc.train":
                        if sd3:
                            cmd = sd3_script.script_command(copies[variant_of(trainer)], base, tmp / "init", tmp / cond / "hf", out, at[-1],
                                                            args.batch, args.lr, seed, checkpointing_steps=every)
                        else:
                            cmd = script_command(script, tmp / "init", tmp / cond / "hf", out, at[-1], args.batch,
                                                 args.lr, seed, checkpointing_steps=every)
                        run(cmd, env)
                        for s in at:
                            curve[s] = score(out / f"checkpoint-{s}" / "controlnet")
                    else:
                        for s in at:  # resumed to each step: the same weights as one run (tests/test_train.py)
                            cfg = zt.TrainConfig.preset(
                                "sd3" if sd3 else "cpu", condition=cond, data=str(data), steps=s, batch=args.batch,
                                lr=args.lr, seed=seed, eval_every=0, checkpoint_every=every, device="cpu",
                                out=str(out), cache=str(tmp / cond / "cache"))
                            curve[s] = score(zt.train(cfg, pipe=pipe).folder)
                    new = [{"condition": cond, "seed": seed, "trainer": trainer, "step": s, "score": key,
                            "value": v} for s, v in curve.items()]
                    rows += new
                    with partial.open("a") as f:
                        f.write("".join(json.dumps(r) + "\n" for r in new))
                    print(cond, seed, trainer, curve, flush=True)
    layers = pipe.transformer.config.num_layers if sd3 else 0
    what = (f"TinySD3, a ControlNet copying {layers // 2} of its {layers} blocks, velocity loss" if sd3 else "TinySD")
    ours, scripts = TRAINERS[-1], TRAINERS[:-1]
    lines = [f"$ python benchmarks/curves_vs_script.py --base {args.base} --script "
             f"<diffusers>/examples/controlnet/{SCRIPTS[args.base]} --conditions {' '.join(args.conditions)} --seeds {' '.join(map(str, args.seeds))} "
             f"--at {' '.join(map(str, at))} --pairs {args.pairs}",
             f"{_results.machine()}; {what}, {args.pairs} generated pairs per condition (64 px, the same for every "
             f"trainer), batch {args.batch}, lr {args.lr}, 50% empty prompts; each ControlNet scored on "
             f"{args.n_test} held-out scenes, full prompts, 20 sampler steps, CFG 5; mean ± 95% t half-width over "
             f"{len(args.seeds)} training seeds; zc - script: Welch's 95% interval"
             + ("; the script's variants, one change each: 'dropout per step' (its prompt dropout drawn every step, "
                "not once per pair), 'control in [-1, 1]' (its control images VAE-encoded in the pipeline's range, "
                "not [0, 1])" if len(scripts) > 1 else ""), ""]
    names = {t: variant_of(t) or "script" for t in scripts} | {ours: ours}
    for cond in args.conditions:
        key = conditions.get(cond).score
        bounds = {r["trainer"]: r["value"] for r in rows if r["condition"] == cond and r["trainer"] in BOUNDS}
        lines += [f"{cond} ({key}; " + ", ".join(f"{k}: {v:.3f}" for k, v in bounds.items()) + ")",
                  f"{'step':>5s} " + " ".join(f"{names[t]:>18s}" for t in TRAINERS)]
        values = {s: {t: [r["value"] for r in rows if (r["condition"], r["trainer"], r["step"]) == (cond, t, s)
                          and r["seed"] in args.seeds] for t in TRAINERS} for s in at}
        for s in at:
            lines.append(f"{s:5d} " + " ".join(f"{m:12.3f} ±{h:4.2f}" for m, h in map(t_interval, values[s].values())))
        lines += ["", f"{'step':>5s} " + " ".join(f"{'zc - ' + names[t]:>26s}" for t in scripts)]
        for s in at:
            cells = []
            for t in scripts:
                w = welch_difference(values[s][ours], values[s][t])
                d, hd = w["mean"], w["high"] - w["mean"]
                cells.append(f"{d:+8.3f} [{d - hd:+.3f}, {d + hd:+.3f}]")
            lines.append(f"{s:5d} " + " ".join(f"{c:>26s}" for c in cells))
        lines.append("")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
