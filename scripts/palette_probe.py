"""Palette probe: does a palette ControlNet's output depend on the palette at all?

    python scripts/palette_probe.py palette STEPS LR EMPTY_PROMPT_PROB [gp] [sample]
    python scripts/palette_probe.py palette 2000 2e-4 0.5 sample   # the 2026-11-30 sampling check

Trains STEPS steps (gp: residuals pooled over space), then prints the hint block's spread across
items (the std over 16 held-out palettes of its output: 0 = the condition is ignored) and, at three
noise levels, the mean RGB distance of the one-step x0 prediction (decoded) to the scene's fill
(inside the shape) and background colours: TinySD alone, with the ControlNet, and with the
ControlNet given another scene's palette (cn_rolled). Empty prompts throughout. With `sample`, it
then samples 32 held-out scenes (20 DDIM steps) alone, with the ControlNet, in guess mode, at
conditioning scale 2 and in guess mode at CFG 9, and prints colour accuracy and the mean RGB
distance of the drawn shape to the fill colour and of the rest to the background colour: is the
colour there but too weak, and does amplifying the control bring it?
"""

import sys
import time

import torch

import zc
import zc.tinysd
from zc import train as zt
from zc.controlled_unet import ControlledUNet
from zc.sample import sample
from zc.world import conditions, shapes
from zc.world.pairs import PairedData

cond_name, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
epp = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
gp, sampling = "gp" in sys.argv[5:], "sample" in sys.argv[5:]
t0 = time.time()
cfg = zt.TrainConfig.preset(
    "cpu",
    condition=cond_name,
    kinds="circle,square,triangle,diamond",
    steps=steps,
    batch=16,
    n_train=10000,
    eval_every=0,
    out=f"runs/exp_{cond_name}_{steps}_{lr}_{epp}_{gp}",
    checkpoint_every=10**9,
    lr=lr,
    empty_prompt_prob=epp,
    global_pool=gp,
    cache="runs/palette_cache",
)
res = zt.train(cfg)
print(f"trained in {(time.time() - t0) / 60:.1f} min", flush=True)
pipe = zc.load_sd()
cn = res.module.eval()
model = ControlledUNet(pipe.unet, cn).eval()
n = 16
test = PairedData.generate(
    n, seed=777, split="test", condition=cond_name, kinds=shapes.KINDS
)
x = test.targets.float() / 127.5 - 1
cond = test.conditions()
table = shapes.colour_table()
truth = shapes.coverage(test.scenes, 64) > 0.5
torch.manual_seed(0)
with torch.no_grad():
    emb = cn.controlnet_cond_embedding(cond)
    print("hint item-std", f"{emb.std(0).mean():.4f}")
    lat = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    empty = zc.tinysd.encode_prompts(pipe.tokenizer, pipe.text_encoder, [""] * n)
    for t in [900, 700, 500]:
        tt = torch.full((n,), t)
        ac = pipe.scheduler.alphas_cumprod[t]
        noisy = ac.sqrt() * lat + (1 - ac).sqrt() * torch.randn(lat.shape)
        out = []
        for k, v in {
            "alone": pipe.unet(noisy, tt, encoder_hidden_states=empty).sample,
            "cn": model(noisy, tt, empty, cond),
            "cn_rolled": model(noisy, tt, empty, cond.roll(1, 0)),
        }.items():
            img = (
                pipe.vae.decode(
                    (ac.sqrt() * noisy - (1 - ac).sqrt() * v)
                    / pipe.vae.config.scaling_factor
                ).sample.clamp(-1, 1)
                + 1
            ) / 2
            px = img.permute(0, 2, 3, 1)
            f = (
                (px - table[test.scenes.fill][:, None, None]).norm(dim=-1) * truth
            ).flatten(1).sum(1) / truth.flatten(1).sum(1)
            b = (
                (px - table[test.scenes.bg][:, None, None]).norm(dim=-1) * ~truth
            ).flatten(1).sum(1) / (~truth).flatten(1).sum(1)
            out.append(f"{k} {f.mean():.3f}/{b.mean():.3f}")
        print(t, " | ".join(out), flush=True)

if sampling:
    test = PairedData.generate(
        32, seed=777, split="test", condition=cond_name, kinds=shapes.KINDS
    )
    cond, empty = test.conditions(), [""] * 32

    def dist(images):
        drawn = conditions.shape_regions(images)
        x = images.permute(0, 2, 3, 1)
        f = (x - table[test.scenes.fill][:, None, None]).norm(dim=-1)
        b = (x - table[test.scenes.bg][:, None, None]).norm(dim=-1)
        fd = (f * drawn).flatten(1).sum(1) / drawn.flatten(1).sum(1).clamp(min=1)
        bd = (b * ~drawn).flatten(1).sum(1) / (~drawn).flatten(1).sum(1).clamp(min=1)
        return fd.mean().item(), bd.mean().item()

    for label, net, kw in [
        ("alone", None, {}),
        ("CN cfg5", cn, {}),
        ("CN guess cfg5", cn, {"guess_mode": True}),
        ("CN scale2", cn, {"conditioning_scale": 2.0}),
        ("CN guess cfg9", cn, {"guess_mode": True, "guidance_scale": 9.0}),
    ]:
        x = sample(
            pipe,
            net,
            empty,
            cond if net is not None else None,
            num_inference_steps=20,
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
        m = conditions.measure(x, test.scenes)
        fd, bd = dist(x)
        print(
            f"{label:16s} colour acc {m['colour_accuracy']:.3f}"
            f"  mean dist fill {fd:.3f} bg {bd:.3f}",
            flush=True,
        )
