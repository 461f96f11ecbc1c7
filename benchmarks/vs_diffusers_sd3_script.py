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


def base_with_zero_t5(pipe, out: Path) -> Path:
    """TinySD3 (`pipe`) with a text_encoder_3 that outputs zeros and a tokenizer_3, saved where the script can load
    it."""
    from diffusers import StableDiffusion3Pipeline
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    from zc import sd3, tinysd

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


# The script decides each caption's dropout once, when it precomputes the text embeddings (process_captions runs
# inside dataset.map): a pair's caption is then empty for the whole run or never. DROPOUT_PER_STEP moves the draw
# into the training step (each pair's embeddings replaced by the empty prompt's with probability
# --proportion_empty_prompts, every step), as the SD 1.x script and zc.train do; nothing else changes.
DROPOUT_PER_STEP = [
    ("            if random.random() < args.proportion_empty_prompts:\n",
     "            if False:  # zc: dropped per step in the training loop instead\n"),
    ("    del text_encoder_one, text_encoder_two, text_encoder_three\n",
     "    empty_embeds, empty_pooled = encode_prompt(text_encoders, tokenizers, [\"\"], args.max_sequence_length)\n"
     "    empty_embeds, empty_pooled = empty_embeds.to(accelerator.device), empty_pooled.to(accelerator.device)\n"
     "    del text_encoder_one, text_encoder_two, text_encoder_three\n"),
    ("                pooled_prompt_embeds = batch[\"pooled_prompt_embeds\"].to(dtype=weight_dtype)\n",
     "                pooled_prompt_embeds = batch[\"pooled_prompt_embeds\"].to(dtype=weight_dtype)\n"
     "                drop = torch.rand(bsz, device=prompt_embeds.device) < args.proportion_empty_prompts  # zc\n"
     "                prompt_embeds = torch.where(drop[:, None, None], empty_embeds.to(prompt_embeds), prompt_embeds)\n"
     "                pooled_prompt_embeds = torch.where(drop[:, None], empty_pooled.to(pooled_prompt_embeds),\n"
     "                                                   pooled_prompt_embeds)\n"),
]


# The script VAE-encodes its control images in [0, 1] (its conditioning transforms have no Normalize), while
# StableDiffusion3ControlNetPipeline, whose images zc's sampler gives, encodes them in [-1, 1] (VaeImageProcessor),
# as the Flux script's transforms do (diffusers issue #10821 asks about the difference). CONTROL_IN_PIPELINE_RANGE
# adds the one Normalize, so that what the ControlNet reads in training is what it reads in the pipeline.
CONTROL_IN_PIPELINE_RANGE = [
    ("            transforms.ToTensor(),\n        ]\n    )\n\n    def preprocess_train",
     "            transforms.ToTensor(),\n            transforms.Normalize([0.5], [0.5]),  # zc: the pipeline's range\n"
     "        ]\n    )\n\n    def preprocess_train"),
]
VARIANTS = {"dropout per step": DROPOUT_PER_STEP, "control in [-1, 1]": CONTROL_IN_PIPELINE_RANGE}


def patched(source: str, edits: list[tuple[str, str]], script: str) -> str:
    """`source` with each (line, replacement) made; exits naming the line if the script has it not exactly once."""
    for old, new in edits:
        if source.count(old) != 1:
            raise SystemExit(f"{script}: expected the line {old.strip()!r} once, to adapt")
        source = source.replace(old, new)
    return source


def prepare(script: str, tmp: Path, pipe, variant: str | None = None) -> tuple[Path, dict, Path]:
    """(runnable copy of train_controlnet_sd3.py, its env, TinySD3 (`pipe`) with a zero T5 to load): the script's
    torchvision import is the stand-in, its hard-coded 77-token CLIP padding is TinySD3's 16; a `variant`
    (VARIANTS: one change each) is made in a copy of its own."""
    folder = tmp / "".join(c if c.isalnum() else "-" for c in variant) if variant else tmp
    folder.mkdir(exist_ok=True)
    copy, env = script_copy(script, folder)
    edits = [("max_length=77,", f"max_length={pipe.tokenizer.model_max_length},")] + (VARIANTS[variant] if variant else [])
    copy.write_text(patched(copy.read_text(), edits, script))
    base = tmp / "tinysd3-t5"
    return copy, env, base if (base / "model_index.json").is_file() else base_with_zero_t5(pipe, base)


def script_command(script: Path, base: Path, init: Path, data: Path, out: Path, steps: int, batch: int, lr: float,
                   seed: int, checkpointing_steps: int = 1_000_000) -> list:
    """diffusers' train_controlnet_sd3.py on TinySD3 (`base`, from prepare) with the comparison's settings."""
    from zc import sd3

    return [sys.executable, script, "--pretrained_model_name_or_path", base, "--controlnet_model_name_or_path", init,
            "--train_data_dir", data, "--output_dir", out, "--resolution", "64", "--train_batch_size", batch,
            "--learning_rate", lr, "--lr_warmup_steps", "0", "--max_train_steps", steps,
            "--proportion_empty_prompts", "0.5", "--max_sequence_length", sd3.T5_TOKENS, "--precondition_outputs",
            "0", "--checkpointing_steps", checkpointing_steps, "--seed", seed, "--mixed_precision", "no",
            "--report_to", "tensorboard", "--cache_dir", Path(out) / "hf-cache"]  # its precomputed text: this run's


def half_copy(pipe):
    """The ControlNet every trainer starts from: zc's default copy (copy_depth: half the transformer's blocks)."""
    from zc.controls.mmdit_controlnet import MMDiTControlNet, copy_depth

    return MMDiTControlNet.from_transformer(pipe.transformer, copy_depth(None, pipe.transformer))


def main(argv=None):
    from zc import sd3
    from zc.controls.mmdit_controlnet import MMDiTControlNet
    from zc.sample import sample
    from zc.world import conditions
    from zc.world.pairs import PairedData

    args = arguments(argv, __doc__, "train_controlnet_sd3.py", 2000, 300,
                     "benchmarks/results/cpu/vs_diffusers_sd3_script.txt")
    pipe = sd3.load_sd3()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = PairedData.generate(args.pairs, size=64, seed=0)
        data.save(tmp / "fill50k")
        to_diffusers_layout(tmp / "fill50k", tmp / "hf")
        half_copy(pipe).save_pretrained(tmp / "init")
        script, env, base = prepare(args.script, tmp, pipe)
        test = PairedData.generate(args.n_test, size=64, seed=12345, split="test")

        def score(folder):
            images = sample(pipe, [(MMDiTControlNet.from_pretrained(folder).eval(), test.conditions())], test.prompts,
                            num_inference_steps=20, generator=torch.Generator().manual_seed(0))
            return conditions.measure(images, test.scenes)["shape_iou"]

        def script_cmd(seed, out):
            return script_command(script, base, tmp / "init", tmp / "hf", out, args.steps, args.batch, args.lr, seed)

        compare(args, "train_controlnet_sd3.py", script_cmd, env, "sd3", tmp, score,
                f"TinySD3, {args.pairs} fill50k pairs (64 px), a ControlNet copying "
                f"{pipe.transformer.config.num_layers // 2} of {pipe.transformer.config.num_layers} blocks, batch "
                f"{args.batch}, lr {args.lr}, 50% empty prompts, velocity loss", width=34)

if __name__ == "__main__":
    main()
