"""A trained adapter after training: attached beside an untouched base, reloaded from disk, merged into a 16-bit copy.

A LoRA adapter is a few MB; the base is GBs. So: attach without copying weights, reload = base + adapter, and
merge only for deployment, into a 16-bit base (4-bit weights cannot absorb the low-rank update exactly).
"""
from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import torch

from .generation import chat
from .models import load_model, load_tokenizer, pick_dtype, resolve_model_source

__all__ = ["with_adapter", "load_with_adapter", "merge_dtype", "merge_adapter", "compare_merged"]


def _share_weights_copy(module: torch.nn.Module, memo: dict | None = None) -> torch.nn.Module:
    """A new module tree over the same parameter and buffer tensors: changing the tree (as peft does when it wraps
    layers) leaves the original intact, and no weight memory is duplicated (a deepcopy would double a 7B base)."""
    memo = {} if memo is None else memo
    if id(module) in memo:  # a submodule used twice stays one object
        return memo[id(module)]
    clone = memo[id(module)] = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, dict):  # parameter, buffer and hook registries: new dicts holding the same things
            clone.__dict__[name] = copy.copy(value)
    clone.__dict__["_modules"] = {name: None if child is None else _share_weights_copy(child, memo)
                                  for name, child in module._modules.items()}
    return clone


def with_adapter(model, adapter_dir: str | Path):
    """`model` plus a saved adapter of any method (a PeftModel, or bottleneck adapters wrapped into a copy of the
    module tree); `model` itself stays the base (no weights copied, its layers untouched)."""
    from .peft_methods import load_adapter

    clone = _share_weights_copy(model)
    if hasattr(clone, "config"):
        clone.config = copy.deepcopy(model.config)  # peft may set fields on the config; keep the base's own
    return load_adapter(clone, adapter_dir)


def _adapter_config(adapter_dir: str | Path) -> Path:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.exists():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json: not a saved PEFT adapter "
                                "(train_model saves one under <output_dir>/adapter)")
    return path


def load_with_adapter(profile, adapter_dir: str | Path):
    """(model, tokenizer) from a fresh start: the profile's base loaded as for training (experiment.load_base, so
    with its vocab_expansion), plus the saved adapter of any method."""
    from .experiment import load_base
    from .peft_methods import load_adapter, saved_adapter_config

    if saved_adapter_config(adapter_dir) is None:  # said before a base of several GB loads
        raise FileNotFoundError(f"{adapter_dir} holds no saved adapter (train_model saves one under "
                                "<output_dir>/adapter)")
    model, tokenizer = load_base(profile)
    return load_adapter(model, adapter_dir), tokenizer


def _load_unquantized(profile, path: str, dtype: str):
    """A full-precision copy of the base (or of a merged model) in `dtype`, with the profile's remote-code choice."""
    return load_model(path, quantization="none", compute_dtype=dtype, trust_remote_code=profile.trust_remote_code)


def merge_dtype(profile) -> str:
    """The 16-bit dtype to merge into: the profile's compute dtype when it is 16-bit (bf16/fp16), else float16."""
    dtype = pick_dtype(profile.compute_dtype)
    return str(dtype).removeprefix("torch.") if dtype in (torch.float16, torch.bfloat16) else "float16"


def merge_adapter(profile, adapter_dir: str | Path, out_dir: str | Path, *, dtype: str | None = None) -> Path:
    """Merge the adapter into a 16-bit copy of the base and save it with its tokenizer as safetensors."""
    from peft import PeftModel

    _adapter_config(adapter_dir)
    source = resolve_model_source(profile.base_model)
    base = _load_unquantized(profile, source, dtype or merge_dtype(profile))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out, safe_serialization=True)
    load_tokenizer(source, trust_remote_code=profile.trust_remote_code).save_pretrained(out)
    return out


@torch.no_grad()
def _answer_logprobs(model, tokenizer, texts: list[str]) -> list[torch.Tensor]:
    """Per text, the log-probabilities the model gives each next token (teacher-forced), as fp32 on the CPU."""
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
        out.append(torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1).cpu())
    return out


def compare_merged(profile, adapter_dir: str | Path, merged_dir: str | Path, instructions: list[str], *,
                   dtype: str | None = None, progress: bool = True) -> pd.DataFrame:
    """The adapter on the 16-bit base and the merged copy, side by side: greedy answers (`same`), and the largest
    difference between their next-token log-probabilities over the prompt and the adapter's answer
    (`max_logprob_diff`: 16-bit rounding makes it small, not 0, and can flip a greedy pick between near-tied tokens)."""
    from peft import PeftModel

    from .prompts import format_instructions

    dtype = dtype or merge_dtype(profile)
    source = resolve_model_source(profile.base_model)
    tokenizer = load_tokenizer(source, trust_remote_code=profile.trust_remote_code)
    kwargs = dict(template=profile.prompt_template, max_new_tokens=profile.max_new_tokens,
                  batch_size=profile.eval_batch_size, progress=progress)
    prompts = format_instructions(instructions, tokenizer, profile.prompt_template)
    answers, logprobs = {}, {}
    # One model in memory at a time: the unmerged pair first, then the merged copy from disk.
    for name, load in (("adapter", lambda: PeftModel.from_pretrained(_load_unquantized(profile, source, dtype),
                                                                   str(adapter_dir))),
                       ("merged", lambda: _load_unquantized(profile, str(merged_dir), dtype))):
        model = load()
        answers[name] = chat(model, tokenizer, instructions, **kwargs)
        logprobs[name] = _answer_logprobs(model, tokenizer, [p + a for p, a in zip(prompts, answers["adapter"])])
        del model
    gaps = [float((a - b).abs().max()) for a, b in zip(logprobs["adapter"], logprobs["merged"])]
    frame = pd.DataFrame({"instruction": instructions, **answers, "max_logprob_diff": gaps})
    return frame.assign(same=frame["adapter"] == frame["merged"])
