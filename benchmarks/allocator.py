"""glibc malloc's thresholds and a train-after-sampling loop, side by side in one run: zc.train's
seconds per step before and after one sampling call in the same process, with glibc's dynamic
thresholds (ZC_MALLOC=0) and with the fixed ones zc sets at import (zc.resources.tune_allocator).

    python benchmarks/allocator.py --out benchmarks/results/cpu/allocator.txt
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _results  # benchmarks/_results.py

CHILD = r"""
import json, sys, tempfile, time, torch, zc
from zc import train as zt
from zc.fill50k import Fill50k
from zc.sample import sample
steps, tmp = int(sys.argv[1]), tempfile.mkdtemp()
pipe = zc.load_sd()
Fill50k.generate(512, size=64, seed=0).save(f"{tmp}/d")
def train(tag):
    cfg = zt.TrainConfig(data=f"{tmp}/d", steps=steps, batch=16, eval_every=0, checkpoint_every=10**6,
                         device="cpu", out=f"{tmp}/{tag}", cache=f"{tmp}/cache")
    return zt.train(cfg, pipe=pipe).step_seconds / steps
first = train("first")
test = Fill50k.generate(32, size=64, seed=12345, split="test")
t = time.time()
sample(pipe, zc.ControlNet.for_pipeline(pipe).eval(), test.prompts, test.conditions(), num_inference_steps=20,
       generator=torch.Generator().manual_seed(0))
sampled = time.time() - t
print(json.dumps({"first": first, "sample_s": sampled, "after": train("after")}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes per setting, interleaved")
    ap.add_argument("--out", default="benchmarks/results/cpu/allocator.txt")
    args = ap.parse_args(argv)
    rows = []
    for rep in range(args.repeats):
        for setting, flag in (("glibc defaults (ZC_MALLOC=0)", "0"), ("zc: fixed thresholds", "1")):
            r = subprocess.run([sys.executable, "-c", CHILD, str(args.steps)], capture_output=True, text=True,
                               env={**os.environ, "ZC_MALLOC": flag}, check=True)
            rows.append({"setting": setting, "repeat": rep, **json.loads(r.stdout.strip().splitlines()[-1])})
            print(rows[-1], flush=True)
    lines = [f"$ python benchmarks/allocator.py --steps {args.steps} --repeats {args.repeats}",
             f"{_results.machine()}; TinySD, batch 16, 512 pairs; {args.steps} zc.train steps, one sampling call of 32 "
             "images x 20 steps (CFG), then the same training again, in one process; medians over repeats", "",
             f"{'allocator':30s} {'s/step, first':>14s} {'sampling s':>11s} {'s/step, after':>14s} {'after / first':>14s}"]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        part = [r for r in rows if r["setting"] == setting]
        med = {k: sorted(r[k] for r in part)[len(part) // 2] for k in ("first", "sample_s", "after")}
        lines.append(f"{setting:30s} {med['first']:14.3f} {med['sample_s']:11.1f} {med['after']:14.3f} "
                     f"{med['after'] / med['first']:14.2f}")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
