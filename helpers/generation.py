"""Batched generation in the training prompt format, and before/after comparisons."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .prompts import format_instructions

__all__ = ["generate", "chat", "compare_before_after"]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 128, batch_size: int = 8,
             progress: bool = True) -> list[str]:
    """Greedy completions of raw prompt strings, batched with left padding, stopping at eos."""
    model.eval()
    tokenizer.padding_side = "left"  # new tokens must follow the prompt directly in every row
    outputs = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="generating", disable=not progress):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        new = ids[:, batch["input_ids"].shape[1]:]
        outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs


def chat(model, tokenizer, instructions: list[str], *, template: str = "auto", **kwargs) -> list[str]:
    """Answer instructions, formatted exactly as in training."""
    return generate(model, tokenizer, format_instructions(instructions, tokenizer, template), **kwargs)


def compare_before_after(instructions: list[str], before: list[str], after: list[str]):
    """A table of each instruction with the base's and the tuned model's answers."""
    import pandas as pd

    return pd.DataFrame({"instruction": instructions, "before": before, "after": after})
