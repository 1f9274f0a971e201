"""Batched generation in the training prompt format, and before/after comparisons."""
from __future__ import annotations

import torch

from .console import tqdm
from .prompts import format_instructions

__all__ = ["generate", "chat", "stream_chat", "compare_before_after"]


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


@torch.no_grad()
def stream_chat(model, tokenizer, instruction: str, *, template: str = "auto", max_new_tokens: int = 256,
                seed: int = 0, **sampling) -> str:
    """Answer one instruction with the given sampling settings (printed first), streaming tokens as they come."""
    from transformers import TextStreamer, set_seed

    print("sampling:", ", ".join(f"{k}={v}" for k, v in sampling.items()), f"(seed {seed}, up to {max_new_tokens} "
          "new tokens)\n")
    prompt = format_instructions([instruction], tokenizer, template)[0]
    batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    set_seed(seed)  # sampled text is reproducible for the same settings
    ids = model.generate(**batch, streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
                         max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def compare_before_after(instructions: list[str], before: list[str], after: list[str]):
    """A table of each instruction with the base's and the tuned model's answers."""
    import pandas as pd

    return pd.DataFrame({"instruction": instructions, "before": before, "after": after})
