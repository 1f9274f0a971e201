"""Training: response-only loss, guards (empty supervision, NaN, OOM), determinism, crash-safe resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from helpers.models import load_model, load_tokenizer
from helpers.profiles import get_profile
from helpers.prompts import build_sft_dataset
from helpers.train import COMPLETE_MARKER, NonFiniteLossError, OutOfMemoryAdvice, latest_checkpoint, train_model

WORKER = Path(__file__).with_name("train_worker.py")


def _setup(tiny_dir, examples, **overrides):  # smoke settings, short runs
    profile = get_profile("smoke", **({"max_steps": 6, "save_steps": 3, "logging_steps": 1} | overrides))
    tok = load_tokenizer(str(tiny_dir("qwen2")))
    model = load_model(str(tiny_dir("qwen2")), compute_dtype="float32")
    return profile, tok, model, build_sft_dataset(examples, tok, max_length=profile.max_length)


def test_loss_falls_and_result_is_complete(tiny_dir, smoke_examples, tmp_path):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, max_steps=20, save_steps=10)
    result = train_model(model, tok, ds, profile, tmp_path)
    losses = [loss for _, loss in result.loss_history]
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1
    assert 0 < result.trainable_params < result.total_params
    assert result.tokens_seen > 0 and result.peak_memory_mb > 0 and result.steps == 20
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not list((tmp_path / "adapter").glob("adapter_model.bin"))


def test_trl_trains_on_our_labels_as_given(tiny_dir, smoke_examples, tmp_path):
    """SFTTrainer keeps our tokenized rows and labels unchanged (it must not re-tokenize or re-mask them)."""
    from trl import SFTTrainer

    from helpers.peft_methods import build_lora_config, prepare_for_training
    from helpers.train import sft_config

    profile, tok, model, ds = _setup(tiny_dir, smoke_examples[:4], max_length=1024)  # nothing truncated
    model = prepare_for_training(model, build_lora_config(profile))
    trainer = SFTTrainer(model=model, args=sft_config(profile, tmp_path, batch_size=1, grad_accum=1),
                         train_dataset=ds, processing_class=tok)
    assert len(trainer.train_dataset) == len(ds)
    for ours, theirs in zip(ds, trainer.train_dataset):
        assert (theirs["input_ids"], theirs["labels"]) == (ours["input_ids"], ours["labels"])
    labels = ds[0]["labels"]
    assert labels[0] == -100 and labels[-1] == tok.eos_token_id  # prompt masked, answer ends with eos
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["labels"][0, :len(labels)].tolist() == labels


def test_nan_loss_stops_with_step_lr_and_checkpoint(tiny_dir, smoke_examples, tmp_path):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, max_steps=8, save_steps=2)
    calls = {"n": 0}

    def poison(module, args, output):  # from the 5th forward pass on, the final hidden states are NaN
        calls["n"] += 1
        return output * float("nan") if calls["n"] >= 5 else output

    model.get_submodule("model.norm").register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError) as err:
        train_model(model, tok, ds, profile, tmp_path)
    message = str(err.value)
    assert "at step 5" in message and "learning rate" in message and "checkpoint-4" in message
    assert latest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-4"  # nothing saved after the NaN


def _oom_when_batch_over(model, limit):
    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    model.register_forward_pre_hook(hook, with_kwargs=True)


def test_oom_halves_batch_and_keeps_effective_batch(tiny_dir, smoke_examples, tmp_path, capsys):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, batch_size=4, grad_accum=1, max_steps=4)
    _oom_when_batch_over(model, 1)
    result = train_model(model, tok, ds, profile, tmp_path)
    assert (result.batch_size, result.grad_accum) == (1, 4)
    assert result.steps == 4
    assert "retrying with batch_size=2, grad_accum=2" in capsys.readouterr().out


def test_oom_without_retries_gives_advice(tiny_dir, smoke_examples, tmp_path):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, batch_size=4, oom_retries=0)
    _oom_when_batch_over(model, 1)
    with pytest.raises(OutOfMemoryAdvice, match="batch_size=4.*grad_accum.*max_length=128.*gradient_checkpointing"):
        train_model(model, tok, ds, profile, tmp_path)


def test_same_seed_same_loss_history(tiny_dir, smoke_examples, tmp_path):
    runs = []
    for name in ("a", "b"):
        profile, tok, model, ds = _setup(tiny_dir, smoke_examples, max_steps=5, lora_dropout=0.1)
        runs.append(train_model(model, tok, ds, profile, tmp_path / name).loss_history)
    assert runs[0] == runs[1]


def _worker(out, *args):
    return subprocess.run([sys.executable, str(WORKER), str(out), *args], capture_output=True, text=True,
                          timeout=300)


def _adapter(out):
    return load_file(str(Path(out) / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    ref = _worker(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _worker(tmp_path / "run", "--kill-after-step", "5")
    assert killed.returncode == -9  # really SIGKILLed mid-run
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "checkpoint-4"
    resumed = _worker(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    reference = json.loads((tmp_path / "ref" / "result.json").read_text())
    assert result["resumed_from"].endswith("checkpoint-4")
    assert [s for s, _ in result["loss_history"]] == list(range(1, 9))  # continuous: each step logged once
    losses, ref_losses = [x for _, x in result["loss_history"]], [x for _, x in reference["loss_history"]]
    assert losses == pytest.approx(ref_losses, abs=1e-5)
    a, b = _adapter(tmp_path / "run"), _adapter(tmp_path / "ref")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_kill_during_save_never_leaves_a_corrupt_latest_checkpoint(tmp_path):
    killed = _worker(tmp_path / "run", "--kill-during-save", "4")
    assert killed.returncode == -9
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "checkpoint-4").exists() and not (ckpts / "checkpoint-4" / COMPLETE_MARKER).exists()
    assert latest_checkpoint(ckpts).name == "checkpoint-2"
    resumed = _worker(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["resumed_from"].endswith("checkpoint-2") and result["steps"] == 8
    assert list((ckpts / "incomplete").iterdir())  # the half-written one was set aside, not deleted


def test_run_signature_covers_every_field_that_shapes_the_adapter():
    """A checkpoint is resumed only under the same signature: a vocabulary expansion, its pre-training or another
    batch order must change it; a longer run or another logging interval must not."""
    from datasets import Dataset

    from helpers.train import _run_signature

    rows = Dataset.from_dict({"input_ids": [[1, 2, 3]], "labels": [[-100, 2, 3]]})
    base = _run_signature(get_profile("smoke"), rows, 4, 1)
    for changed in ({"vocab_expansion": "data_samples/corpus/zh_train.txt:200"}, {"pretrain_steps": 10},
                    {"group_by_length": False}, {"lora_r": 4}):
        assert _run_signature(get_profile("smoke", **changed), rows, 4, 1) != base, changed
    for same in ({"max_steps": 60}, {"logging_steps": 2}, {"eval_limit": 5}, {"gradient_checkpointing": True}):
        assert _run_signature(get_profile("smoke", **same), rows, 4, 1) == base, same
    assert _run_signature(get_profile("smoke"), rows, 2, 2) == base  # an OOM retry keeps the effective batch


def test_checkpoints_of_other_settings_are_not_resumed(tiny_dir, smoke_examples, tmp_path, capsys):
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, max_steps=4, save_steps=2)
    train_model(model, tok, ds, profile, tmp_path)
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, max_steps=4, save_steps=2, learning_rate=1e-3)
    result = train_model(model, tok, ds, profile, tmp_path)
    assert result.resumed_from is None and result.steps == 4
    assert "moved to" in capsys.readouterr().out
    assert list((tmp_path / "checkpoints" / "previous").iterdir())
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, max_steps=6, save_steps=2, learning_rate=1e-3)
    assert train_model(model, tok, ds, profile, tmp_path).resumed_from.endswith("checkpoint-4")  # longer: resumes


@pytest.mark.parametrize("name", ["smoke", "colab-t4", "a100"])
def test_continued_pretraining_trains_in_the_precision_of_tuning(name, tmp_path):
    from helpers.train import sft_config
    from helpers.vocab import _training_args

    profile = get_profile(name)
    tuning = sft_config(profile, tmp_path, batch_size=1, grad_accum=1)
    pretraining = _training_args(profile, 1, tmp_path)
    assert (pretraining.fp16, pretraining.bf16, pretraining.optim) == (tuning.fp16, tuning.bf16, tuning.optim)
    on_gpu = torch.cuda.is_available()
    assert tuning.optim == ("paged_adamw_8bit" if on_gpu else "adamw_torch")
    assert tuning.fp16 == (on_gpu and profile.compute_dtype == "float16")  # the T4 profile: fp16 with loss scaling


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_on_gpu_trains_with_loss_scaling(tiny_dir, smoke_examples, tmp_path):
    """The colab-t4 precision (fp16 compute) uses a GradScaler and still trains to a finite loss."""
    profile, tok, model, ds = _setup(tiny_dir, smoke_examples, compute_dtype="float16", max_steps=4)
    seen = {}

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["fp16"] = args.fp16

    result = train_model(model, tok, ds, profile, tmp_path, callbacks=[Spy()])
    assert seen["fp16"] and all(torch.isfinite(torch.tensor([x for _, x in result.loss_history])))
