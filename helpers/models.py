"""Loading bases and tokenizers: 4-bit nf4 by default, safetensors only, remote code only on request."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers is imported where a model or tokenizer loads: it costs seconds at import
    from transformers import BitsAndBytesConfig, PreTrainedModel

__all__ = [
    "REMOTE_CODE_FAMILIES",
    "SITE_NAMES",
    "target_layer_names",
    "resolve_model_source",
    "load_config",
    "pick_dtype",
    "pick_attention",
    "quantization_config",
    "load_model",
    "load_tokenizer",
    "count_4bit_layers",
    "count_parameters",
]

# Families whose hub repos ship their own modelling code (executed on load when trust_remote_code=True).
REMOTE_CODE_FAMILIES = ("chatglm", "baichuan", "internlm")
# Layer names by role, across families: Bloom (fused query_key_value), Llama/Qwen2/Mistral (q/k/v, gated MLP),
# OPT/Phi (fc1/fc2), Baichuan (W_pack), Mixtral-style experts (w1/w2/w3).
SITE_NAMES = {
    "attention_input": ("query_key_value", "q_proj", "k_proj", "v_proj", "qkv_proj", "W_pack", "Wqkv"),
    "mlp_input": ("dense_h_to_4h", "gate_proj", "up_proj", "gate_up_proj", "fc1", "w1", "w3"),
    "mlp_output": ("dense_4h_to_h", "down_proj", "fc2", "w2"),
}


def resolve_model_source(base_model: str) -> str:
    """Turn a profile's base_model into something from_pretrained takes ("tiny:<arch>" is built offline)."""
    if base_model.startswith("tiny:"):
        from .tiny import build_tiny_model

        return str(build_tiny_model(base_model.removeprefix("tiny:")))
    return base_model


def target_layer_names(target_modules: str) -> str | list[str]:
    """A profile's target_modules as peft takes it: "all-linear", the attention input layers ("attention-input":
    query_key_value on Bloom, q_proj, k_proj, v_proj elsewhere), or the layer names of "a,b,c"."""
    if target_modules == "all-linear":
        return "all-linear"
    if target_modules == "attention-input":
        return list(SITE_NAMES["attention_input"])
    return [name.strip() for name in target_modules.split(",") if name.strip()]


def load_config(base_model: str, *, trust_remote_code: bool = False):
    """The transformers config of a profile's base_model (hub id, directory or "tiny:<arch>"): config.json only."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_source(base_model), trust_remote_code=trust_remote_code)


def pick_dtype(compute_dtype: str = "auto") -> torch.dtype:
    """The compute dtype: bf16 where the GPU has it, fp16 on older GPUs (T4), fp32 on CPU."""
    if compute_dtype != "auto":
        return getattr(torch, compute_dtype)
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def pick_attention() -> str | None:
    """FlashAttention 2 where it runs (an Ampere or newer GPU with flash-attn installed), else transformers' default
    (SDPA). Its variable-length kernel is what makes padding-free batches pay (profile field padding_free)."""
    import importlib.util

    ampere = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    return "flash_attention_2" if ampere and importlib.util.find_spec("flash_attn") else None


def quantization_config(quantization: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """The bitsandbytes config of QLoRA (nf4, double quantization), or None for a full-precision base."""
    if quantization == "none":
        return None
    if quantization != "nf4":
        raise ValueError(f"unknown quantization {quantization!r}; valid: nf4, none")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,  # quantizes the quantization constants too: ~0.4 bit/param saved
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _check_remote_code(name: str, trust_remote_code: bool) -> None:
    family = next((f for f in REMOTE_CODE_FAMILIES if f in name.lower()), None)
    if family and not trust_remote_code:
        raise ValueError(
            f"{name} ({family}) ships its own Python code that runs when it loads. Pass trust_remote_code=True "
            "for this model only if you have read that code and trust its authors."
        )


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """Load a tokenizer with a pad token set (left padding, for batched generation)."""
    from transformers import AutoTokenizer

    _check_remote_code(name_or_path, trust_remote_code)
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # only sequence ends are padded; the attention mask hides them
    tok.padding_side = "left"
    return tok


def load_model(
    name_or_path: str,
    *,
    quantization: str = "nf4",
    compute_dtype: str = "auto",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM from the hub or a directory, in 4-bit nf4 unless quantization='none'."""
    from transformers import AutoModelForCausalLM

    _check_remote_code(name_or_path, trust_remote_code)
    dtype = pick_dtype(compute_dtype)
    # One GPU per process under torchrun / accelerate launch (LOCAL_RANK); the only GPU otherwise.
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path,
        quantization_config=quantization_config(quantization, dtype),
        dtype=dtype,
        attn_implementation=pick_attention(),
        device_map={"": device},
        use_safetensors=True,  # never unpickle weights: a .bin checkpoint can run arbitrary code
        trust_remote_code=trust_remote_code,
    )
    if quantization == "nf4" and count_4bit_layers(model) == 0:
        raise RuntimeError(f"{name_or_path} loaded without 4-bit layers; refusing to fall back to full precision")
    if device == "cpu":
        _keep_trainable_layout(model)
    return model


def _keep_trainable_layout(model) -> None:
    """bitsandbytes 0.50 repacks 4-bit weights for fast CPU inference on the first eval forward pass, after which
    training on them fails; keep the trainable layout, since notebooks generate before they train."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def count_4bit_layers(model: torch.nn.Module) -> int:
    """How many bitsandbytes 4-bit linear layers the model holds."""
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as the number of values they store."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel() * 2 if p.__class__.__name__ == "Params4bit" else p.numel()  # two 4-bit values per byte
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
