"""Named run profiles: one table of settings per scale, resolved with overrides."""
from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, fields
from typing import Any

from .paths import project_path

__all__ = ["Profile", "PROFILES", "get_profile", "profile_names"]


@dataclass(frozen=True)
class Profile:
    """Every knob a notebook uses; each comment says what it changes and what it costs."""

    name: str
    description: str
    base_model: str  # hub id, a local directory, or "tiny:<arch>" (built offline from a config)
    quantization: str = "nf4"  # "nf4": 4-bit QLoRA (about 1/4 of fp16 weight memory); "none": full-precision base
    compute_dtype: str = "auto"  # "auto" picks bf16 on GPUs that have it, fp16 on older GPUs (T4), fp32 on CPU
    trust_remote_code: bool = False  # run code shipped with the model repo; only for families that need it
    prompt_template: str = "auto"  # "auto" (chat template if the tokenizer has one), "chat", "alpaca_en", "alpaca_zh"
    train_data: str = "data_samples/instructions_zh.json"  # a file, "hf:<dataset id>", or a mixture "a.json:1.0 + b.json:0.3" (helpers/data.py)
    train_limit: int = 0  # keep at most this many training records (0: all)
    eval_data: str = "data_samples/eval_zh.json"  # Belle-eval format: question / std_answer / class
    eval_limit: int = 0  # evaluate at most this many instructions (0: all)
    exam_data: str = "data_samples/exam_zh_test.jsonl"  # multiple-choice exam questions
    exam_dev_data: str = "data_samples/exam_zh_dev.jsonl"  # k-shot exemplars
    exam_limit: int = 0  # at most this many exam questions (0: all)
    max_length: int = 512  # tokens per training sample; memory grows linearly with it
    overlong: str = "truncate"  # samples over max_length: "truncate" the answer or "skip" the sample
    epochs: float = 1.0  # passes over the training data (ignored when max_steps > 0)
    max_steps: int = -1  # stop after this many optimizer steps (-1: run the epochs)
    batch_size: int = 4  # samples per forward pass; the main driver of activation memory
    grad_accum: int = 4  # forward passes per optimizer step; effective batch = batch_size * grad_accum
    learning_rate: float = 2e-4  # LoRA tolerates higher rates than full fine-tuning
    warmup_ratio: float = 0.03  # share of steps spent warming the learning rate up
    lora_r: int = 16  # adapter rank: higher is more capacity and more memory
    lora_alpha: int = 32  # adapter scale; alpha / r is the effective multiplier
    lora_dropout: float = 0.05  # regularisation on the adapter input
    target_modules: str = "all-linear"  # LoRA-family layers: "all-linear" (QLoRA), "attention-input", "q_proj,v_proj"
    gradient_checkpointing: bool = True  # recompute activations: ~30% slower, much less memory
    logging_steps: int = 10  # log the loss every N steps (NaN checks run at each log)
    save_steps: int = 100  # checkpoint every N steps (a multiple of logging_steps)
    oom_retries: int = 2  # on out-of-memory, halve the batch and double accumulation this many times
    seed: int = 42  # seeds data order, adapter init and dropout
    max_new_tokens: int = 256  # generation length at evaluation
    eval_batch_size: int = 8  # prompts per generation batch
    output_root: str = "outputs"  # adapters, checkpoints and caches go here (point it at Google Drive on Colab)
    result_note: str = ""  # printed on every figure and table this profile makes (e.g. "not a result")
    # Vocabulary expansion (finding 05; helpers.vocab.apply_vocab_expansion): "" keeps the base's vocabulary;
    # "<corpus>:<pieces>" trains that many Chinese pieces on the corpus and appends the new ones. Each new token
    # adds a row to the embeddings and to the output layer (2 x hidden size values; unquantised even in nf4).
    vocab_expansion: str = ""
    # Continued pre-training steps on the vocab_expansion corpus before instruction tuning (0: none): the new
    # rows alone for the first half, then LoRA with them. Costs about as much per step as tuning at max_length.
    pretrain_steps: int = 0
    # Parameter-efficient method (finding 02; helpers/peft_methods.PEFT_METHODS says what each one builds).
    peft_method: str = "lora"  # lora, dora, adalora, ia3, prompt, p-tuning, prefix, SadapterP, SadapterH, P-adapter
    num_virtual_tokens: int = 20  # prompt/p-tuning/prefix: virtual tokens; each lengthens every sequence's activations
    encoder_hidden_size: int = 128  # p-tuning/prefix MLP width; prefix's output layer (layers x 2 x kv dim) dominates
    adapter_size: int = 32  # SadapterP/H, P-adapter bottleneck width (paper's -l variants: 256); params grow linearly
    adalora_init_r: int = 12  # AdaLoRA's starting rank per matrix: parameters and optimizer memory scale with it
    adalora_target_r: int = 8  # AdaLoRA's average rank after pruning (pruned ranks are masked, not freed)
    adalora_update: str = "callback"  # "callback": reallocate ranks after each step; "none": never (the paper's run)
    # Finding 04's CoT* arm: a cue appended as the last line of every instruction and generate-mode exam question
    # at evaluation only (the paper's "先思考，再决定"); never seen in training. "" (default) adds nothing.
    eval_suffix: str = ""
    # Tokens a generate-mode exam reply may use: 8 fits a bare letter; a model asked to think first (CoT*) needs
    # room for its rationale (e.g. max_new_tokens), and so does every arm it is compared with. Time grows with it.
    exam_max_new_tokens: int = 8
    expects_gpu: bool = False  # sized for a GPU: the environment check warns loudly when none is visible
    # Batches of rows of similar length: padding falls from ~27% of the tokens to under 5% (same rows per epoch,
    # less random batch make-up). No memory cost; the longest batch runs first, so an out-of-memory shows at once.
    group_by_length: bool = True
    # One concatenated row per batch, no padding at all. "auto": on where a FlashAttention kernel runs (Ampere or
    # newer GPU with flash-attn installed); "on" elsewhere is exact but builds a full attention mask (slower on GPU).
    padding_free: str = "auto"
    # Keep saved activations in CPU RAM instead of on the GPU (TRL's activation offloading). Measured on an H100
    # (QLoRA, 1.5B-8B): peak memory like gradient checkpointing's, at ~0.4x the speed of keeping activations
    # (checkpointing: ~0.7x), so it is not picked automatically; worth a try where PCIe is fast and RAM ample.
    activation_offloading: bool = False
    # On a GPU, let the memory planner (helpers.memory) turn gradient_checkpointing off when the run fits the card
    # without it (no recompute: 1.3-1.45x faster) and on when it does not; False uses gradient_checkpointing as given.
    auto_checkpointing: bool = True
    # Threads torch's CPU ops use (0: torch's default, one per core). A tiny model's ops are too small to split,
    # and two threads on a busy 2-core machine wait on each other: smoke's cookbook ran 4x faster on one.
    torch_threads: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The profile as a plain dict (for results files)."""
        return dataclasses.asdict(self)


_SMOKE = Profile(
    name="smoke",
    description="CPU plumbing check: a tiny Qwen2-architecture model built offline; numbers mean nothing",
    base_model="tiny:qwen2",
    compute_dtype="float32",
    train_limit=64,
    eval_limit=20,
    exam_limit=24,
    max_length=128,
    max_steps=30,
    batch_size=4,
    grad_accum=1,
    learning_rate=1e-2,  # a tiny random model needs a large step to show a falling loss in 30 steps
    warmup_ratio=0.0,
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    gradient_checkpointing=False,
    logging_steps=1,
    save_steps=10,
    max_new_tokens=16,
    eval_batch_size=8,
    result_note="plumbing check on a tiny random model, not a result",
    torch_threads=1,
)

_COLAB_T4 = Profile(
    name="colab-t4",
    description="Free Colab T4 (15 GB, no bf16): Qwen2.5-1.5B in nf4 with fp16 compute",
    base_model="Qwen/Qwen2.5-1.5B",
    compute_dtype="float16",
    train_data="hf:llm-wizard/alpaca-gpt4-data-zh",  # Alpaca-GPT4 in Chinese, the paper's default data
    train_limit=5000,
    eval_data="https://raw.githubusercontent.com/LianjiaTech/BELLE/main/eval/eval_set.json",
    eval_limit=200,
    exam_data="hf:haonan-li/cmmlu",
    exam_dev_data="hf:haonan-li/cmmlu",
    exam_limit=400,
    max_length=512,
    batch_size=4,
    grad_accum=4,
    logging_steps=10,
    save_steps=100,
    max_new_tokens=256,
    expects_gpu=True,
)

_A100 = Profile(
    name="a100",
    description="A100 40/80 GB: a 7B-class base (Qwen2.5-7B) in nf4 with bf16 compute, as in the paper's scale",
    base_model="Qwen/Qwen2.5-7B",
    compute_dtype="bfloat16",
    train_data="hf:llm-wizard/alpaca-gpt4-data-zh",
    eval_data="https://raw.githubusercontent.com/LianjiaTech/BELLE/main/eval/eval_set.json",
    exam_data="hf:haonan-li/cmmlu",
    exam_dev_data="hf:haonan-li/cmmlu",
    max_length=1024,
    batch_size=8,
    grad_accum=4,
    gradient_checkpointing=True,
    logging_steps=10,
    save_steps=200,
    max_new_tokens=512,
    eval_batch_size=16,
    expects_gpu=True,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (_SMOKE, _COLAB_T4, _A100)}

_CHOICES = {
    "quantization": ("nf4", "none"),
    "compute_dtype": ("auto", "float32", "float16", "bfloat16"),
    "prompt_template": ("auto", "chat", "alpaca_en", "alpaca_zh"),
    "overlong": ("truncate", "skip"),
    # the keys of helpers.peft_methods.PEFT_METHODS (kept here so profiles load without importing peft)
    "peft_method": ("lora", "dora", "adalora", "ia3", "prompt", "p-tuning", "prefix", "SadapterP", "SadapterH",
                    "P-adapter"),
    "adalora_update": ("callback", "none"),
    "padding_free": ("auto", "on", "off"),
}


def profile_names() -> list[str]:
    """Names of the built-in profiles."""
    return list(PROFILES)


def get_profile(name: str, overrides: dict | None = None, **named: Any) -> Profile:
    """The named profile with `overrides` (a dict, e.g. OVERRIDES) and `named` values applied, validated.

    One precedence rule: a named value that is not None, then `overrides`, then the profile. So a
    notebook can default each knob to None and still let OVERRIDES set the same field.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of profile fields, got {type(overrides).__name__}")
    merged = {**(overrides or {}), **{k: v for k, v in named.items() if v is not None}}
    known = {f.name: f for f in fields(Profile)}
    unknown = sorted(set(merged) - set(known))
    if unknown:
        raise ValueError(f"unknown profile field(s) {unknown}; valid fields: {', '.join(known)}")
    # None in OVERRIDES also means "keep the profile's value".
    clean = {k: _coerce(k, v, PROFILES[name]) for k, v in merged.items() if v is not None}
    profile = dataclasses.replace(PROFILES[name], **clean)
    _validate(profile)
    _check_output_root(profile.output_root)
    return profile


def _coerce(key: str, value: Any, base: Profile) -> Any:
    """Accept values as papermill passes them; reject anything of the wrong kind with the field's name."""
    kind = type(getattr(base, key))
    if kind is bool and not isinstance(value, bool):
        raise TypeError(f"profile field {key!r} must be true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"profile field {key!r} must be a number, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise TypeError(f"profile field {key!r} must be a whole number, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise TypeError(f"profile field {key!r} must be a string, got {value!r}")
    return kind(value)


# Ranges checked at the parameters cell, so a bad value fails there with its name, not steps later.
# (field, test, the valid range as the error states it)
_RANGES = (
    ("max_steps", lambda v: v == -1 or v >= 1, "-1 (run the epochs) or at least 1"),
    ("epochs", lambda v: v > 0, "greater than 0"),
    ("learning_rate", lambda v: v > 0, "greater than 0"),
    ("warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("lora_r", lambda v: v >= 1, "at least 1"),
    ("lora_alpha", lambda v: v > 0, "greater than 0"),
    ("lora_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("eval_batch_size", lambda v: v >= 1, "at least 1"),
    ("seed", lambda v: v >= 0, "0 or more"),
    ("train_limit", lambda v: v >= 0, "0 or more"),
    ("eval_limit", lambda v: v >= 0, "0 or more"),
    ("exam_limit", lambda v: v >= 0, "0 or more"),
    ("oom_retries", lambda v: v >= 0, "0 or more"),
    ("batch_size", lambda v: v >= 1, "at least 1"),
    ("grad_accum", lambda v: v >= 1, "at least 1"),
    ("max_length", lambda v: v >= 1, "at least 1"),
    ("logging_steps", lambda v: v >= 1, "at least 1"),
    ("save_steps", lambda v: v >= 1, "at least 1"),
    ("max_new_tokens", lambda v: v >= 1, "at least 1"),
    ("exam_max_new_tokens", lambda v: v >= 1, "at least 1"),
    ("torch_threads", lambda v: v >= 0, "0 (torch's default) or more"),
    ("num_virtual_tokens", lambda v: v >= 1, "at least 1"),
    ("encoder_hidden_size", lambda v: v >= 1, "at least 1"),
    ("adapter_size", lambda v: v >= 1, "at least 1"),
    ("adalora_init_r", lambda v: v >= 1, "at least 1"),
    ("adalora_target_r", lambda v: v >= 1, "at least 1"),
)


def _validate(p: Profile) -> None:
    for key, choices in _CHOICES.items():
        if getattr(p, key) not in choices:
            raise ValueError(f"profile field {key!r} is {getattr(p, key)!r}; valid choices: {', '.join(choices)}")
    for key, ok, valid in _RANGES:
        value = getattr(p, key)
        if not (math.isfinite(value) and ok(value)):
            raise ValueError(f"profile field {key!r} must be {valid}, got {value!r}")
    _validate_peft(p)
    if p.save_steps % p.logging_steps:
        # The NaN guard runs when the loss is logged; a save between two logs could store a broken model.
        raise ValueError(f"save_steps ({p.save_steps}) must be a multiple of logging_steps ({p.logging_steps})")
    if not p.output_root.strip():
        raise ValueError("profile field 'output_root' is empty; give a folder for adapters and checkpoints")


def _check_output_root(output_root: str) -> None:
    """Fail now, not at the training cell, when adapters and checkpoints could not be written there."""
    path = project_path(output_root)
    existing = next(p for p in (path, *path.parents) if p.exists())  # the root "/" always exists
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    else:
        try:  # a real write: os.access says yes to root even on a read-only mount
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            problem = f"{existing} is not writable ({exc.strerror or exc})"
    if problem:
        raise ValueError(f"profile field 'output_root' ({output_root!r} -> {path}) cannot hold outputs: {problem}. "
                         "Point OVERRIDES['output_root'] at a writable folder (on Colab: a mounted Google Drive).")


def _validate_peft(p: Profile) -> None:
    if p.adalora_target_r > p.adalora_init_r:
        raise ValueError(f"profile field 'adalora_target_r' ({p.adalora_target_r}) must not exceed "
                         f"'adalora_init_r' ({p.adalora_init_r}): AdaLoRA only prunes ranks")
