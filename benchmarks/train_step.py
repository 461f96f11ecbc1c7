"""Training-step time and memory: zc vs diffusers' ControlNetModel, ControlNet training vs
plain fine-tuning of the UNet (the paper's "+23% memory, +34% time" on one A100), and the
original repo's two training options, only_mid_control and sd_locked=False (chapter 10).

    python benchmarks/train_step.py                      # tiny configs, CPU
    python benchmarks/train_step.py --config tinysd --batch 16 --steps 30   # TinySD's UNet, as the sweeps train it
    python benchmarks/train_step.py --config sd15 --device cuda --batch 4   # SD1.5 shape, GPU

Memory is reported two ways: `train MB` = parameters + gradients + AdamW state + activations saved
for backward (counted with autograd's saved-tensor hooks, the same on any device), and `peak MB` =
torch.cuda.max_memory_allocated on a GPU. The methods run in interleaved rounds so that a noisy
machine slows them alike; the time is the median step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

import zc

CONFIGS = {
    # TinySD-like: 3 levels, attention only at the lowest resolution, 16x16 latents (64 px, 4x VAE)
    "tiny": dict(unet=dict(block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=32,
                           down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                           attention_head_dim=8, norm_num_groups=8),
                 latent=16, factor=4, hint=(16, 32, 64), text=(8, 32)),
    # 2 levels with attention at the top: attention-heavy
    "tiny-attn": dict(unet=dict(block_out_channels=(32, 64), layers_per_block=2, cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                attention_head_dim=8, norm_num_groups=8),
                      latent=16, factor=8, hint=(16, 32, 96, 256), text=(8, 32)),
    # Stable Diffusion 1.5's UNet shape (diffusers' defaults + 768-d text), 512 px -> 64x64 latents
    "sd15": dict(unet=dict(cross_attention_dim=768), latent=64, factor=8, hint=(16, 32, 96, 256), text=(77, 768)),
}  # + "tinysd": TinySD's own UNet, read from its shipped config (_tinysd below)


def _tinysd() -> dict:
    """The "tinysd" config: TinySD's UNet and VAE scale as shipped (zc/weights/tinysd)."""
    from zc.condition_encoder import default_channels
    from zc.sd import TINYSD

    unet = {k: v for k, v in UNet2DConditionModel.load_config(TINYSD / "unet").items()
            if not k.startswith("_") and k not in ("in_channels", "out_channels")}
    factor = 2 ** (len(AutoencoderKL.load_config(TINYSD / "vae")["block_out_channels"]) - 1)
    return dict(unet=unet, latent=unet["sample_size"], factor=factor, hint=default_channels(factor),
                text=(77, unet["cross_attention_dim"]))


CONFIGS["tinysd"] = _tinysd()


class SavedBytes:
    """Bytes of the tensors autograd saves for backward during one forward pass."""

    def __enter__(self):
        self.bytes, self._seen = 0, set()

        def pack(t):
            key = (t.data_ptr(), t.numel(), t.dtype)
            if key not in self._seen and t.device.type != "meta":
                self._seen.add(key)
                self.bytes += t.numel() * t.element_size()
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def build(method: str, cfg: dict, device, dtype):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **cfg["unet"]).to(device)
    if method == "plain fine-tune":
        unet.train()
        if dtype != torch.float32:
            unet.to(dtype)
        params = list(unet.parameters())

        def forward(x, t, e, c):
            return unet(x, t, encoder_hidden_states=e).sample
    elif method.startswith("zc ControlNet, "):  # the options, through the training wrapper zc.train uses
        option = method.split(", ")[1]
        cn = zc.ControlNet.from_unet(unet, conditioning_embedding_out_channels=cfg["hint"],
                                     only_mid_control=option == "only_mid_control")
        model = zc.ControlledUNet(unet, cn.to(device), sd_locked=option != "sd_locked=False").train()
        if dtype != torch.float32:
            model.to(dtype)
        groups = model.param_groups(1e-5, 1e-6)
        params = [p for g in groups for p in g["params"]]
        opt = torch.optim.AdamW(groups)
        return (lambda x, t, e, c: model(x, t, e, c)), params, opt
    else:
        unet.requires_grad_(False)
        if method == "zc ControlNet":
            cn = zc.ControlNet.from_unet(unet, conditioning_embedding_out_channels=cfg["hint"])
        else:
            cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cfg["hint"])
        cn = cn.to(device).train()
        if dtype != torch.float32:
            unet.to(dtype), cn.to(dtype)
        params = [p for p in cn.parameters() if p.requires_grad]
        assert len(params) == len(list(cn.parameters())), "the whole ControlNet must train"

        def forward(x, t, e, c):
            out = cn(x, t, encoder_hidden_states=e, controlnet_cond=c)
            down, mid = out if isinstance(out, tuple) else (out.down_block_res_samples, out.mid_block_res_sample)
            return unet(x, t, encoder_hidden_states=e, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
    opt = torch.optim.AdamW(params, lr=1e-5)
    return forward, params, opt


def run(config: str, batch: int, steps: int, warmup: int, device: str, dtype) -> list[dict]:
    cfg = CONFIGS[config]
    g = torch.Generator().manual_seed(0)
    n_tok, d_txt = cfg["text"]
    x = torch.randn(batch, 4, cfg["latent"], cfg["latent"], generator=g).to(device, dtype)
    e = torch.randn(batch, n_tok, d_txt, generator=g).to(device, dtype)
    c = torch.rand(batch, 3, cfg["latent"] * cfg["factor"], cfg["latent"] * cfg["factor"], generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    noise = torch.randn_like(x)
    methods = ["plain fine-tune", "zc ControlNet", "diffusers ControlNetModel",
               "zc ControlNet, only_mid_control", "zc ControlNet, sd_locked=False"]
    built = {m: build(m, cfg, device, dtype) for m in methods}
    times = {m: [] for m in methods}
    result = {m: {} for m in methods}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(m, measure=False):
        forward, params, opt = built[m]
        opt.zero_grad(set_to_none=True)
        if measure:
            with SavedBytes() as saved:
                loss = torch.nn.functional.mse_loss(forward(x, t, e, c).float(), noise.float())
            result[m]["activations"] = saved.bytes
        else:
            loss = torch.nn.functional.mse_loss(forward(x, t, e, c).float(), noise.float())
        loss.backward()
        opt.step()

    from torch.utils.flop_counter import FlopCounterMode

    for m in methods:
        for _ in range(warmup):
            step(m)
        with FlopCounterMode(display=False) as flops:  # matmuls and convolutions of one whole step
            step(m)
        result[m]["flops"] = flops.get_total_flops()
        step(m, measure=True)
        forward, params, opt = built[m]
        param_bytes = sum(p.numel() * p.element_size() for p in params)
        state_bytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
        result[m]["trainable"] = sum(p.numel() for p in params)
        result[m]["train_bytes"] = 2 * param_bytes + state_bytes + result[m]["activations"]  # params + grads + Adam + activations
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            step(m)
            sync()
            result[m]["peak"] = torch.cuda.max_memory_allocated()
    for _ in range(steps):  # interleaved rounds
        for m in methods:
            sync()
            t0 = time.perf_counter()
            step(m)
            sync()
            times[m].append(time.perf_counter() - t0)
    rows = []
    for m in methods:
        rows.append(dict(config=config, method=m, ms=1e3 * statistics.median(times[m]), **result[m]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["tiny", "tiny-attn"], choices=list(CONFIGS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}; {args.dtype}; median of {args.steps} steps\n")
    head = f"{'config':10} {'method':32} {'trainable':>11} {'step ms':>9} {'x plain':>8} {'x diffusers':>12} {'train MB':>9} {'x plain':>8}"
    from zc.study.budget import peak_flops

    peak = peak_flops(name) if args.device.startswith("cuda") else None
    head += f" {'TFLOP/step':>10}"
    if args.device.startswith("cuda"):
        head += f" {'peak MB':>9} {'x plain':>8}"
    if peak:  # model FLOPs utilisation: what the step computes per second / the card's dense peak
        head += f" {'MFU':>6}"
    print(head)
    print("-" * len(head))
    for config in args.config:
        rows = run(config, args.batch, args.steps, args.warmup, args.device, dtype)
        plain, ref = rows[0], rows[2]
        for r in rows:
            line = (f"{r['config']:10} {r['method']:32} {r['trainable']:>11,} {r['ms']:>9.1f} {r['ms'] / plain['ms']:>8.2f} "
                    f"{r['ms'] / ref['ms']:>12.3f} {r['train_bytes'] / 2**20:>9.1f} {r['train_bytes'] / plain['train_bytes']:>8.2f}"
                    f" {r['flops'] / 1e12:>10.2f}")
            if "peak" in r:
                line += f" {r['peak'] / 2**20:>9.0f} {r['peak'] / plain['peak']:>8.2f}"
            if peak:
                line += f" {r['flops'] / (r['ms'] / 1e3) / peak:>6.1%}"
            print(line)


if __name__ == "__main__":
    main()
