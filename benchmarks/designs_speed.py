"""What each design of zc.designs costs, side by side in one run on one SD: trainable parameters (and
as % of the UNet), seconds per training step, and seconds per sampled image, against ControlNet.

    python benchmarks/designs_speed.py                                  # TinySD on the CPU
    python benchmarks/designs_speed.py --sd runs/sd15 --device cuda --batch 4 --images 4
    python benchmarks/designs_speed.py --sd tinysd3 --out benchmarks/results/cpu/designs_speed_sd3.txt   # chapter 14

On an SD3 the designs that control a transformer are timed; a design that reads the control image through
the VAE (SD3's ControlNet) encodes it inside the timed step, as zc.train does at every step.

The designs run in interleaved rounds (a round times one training step and one sampling call of
each), so a machine that slows down slows them alike; each number is the median over rounds.
Training steps use random latents and the step's own generator: the speed, not the learning, is
measured (zc.train is the loop; this is its step: forward, backward, AdamW).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402

import zc  # noqa: E402
from zc import designs  # noqa: E402
from zc import train as zt  # noqa: E402
from zc.sample import sample  # noqa: E402
from zc.sd3 import denoiser, is_sd3, load_base, text_features, to_latents  # noqa: E402
from zc.world.pairs import PairedData  # noqa: E402

SKIP: set[str] = set()  # every design is timed (the concat model trains its whole UNet)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd", default="tinysd")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="training batch")
    ap.add_argument("--images", type=int, default=8, help="images per sampling call")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/cpu/designs_speed.txt")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = zc.sd.inference_dtype(args.device)
    kind = "transformer" if is_sd3(load_base(args.sd)) else "unet"
    names = [n for n, d in designs.DESIGNS.items() if n not in SKIP and d.backbone == kind]
    pipes, built = {}, {}
    for name in names:  # one SD per design: the adapters' hooks and processors stay apart
        pipe = load_base(args.sd, device=device)
        module, model = zt.build(zt.TrainConfig(architecture=designs.get(name).architecture), pipe, 3, device)
        opt = torch.optim.AdamW(model.param_groups(1e-5), weight_decay=1e-2)
        pipes[name], built[name] = pipe, (module, model, opt)
    unet_params = sum(p.numel() for p in denoiser(next(iter(pipes.values()))).parameters())
    h = denoiser(next(iter(pipes.values()))).config.sample_size
    size = h * next(iter(pipes.values())).vae_scale_factor
    data = PairedData.generate(max(args.batch, args.images), size=size, seed=0)
    cond = data.conditions().to(device)
    g = torch.Generator(device=device).manual_seed(0)
    train_s = {n: [] for n in names}
    image_s = {n: [] for n in names}
    for r in range(args.rounds + 1):  # round 0 warms up (allocations, kernels) and is not counted
        for name in names:
            pipe, (module, model, opt) = pipes[name], built[name]
            lat = torch.randn(args.batch, denoiser(pipe).config.in_channels, h, h, generator=g, device=device)
            text = text_features(pipe, data.prompts[: args.batch])
            t = torch.randint(0, 1000, (args.batch,), generator=g, device=device)
            module.train()
            _sync(device)
            t0 = time.perf_counter()
            c = cond[: args.batch]
            if designs.get(name).control_input == "latents":  # through the VAE, at every step
                with torch.no_grad():
                    c = to_latents(pipe.vae, c * 2 - 1)
            loss = F.mse_loss(model(lat, t.to(lat.dtype) if kind == "transformer" else t, text, c).float(), lat)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if r:
                train_s[name].append(time.perf_counter() - t0)
            module.eval()
            if dtype != torch.float32:  # sample in the inference precision, train in fp32
                denoiser(pipe).to(dtype)
            kw = designs.sample_kwargs(module, cond[: args.images])
            t0 = time.perf_counter()
            sample(pipe, prompts=data.prompts[: args.images], num_inference_steps=args.sample_steps,
                   generator=torch.Generator().manual_seed(0), **kw)
            _sync(device)
            if r:
                image_s[name].append((time.perf_counter() - t0) / args.images)
            if dtype != torch.float32:
                denoiser(pipe).to(torch.float32)
    rows = []
    for name in names:
        module = built[name][0]
        params = sum(p.numel() for grp in built[name][1].param_groups(1e-5) for p in grp["params"])
        rows.append({"design": name, "runs": designs.get(name).runs, "params": params,
                     "pct_unet": 100 * params / unet_params, "train_s": statistics.median(train_s[name]),
                     "image_s": statistics.median(image_s[name])})
    ref = rows[0]
    lines = [f"$ python benchmarks/designs_speed.py {' '.join(argv or sys.argv[1:])}".rstrip(),
             f"{_results.machine()}; SD {args.sd} on {args.device}; training batch {args.batch}; sampling "
             f"{args.images} images x {args.sample_steps} steps with CFG; medians of {args.rounds} interleaved rounds",
             "",
             f"{'design':26s} {'runs':15s} {'trainable':>11s} {'% base':>7s} {'s/step':>8s} {'x':>5s} "
             f"{'s/image':>8s} {'x':>5s}"]
    for row in rows:
        lines.append(f"{row['design']:26s} {row['runs']:15s} {row['params']:11,d} {row['pct_unet']:7.2f} "
                     f"{row['train_s']:8.3f} {row['train_s'] / ref['train_s']:5.2f} {row['image_s']:8.3f} "
                     f"{row['image_s'] / ref['image_s']:5.2f}")
    lines.append(f"(x: against {ref['design']}; % base: of the {'transformer' if kind == 'transformer' else 'UNet'}'s "
                 f"{unet_params:,d} parameters)")
    _results.write(args.out, lines, rows)


if __name__ == "__main__":
    main()
