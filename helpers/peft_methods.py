"""PEFT configurations and preparing a (4-bit) base for adapter training."""
from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

__all__ = ["build_lora_config", "prepare_for_training"]


def build_lora_config(profile) -> LoraConfig:
    """LoRA on every linear layer (the QLoRA recipe), sized by the profile."""
    return LoraConfig(
        r=profile.lora_r,
        lora_alpha=profile.lora_alpha,
        lora_dropout=profile.lora_dropout,
        target_modules=profile.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def prepare_for_training(model, peft_config, *, gradient_checkpointing: bool = False) -> PeftModel:
    """Ready a base for k-bit training (fp32 norms, input grads) and wrap it with the adapter."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return get_peft_model(model, peft_config)
