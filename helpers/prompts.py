"""Prompt formats: the model's chat template, or an Alpaca-style template in English or Chinese.

Training and inference both go through `format_prompt`, so the model is asked questions in exactly the
format it was tuned on.
"""
from __future__ import annotations

__all__ = ["ALPACA_TEMPLATES", "resolve_template", "format_prompt", "format_instructions", "as_example", "build_sft_dataset"]

# Alpaca-style layout (the format Si et al. tuned with), one wording per language; finding 6 compares them.
ALPACA_TEMPLATES = {
    "alpaca_en": {
        "preamble": "The following is an instruction that describes a task{context}. "
        "Write a response that completes the request appropriately.\n\n",
        "context": ", together with an input that gives more context",
        "instruction": "### Instruction:\n{}\n\n",
        "input": "### Input:\n{}\n\n",
        "response": "### Response:\n",
    },
    "alpaca_zh": {
        "preamble": "以下是一条描述任务的指令{context}。请写出恰当完成该请求的回答。\n\n",
        "context": "，以及一段提供更多背景信息的输入",
        "instruction": "### 指令：\n{}\n\n",
        "input": "### 输入：\n{}\n\n",
        "response": "### 回答：\n",
    },
}


def resolve_template(tokenizer, template: str = "auto") -> str:
    """'auto' becomes 'chat' when the tokenizer has a chat template, else 'alpaca_en'; 'raw' is the bare text."""
    if template == "raw":  # no format at all: how an untuned base is prompted (exam scoring)
        return template
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "alpaca_en"
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_template='chat' but this tokenizer has no chat template; use alpaca_en or alpaca_zh")
    if template != "chat" and template not in ALPACA_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; "
                         f"valid: auto, chat, {', '.join(ALPACA_TEMPLATES)}, raw")
    return template


def _user_text(example: dict) -> str:
    return f"{example['instruction']}\n\n{example['input']}" if example.get("input") else example["instruction"]


def _chat_prompt(example: dict, tokenizer) -> str:
    messages = [{"role": "system", "content": example["system"]}] if example.get("system") else []
    for user, assistant in example.get("history", []):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": _user_text(example)})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _alpaca_prompt(example: dict, template: str) -> str:
    t = ALPACA_TEMPLATES[template]
    text = t["preamble"].format(context=t["context"] if example.get("input") else "")
    if example.get("system"):
        text = example["system"] + "\n\n" + text
    for user, assistant in example.get("history", []):  # earlier turns, rendered as solved instructions
        text += t["instruction"].format(user) + t["response"] + assistant + "\n\n"
    text += t["instruction"].format(example["instruction"])
    if example.get("input"):
        text += t["input"].format(example["input"])
    return text + t["response"]


def format_prompt(example: dict, tokenizer, template: str = "auto") -> str:
    """The prompt text for one example (instruction, input, history, system), ending where the answer starts."""
    template = resolve_template(tokenizer, template)
    if template == "raw":
        return _user_text(example)
    return _chat_prompt(example, tokenizer) if template == "chat" else _alpaca_prompt(example, template)


def as_example(instruction: str, input_text: str = "") -> dict:
    """A bare example dict (no history, no system prompt) for prompting."""
    return {"instruction": instruction, "input": input_text, "history": [], "system": ""}


def format_instructions(instructions: list[str], tokenizer, template: str = "auto") -> list[str]:
    """Prompts for bare instructions, in the given format."""
    return [format_prompt(as_example(text), tokenizer, template) for text in instructions]


def build_sft_dataset(examples: list[dict], tokenizer, *, template: str = "auto", max_length: int = 512,
                      overlong: str = "truncate", report=None):
    """A prompt/completion `datasets.Dataset` for TRL, applying the over-length policy (counted in `report`)."""
    from datasets import Dataset

    prompts = [format_prompt(ex, tokenizer, template) for ex in examples]
    completions = [ex["output"] for ex in examples]
    prompt_lens = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    full_lens = [len(ids) + 1 for ids in tokenizer([p + c for p, c in zip(prompts, completions)],
                                                   add_special_tokens=False)["input_ids"]]  # +1: eos
    rows = {"prompt": [], "completion": []}
    for ex, prompt, completion, n_prompt, n_full in zip(examples, prompts, completions, prompt_lens, full_lens):
        reason = _overlong_reason(n_prompt, n_full, max_length, overlong)
        if reason and report is not None:
            report.skip(reason, ex.get("line"), f"{n_full} tokens", was_kept=True)
        if reason:
            continue
        if n_full > max_length and report is not None:
            report.note(f"answer truncated to max_length={max_length}")
        rows["prompt"].append(prompt)
        rows["completion"].append(completion)
    if not rows["prompt"]:
        raise ValueError(f"no example fits max_length={max_length} tokens; raise max_length or shorten the data")
    return Dataset.from_dict(rows)


def _overlong_reason(n_prompt: int, n_full: int, max_length: int, policy: str) -> str | None:
    if policy not in ("truncate", "skip"):
        raise ValueError(f"unknown over-length policy {policy!r}; valid: truncate, skip")
    if n_full <= max_length:
        return None
    if policy == "skip":
        return f"longer than max_length={max_length}"
    # Truncation keeps the start; an answer needs at least one token of room after the prompt.
    return f"prompt longer than max_length={max_length}" if n_prompt >= max_length - 1 else None
