"""zc.train against diffusers' examples/controlnet/train_controlnet_sd3.py on TinySD3, side by side in one run: the
same base, the same fill50k pairs, the same ControlNet at step 0 (a copy of half the blocks), batch, learning rate,
50% empty prompts, velocity loss and steps, on this CPU. Reports time per step and the held-out shape IoU each
trained ControlNet reaches (sampled by zc on TinySD3, full prompts).

    python benchmarks/vs_diffusers_sd3_script.py --script /path/to/train_controlnet_sd3.py \
        --out benchmarks/results/cpu/vs_diffusers_sd3_script.txt

The script loads three text encoders, T5 among them, and TinySD3 has none: the run gives it a copy of TinySD3
with a "T5" whose output is exactly zero (a one-layer T5EncoderModel whose final layer norm has zero weights)
and a word-level T5 tokenizer, which is what TinySD3's pipeline puts in T5's place (zero tokens; 16 of them:
--max_sequence_length 16). Its one `from torchvision import transforms` line imports the stand-in of
benchmarks/vs_diffusers_script.py, and its CLIP prompts, padded to a hard-coded 77 tokens
(`max_length=77` in its `_encode_prompt_with_clip`), are padded to TinySD3's 16 (its CLIPs have 16 positions, and the
pipeline pads to the tokenizer's length). `--precondition_outputs 0`: the script's velocity loss, zc's default (its own
default, 1, is zc's flow_target="sample").
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from vs_diffusers_script import peak_rss_gb, script_copy, to_diffusers_layout  # noqa: E402


def base_with_zero_t5(out: Path) -> Path:
    """TinySD3 with a text_encoder_3 that outputs zeros and a tokenizer_3, saved where the script can load it."""
    from diffusers import StableDiffusion3Pipeline
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    from zc import sd3, tinysd

    pipe = sd3.load_sd3()
    words = ["<pad>", "</s>", "<unk>", *tinysd.vocabulary()]
    tok = Tokenizer(models.Unigram([(w, 0.0) for w in words], unk_id=2))  # T5's kind of model, these words
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    t5_tok = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                             extra_ids=0, model_max_length=sd3.T5_TOKENS)
    width = pipe.transformer.config.joint_attention_dim
    t5 = T5EncoderModel(T5Config(vocab_size=len(words), d_model=width, d_kv=16, d_ff=64, num_layers=1, num_heads=2))
    with torch.no_grad():
        t5.encoder.final_layer_norm.weight.zero_()  # every output exactly 0: TinySD3's T5 slot
    full = StableDiffusion3Pipeline(**{**pipe.components, "text_encoder_3": t5.eval(), "tokenizer_3": t5_tok})
    full.save_pretrained(out)
    return out


def main(argv=None):
    from zc import sd3
    from zc.controls.mmdit_controlnet import MMDiTControlNet
    from zc.sample import sample
    from zc.study.stats import t_interval
    from zc.world import conditions
    from zc.world.pairs import PairedData

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", required=True, help="diffusers' examples/controlnet/train_controlnet_sd3.py")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="benchmarks/results/cpu/vs_diffusers_sd3_script.txt")
    args = ap.parse_args(argv)
    pipe = sd3.load_sd3()
    depth = pipe.transformer.config.num_layers // 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = PairedData.generate(args.pairs, size=64, seed=0)
        data.save(tmp / "fill50k")
        to_diffusers_layout(tmp / "fill50k", tmp / "hf")
        base = base_with_zero_t5(tmp / "tinysd3-t5")
        MMDiTControlNet.from_transformer(pipe.transformer, depth).save_pretrained(tmp / "init")
        script, env = script_copy(args.script, tmp)
        source = script.read_text()
        if source.count("max_length=77,") != 1:
            raise SystemExit(f"{args.script}: expected one hard-coded CLIP length 'max_length=77,' to adapt")
        script.write_text(source.replace("max_length=77,", f"max_length={pipe.tokenizer.model_max_length},"))
        test = PairedData.generate(args.n_test, size=64, seed=12345, split="test")
        results = {"diffusers train_controlnet_sd3.py": [], "zc.train": []}
        for seed in args.seeds:
            d_out, z_out = tmp / f"diffusers_{seed}", tmp / f"zc_{seed}"
            diffusers_cmd = [sys.executable, script, "--pretrained_model_name_or_path", base,
                             "--controlnet_model_name_or_path", tmp / "init", "--train_data_dir", tmp / "hf",
                             "--output_dir", d_out, "--resolution", "64", "--train_batch_size", args.batch,
                             "--learning_rate", args.lr, "--lr_warmup_steps", "0", "--max_train_steps", args.steps,
                             "--proportion_empty_prompts", "0.5", "--max_sequence_length", sd3.T5_TOKENS,
                             "--precondition_outputs", "0", "--checkpointing_steps", "1000000", "--seed", seed,
                             "--mixed_precision", "no", "--report_to", "tensorboard"]
            zc_cmd = [sys.executable, "-m", "zc.train", "--preset", "sd3", "--data", tmp / "fill50k", "--steps",
                      args.steps, "--batch", args.batch, "--lr", args.lr, "--eval-every", "0", "--checkpoint-every",
                      "1000000", "--seed", seed, "--out", z_out]
            for name, cmd, e, folder in (("diffusers train_controlnet_sd3.py", diffusers_cmd, env, d_out),
                                         ("zc.train", zc_cmd, None, z_out / "controlnet")):
                seconds, gb, log = peak_rss_gb(cmd, e)
                if name == "zc.train":
                    steps_only = json.loads((z_out / "time.json").read_text())["step_seconds"]
                else:  # the script's own progress bar: "Steps: 100%|...| 300/300 [01:25<00:00, ...]"
                    m = re.findall(r"Steps: 100%.*?\[(\d+):(\d+)<", log)
                    steps_only = int(m[-1][0]) * 60 + int(m[-1][1]) if m else float("nan")
                net = MMDiTControlNet.from_pretrained(folder).eval()
                images = sample(pipe, [(net, test.conditions())], test.prompts, num_inference_steps=20,
                                generator=torch.Generator().manual_seed(0))
                iou = conditions.measure(images, test.scenes)["shape_iou"]
                results[name].append((seconds, steps_only, gb, iou))
                print(name, seed, results[name][-1], flush=True)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    agg = {name: {"whole": mean([r[0] for r in rs]) / args.steps, "steps": mean([r[1] for r in rs]) / args.steps,
                  "gb": max(r[2] for r in rs), "iou": t_interval([r[3] for r in rs])} for name, rs in results.items()}
    ref = agg["diffusers train_controlnet_sd3.py"]
    lines = [f"$ python benchmarks/vs_diffusers_sd3_script.py --script <diffusers>/examples/controlnet/"
             f"train_controlnet_sd3.py --pairs {args.pairs} --steps {args.steps} --batch {args.batch} --lr {args.lr} "
             f"--seeds {' '.join(map(str, args.seeds))}",
             f"{datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, torch "
             f"{torch.__version__}; TinySD3, {args.pairs} fill50k pairs (64 px), a ControlNet "
             f"copying {depth} of {pipe.transformer.config.num_layers} blocks, batch {args.batch}, lr {args.lr}, 50% "
             f"empty prompts, velocity loss, {args.steps} steps, no validation; shape IoU on {args.n_test} held-out "
             f"outlines, full prompts; means over {len(args.seeds)} training seeds (IoU: 95% interval)", "",
             f"{'trainer':34s} {'s/step, steps':>13s} {'x':>5s} {'s/step, run':>11s} {'x':>5s} {'peak RSS GB':>11s} "
             f"{'x':>5s} {'shape IoU':>15s}"]
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    for name, a in agg.items():
        lines.append(f"{name:34s} {a['steps']:13.3f} {ratio(a['steps'], ref['steps']):5.2f} {a['whole']:11.3f} "
                     f"{a['whole'] / ref['whole']:5.2f} {a['gb']:11.2f} {a['gb'] / ref['gb']:5.2f} "
                     f"{a['iou'][0]:9.3f} ±{a['iou'][1]:4.2f}")
    lines += ["", "s/step, steps: the optimiser steps alone (zc: time.json; the script: its progress bar's elapsed "
              "time); s/step, run: the whole command (loading, data, encoding) over the steps"]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"machine": lines[1], "rows": [
        {"trainer": n, **{k: v for k, v in a.items()}} for n, a in agg.items()]}, indent=1))


if __name__ == "__main__":
    main()
