"""After training: resume says what it did, attaching an adapter keeps the base, reload and merge reproduce it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.adapters import compare_merged, load_with_adapter, merge_adapter, merge_dtype, with_adapter
from helpers.evaluate import score_mc_loglik
from helpers.experiment import attach_adapter, load_base, load_benchmarks
from helpers.generation import chat
from helpers.profiles import get_profile
from helpers.prompts import build_sft_dataset
from helpers.train import train_model

QUESTIONS = ["请用三句话介绍一下长城。", "给我三个提高睡眠质量的建议。"]


def _profile(tmp_path, **overrides):
    return get_profile("smoke", **({"max_steps": 4, "save_steps": 2, "logging_steps": 1,
                                    "output_root": str(tmp_path)} | overrides))


def _train(profile, examples, out):
    model, tok = load_base(profile)
    return train_model(model, tok, build_sft_dataset(examples, tok, max_length=profile.max_length), profile, out), tok


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_examples):
    """(profile, TrainResult, tokenizer) of one short smoke run."""
    tmp = tmp_path_factory.mktemp("adapter")
    profile = _profile(tmp)
    result, tok = _train(profile, smoke_examples, tmp / "run")
    return profile, result, tok


def test_a_fresh_run_reports_its_speed(trained):
    _, result, _ = trained
    assert result.resumed_from is None and result.new_steps == result.steps == 4
    assert result.new_tokens == result.tokens_seen > 0 and result.tokens_per_second > 0
    assert "4 new steps" in result.describe() and "tokens/s" in result.describe()


def _weights(adapter_dir):
    return load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))


def test_rerunning_a_finished_run_says_so_instead_of_timing_it(trained, smoke_examples, tmp_path):
    profile, first, _ = trained
    saved = _weights(first.adapter_dir)
    again, _ = _train(profile, smoke_examples, first.adapter_dir.removesuffix("/adapter"))
    assert all(torch.equal(saved[k], w) for k, w in _weights(again.adapter_dir).items())  # no extra step ran
    assert again.resumed_from.endswith("checkpoint-4") and again.steps == 4
    assert again.new_steps == 0 and again.new_tokens == 0 and again.tokens_per_second is None
    assert again.describe().startswith("resumed from checkpoint-4: 0 new steps")
    assert json.dumps(again.to_dict())  # still a plain JSON record


def test_resuming_part_way_counts_only_the_new_steps(smoke_examples, tmp_path):
    first, _ = _train(_profile(tmp_path), smoke_examples, tmp_path / "run")
    longer, _ = _train(_profile(tmp_path, max_steps=6), smoke_examples, tmp_path / "run")
    assert longer.resumed_from.endswith("checkpoint-4") and longer.new_steps == 2
    assert 0 < longer.new_tokens < longer.tokens_seen and longer.tokens_seen > first.tokens_seen
    assert longer.describe().startswith("resumed from checkpoint-4: 2 new steps (6 in all)")


def _base_view(model, tok, exam):
    ids = tok(QUESTIONS[0], return_tensors="pt").to(model.device)
    with torch.no_grad():
        logits = model(**ids).logits
    return logits, score_mc_loglik(model, tok, exam, progress=False)["pred"].tolist()


def test_attaching_an_adapter_leaves_the_base_unchanged(trained):
    profile, result, _ = trained
    model, tok = load_base(profile)
    exam = load_benchmarks(profile)["exam"].head(8)
    logits, preds = _base_view(model, tok, exam)
    tuned = attach_adapter(model, result.adapter_dir)
    assert tuned is not None and not any("lora" in name for name, _ in model.named_modules())
    after_logits, after_preds = _base_view(model, tok, exam)
    assert torch.equal(logits, after_logits) and preds == after_preds  # base scores unchanged
    assert not torch.allclose(_base_view(tuned, tok, exam)[0], logits)  # and the tuned model is tuned
    assert dict(model.named_parameters()).keys() <= {n.removeprefix("base_model.model.").replace(".base_layer", "")
                                                    for n, _ in tuned.named_parameters()}


def test_with_adapter_shares_the_weights_instead_of_copying_them(trained):
    profile, result, _ = trained
    model, _ = load_base(profile)
    tuned = with_adapter(model, result.adapter_dir)
    base_ptrs = {p.data_ptr() for p in model.parameters()}
    assert base_ptrs <= {p.data_ptr() for p in tuned.parameters()}


def test_reloaded_adapter_answers_like_the_trained_model(trained):
    profile, result, tok = trained
    trained_answers = chat(result.model, tok, QUESTIONS, max_new_tokens=12, progress=False)
    reloaded, reloaded_tok = load_with_adapter(profile, result.adapter_dir)
    assert chat(reloaded, reloaded_tok, QUESTIONS, max_new_tokens=12, progress=False) == trained_answers


def test_reload_takes_an_adapter_of_any_method(smoke_examples, tmp_path):
    """A bottleneck adapter (no adapter_config.json) reloads like a peft one; a folder without one fails first."""
    profile = _profile(tmp_path, max_steps=2, save_steps=2, peft_method="SadapterP")
    result, tok = _train(profile, smoke_examples[:8], tmp_path / "run")
    reloaded, _ = load_with_adapter(profile, result.adapter_dir)
    ids = tok(QUESTIONS[0], return_tensors="pt").input_ids.to(reloaded.device)
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits)
    with pytest.raises(FileNotFoundError, match="holds no saved adapter"):
        load_with_adapter(profile, tmp_path)


def test_merged_16bit_model_answers_exactly_like_the_adapter(trained, tmp_path):
    profile, result, _ = trained
    merged = merge_adapter(profile, result.adapter_dir, tmp_path / "merged")
    assert (merged / "model.safetensors").exists() and not list(merged.glob("*.bin"))
    assert json.loads((merged / "config.json").read_text())["dtype"] == merge_dtype(profile) == "float16"
    check = compare_merged(profile, result.adapter_dir, merged, QUESTIONS, progress=False)
    assert (check["adapter"].str.len() > 0).all()
    # 16-bit rounding moves log-probs by a little (a wrong merge moves them by whole nats) and may flip a greedy
    # pick between two near-tied tokens of the tiny random model; merged in float32 the answers are identical.
    assert (check["max_logprob_diff"] < 0.1).all()
    exact = merge_adapter(profile, result.adapter_dir, tmp_path / "merged32", dtype="float32")
    check32 = compare_merged(profile, result.adapter_dir, exact, QUESTIONS, dtype="float32", progress=False)
    assert check32["same"].all() and (check32["max_logprob_diff"] < 1e-3).all()


def test_the_merge_check_loads_the_base_with_the_profiles_remote_code_choice(monkeypatch):
    from helpers import adapters

    seen = []

    def record(path, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        raise RuntimeError("loaded")

    monkeypatch.setattr(adapters, "load_model", record)
    with pytest.raises(RuntimeError, match="loaded"):
        compare_merged(get_profile("smoke", trust_remote_code=True), "adapter", "merged", QUESTIONS, progress=False)
    assert seen == [True]  # as merge_adapter loads it: a family that needs its own code loads the same way


def test_merge_dtype_is_the_16_bit_compute_dtype():
    assert merge_dtype(get_profile("smoke", compute_dtype="bfloat16")) == "bfloat16"
    assert merge_dtype(get_profile("smoke")) == "float16"  # fp32 compute on a CPU: merge into fp16


def test_a_folder_without_an_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        merge_adapter(get_profile("smoke"), tmp_path, tmp_path / "merged")
