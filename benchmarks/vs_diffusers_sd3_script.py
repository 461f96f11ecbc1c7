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

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from vs_diffusers_script import arguments, compare, script_copy, to_diffusers_layout  # noqa: E402


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
    from zc.world import conditions
    from zc.world.pairs import PairedData

    args = arguments(argv, __doc__, "train_controlnet_sd3.py", 2000, 300,
                     "benchmarks/results/cpu/vs_diffusers_sd3_script.txt")
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

        def score(folder):
            images = sample(pipe, [(MMDiTControlNet.from_pretrained(folder).eval(), test.conditions())], test.prompts,
                            num_inference_steps=20, generator=torch.Generator().manual_seed(0))
            return conditions.measure(images, test.scenes)["shape_iou"]

        def script_cmd(seed, out):
            return [sys.executable, script, "--pretrained_model_name_or_path", base,
                    "--controlnet_model_name_or_path", tmp / "init", "--train_data_dir", tmp / "hf", "--output_dir", out,
                    "--resolution", "64", "--train_batch_size", args.batch, "--learning_rate", args.lr,
                    "--lr_warmup_steps", "0", "--max_train_steps", args.steps, "--proportion_empty_prompts", "0.5",
                    "--max_sequence_length", sd3.T5_TOKENS, "--precondition_outputs", "0", "--checkpointing_steps",
                    "1000000", "--seed", seed, "--mixed_precision", "no", "--report_to", "tensorboard"]

        compare(args, "train_controlnet_sd3.py", script_cmd, env, "sd3", tmp, score,
                f"TinySD3, {args.pairs} fill50k pairs (64 px), a ControlNet copying {depth} of "
                f"{pipe.transformer.config.num_layers} blocks, batch {args.batch}, lr {args.lr}, 50% empty prompts, "
                "velocity loss", width=34)


if __name__ == "__main__":
    main()
