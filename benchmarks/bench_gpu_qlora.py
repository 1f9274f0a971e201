"""GPU benchmark: QLoRA on full-size architectures with random weights: tokens/s, MFU and peak memory of our path
(helpers.train.train_model: TRL with the fused log-prob head, fp32 adapters) vs plain transformers + peft QLoRA
(Trainer, full logits), with activations kept, recomputed (gradient checkpointing) or offloaded to CPU RAM; and the
memory planner's prediction beside every measured peak.

    python benchmarks/bench_gpu_qlora.py                              # all models, 6 steps each
    python benchmarks/bench_gpu_qlora.py --models qwen2.5-1.5b --batch 8 --seq 256
    python benchmarks/bench_gpu_qlora.py --census                     # saved-activation census, 2-layer models

Nothing is downloaded: each model is built from the config written below (values from the models' config.json on
the hub), with random bf16 weights saved to a temporary folder and loaded through helpers.models.load_model (nf4,
double quantization). Rows are random token ids of exactly --seq tokens, the second half supervised, so padding
plays no part (benchmarks/bench_training_throughput.py measures that). Without a CUDA GPU it prints why and exits 0.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

CONFIGS = {  # architecture sizes as in each model's config.json
    "qwen2.5-1.5b": ("qwen2", dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen2.5-7b": ("qwen2", dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False)),
    "llama-3-8b": ("llama", dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
                                 tie_word_embeddings=False)),
    "bloom-7b1": ("bloom", dict(vocab_size=250880, hidden_size=4096, n_layer=30, n_head=32)),
}
PLUMBING = {  # small shapes of the same classes, for --allow-cpu plumbing checks only
    "tiny-qwen2": ("qwen2", dict(vocab_size=3000, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1)),
    "tiny-bloom": ("bloom", dict(vocab_size=3000, hidden_size=128, n_layer=2, n_head=2)),
}
CUDA = torch.cuda.is_available()
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "T4": 65.0}  # dense bf16/fp16 datasheet


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--paths", default="ours,plain")
    parser.add_argument("--modes", default="keep,checkpoint,offload")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps; the first 2 are warm-up")
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--census", action="store_true", help="saved-activation census on 2-layer models instead")
    parser.add_argument("--json", help="also write every row to this file")
    parser.add_argument("--allow-cpu", action="store_true", help="plumbing check on CPU (tiny-qwen2, tiny-bloom)")
    return parser.parse_args(argv)


def make_config(name: str, layers: int | None = None):
    from transformers import BloomConfig, LlamaConfig, Qwen2Config

    kind, values = (CONFIGS | PLUMBING)[name]
    values = dict(values)
    if layers:
        values["n_layer" if kind == "bloom" else "num_hidden_layers"] = layers
    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig, "bloom": BloomConfig}[kind]
    return cls(**values, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def random_checkpoint(config, folder: Path) -> Path:
    """Save random bf16 weights for `config` as safetensors (norms 1, biases 0), without building the model."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        shapes.pop("lm_head.weight", None)
    shard, n, tensors = 0, 0, {}
    device = "cuda" if CUDA else "cpu"
    g = torch.Generator(device=device).manual_seed(0)
    for key, shape in shapes.items():
        if "norm" in key or key.endswith("bias"):
            t = torch.ones(shape, dtype=torch.bfloat16) if key.endswith("weight") else torch.zeros(shape,
                                                                                                  dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, device=device, dtype=torch.bfloat16, generator=g) * 0.02).cpu()
        tensors[key], n = t, n + t.numel() * 2
        if n > 4 * 2**30:
            save_file(tensors, folder / f"model-{shard:05d}.safetensors", metadata={"format": "pt"})
            shard, n, tensors = shard + 1, 0, {}
    save_file(tensors, folder / f"model-{shard:05d}.safetensors", metadata={"format": "pt"})
    _write_index(folder)
    config.save_pretrained(folder)
    return folder


def _write_index(folder: Path) -> None:
    from safetensors import safe_open

    weight_map = {}
    for f in sorted(folder.glob("model-*.safetensors")):
        with safe_open(f, "pt") as st:
            weight_map |= {k: f.name for k in st.keys()}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def random_rows(n: int, seq: int, vocab: int):
    """Rows of exactly `seq` random ids (the tiny tokenizer's range), labels on the second half."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, min(vocab, 3000), (n, seq), generator=g).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": [[-100] * (seq // 2) + r[seq // 2:] for r in ids]})


class StepTimer(TrainerCallback):
    """Times optimizer steps (CUDA-synchronised)."""

    def __init__(self):
        self.times, self.start, self.memory = [], 0.0, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.memory["train_begin_gib"] = torch.cuda.memory_allocated() / 2**30 if CUDA else float("nan")

    def on_step_begin(self, args, state, control, **kwargs):
        torch.cuda.synchronize() if CUDA else None
        if len(self.times) == 2:  # between steps: weights, adapters and (unpaged) optimizer states
            self.memory["between_steps_gib"] = torch.cuda.memory_allocated() / 2**30 if CUDA else float("nan")
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize() if CUDA else None
        self.times.append(time.perf_counter() - self.start)


def flops_per_token(shape, seq: int) -> float:
    """Model FLOPs per trained token with a frozen base: forward (2 per weight) + input gradients (2 per weight),
    attention scores and values (forward and backward), and the output layer; recomputation not counted."""
    linear = shape.layers * sum(a * b for a, b in shape.linear_shapes().values())
    attention = shape.layers * 2 * seq * shape.heads * shape.head_dim  # QK^T and PV over the causal half
    return 4 * linear + 3 * attention + 4 * shape.vocab * shape.hidden  # backward of attention: twice forward


def lora_config(dropout: float):
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", bias="none",
                      task_type="CAUSAL_LM")


def run_ours(base, tok, rows, args, mode: str, timer: StepTimer, out: Path):
    import helpers.train
    from helpers.peft_methods import prepare_for_training
    from helpers.profiles import get_profile

    profile = get_profile("a100", batch_size=args.batch, grad_accum=1, max_length=args.seq, max_steps=args.steps,
                          logging_steps=1, save_steps=1000, lora_dropout=args.lora_dropout, warmup_ratio=0.0,
                          gradient_checkpointing=mode == "checkpoint", activation_offloading=mode == "offload",
                          auto_checkpointing=False, padding_free="off")
    model = prepare_for_training(base, lora_config(args.lora_dropout), gradient_checkpointing=mode == "checkpoint")
    helpers.train.train_model(model, tok, rows, profile, out, resume=False, callbacks=[timer])
    return model


def run_plain(base, tok, rows, args, mode: str, timer: StepTimer, out: Path):
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments, default_data_collator

    model = prepare_model_for_kbit_training(base, use_gradient_checkpointing=mode == "checkpoint")
    if mode == "offload":  # transformers' option: checkpointing with the layer inputs held in CPU RAM
        model.activation_checkpointing_enable(offload=True)
    model = get_peft_model(model, lora_config(args.lora_dropout))
    rows = rows.map(lambda r: {"attention_mask": [1] * len(r["input_ids"])})
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.steps,
                              learning_rate=2e-4, bf16=CUDA, logging_steps=1,
                              optim="paged_adamw_8bit" if CUDA else "adamw_torch",
                              save_strategy="no", report_to="none")
    Trainer(model=model, args=targs, train_dataset=rows, data_collator=default_data_collator,
            callbacks=[timer]).train()
    return model


def release(model, base) -> None:
    """Strip the adapter and checkpointing off the shared base and free what the run left."""
    model.unload() if hasattr(model, "unload") else None
    if getattr(base, "is_gradient_checkpointing", False):
        base.gradient_checkpointing_disable()
    gc.collect()
    torch.cuda.empty_cache() if CUDA else None


def predicted(shape, args, path: str, mode: str) -> dict:
    from helpers.memory import estimate_memory

    parts = estimate_memory(shape, method="qlora", seq_len=args.seq, batch_size=args.batch,
                            gradient_checkpointing=mode != "keep" if path == "plain" else mode == "checkpoint",
                            activation_offloading=mode == "offload" and path == "ours",
                            optimizer="paged_adamw_8bit", compute_dtype="bfloat16", lora_r=16,
                            lora_dropout=args.lora_dropout, fused_loss=path == "ours")
    # Paged optimizer states live in CUDA unified memory, outside torch's allocator (and its peak counter).
    allocated = sum(v for k, v in parts.items() if k not in ("CUDA context", "allocator slack")
                    and not k.startswith("optimizer"))
    return {"predicted_allocated_gib": allocated, "predicted_total_gib": sum(parts.values())}


def bench_model(name: str, args, tok, rows_out: list) -> None:
    from helpers.memory import model_shape
    from helpers.models import load_model

    config = make_config(name)
    shape = model_shape(config)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        start = time.perf_counter()
        random_checkpoint(config, Path(folder))
        base = load_model(folder, quantization="nf4", compute_dtype="bfloat16")
        loaded = torch.cuda.memory_allocated() / 2**30 if CUDA else float("nan")
        print(f"{name}: built and loaded in {time.perf_counter() - start:.0f} s, {loaded:.2f} GiB", flush=True)
    rows = random_rows(args.batch * args.steps, args.seq, shape.vocab)
    card = torch.cuda.get_device_name() if CUDA else "cpu"
    peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in card), 989.4)
    for mode in args.modes.split(","):
        for path in args.paths.split(","):
            timer = StepTimer()
            gc.collect()
            torch.cuda.empty_cache() if CUDA else None
            torch.cuda.reset_peak_memory_stats() if CUDA else None
            before = torch.cuda.memory_allocated() / 2**30 if CUDA else float("nan")
            runner = run_ours if path == "ours" else run_plain
            with tempfile.TemporaryDirectory() as out:
                try:
                    model = runner(base, tok, rows, args, mode, timer, Path(out))
                except torch.OutOfMemoryError as err:
                    print(f"{name} {path} {mode}: out of memory ({str(err)[:80]})", flush=True)
                    gc.collect()
                    torch.cuda.empty_cache()
                    continue
            step = statistics.median(timer.times[2:] or timer.times)
            tokens_s = args.batch * args.seq / step
            row = {"model": name, "path": path, "mode": mode, "batch": args.batch, "seq": args.seq,
                   "tokens_s": tokens_s, "step_s": step,
                   "mfu": tokens_s * flops_per_token(shape, args.seq) / (peak_tflops * 1e12),
                   "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan"),
                   "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if CUDA else float("nan"),
                   "loaded_gib": loaded, "before_run_gib": before, **timer.memory, **predicted(shape, args, path, mode)}
            row["error"] = row["predicted_allocated_gib"] / row["peak_allocated_gib"] - 1
            rows_out.append(row)
            print(json.dumps(row), flush=True)
            Path(args.json).write_text(json.dumps(rows_out, indent=1)) if args.json else None
            release(model, base)
    del base
    gc.collect()
    torch.cuda.empty_cache()


def census(name: str, args, tok) -> dict:
    """Saved-activation bytes of one forward pass of a 2-layer version, by tensor shape and dtype."""
    import collections

    from helpers.memory import _head_bytes, _layer_activation_bytes, _targets, model_shape
    from helpers.models import load_model
    from helpers.peft_methods import prepare_for_training

    config = make_config(name, layers=2)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        base = load_model(str(random_checkpoint(config, Path(folder))), quantization="nf4", compute_dtype="bfloat16")
    shape, result = model_shape(config), {"model": name}
    for dropout in (0.0, args.lora_dropout):
        model = prepare_for_training(base, lora_config(dropout))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen, kinds = set(), collections.Counter()

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params and st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                kinds[f"{tuple(t.shape)} {str(t.dtype)[6:]}"] += st.nbytes()
            return t

        ids = torch.randint(10, 3000, (args.batch, args.seq), device=base.device)
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with torch.autocast(base.device.type, dtype=torch.bfloat16), hooks:
            model(input_ids=ids, labels=ids)
        tokens = args.batch * args.seq
        per_layer = _layer_activation_bytes(shape, _targets(shape, "all-linear"), args.seq, 2, 4, 1, 16, dropout > 0)
        head = sum(_head_bytes(shape, tokens, 2, 4, False)[:1])
        result[f"dropout={dropout}"] = {"measured_bytes": sum(kinds.values()),
                                        "predicted_bytes": 2 * per_layer * tokens + head,
                                        "by_tensor": dict(kinds.most_common(24))}
        model.unload()
        del model
        gc.collect()
    del base
    torch.cuda.empty_cache()
    return result


def print_table(rows: list[dict]) -> None:
    print(f"\n{'model':14s}{'path':7s}{'mode':11s}{'tok/s':>9s}{'step s':>8s}{'MFU':>7s}{'peak GiB':>10s}"
          f"{'planner':>9s}{'error':>8s}{'reserved':>10s}")
    for r in rows:
        print(f"{r['model']:14s}{r['path']:7s}{r['mode']:11s}{r['tokens_s']:9.0f}{r['step_s']:8.3f}{r['mfu']:7.1%}"
              f"{r['peak_allocated_gib']:10.2f}{r['predicted_allocated_gib']:9.2f}{r['error']:8.1%}"
              f"{r['peak_reserved_gib']:10.2f}")
    for (model, mode) in dict.fromkeys((r["model"], r["mode"]) for r in rows):
        pair = {r["path"]: r for r in rows if r["model"] == model and r["mode"] == mode}
        if {"ours", "plain"} <= set(pair):
            o, p = pair["ours"], pair["plain"]
            print(f"{model} {mode}: ours / plain tokens/s {o['tokens_s'] / p['tokens_s']:.2f}x, peak memory "
                  f"{o['peak_allocated_gib'] / p['peak_allocated_gib']:.2f}x")


def _in_subprocess(name: str, argv) -> list[dict]:
    import subprocess

    argv = list(sys.argv[1:] if argv is None else argv)
    for flag in ("--models", "--json"):
        if flag in argv:
            del argv[argv.index(flag):argv.index(flag) + 2]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, __file__, *argv, "--models", name, "--json", f.name], check=False)
        text = Path(f.name).read_text()
    return json.loads(text) if text else []


def main(argv=None) -> None:
    args = parse_args(argv)
    if not CUDA and not args.allow_cpu:
        print("bench_gpu_qlora: no CUDA GPU here; nothing to measure (run it on a GPU machine).")
        return
    from helpers.models import load_tokenizer
    from helpers.tiny import build_tiny_model

    tok = load_tokenizer(str(build_tiny_model("qwen2")))
    if CUDA:
        torch.ones(1, device="cuda") @ torch.ones(1, 1, device="cuda")
        free, total = torch.cuda.mem_get_info()
        context = (total - free - torch.cuda.memory_reserved()) / 2**30
        print(f"{torch.cuda.get_device_name()}: CUDA context and libraries {context:.2f} GiB; "
              f"torch {torch.__version__}", flush=True)
    names = args.models.split(",")
    if len(names) > 1 and not args.census:  # one process per model: a finished model leaves memory behind
        rows = [row for name in names for row in _in_subprocess(name, argv)]
        print_table(rows)
        Path(args.json).write_text(json.dumps(rows, indent=1)) if args.json else None
        return
    rows = []
    for name in names:
        if args.census:
            rows.append(census(name, args, tok))
            print(json.dumps({k: v for k, v in rows[-1].items()}), flush=True)
        else:
            bench_model(name, args, tok, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if not args.census:
        print_table(rows)


if __name__ == "__main__":
    main()
