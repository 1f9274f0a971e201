"""Model loading: real bitsandbytes 4-bit layers, offline tiny models of real architectures, security defaults."""
from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from transformers import BloomForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM

from helpers.models import count_4bit_layers, load_config, load_model, load_tokenizer, quantization_config

ARCHS = {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM, "bloom": BloomForCausalLM}


@pytest.mark.parametrize("arch", ARCHS)
def test_smoke_model_linear_layers_are_bitsandbytes_4bit(tiny_dir, arch):
    model = load_model(str(tiny_dir(arch)), compute_dtype="float32")
    assert isinstance(model, ARCHS[arch])  # a real architecture class, loaded from a directory
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears.values())
    assert count_4bit_layers(model) == len(linears)
    weight = next(iter(linears.values())).weight
    assert isinstance(weight, bnb.nn.Params4bit) and weight.dtype == torch.uint8  # packed, two values a byte
    state = weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # nf4 with double quantization


@pytest.mark.parametrize("arch", ARCHS)
def test_a_profiles_base_config_loads_without_weights(tiny_dir, arch):
    config = load_config(f"tiny:{arch}")  # the form a profile's base_model takes
    assert config.model_type == arch and config.vocab_size == load_model(str(tiny_dir(arch))).config.vocab_size


def test_full_precision_when_asked(tiny_dir):
    model = load_model(str(tiny_dir("qwen2")), quantization="none", compute_dtype="float32")
    assert count_4bit_layers(model) == 0 and quantization_config("none", torch.float32) is None


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_tokenizer_covers_chinese_and_has_chat_template(tiny_dir, arch):
    tok = load_tokenizer(str(tiny_dir(arch)))
    text = "请用三句话介绍一下长城。Great Wall 2024！"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.unk_token_id not in tok(text)["input_ids"]
    assert len(tok("长城")["input_ids"]) < len("长城".encode())  # learned merges, not raw bytes
    assert tok.pad_token_id != tok.eos_token_id and tok.chat_template
    assert tok.padding_side == "left"


def test_tiny_models_are_cached(tiny_dir):
    from helpers.tiny import build_tiny_model

    assert build_tiny_model("qwen2") == tiny_dir("qwen2")
    with pytest.raises(ValueError, match="valid: llama, qwen2, bloom"):
        build_tiny_model("gpt5")


@pytest.mark.parametrize("name", ["THUDM/chatglm3-6b", "baichuan-inc/Baichuan2-7B-Base", "internlm/internlm-7b"])
def test_remote_code_families_need_explicit_opt_in(name):
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_model(name)
    with pytest.raises(ValueError, match="ships its own Python code"):
        load_tokenizer(name)


def test_pickled_weights_are_refused(tiny_dir, tmp_path):
    """A directory holding only a pickle checkpoint does not load: weights come from safetensors only."""
    import shutil

    from safetensors.torch import load_file

    src = tiny_dir("llama")
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / f.name)
    torch.save(load_file(str(src / "model.safetensors")), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError):
        load_model(str(tmp_path), quantization="none")
