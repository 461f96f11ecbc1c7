"""Where the peak memory of one training step comes from, op by op, on this CPU: the torch profiler
records every allocation and free; the running sum of live bytes over the step (forward, backward,
AdamW step) gives its peak above what was allocated before (weights, gradients' absence, optimiser
state), and the op running at that moment. Side by side for plain fine-tuning, zc's ControlNet and
diffusers' ControlNetModel, built exactly as benchmarks/train_step.py builds them.

It answers chapter 11's question: diffusers' ControlNetModel peaks at x1.38 of plain fine-tuning on
an H100 and zc's at x1.23, although both keep the same tensors for backward. If the two also differ
here, the difference is in the tensors the step allocates; if not, it is in the GPU's kernels.

    python benchmarks/peak_memory.py --config sd15 --latent 16 --batch 2 --out benchmarks/results/cpu/peak_memory.txt
"""
from __future__ import annotations

import argparse

import _results  # benchmarks/_results.py
import torch
import train_step as ts  # benchmarks/train_step.py: the same models, built the same way

METHODS = ("plain fine-tune", "zc ControlNet", "diffusers ControlNetModel")


def step_peak(method: str, cfg: dict, batch: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(0)
    n_tok, d_txt = cfg["text"]
    x = torch.randn(batch, 4, cfg["latent"], cfg["latent"], generator=g)
    e = torch.randn(batch, n_tok, d_txt, generator=g)
    c = torch.rand(batch, 3, cfg["latent"] * cfg["factor"], cfg["latent"] * cfg["factor"], generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    noise = torch.randn_like(x)
    forward, params, opt = ts.build(method, cfg, "cpu", torch.float32)

    def step():
        torch.nn.functional.mse_loss(forward(x, t, e, c), noise).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # AdamW's state exists before the measured step, as in training
        step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((ev for ev in prof.events() if ev.self_cpu_memory_usage), key=lambda ev: ev.time_range.start)
    live = peak = 0
    at = None
    for ev in events:  # an op's own net allocations at its start; frees outside ops as "[memory]" events
        live += ev.self_cpu_memory_usage
        if live > peak:
            peak, at = live, ev.time_range.start
    running = sorted((ev for ev in prof.events() if ev.name != "[memory]" and ev.time_range.start <= at <= ev.time_range.end),
                     key=lambda ev: ev.time_range.end - ev.time_range.start)
    phase = next((ev.name for ev in running if ev.name.startswith("autograd::engine")), "forward")
    return {"method": method, "trainable": sum(p.numel() for p in params), "peak_mib": round(peak / 2**20, 1),
            "at": running[0].name if running else "", "phase": "backward" if phase != "forward" else "forward"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="sd15", choices=list(ts.CONFIGS))
    ap.add_argument("--latent", type=int, default=16, help="latent side (sd15: 64 is 512 px; 16 keeps the CPU run short)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/cpu/peak_memory.txt")
    args = ap.parse_args(argv)
    cfg = {**ts.CONFIGS[args.config], "latent": args.latent}
    rows = [step_peak(m, cfg, args.batch) for m in METHODS]
    plain = rows[0]["peak_mib"]
    lines = [f"$ python benchmarks/peak_memory.py --config {args.config} --latent {args.latent} --batch {args.batch}",
             f"{_results.machine()}; {args.config} shapes at latent {args.latent} "
             f"({args.latent * cfg['factor']} px), batch {args.batch}, fp32; one step after two warm-up steps", "",
             f"{'method':28s} {'trainable':>12s} {'peak MiB':>9s} {'x plain':>8s}  at the peak",
             *(f"{r['method']:28s} {r['trainable']:12,d} {r['peak_mib']:9.1f} {r['peak_mib'] / plain:8.2f}  "
               f"{r['phase']}, {r['at']}" for r in rows),
             "", "peak MiB: live bytes above those allocated before the step (weights, AdamW state), at op resolution"]
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
