"""zc.train against diffusers' examples/controlnet/train_controlnet.py, side by side in one run: the same
TinySD, the same fill50k pairs, the same batch, learning rate, prompt dropout and steps, on this CPU.
Reports time per step, peak memory (RSS) and the held-out shape IoU each trained ControlNet reaches.

    python benchmarks/vs_diffusers_script.py --script /path/to/train_controlnet.py \
        --out benchmarks/results/cpu/vs_diffusers_script.txt

The reference script is not part of zc: take it from the diffusers repository (examples/controlnet/).
It imports torchvision only for four image transforms; PyPI's torchvision breaks beside the CPU torch
this project pins, so the run uses a copy of the script whose one line `from torchvision import
transforms` imports a stand-in module instead (Resize, CenterCrop, ToTensor, Normalize with PIL and
torch; the pairs are already at the training size, so Resize and CenterCrop do nothing). A fake
`torchvision` package on the path would not do: transformers would then take torchvision for
installed and import its internals. Its ControlNet starts from a zc ControlNet saved in diffusers'
format (--controlnet_model_name_or_path): the script's own ControlNetModel.from_unet would build SD's
8x condition encoder, and TinySD's VAE is 4x.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHIM = '''
import enum
import numpy as np
import torch
from PIL import Image


class InterpolationMode(enum.Enum):
    BILINEAR = Image.BILINEAR


class Compose:
    def __init__(self, ts):
        self.ts = ts

    def __call__(self, x):
        for t in self.ts:
            x = t(x)
        return x


class Resize:
    def __init__(self, size, interpolation=InterpolationMode.BILINEAR):
        self.size, self.mode = size, interpolation.value

    def __call__(self, im):
        w, h = im.size
        s = self.size / min(w, h)
        return im if s == 1 else im.resize((round(w * s), round(h * s)), self.mode)


class CenterCrop:
    def __init__(self, size):
        self.size = size

    def __call__(self, im):
        w, h = im.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        return im.crop((left, top, left + self.size, top + self.size))


class ToTensor:
    def __call__(self, im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean[0], std[0]

    def __call__(self, x):
        return (x - self.mean) / self.std
'''


def run(cmd, env=None):
    """(wall seconds, CompletedProcess) of a command; exits with its stderr when it fails."""
    t0 = time.time()
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))}\n{r.stderr[-4000:]}")
    return time.time() - t0, r


def peak_rss_gb(cmd, env=None) -> tuple[float, float, str]:
    """(seconds, peak RSS in GB, stderr) of `cmd`, measured by a wrapper process around it."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); r = subprocess.run(sys.argv[1:]); "
             "print(time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20); sys.exit(r.returncode)")
    _, r = run([sys.executable, "-c", probe, *map(str, cmd)], env)
    seconds, gb = r.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(gb), r.stderr


def to_diffusers_layout(fill50k_folder: Path, out: Path) -> None:
    """A fill50k folder (zc's layout) as diffusers' dataset: out/train.parquet with image /
    conditioning_image / text columns."""
    import datasets

    from zc.world.pairs import PairedData

    rows = PairedData.load(fill50k_folder)
    hf = datasets.Dataset.from_dict({
        "image": [str(fill50k_folder / t) for _, t in rows.rows],
        "conditioning_image": [str(fill50k_folder / s) for s, _ in rows.rows], "text": rows.prompts,
    }).cast_column("image", datasets.Image()).cast_column("conditioning_image", datasets.Image())
    out.mkdir(parents=True, exist_ok=True)
    hf.to_parquet(str(out / "train.parquet"))


def script_copy(script: str, tmp: Path) -> tuple[Path, dict]:
    """(path, env) of a runnable copy of train_controlnet.py whose torchvision import is the SHIM."""
    import os

    (tmp / "shim").mkdir(exist_ok=True)
    (tmp / "shim" / "tv_transforms.py").write_text(SHIM)
    source = Path(script).read_text()
    if "from torchvision import transforms\n" not in source:
        raise SystemExit(f"{script} has no 'from torchvision import transforms' line: is it train_controlnet.py?")
    copy = tmp / "train_controlnet.py"
    copy.write_text(source.replace("from torchvision import transforms\n", "import tv_transforms as transforms\n"))
    return copy, {**os.environ, "PYTHONPATH": str(tmp / "shim")}


def script_command(script: Path, init: Path, data: Path, out: Path, steps: int, batch: int, lr: float, seed: int,
                   checkpointing_steps: int = 1_000_000) -> list:
    """diffusers' train_controlnet.py on TinySD with the comparison's settings."""
    import zc

    return [sys.executable, script, "--pretrained_model_name_or_path", zc.sd.TINYSD,
            "--controlnet_model_name_or_path", init, "--train_data_dir", data,
            "--output_dir", out, "--resolution", "64", "--train_batch_size", batch,
            "--learning_rate", lr, "--lr_warmup_steps", "0", "--max_train_steps", steps,
            "--proportion_empty_prompts", "0.5", "--checkpointing_steps", checkpointing_steps, "--seed", seed,
            "--report_to", "tensorboard"]


def arguments(argv, doc: str, script: str, pairs: int, steps: int, out: str):
    """The side-by-side's command line: the script, the data and training settings, seeds, the output."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", required=True, help=f"diffusers' examples/controlnet/{script}")
    ap.add_argument("--pairs", type=int, default=pairs)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (each trainer, each seed)")
    ap.add_argument("--out", default=out)
    return ap.parse_args(argv)


def train_and_score(runs: list[tuple], score) -> tuple[float, float, float, float]:
    """Each (name, command, env, zc_out or None, trained folder) run: timed with its peak memory, then
    score(folder) -> its held-out score. {name: (seconds, seconds of the steps alone, peak GB, score)}, where the
    steps alone are zc's time.json (zc_out) or the script's own progress bar ("Steps: 100%|...| [01:25<...")."""
    out = {}
    for name, cmd, env, zc_out, folder in runs:
        seconds, gb, log = peak_rss_gb(cmd, env)
        if zc_out is not None:
            steps_only = json.loads((zc_out / "time.json").read_text())["step_seconds"]
        else:
            m = re.findall(r"Steps: 100%.*?\[(\d+):(\d+)<", log)
            steps_only = int(m[-1][0]) * 60 + int(m[-1][1]) if m else float("nan")
        out[name] = (seconds, steps_only, gb, score(folder))
        print(name, out[name], flush=True)
    return out


def compare(args, script_name: str, script_cmd, env, preset: str, tmp: Path, score, what: str, width: int = 30):
    """For each seed, the script (script_cmd(seed, out folder)) and zc.train (`preset`, the same data, steps, batch
    and lr) trained and scored, then the report in args.out; `what`: the setting, for its machine line."""
    name = f"diffusers {script_name}"
    results = {name: [], "zc.train": []}
    for seed in args.seeds:
        d_out, z_out = tmp / f"diffusers_{seed}", tmp / f"zc_{seed}"
        zc_cmd = [sys.executable, "-m", "zc.train", "--preset", preset, "--data", tmp / "fill50k", "--steps",
                  args.steps, "--batch", args.batch, "--lr", args.lr, "--eval-every", "0", "--checkpoint-every",
                  "1000000", "--seed", seed, "--out", z_out]
        runs = [(name, script_cmd(seed, d_out), env, None, d_out), ("zc.train", zc_cmd, None, z_out, z_out / "controlnet")]
        for trainer, r in train_and_score(runs, score).items():
            results[trainer].append(r)
    bench = Path(sys.argv[0]).name
    report(results, args.steps, [
        f"$ python benchmarks/{bench} --script <diffusers>/examples/controlnet/{script_name} --pairs {args.pairs} "
        f"--steps {args.steps} --batch {args.batch} --lr {args.lr} --seeds {' '.join(map(str, args.seeds))}",
        f"{datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{what}, {args.steps} steps, no validation; shape IoU on {args.n_test} held-out outlines, full prompts; "
        f"means over {len(args.seeds)} training seeds (IoU: 95% interval)"], args.out, width)


def report(results: dict[str, list[tuple]], steps: int, header: list[str], out: str, width: int = 30) -> None:
    """The side-by-side table of train_and_score's results over seeds (the first trainer is the reference,
    x = ratio to it; the score with its 95% interval), printed and written to `out` (.txt) and `out`.json."""
    from zc.study.stats import t_interval

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    agg = {name: {"whole": mean([r[0] for r in rs]) / steps, "steps": mean([r[1] for r in rs]) / steps,
                  "gb": max(r[2] for r in rs), "iou": t_interval([r[3] for r in rs])} for name, rs in results.items()}
    ref = next(iter(agg.values()))
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    lines = [*header, "", f"{'trainer':{width}s} {'s/step, steps':>13s} {'x':>5s} {'s/step, run':>11s} {'x':>5s} "
             f"{'peak RSS GB':>11s} {'x':>5s} {'shape IoU':>15s}"]
    for name, a in agg.items():
        lines.append(f"{name:{width}s} {a['steps']:13.3f} {ratio(a['steps'], ref['steps']):5.2f} {a['whole']:11.3f} "
                     f"{a['whole'] / ref['whole']:5.2f} {a['gb']:11.2f} {a['gb'] / ref['gb']:5.2f} "
                     f"{a['iou'][0]:9.3f} ±{a['iou'][1]:4.2f}")
    lines += ["", "s/step, steps: the optimiser steps alone (zc: time.json; the script: its progress bar's elapsed "
              "time); s/step, run: the whole command (loading, data, encoding) over the steps"]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    Path(out).with_suffix(".json").write_text(json.dumps({"machine": header[1], "rows": [
        {"trainer": n, **a} for n, a in agg.items()]}, indent=1))


def main(argv=None):
    import zc
    from zc.sample import sample
    from zc.world import conditions
    from zc.world.pairs import PairedData

    args = arguments(argv, __doc__, "train_controlnet.py", 5000, 600, "benchmarks/results/cpu/vs_diffusers_script.txt")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = PairedData.generate(args.pairs, size=64, seed=0)
        data.save(tmp / "fill50k")  # zc reads the original layout
        to_diffusers_layout(tmp / "fill50k", tmp / "hf")
        pipe = zc.load_sd()
        zc.ControlNet.for_pipeline(pipe).save_pretrained(tmp / "init")  # TinySD's 4x condition encoder
        script, env = script_copy(args.script, tmp)
        test = PairedData.generate(args.n_test, size=64, seed=12345, split="test")

        def score(folder):
            images = sample(pipe, zc.ControlNet.from_pretrained(folder).eval(), test.prompts, test.conditions(),
                            num_inference_steps=20, generator=torch.Generator().manual_seed(0))
            return conditions.measure(images, test.scenes)["shape_iou"]

        compare(args, "train_controlnet.py", lambda seed, out: script_command(
            script, tmp / "init", tmp / "hf", out, args.steps, args.batch, args.lr, seed), env, "cpu", tmp, score,
            f"TinySD, {args.pairs} fill50k pairs (64 px), batch {args.batch}, lr {args.lr}, 50% empty prompts")


if __name__ == "__main__":
    main()
