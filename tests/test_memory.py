"""Memory planner: its terms against what autograd really saves and what a loaded model really holds (CPU, tiny
models), its sizes against real configs, and its verdicts. GPU peaks: benchmarks/bench_gpu_qlora.py."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, BloomConfig, LlamaConfig, Qwen2Config

from helpers.memory import (_head_bytes, choose_activation_memory, estimate_memory, model_shape, plan_for_profile,
                            plan_memory, saved_activation_bytes)
from helpers.models import load_model
from helpers.peft_methods import build_lora_config, prepare_for_training
from helpers.profiles import get_profile

GiB = 2**30
QWEN_7B = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False)
REAL = {
    "qwen2.5-7b": QWEN_7B,
    "llama-3-8b": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                              num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
    "bloom-7b1": BloomConfig(vocab_size=250880, hidden_size=4096, n_layer=30, n_head=32),
}


def _prepared(tiny_dir, arch):
    model = load_model(str(tiny_dir(arch)), compute_dtype="float32")  # nf4 base, as on a GPU
    return prepare_for_training(model, build_lora_config(get_profile("smoke")))


@pytest.mark.parametrize("arch", ["qwen2", "llama", "bloom"])
def test_activation_terms_match_saved_tensors(tiny_dir, arch):
    """What autograd saves in one forward pass (CPU, fp32) is what the planner counts, within 5%."""
    model = _prepared(tiny_dir, arch)
    batch, seq = 4, 96
    ids = torch.randint(10, 2000, (batch, seq), generator=torch.Generator().manual_seed(0)).to(model.device)
    measured = saved_activation_bytes(model, {"input_ids": ids, "labels": ids})
    parts = estimate_memory(str(tiny_dir(arch)), seq_len=seq, batch_size=batch, compute_dtype="float32",
                            lora_r=8, lora_dropout=0.0, fused_loss=False)
    shape = model_shape(str(tiny_dir(arch)))
    predicted = parts["activations saved for backward"] * GiB + _head_bytes(shape, batch * seq, 4, 4, False)[0]
    assert predicted == pytest.approx(measured, rel=0.05)


def _stored_bytes(model) -> int:
    """Bytes of every parameter plus the 4-bit layers' quantization constants (the code tables left out)."""
    import bitsandbytes as bnb

    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            qs = m.weight.quant_state
            total += qs.absmax.numel() * qs.absmax.element_size()
            total += qs.state2.absmax.numel() * qs.state2.absmax.element_size() if qs.nested else 0
    return total


def test_weights_match_a_loaded_4bit_model(tiny_dir):
    """nf4 linear layers, fp32 embeddings/head/norms after peft's upcast, fp32 adapters: as loaded, within 3%."""
    model = _prepared(tiny_dir, "qwen2")
    parts = estimate_memory(str(tiny_dir("qwen2")), lora_r=8, compute_dtype="float32")
    predicted = (parts["weights"] + parts["trainable weights (fp32)"]) * GiB
    assert predicted == pytest.approx(_stored_bytes(model), rel=0.03)


@pytest.mark.parametrize("name", list(REAL))
def test_sizes_of_real_configs(name):
    with torch.device("meta"):
        real = sum(p.numel() for p in AutoModelForCausalLM.from_config(REAL[name]).parameters())
    assert model_shape(REAL[name]).n_params() == pytest.approx(real, rel=0.005)


def test_fp32_upcast_of_a_large_vocabulary_is_counted():
    """QLoRA on Qwen2.5-7B: the 4-bit layers take ~3.5 GiB, but peft's fp32 embeddings and head take 4 GiB more."""
    qlora = estimate_memory(QWEN_7B, method="qlora")["weights"]
    assert 7.0 < qlora < 7.5  # 6.5B linear weights x 0.52 bytes + 1.09B embedding/head weights x 4 bytes
    assert estimate_memory(QWEN_7B, method="lora")["weights"] > 14


def test_verdicts_name_the_spare_memory_or_the_knob(tiny_dir):
    fits = plan_memory(str(tiny_dir("qwen2")), gpu="T4")
    assert fits.fits and fits.verdict.startswith("fits a T4 (14.7 GiB) with") and "to spare" in fits.verdict
    big = plan_memory(QWEN_7B, gpu="T4", seq_len=1024, batch_size=8, gradient_checkpointing=False)
    assert not big.fits and "does not fit" in big.verdict and "gradient_checkpointing" in big.verdict
    assert "total" in big.table() and "CUDA context" in big.table()


def test_checkpointing_only_when_the_run_would_not_fit_otherwise(tiny_dir):
    t4 = get_profile("colab-t4")
    keep, plan = choose_activation_memory(t4, model_shape(str(tiny_dir("qwen2"))), gpu="T4")
    assert keep == {"gradient_checkpointing": False, "activation_offloading": False} and plan.fits
    recompute, plan = choose_activation_memory(get_profile("colab-t4", max_length=2048), QWEN_7B, gpu="T4")
    assert recompute["gradient_checkpointing"] is True


def test_plan_for_the_smoke_profile_reads_only_a_config():
    plan = plan_for_profile(get_profile("smoke"), gpu="T4")
    assert plan.fits and 0 < plan.total_gib < 2 and plan.settings["seq_len"] == 128


def test_training_turns_checkpointing_off_when_the_card_holds_the_run(monkeypatch, tiny_dir):
    """train_model's choice on a (pretend) T4: the tiny model keeps its activations, a 7B at 2048 tokens recomputes."""
    import types

    import helpers.memory
    from helpers.train import fit_activation_memory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(helpers.memory, "_card", lambda gpu, capacity: ("T4", 14.7))
    t4 = get_profile("colab-t4")  # gradient_checkpointing=True in the table
    small = types.SimpleNamespace(config=model_shape(str(tiny_dir("qwen2"))))
    assert fit_activation_memory(t4, small).gradient_checkpointing is False
    long = get_profile("colab-t4", max_length=2048)
    assert fit_activation_memory(long, types.SimpleNamespace(config=QWEN_7B)).gradient_checkpointing is True
    assert fit_activation_memory(get_profile("colab-t4", auto_checkpointing=False), small).gradient_checkpointing


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_benchmark_skips_cleanly_without_a_gpu():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu_qlora.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no CUDA GPU" in done.stdout


def test_target_modules_are_read_as_a_profile_writes_them():
    """"q_proj,v_proj" and "attention-input" adapt the layers they name (they used to match none and plan no adapter)."""
    gated, bloom = model_shape(QWEN_7B), model_shape(REAL["bloom-7b1"])
    assert estimate_memory(gated, target_modules="q_proj,v_proj") == estimate_memory(gated,
                                                                                    target_modules=["q_proj", "v_proj"])
    assert estimate_memory(gated, target_modules="attention-input") == estimate_memory(
        gated, target_modules=["q_proj", "k_proj", "v_proj"])
    assert estimate_memory(bloom, target_modules="attention-input") == estimate_memory(
        bloom, target_modules=["query_key_value"])
    assert estimate_memory(gated, target_modules="attention-input")["trainable weights (fp32)"] > 0
