"""What a run really uses, in view: the quantization, adapter and trainer settings, and which tokens are trained on.

Values are read from the very objects the helpers build (never retyped), so what a notebook prints is the recipe.
"""
from __future__ import annotations

import dataclasses
import enum
import textwrap

import pandas as pd

__all__ = ["RECIPE_FIELDS", "recipe_settings", "describe_recipe", "supervision_table"]

IGNORE_INDEX = -100  # the label of a token the loss skips (prompt, template scaffolding)

# The settings a reader of a QLoRA recipe looks for first; fields set away from the library defaults are added.
RECIPE_FIELDS = {
    "quantization": ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype",
                     "bnb_4bit_quant_storage"),
    "adapter": ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "task_type"),
    "training": ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
                 "warmup_steps", "num_train_epochs", "max_steps", "max_length", "optim", "fp16", "bf16",
                 "completion_only_loss", "gradient_checkpointing", "logging_steps", "save_steps", "seed"),
}


def _non_defaults(obj) -> dict:
    """Fields of a config set away from its class defaults (bitsandbytes and peft configs)."""
    if hasattr(obj, "to_diff_dict"):
        return {k: v for k, v in obj.to_diff_dict().items() if not k.startswith("_")}
    try:
        default = type(obj)()
    except Exception:  # a config with required arguments: the listed fields have to do
        return {}
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if f.init and getattr(obj, f.name) != getattr(default, f.name)}


def _settings(obj, keys, *, diff: bool = True) -> dict:
    shown = {k: getattr(obj, k) for k in keys if hasattr(obj, k)}
    return shown | (_non_defaults(obj) if diff else {})


def recipe_settings(model, profile, checkpoint_dir, *, n_examples: int | None = None) -> dict[str, tuple[str, dict]]:
    """{part: (class name, settings)} for the loaded base's BitsAndBytesConfig, the adapter config (the profile's
    peft_method) and the SFTConfig that train_model builds (OOM retries may later halve the batch; the result says
    so). n_examples sizes AdaLoRA's schedule as train_model does when the run is set in epochs."""
    from .peft_methods import build_peft_config, optimizer_steps
    from .train import sft_config

    quant = getattr(model.config, "quantization_config", None)
    steps = optimizer_steps(profile, n_examples) if n_examples else None
    adapter = build_peft_config(profile, total_steps=steps)
    args = sft_config(profile, checkpoint_dir, batch_size=profile.batch_size, grad_accum=profile.grad_accum)
    return {
        "quantization": (type(quant).__name__, _settings(quant, RECIPE_FIELDS["quantization"]))
        if quant is not None else ("none", {"full precision": True}),
        "adapter": (type(adapter).__name__, _settings(adapter, RECIPE_FIELDS["adapter"])),
        "training": (type(args).__name__, _settings(args, RECIPE_FIELDS["training"], diff=False)),
    }


def _value(v) -> str:
    v = v.value if isinstance(v, enum.Enum) else v  # PeftType.LORA -> 'LORA'
    return repr(v) if isinstance(v, str) else str(v).removeprefix("torch.")


def describe_recipe(settings: dict[str, tuple[str, dict]]) -> str:
    """The recipe as text, one block per object: `part: ClassName(field=value, ...)`."""
    blocks = []
    for part, (name, values) in settings.items():
        body = ", ".join(f"{k}={_value(v)}" for k, v in values.items())
        blocks.append(textwrap.fill(f"{part}: {name}({body})", width=110, subsequent_indent="    "))
    return "\n".join(blocks)


def _check_row(input_ids, labels) -> None:
    if len(input_ids) != len(labels):
        raise ValueError(f"input_ids has {len(input_ids)} tokens but labels has {len(labels)}")
    for i, (token, label) in enumerate(zip(input_ids, labels)):
        if label not in (IGNORE_INDEX, token):
            raise ValueError(f"label {label} at position {i} is neither {IGNORE_INDEX} nor the token there ({token}):"
                             " labels must be unshifted copies of input_ids with -100 on unsupervised tokens")


def supervision_table(input_ids, labels, tokenizer) -> pd.DataFrame:
    """One training row as runs of masked (label -100: prompt, template) and supervised (answer) tokens, decoded
    with special tokens kept: proof that the loss sees the answer only."""
    input_ids, labels = [int(x) for x in input_ids], [int(x) for x in labels]
    _check_row(input_ids, labels)
    rows, start = [], 0
    for end in range(1, len(input_ids) + 1):
        if end == len(input_ids) or (labels[end] == IGNORE_INDEX) != (labels[start] == IGNORE_INDEX):
            supervised = labels[start] != IGNORE_INDEX
            rows.append({"part": "supervised (loss)" if supervised else "masked (-100, no loss)",
                         "positions": f"{start}-{end - 1}", "tokens": end - start,
                         "text": tokenizer.decode(input_ids[start:end], skip_special_tokens=False)})
            start = end
    return pd.DataFrame(rows, columns=["part", "positions", "tokens", "text"])
