"""Training rows and batches: tokenised through datasets.map exactly as record by record and cached, length-grouped
batches, padding-free equivalence."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from helpers.batching import check_training_rows, length_grouped_order, padding_share
from helpers import batching, prompts
from helpers.data import DataReport, load_training_data
from helpers.models import load_model, load_tokenizer
from helpers.profiles import get_profile
from helpers.prompts import build_sft_dataset
from helpers.train import train_model, use_padding_free

WORKER = Path(__file__).with_name("train_worker.py")


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_tokenizer(str(tiny_dir("qwen2")))


def _lengths(tok, max_length):
    examples, _ = load_training_data("data_samples/instructions_zh.json")
    return check_training_rows(build_sft_dataset(examples, tok, max_length=max_length), max_length)


def test_grouped_order_is_a_seeded_permutation():
    lengths = [(i * 37) % 101 + 1 for i in range(203)]
    order = length_grouped_order(lengths, 8, seed=3)
    assert sorted(order) == list(range(203))  # every row once per epoch
    assert order == length_grouped_order(lengths, 8, seed=3)
    assert order != length_grouped_order(lengths, 8, seed=4)
    assert lengths[order[0]] == max(lengths)  # the longest batch first: an out-of-memory shows at step 1


@pytest.mark.parametrize("name", ["smoke", "colab-t4", "a100"])
def test_grouped_batches_pad_under_5_percent_on_every_profile(tok, name):
    """The sample data at each profile's max_length and batch: random batches pad a lot, grouped ones <= 5%."""
    p = get_profile(name)
    lengths = _lengths(tok, p.max_length)
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    grouped = length_grouped_order(lengths, p.batch_size * p.grad_accum, seed=p.seed)
    assert padding_share(lengths, grouped, p.batch_size) <= 0.05
    assert padding_share(lengths, random_order, p.batch_size) > 0.10


def _record_by_record(examples, tok, max_length, overlong):
    """The reference: each record rendered, tokenised and fitted on its own; (ids, labels) or the skip reason."""
    rows = []
    for example in examples:
        text, spans = prompts._training_text(example, tok, "chat")
        [(ids, labels)] = prompts._tokenize([text], [spans], tok)
        ids, labels, reason = prompts._fit(ids, labels, max_length, overlong)
        rows.append(reason or (ids, labels))
    return rows


def _report(examples):
    return DataReport(path="mem", read=len(examples), kept=len(examples))


@pytest.mark.parametrize("overlong", ["truncate", "skip"])
def test_map_path_equals_record_by_record_and_reads_its_cache(tok, monkeypatch, tmp_path, overlong):
    """build_sft_dataset through datasets.map (2 worker processes, then 1) gives the rows and the skip counts of a
    record-by-record loop; a second call reads the rows back from the cache without tokenising again."""
    examples, _ = load_training_data("data_samples/instructions_zh.json")
    expected = _record_by_record(examples, tok, 96, overlong)
    kept, reasons = [r for r in expected if isinstance(r, tuple)], [r for r in expected if isinstance(r, str)]
    assert kept and reasons, "the sample data has records both under and over 96 tokens"
    for num_proc in (2, None):  # each into its own cache folder, so each tokenises
        # Not through ZH_COOKBOOK_CACHE: datasets.map with num_proc swaps os.environ for a copy, which would keep
        # the test's setting past monkeypatch's undo.
        folder = tmp_path / str(num_proc)
        folder.mkdir()
        monkeypatch.setattr(batching, "cache_dir", lambda name, folder=folder: folder)
        report = _report(examples)
        ds = build_sft_dataset(examples, tok, max_length=96, overlong=overlong, report=report, num_proc=num_proc)
        assert list(zip(ds["input_ids"], ds["labels"])) == kept
        assert sum(report.skipped.values()) == len(reasons) and report.kept == len(kept)
    monkeypatch.setattr(prompts, "_tokenize", lambda *a: pytest.fail("tokenised again instead of reading the cache"))
    again = build_sft_dataset(examples, tok, max_length=96, overlong=overlong, report=(cached := _report(examples)))
    assert again.cache_files[0]["filename"] == ds.cache_files[0]["filename"]
    assert again["input_ids"] == ds["input_ids"] and cached.skipped == report.skipped and cached.notes == report.notes


def test_bad_tokenized_rows_are_named():
    too_long = Dataset.from_dict({"input_ids": [[1, 2], [1, 2, 3, 4]], "labels": [[-100, 2], [-100, 2, 3, 4]]})
    with pytest.raises(ValueError, match="row 1 has 4 tokens"):
        check_training_rows(too_long, 3)
    unsupervised = Dataset.from_dict({"input_ids": [[1, 2], [1, 2]], "labels": [[-100, 2], [-100, -100]]})
    with pytest.raises(ValueError, match="row 1 has no supervised"):
        check_training_rows(unsupervised, 3)
    first_only = Dataset.from_dict({"input_ids": [[1, 2], [1, 2]], "labels": [[-100, 2], [1, -100]]})
    with pytest.raises(ValueError, match="row 1 has no supervised"):  # a label on token 0 is never predicted
        check_training_rows(first_only, 3)
    with pytest.raises(ValueError, match="tokenized rows.*build_sft_dataset"):  # prompt/completion text is not trained
        check_training_rows(Dataset.from_dict({"prompt": ["问"], "completion": ["答"]}), 3)


def _run(tiny_dir, ds, out, **overrides):
    profile = get_profile("smoke", **({"max_steps": 6, "save_steps": 6, "logging_steps": 1} | overrides))
    tok = load_tokenizer(str(tiny_dir("qwen2")))
    model = load_model(str(tiny_dir("qwen2")), compute_dtype="float32")
    return train_model(model, tok, ds, profile, out)


def test_padding_free_loss_matches_padded_run(tiny_dir, tok, smoke_examples, tmp_path):
    """Same rows, same seed: the padding-free run's losses equal the padded run's (only the batch layout differs)."""
    ds = build_sft_dataset(smoke_examples, tok, max_length=128)
    padded = _run(tiny_dir, ds, tmp_path / "padded", padding_free="off", group_by_length=False)
    packed = _run(tiny_dir, ds, tmp_path / "packed", padding_free="on", group_by_length=False)
    assert [s for s, _ in packed.loss_history] == [s for s, _ in padded.loss_history]
    assert [x for _, x in packed.loss_history] == pytest.approx([x for _, x in padded.loss_history], rel=1e-4)
    assert packed.tokens_seen == padded.tokens_seen  # same non-padding tokens


def test_pretokenized_rows_train_as_given(tiny_dir, tok, tmp_path):
    """The tokenised row format (input_ids + labels, cut to max_length) trains unchanged, grouped by length."""
    rows = {"input_ids": [], "labels": []}
    for n in (20, 40, 60, 80, 100, 120, 30, 50):
        ids = [(7 * i) % 2000 + 10 for i in range(n)]
        rows["input_ids"].append(ids)
        rows["labels"].append([-100] * (n // 2) + ids[n // 2:])
    result = _run(tiny_dir, Dataset.from_dict(rows), tmp_path, max_steps=4)
    assert result.steps == 4 and all(torch.isfinite(torch.tensor([x for _, x in result.loss_history])))


def test_padding_free_auto_follows_the_attention_kernel(tiny_dir):
    model = load_model(str(tiny_dir("qwen2")), compute_dtype="float32")
    auto = get_profile("smoke")
    assert use_padding_free(auto, model) is False  # SDPA on CPU: grouped batches instead
    model.config._attn_implementation = "flash_attention_2"
    assert use_padding_free(auto, model) is True
    assert use_padding_free(get_profile("smoke", padding_free="off"), model) is False


@pytest.mark.slow
def test_resume_in_a_later_epoch_sees_the_same_grouped_batches(tmp_path):
    """32 rows, batch 4: 8 steps an epoch. Killed in epoch 2, the resumed run matches the uninterrupted one."""
    def worker(out, *args):
        return subprocess.run([sys.executable, str(WORKER), str(out), "--max-steps", "12", *args],
                              capture_output=True, text=True, timeout=300)

    assert worker(tmp_path / "ref").returncode == 0
    assert worker(tmp_path / "run", "--kill-after-step", "11").returncode == -9
    resumed = worker(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result, ref = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("run", "ref"))
    assert result["resumed_from"].endswith("checkpoint-10")
    assert [x for _, x in result["loss_history"]] == pytest.approx([x for _, x in ref["loss_history"]], abs=1e-5)
