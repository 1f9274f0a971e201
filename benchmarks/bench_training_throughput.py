"""Benchmark: QLoRA training throughput of our path vs a plain padded Trainer and TRL's defaults (CPU or GPU).

    python benchmarks/bench_training_throughput.py                  # ~26M-parameter Qwen2-class model, nf4
    python benchmarks/bench_training_throughput.py --epochs 2 --pad-to 512

Every path trains the same randomly initialised model (built from a config, 4-bit nf4), on the same rows (the
project's Chinese samples), with the same seed, learning rate, LoRA settings and effective batch, for one epoch:
- ours:  helpers.train.train_model with the profile defaults (length-grouped batches; padding-free where the
         attention kernel has a variable-length path; gradient checkpointing off, as on the smoke profile);
- plain: transformers.Trainer, rows padded to --pad-to tokens (the usual tutorial recipe), loss over full logits;
- trl:   SFTTrainer given the base model and a LoraConfig, SFTConfig defaults (gradient checkpointing on,
         random batches padded to their longest row).
A forward pre-hook counts each batch's positions, real tokens and supervised tokens, so the padding share and
token rates are measured, not estimated. Ratios are ours / baseline, from the same run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from helpers.data import load_training_data  # noqa: E402
from helpers.models import load_model, load_tokenizer  # noqa: E402
from helpers.paths import cache_dir  # noqa: E402
from helpers.peft_methods import build_lora_config, prepare_for_training  # noqa: E402
from helpers.profiles import get_profile  # noqa: E402
from helpers.prompts import build_sft_dataset  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512, help="model width (512: ~26M parameters with 8 layers)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512, help="our and TRL's cut-off")
    parser.add_argument("--pad-to", type=int, default=256, help="the plain Trainer pads every row to this")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--paths", default="plain,trl,ours", help="comma-separated subset, run in this order")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all paths, interleaved; medians reported")
    # One thread by default: on a shared 2-core machine extra threads spin against other processes and make the
    # paths' timings depend on what else runs; the ratios hold either way.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def build_model_dir(hidden: int, layers: int) -> Path:
    """A Qwen2-class model of the given size with the tiny tokenizer, random weights, saved once as safetensors."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from helpers.tiny import build_tiny_model

    target = cache_dir("bench-models") / f"qwen2-h{hidden}-l{layers}"
    if (target / "config.json").exists():
        return target
    tok = load_tokenizer(str(build_tiny_model("qwen2")))
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    return target


class Meter(TrainerCallback):
    """Counts positions / real / supervised tokens of every forward pass and times every optimizer step."""

    def __init__(self, pad_id: int):
        self.pad_id, self.positions, self.real, self.supervised, self.steps = pad_id, 0, 0, 0, []

    def hook(self, module, args, kwargs):
        ids, labels = kwargs["input_ids"], kwargs["labels"]
        mask = kwargs.get("attention_mask")
        self.positions += ids.numel()
        self.real += int(mask.sum()) if mask is not None else int((ids != self.pad_id).sum())
        self.supervised += int((labels[..., 1:] != -100).sum())

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self.step_start)

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start

    def row(self) -> dict:
        return {"supervised tok/s": self.supervised / self.seconds, "total tok/s": self.real / self.seconds,
                "step s (median)": statistics.median(self.steps), "padding": 1 - self.real / self.positions,
                "steps": len(self.steps), "wall s": self.seconds}


def run_ours(model_dir, tok, ds, profile, meter, out):
    from helpers.train import train_model

    model = prepare_for_training(load_model(str(model_dir), compute_dtype=profile.compute_dtype),
                                 build_lora_config(profile))
    model.register_forward_pre_hook(meter.hook, with_kwargs=True)
    train_model(model, tok, ds, profile, out, resume=False, callbacks=[meter])


def _padded_rows(ds, tok, pad_to: int):
    """Plain-recipe rows: prompt + answer + eos, labels -100 on the prompt and on the padding up to pad_to."""
    from helpers.batching import check_training_rows

    check_training_rows(ds, pad_to)
    return ds.map(lambda r: {"input_ids": r["input_ids"] + [tok.pad_token_id] * (pad_to - len(r["input_ids"])),
                            "attention_mask": [1] * len(r["input_ids"]) + [0] * (pad_to - len(r["input_ids"])),
                            "labels": r["labels"] + [-100] * (pad_to - len(r["labels"]))})


def run_plain(model_dir, tok, ds, profile, meter, out, pad_to):
    from transformers import Trainer, TrainingArguments, default_data_collator

    model = prepare_for_training(load_model(str(model_dir), compute_dtype=profile.compute_dtype),
                                 build_lora_config(profile))
    model.register_forward_pre_hook(meter.hook, with_kwargs=True)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=profile.batch_size,
                             gradient_accumulation_steps=profile.grad_accum, learning_rate=profile.learning_rate,
                             num_train_epochs=profile.epochs, seed=profile.seed, save_strategy="no",
                             report_to="none", logging_steps=10, bf16=False)
    Trainer(model=model, args=args, train_dataset=_padded_rows(ds, tok, pad_to), data_collator=default_data_collator,
            callbacks=[meter]).train()


def run_trl(model_dir, tok, ds, profile, meter, out):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=profile.batch_size,
                     gradient_accumulation_steps=profile.grad_accum, learning_rate=profile.learning_rate,
                     num_train_epochs=profile.epochs, seed=profile.seed, save_strategy="no", report_to="none",
                     bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    model = load_model(str(model_dir), compute_dtype=profile.compute_dtype)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=build_lora_config(profile), callbacks=[meter])
    trainer.model.register_forward_pre_hook(meter.hook, with_kwargs=True)
    trainer.train()


def print_table(rows: dict[str, dict]) -> None:
    keys = ["supervised tok/s", "total tok/s", "step s (median)", "padding", "steps", "wall s"]
    print(f"{'path':8s}" + "".join(f"{k:>18s}" for k in keys))
    for name, row in rows.items():
        print(f"{name:8s}" + "".join(f"{row[k]:>18.3f}" if k != "steps" else f"{int(row[k]):>18d}"
                                     for k in keys))
    if "ours" in rows:
        for name in (n for n in rows if n != "ours"):
            a, b = rows["ours"], rows[name]
            ratio = {k: a[k] / b[k] for k in ("supervised tok/s", "total tok/s")}
            print(f"ours / {name}: supervised tok/s {ratio['supervised tok/s']:.2f}x, total tok/s "
                  f"{ratio['total tok/s']:.2f}x, step time {b['step s (median)'] / a['step s (median)']:.2f}x faster")


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("ZH_COOKBOOK_CACHE", str(ROOT / ".cache"))
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = build_model_dir(args.hidden, args.layers)
    tok = load_tokenizer(str(model_dir))
    profile = get_profile("smoke", batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs,
                          max_length=args.max_length, learning_rate=2e-4, lora_r=16, lora_alpha=32,
                          compute_dtype="auto", save_steps=1000, logging_steps=10, max_steps=-1)
    examples, _ = load_training_data("data_samples/instructions_zh.json")
    ds = build_sft_dataset(examples, tok, max_length=args.max_length)
    runners = {"plain": lambda m, o: run_plain(model_dir, tok, ds, profile, m, o, args.pad_to),
               "trl": lambda m, o: run_trl(model_dir, tok, ds, profile, m, o),
               "ours": lambda m, o: run_ours(model_dir, tok, ds, profile, m, o)}
    runs = {name: [] for name in args.paths.split(",")}
    for round_ in range(args.repeats):
        for name in runs:
            meter = Meter(tok.pad_token_id)
            with tempfile.TemporaryDirectory() as out:
                runners[name](meter, Path(out))
            runs[name].append(meter.row())
            print(f"round {round_ + 1}, {name}: done in {meter.seconds:.1f} s", flush=True)
    rows = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    n_params = sum(p.numel() for p in load_model(str(model_dir), quantization="none").parameters())
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\nqwen2-class model, {n_params / 1e6:.1f}M parameters, nf4; {len(ds)} rows; batch {args.batch_size} x "
          f"accumulation {args.grad_accum}; {args.epochs} epoch(s); median of {args.repeats} interleaved run(s); "
          f"{device}; plain pads to {args.pad_to}")
    print_table(rows)


if __name__ == "__main__":
    main()
