"""Vocabulary expansion (finding 05): the tiny tokenizers differ as their families do, the merge keeps every old id
and row, sizes agree after a save and reload (16-bit and 4-bit), and continued pre-training moves only new rows."""
from __future__ import annotations

import math
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch

from helpers.models import count_4bit_layers, load_model, load_tokenizer
from helpers.profiles import get_profile
from helpers.vocab import (HELDOUT_CORPUS, apply_vocab_expansion, build_pretrain_dataset, check_expansion,
                           check_vocabulary, compare_efficiency, continued_pretraining, expand_tokenizer,
                           parse_vocab_expansion, read_corpus, resize_embeddings, snapshot_vocabulary,
                           tokenizer_efficiency)

ZH_CORPUS = "data_samples/corpus/zh_train.txt"


@pytest.fixture(scope="module")
def heldout():
    return read_corpus(HELDOUT_CORPUS)


@pytest.fixture(scope="module")
def llama_expanded(tiny_dir, tmp_path_factory):
    """(base tokenizer, expanded tokenizer, report) for tiny llama with a 2000-piece Chinese vocabulary."""
    base = load_tokenizer(str(tiny_dir("llama")))
    expanded, report = expand_tokenizer(base, read_corpus(ZH_CORPUS), 2000, tmp_path_factory.mktemp("llama-zh"))
    return base, expanded, report


def _proto(path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def test_tiny_llama_is_weaker_in_chinese_than_qwen2_and_bloom(tiny_dir, heldout):
    eff = {arch: tokenizer_efficiency(load_tokenizer(str(tiny_dir(arch))), heldout)
           for arch in ("llama", "qwen2", "bloom")}
    assert eff["llama"]["tokens_per_char"] > 1.8 * eff["qwen2"]["tokens_per_char"]
    assert eff["llama"]["tokens_per_char"] > 1.8 * eff["bloom"]["tokens_per_char"]
    assert eff["llama"]["byte_fallback_share"] > 0.5 > 0.3 > eff["qwen2"]["byte_fallback_share"]
    assert all(e["unk_share"] == 0 and e["n_chars"] == eff["llama"]["n_chars"] for e in eff.values())
    spec = _proto(tiny_dir("llama") / "tokenizer.model").trainer_spec
    assert spec.byte_fallback and spec.model_type == 2  # BPE with byte fallback, as LLaMA's tokenizer.model
    assert len(load_tokenizer(str(tiny_dir("bloom")))) > len(load_tokenizer(str(tiny_dir("qwen2"))))


@pytest.mark.parametrize("arch", ["llama", "bloom"])
def test_efficiency_counts_an_unknown_character_as_bytes(tiny_dir, arch):
    tok = load_tokenizer(str(tiny_dir(arch)))
    rare = tokenizer_efficiency(tok, ["龘"])  # in no training corpus: spelled in (pieces of) its 3 UTF-8 bytes
    assert rare["n_han"] == rare["n_chars"] == 1 and rare["n_tokens"] >= 2
    assert rare["byte_fallback_share"] >= 0.75 and rare["tokens_per_han"] == rare["n_tokens"]
    plain = tokenizer_efficiency(tok, ["Hello world"])
    assert plain["byte_fallback_share"] == 0 and math.isnan(plain["tokens_per_han"])


def test_merge_keeps_every_old_id_and_piece(llama_expanded, tiny_dir):
    base, expanded, report = llama_expanded
    old, new = base.get_vocab(), expanded.get_vocab()
    assert all(new[t] == i for t, i in old.items())
    assert report["method"] == "sentencepiece merge" and report["new_tokens"] > 1000
    assert len(expanded) == len(base) + report["new_tokens"] == report["tokenizer_len"]
    before, after = _proto(tiny_dir("llama") / "tokenizer.model"), _proto(Path(expanded.name_or_path) / "tokenizer.model")
    assert list(after.pieces)[:len(before.pieces)] == list(before.pieces)
    assert all(p.score == 0 for p in list(after.pieces)[len(before.pieces):])
    assert 0 <= report["unreachable_pieces"] < report["new_tokens"] * 0.1
    text = "Hello world, the train leaves at 8:30.<|im_start|>user\nhi<|im_end|>"
    assert base(text)["input_ids"] == expanded(text)["input_ids"]  # only Chinese changes
    assert expanded.pad_token_id != expanded.eos_token_id and expanded.chat_template == base.chat_template


def test_new_chinese_text_tokenises_shorter(llama_expanded, heldout):
    base, expanded, _ = llama_expanded
    result = compare_efficiency(base, expanded, heldout)
    assert result["length_reduction"] > 0.3
    assert result["after"]["tokens_per_han"] < 0.6 * result["before"]["tokens_per_han"]
    assert result["after"]["byte_fallback_share"] < result["before"]["byte_fallback_share"] / 2
    ids = expanded(heldout[0], add_special_tokens=False)["input_ids"]
    assert expanded.decode(ids) == heldout[0] and max(ids) >= len(base)


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_sizes_agree_after_save_and_reload(llama_expanded, tiny_dir, tmp_path, quantization, capsys):
    base, expanded, _ = llama_expanded
    model = load_model(str(tiny_dir("llama")), quantization=quantization, compute_dtype="float32")
    snapshot = snapshot_vocabulary(model, base)
    mixed = check_vocabulary(model, expanded, snapshot)  # expanded tokenizer, un-resized model
    assert not mixed["ok"] and "do not mix" in capsys.readouterr().out
    sizes = resize_embeddings(model, expanded)
    assert sizes["rows_after"] % 64 == 0 and len(expanded) <= sizes["rows_after"] < len(expanded) + 64
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    assert not isinstance(head, bnb.nn.Linear4bit) and head.weight.dtype == embed.weight.dtype == torch.float32
    assert (count_4bit_layers(model) > 0) == (quantization == "nf4")  # the body stays 4-bit, the vocab rows not
    assert check_vocabulary(model, expanded, snapshot)["ok"]
    model.save_pretrained(tmp_path)
    expanded.save_pretrained(tmp_path)
    reloaded = load_model(str(tmp_path), quantization=quantization, compute_dtype="float32")
    report = check_vocabulary(reloaded, load_tokenizer(str(tmp_path)), snapshot, saved_dir=tmp_path)
    assert report["ok"], report["problems"]
    assert report["saved_config_vocab_size"] == report["model_rows"] == sizes["rows_after"]
    assert report["saved_tokenizer_len"] == report["tokenizer_len"] == len(expanded)
    assert report["old_ids_kept"] == report["old_tokens"] == len(base) and report["old_rows_kept"]


def test_check_names_moved_ids_and_changed_rows(tiny_dir):
    model = load_model(str(tiny_dir("llama")), quantization="none", compute_dtype="float32")
    llama = load_tokenizer(str(tiny_dir("llama")))
    snapshot = snapshot_vocabulary(model, llama)
    other = check_vocabulary(model, load_tokenizer(str(tiny_dir("qwen2"))), snapshot, verbose=False)
    assert not other["ok"] and any("changed id" in p for p in other["problems"])
    with torch.no_grad():
        model.get_input_embeddings().weight[5] += 1
    edited = check_vocabulary(model, llama, snapshot, verbose=False)
    assert edited["problems"] == ["the old input rows changed"] and not edited["old_rows_kept"]


def test_byte_level_base_gets_added_tokens(tiny_dir, tmp_path, heldout):
    base = load_tokenizer(str(tiny_dir("qwen2")))
    expanded, report = expand_tokenizer(base, read_corpus(ZH_CORPUS), 2000, tmp_path)
    assert report["method"].startswith("added tokens") and report["new_tokens"] > 100
    assert all(expanded.get_vocab()[t] == i for t, i in base.get_vocab().items())
    assert compare_efficiency(base, expanded, heldout)["length_reduction"] > 0


def test_pretrain_dataset_keeps_every_token(tiny_dir):
    tok = load_tokenizer(str(tiny_dir("llama")))
    texts = ["长城很长。", "黄河是中国的母亲河。", "Hello"]
    data = build_pretrain_dataset(texts, tok, block_size=8)
    n = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # each text ends with eos
    assert sum(map(sum, data["attention_mask"])) == n == sum(x != -100 for row in data["labels"] for x in row)
    assert {len(row) for row in data["input_ids"]} == {8} and data["labels"][-1][-1] == -100


def test_continued_pretraining_moves_new_rows_only(llama_expanded, tiny_dir, tmp_path):
    base, expanded, _ = llama_expanded
    profile = get_profile("smoke", base_model="tiny:llama", quantization="none", max_length=64, batch_size=2)
    model = load_model(str(tiny_dir("llama")), quantization="none", compute_dtype="float32")
    resize_embeddings(model, expanded)
    before = {k: m.weight.detach().clone() for k, m in
              (("input", model.get_input_embeddings()), ("output", model.get_output_embeddings()))}
    new_ids = list(range(len(base), len(expanded)))
    model, losses = continued_pretraining(model, expanded, read_corpus(ZH_CORPUS)[:20], profile, new_ids=new_ids,
                                          steps=2, work_dir=tmp_path)
    assert [(stage, step) for stage, step, _ in losses] == [(1, 1), (2, 2)] and all(map(math.isfinite,
                                                                                        [v for *_, v in losses]))
    after = {"input": model.get_input_embeddings().weight, "output": model.get_output_embeddings().weight}
    moved = {}
    for key in before:
        assert torch.equal(after[key][:len(base)], before[key][:len(base)])  # old rows untouched
        moved[key] = ((after[key][new_ids] - before[key][new_ids]).abs().sum(dim=1) > 0).float().mean()
    # Input rows move only for new tokens in the few batches seen; every output row gets a softmax gradient.
    assert 0 < moved["input"] < 0.5 and moved["output"] == 1
    assert type(model).__name__ == "LlamaForCausalLM"  # adapters merged: a plain model for instruction tuning


def test_apply_vocab_expansion_is_cached(tiny_dir, tmp_path):
    profile = get_profile("smoke", base_model="tiny:llama", vocab_expansion=f"{ZH_CORPUS}:2000", pretrain_steps=2,
                          max_length=64, batch_size=2, output_root=str(tmp_path))
    source = str(tiny_dir("llama"))
    first = apply_vocab_expansion(load_model(source, compute_dtype="float32"), load_tokenizer(source), profile)
    again = apply_vocab_expansion(load_model(source, compute_dtype="float32"), load_tokenizer(source), profile)
    (m1, t1, r1), (m2, t2, r2) = first, again
    assert (r1["cached"], r2["cached"]) == (False, True) and len(t1) == len(t2) == r1["tokenizer_len"]
    assert r1["after"]["tokens_per_char"] < r1["before"]["tokens_per_char"] and r1["length_reduction"] > 0.3
    assert len(r1["pretrain_loss"]) == 2 and count_4bit_layers(m2) == count_4bit_layers(m1) > 0
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert check_vocabulary(m2, t2, verbose=False)["ok"]
    assert m1.name_or_path == m2.name_or_path != source  # adapters tuned on it are not attached to the plain base


def test_load_base_applies_the_profile(tmp_path):
    from helpers.experiment import load_base

    profile = get_profile("smoke", base_model="tiny:llama", vocab_expansion=f"{ZH_CORPUS}:2000",
                          output_root=str(tmp_path))
    model, tokenizer = load_base(profile)
    assert len(tokenizer) > 3000 and check_vocabulary(model, tokenizer, verbose=False)["ok"]


def test_profile_fields_and_bad_specs():
    assert get_profile("smoke").vocab_expansion == "" and get_profile("smoke").pretrain_steps == 0
    assert parse_vocab_expansion("") is None
    assert parse_vocab_expansion(f"{ZH_CORPUS}:2000") == (ZH_CORPUS, 2000)
    assert parse_vocab_expansion("hf:wikimedia/wikipedia@20231101.zh:20000") == ("hf:wikimedia/wikipedia@20231101.zh",
                                                                               20000)
    with pytest.raises(ValueError, match="'vocab_expansion'.*<corpus>:<vocab size>"):
        parse_vocab_expansion(ZH_CORPUS)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        parse_vocab_expansion("data_samples/corpus/missing.txt:2000")
    with pytest.raises(ValueError, match="'pretrain_steps' needs 'vocab_expansion'"):
        apply_vocab_expansion(None, None, get_profile("smoke", pretrain_steps=5))


def test_too_small_a_vocabulary_says_so(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="cannot train a 200-piece Chinese vocabulary"):
        expand_tokenizer(load_tokenizer(str(tiny_dir("llama"))), read_corpus(ZH_CORPUS), 200, tmp_path)


def test_check_expansion_reloads_the_expanded_base_and_measures_held_aside_text(tmp_path, heldout, capsys):
    profile = get_profile("smoke", base_model="tiny:llama", vocab_expansion=f"{ZH_CORPUS}:2000",
                          output_root=str(tmp_path))
    result = check_expansion(profile, {"held-aside": heldout})
    check, report = result["check"], result["report"]
    assert check["ok"] and "Vocabulary check passed" in capsys.readouterr().out
    assert check["saved_config_vocab_size"] == check["model_rows"] and check["old_rows_kept"]
    assert check["saved_tokenizer_len"] == len(result["tokenizer"]) == check["old_tokens"] + report["new_tokens"]
    efficiency = result["efficiency"]["held-aside"]
    assert efficiency["after"]["tokens_per_han"] < efficiency["before"]["tokens_per_han"]
    assert efficiency["length_reduction"] == pytest.approx(report["length_reduction"])  # the same held-aside text
    again = check_expansion(profile)  # read back from the cache: the same vocabulary
    assert again["report"]["cached"] and again["check"]["ok"] and again["efficiency"] == {}
    assert again["tokenizer"].get_vocab() == result["tokenizer"].get_vocab()


def test_hub_corpus_rows_are_cut_into_paragraphs(monkeypatch):
    import datasets

    paragraphs = ["长城是古代的防御工程。", "它横跨中国北方。", "很长的段落。" * 3]
    rows = [{"text": "\n\n".join(paragraphs[:2]) + "\n" + paragraphs[2]}, {"text": ""}, {"text": "第二篇文章。"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: iter(rows))
    assert read_corpus("hf:some/corpus@zh") == [*paragraphs, "第二篇文章。"]
    assert read_corpus("hf:some/corpus@zh", max_chars=5) == paragraphs  # whole rows, until the limit is reached
