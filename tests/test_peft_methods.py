"""PEFT methods: Table 4's parameter counts on bloom-7b1, bottleneck round trips, AdaLoRA's ranks, smoke training."""
from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, BloomConfig

from helpers import bottleneck
from helpers.experiment import attach_adapter
from helpers.models import load_model, load_tokenizer
from helpers.paths import project_path
from helpers.peft_methods import (BLOOM_7B1, PEFT_METHODS, TABLE4_SETTINGS, build_peft_config, load_adapter,
                                  method_table, optimizer_steps, orthogonality_penalty, prepare_for_training,
                                  training_loss)
from helpers.profiles import _CHOICES, get_profile
from helpers.prompts import build_sft_dataset
from helpers.train import latest_checkpoint, train_model



def _paper_table4() -> pd.DataFrame:
    path = project_path("data_samples/paper/table4_peft_methods.csv")
    return pd.read_csv(path, dtype={"trainable_params_millions": str})


@pytest.fixture(scope="module")
def bloom_table():
    return method_table(get_profile("smoke"), TABLE4_SETTINGS, config=BloomConfig(**BLOOM_7B1)).set_index("method")


@pytest.mark.parametrize("row", _paper_table4().to_dict("records"), ids=lambda r: r["method"])
def test_trainable_parameters_match_table4_on_bloom_7b1(bloom_table, row):
    printed = row["trainable_params_millions"]  # as the paper prints it: its decimals are the rounding
    decimals = len(printed.partition(".")[2])
    ours = bloom_table.loc[row["method"]]
    assert round(ours["trainable_params"] / 2**20, decimals) == pytest.approx(float(printed))
    assert ours["layers"] == row["layers"]  # "each" block, or the embeddings only


def test_bloom_sites_are_the_papers(bloom_table):
    assert bloom_table.loc["LoRA", "sites"] == "query_key_value" and bloom_table.loc["LoRA", "blocks"] == 30
    assert bloom_table.loc["SadapterP", "sites"] == "dense_4h_to_h"
    assert bloom_table.loc["SadapterH", "sites"] == "dense_4h_to_h, dense_h_to_4h"
    assert bloom_table.loc["P-adapter", "sites"] == "query_key_value"
    assert bloom_table.loc["prompt", "sites"] == "prompt encoder" and bloom_table.loc["prompt", "blocks"] == 0
    assert bloom_table.loc["LoRA", "where"] == "query_key_value of each of 30 blocks"
    assert bloom_table.loc["prefix", "where"].startswith("keys and values of every layer")
    assert bloom_table.loc["p-tuning", "where"].startswith("the input embeddings")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_prefix_size_follows_grouped_query_attention(tiny_dir, arch):
    """The prefix holds layers x 2 x kv_heads x head_dim values per virtual token, not x hidden_size."""
    config = AutoConfig.from_pretrained(tiny_dir(arch))
    kv_dim = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    assert kv_dim < config.hidden_size  # the tiny bases really use GQA (2 of 4 heads)
    tokens, width, layers = 20, 128, config.num_hidden_layers
    expected = tokens * kv_dim + (kv_dim * width + width) + (width * layers * 2 * kv_dim + layers * 2 * kv_dim)
    table = method_table(get_profile("smoke"), {"prefix": TABLE4_SETTINGS["prefix"]}, config=config)
    assert table["trainable_params"].item() == expected


def test_method_table_for_the_users_base_names_every_method():
    table = method_table(get_profile("smoke"))
    assert set(PEFT_METHODS) == set(table["peft_method"])
    assert (table["trainable_params"] > 0).all() and (table["share_of_base_pct"] < 100).all()
    sadapter = table.set_index("method")
    assert sadapter.loc["SadapterP-l", "trainable_params"] == 8 * sadapter.loc["SadapterP", "trainable_params"]


def test_profile_choices_are_the_method_table():
    assert set(_CHOICES["peft_method"]) == set(PEFT_METHODS)
    with pytest.raises(ValueError, match="peft_method.*valid choices: lora"):
        get_profile("smoke", peft_method="bitfit")
    with pytest.raises(ValueError, match="adalora_target_r"):
        get_profile("smoke", adalora_init_r=4, adalora_target_r=8)


def test_adalora_needs_the_run_length():
    with pytest.raises(ValueError, match="total optimizer steps"):
        build_peft_config(get_profile("smoke", peft_method="adalora", max_steps=-1))
    config = build_peft_config(get_profile("smoke", peft_method="adalora", max_steps=-1), total_steps=200)
    assert (config.total_step, config.tinit, config.tfinal, config.deltaT) == (200, 20, 40, 2)


# ---- training through train_model -------------------------------------------------------------------------------

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where load_model puts the tiny models


def _ids(tok) -> torch.Tensor:
    return tok("请用一句话介绍长城。长城是中国古代的军事防御工程。", return_tensors="pt").input_ids.to(DEVICE)


def _setup(tiny_dir, examples, arch="qwen2", **overrides):
    profile = get_profile("smoke", **({"max_steps": 2, "save_steps": 2, "logging_steps": 1} | overrides))
    source = str(tiny_dir(arch))
    tok = load_tokenizer(source)
    model = load_model(source, quantization=profile.quantization, compute_dtype=profile.compute_dtype)
    return profile, tok, model, build_sft_dataset(examples[:16], tok, max_length=profile.max_length)


@pytest.mark.parametrize("method", list(PEFT_METHODS))
def test_every_method_trains_on_smoke_and_reloads(tiny_dir, smoke_examples, tmp_path, method):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, peft_method=method)  # nf4 base, as smoke runs
    result = train_model(model, tok, ds, profile, tmp_path)
    assert result.steps == 2 and all(math.isfinite(loss) for _, loss in result.loss_history)
    assert 0 < result.trainable_params < result.total_params
    adapter = tmp_path / "adapter"
    assert len(list(adapter.glob("*.safetensors"))) == 1  # weights as safetensors only, never pickled
    assert {p.name for p in adapter.glob("*.bin")} <= {"training_args.bin"}
    reloaded = load_adapter(load_model(str(tiny_dir("qwen2")), compute_dtype="float32"), adapter).eval()
    with torch.no_grad():
        expected = result.model.eval()(input_ids=_ids(tok)).logits
        # 1e-4: a GPU's TF32 matmuls differ between runs in the 5th digit; on a CPU the two agree far closer
        torch.testing.assert_close(reloaded(input_ids=_ids(tok)).logits, expected, rtol=1e-4, atol=1e-4)


def test_prefix_turns_gradient_checkpointing_off_and_says_so(tiny_dir, smoke_examples, tmp_path, capsys):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, peft_method="prefix", gradient_checkpointing=True,
                                     auto_checkpointing=False, max_steps=-1, epochs=1.5, grad_accum=2)  # 16 examples: 2 steps an epoch
    result = train_model(model, tok, ds, profile, tmp_path)
    assert "Prefix tuning cannot run with gradient checkpointing" in capsys.readouterr().out
    assert not result.model.get_base_model().is_activation_checkpointing
    assert result.steps == optimizer_steps(profile, len(ds)) == 3  # the step count AdaLoRA's schedule is built on


def test_adalora_loss_keeps_peft_orthogonality_penalty(tiny_dir, smoke_examples):
    """Our compute_loss_func equals the loss peft's AdaLoraModel returns (TRL alone would drop the penalty)."""
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, peft_method="adalora", quantization="none")
    model = prepare_for_training(model, build_peft_config(profile))
    ids = labels = _ids(tok)
    model.train()
    with torch.no_grad():
        peft_loss = model(input_ids=ids, labels=labels).loss
        ours = training_loss(model, grad_accum=1)(model(input_ids=ids), labels)
        penalty = orthogonality_penalty(model)
    assert penalty > 1  # far from orthogonal at initialisation: AdaLoRA's high starting loss
    torch.testing.assert_close(ours, peft_loss)


def _ranks(model) -> list[int]:
    """Non-zero singular values per AdaLoRA matrix: the rank each one is allocated."""
    return [int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n]


@pytest.mark.parametrize("update", ["callback", "none"])
def test_adalora_callback_reallocates_ranks(tiny_dir, smoke_examples, tmp_path, update):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, peft_method="adalora", adalora_update=update,
                                     quantization="none", max_steps=5, save_steps=5)
    result = train_model(model, tok, ds, profile, tmp_path)
    ranks, config = _ranks(result.model), result.model.peft_config["default"]
    if update == "callback":  # pruned to the target budget: target_r per matrix on average, unevenly spread
        assert config.rank_pattern is not None and sum(ranks) == profile.adalora_target_r * len(ranks)
        assert min(ranks) < profile.adalora_init_r
    else:  # as the paper's Trainer ran it: update_and_allocate never called, every matrix keeps init_r
        assert config.rank_pattern is None and ranks == [profile.adalora_init_r] * len(ranks)


# ---- bottleneck adapters: save, reload on a fresh base, resume ---------------------------------------------------

@pytest.mark.parametrize("quantization,dtype", [("none", "bfloat16"), ("nf4", "float32")], ids=["16-bit", "nf4"])
def test_bottleneck_round_trips_on_a_fresh_base(tiny_dir, smoke_examples, tmp_path, quantization, dtype):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, peft_method="SadapterH", quantization=quantization,
                                     compute_dtype=dtype)
    trained = train_model(model, tok, ds, profile, tmp_path).model.eval()
    saved = load_file(str(tmp_path / "adapter" / bottleneck.WEIGHTS_NAME))
    assert saved and all(".adapter." in k for k in saved)  # the adapter only, not the base
    fresh = load_model(str(tiny_dir("qwen2")), quantization=quantization, compute_dtype=dtype)
    reloaded = bottleneck.load_bottleneck(fresh, tmp_path / "adapter").eval()
    ids = _ids(tok)
    with torch.no_grad():
        expected, got = trained(input_ids=ids).logits, reloaded(input_ids=ids).logits
        base = load_model(str(tiny_dir("qwen2")), quantization=quantization, compute_dtype=dtype)(input_ids=ids).logits
    if got.device.type == "cpu":
        assert torch.equal(got, expected)
    else:  # on a GPU the trained model's logits come out in fp32, the reloaded bf16 model's in bf16
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=5e-2)
    assert not torch.equal(got, base)  # the adapter changes the outputs: the test could fail


@pytest.mark.parametrize("placement", list(bottleneck.PLACEMENTS))
def test_each_placement_saves_and_loads(tiny_dir, tmp_path, placement):
    base = lambda: load_model(str(tiny_dir("bloom")), quantization="none", compute_dtype="float32")  # noqa: E731
    model = bottleneck.attach_bottleneck(base(), bottleneck.BottleneckConfig(placement, bottleneck_size=4))
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data.normal_()  # weights unlike a fresh init
    bottleneck.save_bottleneck(model, tmp_path)
    reloaded = bottleneck.load_bottleneck(base(), tmp_path)
    ids = torch.arange(3, 20, device=DEVICE)[None]
    torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not fit this base"):
        bottleneck.load_bottleneck(load_model(str(tiny_dir("qwen2")), quantization="none"), tmp_path)


def test_bottleneck_resumes_from_its_checkpoint(tiny_dir, smoke_examples, tmp_path):
    """A run resumed from checkpoint-4 ends where the uninterrupted run ended (adapter weights reloaded)."""
    settings = dict(peft_method="P-adapter", max_steps=6, save_steps=2)
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, **settings)
    reference = train_model(model, tok, ds, profile, tmp_path)
    ref_weights = load_file(str(tmp_path / "adapter" / bottleneck.WEIGHTS_NAME))
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt.name == "checkpoint-6" and set(load_file(str(ckpt / bottleneck.WEIGHTS_NAME))) == set(ref_weights)
    shutil.rmtree(ckpt)
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, **settings)
    resumed = train_model(model, tok, ds, profile, tmp_path)
    assert resumed.resumed_from.endswith("checkpoint-4")
    assert [x for _, x in resumed.loss_history] == pytest.approx([x for _, x in reference.loss_history], abs=1e-5)
    weights = load_file(str(tmp_path / "adapter" / bottleneck.WEIGHTS_NAME))
    for key in ref_weights:
        torch.testing.assert_close(weights[key], ref_weights[key], atol=1e-5, rtol=1e-4)


def test_attach_refuses_a_second_set_and_unknown_layouts(tiny_dir):
    model = load_model(str(tiny_dir("qwen2")), quantization="none")
    bottleneck.attach_bottleneck(model, bottleneck.BottleneckConfig("pfeiffer"))
    with pytest.raises(ValueError, match="already carries"):
        bottleneck.attach_bottleneck(model, bottleneck.BottleneckConfig("pfeiffer"))
    with pytest.raises(ValueError, match="placement"):
        bottleneck.BottleneckConfig("sideways")
    toy = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="no linear layer named like"):
        bottleneck.attach_bottleneck(toy, bottleneck.BottleneckConfig("parallel"))


def test_bottleneck_trains_under_gradient_checkpointing_on_nf4(tiny_dir, smoke_examples, tmp_path):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, peft_method="SadapterH", gradient_checkpointing=True)
    model = prepare_for_training(model, build_peft_config(profile), gradient_checkpointing=True)
    assert model.is_activation_checkpointing
    before = {k: v.clone() for k, v in bottleneck.bottleneck_state_dict(model).items()}
    train_model(model, tok, ds, profile, tmp_path)
    after = bottleneck.bottleneck_state_dict(model)
    assert all(not torch.equal(before[k], after[k]) for k in before)  # gradients reached every adapter


def test_checkpointed_training_raises_no_deprecation_or_reentrant_warning(tiny_dir, smoke_examples, tmp_path):
    """Checkpointing through transformers 5's own names: no `gradient_checkpointing*` deprecation from TRL's config
    or peft's k-bit preparation, and no torch warning about an unset use_reentrant (a user reads all of them)."""
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, gradient_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_model(model, tok, ds, profile, tmp_path)
    assert result.model.is_activation_checkpointing and result.steps == profile.max_steps
    noisy = [str(w.message) for w in caught if "use_reentrant" in str(w.message)
             or str(w.message).startswith(("`gradient_checkpointing` is", "`gradient_checkpointing_enable` is"))]
    assert noisy == []


def test_detach_gives_the_base_back(tiny_dir):
    model = load_model(str(tiny_dir("qwen2")), quantization="none")
    ids = torch.arange(3, 20, device=DEVICE)[None]
    with torch.no_grad():
        base = model(input_ids=ids).logits
        bottleneck.attach_bottleneck(model, bottleneck.BottleneckConfig("houlsby"))
        assert not torch.equal(model(input_ids=ids).logits, base)
        bottleneck.detach_bottleneck(model)
        assert torch.equal(model(input_ids=ids).logits, base)
    assert not bottleneck.is_bottleneck_model(model) and not model._hf_peft_config_loaded
    assert model.save_pretrained.__func__ is type(model).save_pretrained


# ---- a cached arm's adapter on the runner's base: attach_adapter for every method ---------------------------------

def test_attaching_a_bottleneck_adapter_keeps_the_base_and_reproduces_the_trained_model(tiny_dir, smoke_examples,
                                                                                      tmp_path):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, peft_method="SadapterH")  # nf4, as smoke runs
    trained = train_model(model, tok, ds, profile, tmp_path).model.eval()
    base = load_model(str(tiny_dir("qwen2")), quantization=profile.quantization, compute_dtype=profile.compute_dtype)
    ids = _ids(tok)
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = attach_adapter(base, tmp_path / "adapter").eval()
        assert torch.equal(tuned(input_ids=ids).logits, trained(input_ids=ids).logits)
        assert torch.equal(base(input_ids=ids).logits, before)  # the base still answers as the base
    assert not bottleneck.is_bottleneck_model(base)
    assert not any(isinstance(m, bottleneck.BottleneckLinear) for m in base.modules())
    assert {p.data_ptr() for p in base.parameters()} <= {p.data_ptr() for p in tuned.parameters()}  # shared


def test_a_cached_bottleneck_arm_evaluates_as_its_fresh_run(tmp_path):
    from helpers.arms import run_arm

    profile = get_profile("smoke", max_steps=2, save_steps=2, logging_steps=1, train_limit=16, eval_limit=6,
                          exam_limit=4, max_new_tokens=4, eval_batch_size=16, output_root=str(tmp_path))
    arm = {"name": "SadapterP", **TABLE4_SETTINGS["SadapterP"]}
    fresh, fresh_answers, info = run_arm(profile, arm, progress=False)
    assert info["status"] == "trained"
    for stage in Path(info["folder"]).glob("tuned-*"):  # drop the stored evaluation, keep the trained adapter
        stage.unlink()
    again, answers, info = run_arm(profile, arm, progress=False)
    assert info["status"] == "evaluated"  # rebuilt through attach_adapter, not retrained
    pd.testing.assert_frame_equal(again, fresh)
    pd.testing.assert_frame_equal(answers, fresh_answers)


# ---- the notebook's arms and figure 2's claims ----------------------------------------------------------------------

def test_method_arms_name_the_paper_row_and_the_arm_to_compare_with():
    from helpers.peft_methods import method_arms

    arms = {a["name"]: a for a in method_arms(["AdaLoRA", "LoRA", "SadapterH", "SadapterH-l", "SadapterP-l", "DoRA"],
                                              compare_to={"SadapterH-l": "SadapterH", "SadapterP-l": "SadapterP"})}
    assert "compare_to" not in arms["LoRA"] and arms["AdaLoRA"]["compare_to"] == "LoRA"
    assert arms["SadapterH-l"]["compare_to"] == "SadapterH"
    assert arms["SadapterP-l"]["compare_to"] == "LoRA"  # its default size is not run: the reference instead
    assert arms["SadapterH-l"]["paper"] == "SadapterH-l" and "paper" not in arms["DoRA"]
    assert arms["AdaLoRA"]["adalora_update"] == "none" and arms["SadapterH-l"]["adapter_size"] == 256
    with pytest.raises(ValueError, match="unknown method rows.*valid: AdaLoRA"):
        method_arms(["LoRA", "QLoRA"])


def test_figure2_claims_are_tested_on_the_losses_and_skipped_when_their_arms_did_not_run():
    from helpers.peft_methods import figure2_checks

    losses = pd.DataFrame({"first": [12.0, 9.0, 9.1, 9.0, 9.2, 9.0], "last": [7.0, 6.0, 8.5, 8.0, 6.5, 5.0]},
                          index=["AdaLoRA", "LoRA", "prompt", "p-tuning", "prefix", "SadapterH"])
    checks = figure2_checks(losses).set_index("claim")["holds"]
    assert checks.to_dict() == {"AdaLoRA starts with the highest loss": True,
                                "prompt and P-tuning end with the highest losses": True,
                                "LoRA and SadapterH end below prefix tuning": True}
    losses.loc["LoRA", "last"] = 6.9  # above prefix now
    assert not figure2_checks(losses).set_index("claim")["holds"]["LoRA and SadapterH end below prefix tuning"]
    assert len(figure2_checks(losses.drop(index="prefix"))) == 2
