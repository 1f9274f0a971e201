"""Vocabulary expansion (finding 05): a Chinese vocabulary merged into a base's, embeddings resized, optional
continued pre-training, and the checks that the two vocabularies were not mixed.

The recipe follows Chinese-LLaMA-Alpaca's idea in our own code: train a unigram SentencePiece model on Chinese
text, append every piece the base lacks to the base's `tokenizer.model` (score 0, so every old piece keeps its id),
rebuild the Hugging Face tokenizer from the merged proto, and grow the embeddings. A byte-level BPE base has no
SentencePiece model; it gets the new pieces as added tokens instead, a weaker substitute: added tokens are cut out
of the text before the base's own segmentation runs, greedily and without any merge scores.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from .paths import output_dir, project_path
from .tiny import read_corpus_file

__all__ = [
    "HELDOUT_CORPUS",
    "tokenizer_efficiency",
    "compare_efficiency",
    "read_corpus",
    "train_sentencepiece",
    "merge_sentencepiece",
    "expand_tokenizer",
    "resize_embeddings",
    "snapshot_vocabulary",
    "check_vocabulary",
    "build_pretrain_dataset",
    "continued_pretraining",
    "parse_vocab_expansion",
    "apply_vocab_expansion",
    "check_expansion",
]

_VERSION = "2"  # bump to invalidate every cached expansion (2: hub corpora read as paragraphs)
HELDOUT_CORPUS = "data_samples/corpus/zh_heldout.txt"  # Chinese text no tokenizer or model is trained on
_HUB_CORPUS_CHARS = 20_000_000  # characters read from a hub corpus: ~20M tokens of continued pre-training at most
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4  # SentencePiece piece types


# ----------------------------------------------------------------------------- measuring


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-printable-character table, inverted (byte-level BPE token strings back to bytes)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return {c: b for b, c in enumerate(chars)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return type(getattr(backend, "decoder", None)).__name__ == "ByteLevel"


def _fragment_ids(tokenizer, ids: set[int]) -> set[int]:
    """Ids among `ids` that are not whole characters: <0xNN> byte pieces, or byte-level tokens of broken UTF-8."""
    tokens = dict(zip(ids, tokenizer.convert_ids_to_tokens(list(ids))))
    if not _is_byte_level(tokenizer):
        return {i for i, t in tokens.items() if t and _BYTE_PIECE.match(t)}
    alphabet, special = _byte_level_alphabet(), set(tokenizer.all_special_ids)
    fragments = set()
    for i, t in tokens.items():
        if i in special or not t or any(c not in alphabet for c in t):
            continue  # special and added tokens are whole strings
        try:
            bytes(alphabet[c] for c in t).decode("utf-8")
        except UnicodeDecodeError:
            fragments.add(i)
    return fragments


def tokenizer_efficiency(tokenizer, texts) -> dict:
    """Tokens per character of `texts` (no special tokens), and the shares of byte-fallback and unknown tokens.

    `byte_fallback_share` counts SentencePiece <0xNN> byte pieces and, for byte-level BPE tokenizers, tokens that
    are not whole UTF-8 characters: in both cases a character the vocabulary does not know, spelled in bytes.
    `tokens_per_han` is per Chinese (Han) character, the paper's unit; NaN when the texts hold none.
    """
    texts = [t for t in ([texts] if isinstance(texts, str) else list(texts)) if t.strip()]
    if not texts:
        raise ValueError("tokenizer_efficiency needs non-empty texts to measure")
    rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
    ids = [i for row in rows for i in row]
    n_chars, n_tokens = sum(len(t) for t in texts), len(ids)
    n_han = sum(len(_HAN.findall(t)) for t in texts)
    fragments = _fragment_ids(tokenizer, set(ids))
    unk = tokenizer.unk_token_id
    return {
        "chars_per_token": n_chars / n_tokens,
        "tokens_per_char": n_tokens / n_chars,
        "tokens_per_han": n_tokens / n_han if n_han else float("nan"),
        "byte_fallback_share": sum(i in fragments for i in ids) / n_tokens,
        "unk_share": (sum(i == unk for i in ids) if unk is not None else 0) / n_tokens,
        "n_chars": n_chars,
        "n_han": n_han,
        "n_tokens": n_tokens,
    }


def compare_efficiency(before, after, texts) -> dict:
    """Efficiency of two tokenizers on the same texts, and how much shorter `after` makes them (0.4 = 40%)."""
    b, a = tokenizer_efficiency(before, texts), tokenizer_efficiency(after, texts)
    return {"before": b, "after": a, "length_reduction": 1 - a["n_tokens"] / b["n_tokens"]}


# ----------------------------------------------------------------------------- corpora and SentencePiece


def read_corpus(spec: str, *, max_chars: int = _HUB_CORPUS_CHARS) -> list[str]:
    """Paragraphs of a corpus: a local .txt (one per line) or "hf:<dataset id>[@<config>]" (its "text" column, each
    row cut at its line breaks: SentencePiece skips any line over 4,192 bytes, which most whole articles are)."""
    if not spec.startswith("hf:"):
        return read_corpus_file(spec)
    from datasets import load_dataset

    name, _, config = spec.removeprefix("hf:").partition("@")
    texts, total = [], 0
    for row in load_dataset(name, config or None, split="train", streaming=True):  # streamed: read a prefix only
        lines = [line.strip() for line in (row.get("text") or "").splitlines() if line.strip()]
        texts += lines
        total += sum(map(len, lines))
        if total >= max_chars:
            break
    if not texts:
        raise ValueError(f"corpus {spec} has no rows with a non-empty 'text' column")
    return texts


def train_sentencepiece(texts: list[str], vocab_size: int, *, model_type: str = "unigram") -> bytes:
    """Train a SentencePiece model on `texts` (text kept as is, digits split); returns the serialized proto."""
    import io

    import sentencepiece as spm

    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=out, model_type=model_type, vocab_size=vocab_size,
            character_coverage=0.9995,  # the value SentencePiece recommends for Chinese and Japanese
            normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
            input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=1, minloglevel=2)
    except RuntimeError as err:
        raise ValueError(f"cannot train a {vocab_size}-piece Chinese vocabulary on this corpus: {err}") from None
    return out.getvalue()


def _proto(data: bytes):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    return proto


def _append_added_tokens(proto, tokenizer) -> None:
    """Write the tokenizer's added tokens past the proto's end into the proto itself, at their own ids."""
    extra = sorted((i, t) for i, t in tokenizer.added_tokens_decoder.items() if i >= len(proto.pieces))
    for i, token in extra:
        if i != len(proto.pieces):
            raise ValueError(f"added token {token.content!r} has id {i}, but the SentencePiece model ends at "
                             f"{len(proto.pieces)}: appending pieces would give two tokens one id")
        piece = proto.pieces.add()
        piece.piece, piece.score = token.content, 0.0
        piece.type = _CONTROL if token.special else _USER_DEFINED


def merge_sentencepiece(base: bytes, new: bytes, tokenizer=None) -> tuple[bytes, list[str]]:
    """Append every normal piece of `new` that `base` lacks (score 0; old ids unchanged); (merged proto, added).

    With `tokenizer` given, its added tokens beyond the base proto are first written into the proto at their ids.
    """
    merged, extra = _proto(base), _proto(new)
    if tokenizer is not None:
        _append_added_tokens(merged, tokenizer)
    have = {p.piece for p in merged.pieces}
    added = []
    for p in extra.pieces:
        if p.type == _NORMAL and p.piece not in have:
            piece = merged.pieces.add()
            # Score 0 as in Chinese-LLaMA: in a BPE model the pieces' scores order the merges, and 0 (above every
            # old score) lets the new whole-word pieces win. A unigram base gets the piece's own log-probability.
            piece.piece, piece.score = p.piece, 0.0 if merged.trainer_spec.model_type == 2 else p.score
            have.add(p.piece)
            added.append(p.piece)
    return merged.SerializeToString(), added


def _unreachable(pieces: list[str], vocab: dict) -> int:
    """How many pieces a BPE tokenizer can never produce: no split into two pieces that are both in the vocab."""
    reachable = {}

    def ok(p: str) -> bool:
        if p not in reachable:
            reachable[p] = len(p) == 1 or any(a in vocab and b in vocab and ok(a) and ok(b)
                                              for a, b in ((p[:k], p[k:]) for k in range(1, len(p))))
        return reachable[p]

    return sum(not ok(p) for p in pieces)


def _sentencepiece_file(tokenizer) -> Path | None:
    """The base tokenizer's SentencePiece model file, when it has one."""
    for candidate in (getattr(tokenizer, "vocab_file", None), Path(tokenizer.name_or_path) / "tokenizer.model"):
        if candidate and str(candidate).endswith(".model") and Path(candidate).is_file():
            return Path(candidate)
    return None


def _reload(directory: Path):
    from .models import load_tokenizer

    return load_tokenizer(str(directory))


def _merge_into_tokenizer(tokenizer, sp_file: Path, new_proto: bytes, directory: Path):
    """Rebuild the HF tokenizer from the merged tokenizer.model (the base's settings kept), saved in `directory`."""
    merged, added = merge_sentencepiece(sp_file.read_bytes(), new_proto, tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)  # settings, special tokens, chat template
        Path(tmp, "tokenizer.json").unlink(missing_ok=True)  # else it, not the merged proto, would be loaded
        Path(tmp, "tokenizer.model").write_bytes(merged)
        rebuilt = _reload(Path(tmp))
        # Only the model (pieces, merges) should change: conversion from a .model rebuilds the text handling and
        # drops the bos post-processing, so take all of that from the base (old ids are unchanged).
        old, new = tokenizer.backend_tokenizer, rebuilt.backend_tokenizer
        for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            setattr(new, part, getattr(old, part))
        rebuilt.save_pretrained(directory)
    (directory / "tokenizer.model").write_bytes(merged)  # kept beside tokenizer.json, as LLaMA repos ship it
    return _reload(directory), added


def _add_as_tokens(tokenizer, new_proto: bytes, directory: Path):
    """The byte-level BPE substitute: every new piece the base splits into several tokens becomes an added token."""
    tokenizer.save_pretrained(directory)
    tokenizer = _reload(directory)  # a copy: the caller's tokenizer stays as it was
    pieces = [p.piece.replace("\u2581", "") for p in _proto(new_proto).pieces if p.type == _NORMAL]
    pieces = [p for p in dict.fromkeys(pieces) if p and len(tokenizer(p, add_special_tokens=False)["input_ids"]) > 1]
    tokenizer.add_tokens(pieces)
    tokenizer.save_pretrained(directory)
    return _reload(directory), pieces


def expand_tokenizer(tokenizer, texts: list[str], vocab_size: int, directory) -> tuple[object, dict]:
    """Train a unigram Chinese vocabulary on `texts` and merge it into `tokenizer`; saved in `directory`.

    Returns (expanded tokenizer, report): method, the number of pieces added, and for a SentencePiece merge how
    many of them the base's BPE merges can never produce.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    new_proto = train_sentencepiece(texts, vocab_size)
    sp_file = _sentencepiece_file(tokenizer)
    if sp_file is not None:
        expanded, added = _merge_into_tokenizer(tokenizer, sp_file, new_proto, directory)
        method = "sentencepiece merge"
    else:
        expanded, added = _add_as_tokens(tokenizer, new_proto, directory)
        method = "added tokens (byte-level BPE base: the weaker substitute)"
    report = {"method": method, "base_tokens": len(tokenizer), "new_tokens": len(added),
              "tokenizer_len": len(expanded)}
    if sp_file is not None and _proto(sp_file.read_bytes()).trainer_spec.model_type == 2:
        report["unreachable_pieces"] = _unreachable(added, expanded.get_vocab())
    return expanded, report


# ----------------------------------------------------------------------------- embeddings and checks


def resize_embeddings(model, tokenizer, *, pad_to_multiple_of: int = 64, seed: int = 0) -> dict:
    """Grow input and output embeddings to the tokenizer (new rows drawn around the mean of the old ones).

    Never shrinks: a base whose matrix is already larger than its tokenizer (Qwen pads to a round number) keeps
    its rows. Rows are padded to a multiple of 64, which tensor cores like; the spare rows are never produced.
    """
    before = model.get_input_embeddings().weight.shape[0]
    target = max(len(tokenizer), before)
    torch.manual_seed(seed)  # mean_resizing samples the new rows from a normal fitted to the old ones
    model.resize_token_embeddings(target, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=True)
    return {"rows_before": before, "rows_after": model.get_input_embeddings().weight.shape[0]}


def snapshot_vocabulary(model, tokenizer) -> dict:
    """What must survive an expansion: every token's id, and copies of the embedding and output rows (on CPU)."""
    out = model.get_output_embeddings()
    return {
        "vocab": dict(tokenizer.get_vocab()),
        "input_rows": model.get_input_embeddings().weight.detach().to("cpu", copy=True),
        "output_rows": None if out is None else out.weight.detach().to("cpu", copy=True),
    }


def _saved_sizes(saved_dir: Path) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(saved_dir)
    sizes = {"saved_config_vocab_size": config.get_text_config().vocab_size}
    if (saved_dir / "tokenizer_config.json").exists():
        sizes["saved_tokenizer_len"] = len(_reload(saved_dir))
    return sizes


def _old_token_problems(model, tokenizer, snapshot: dict) -> tuple[dict, list[str]]:
    vocab = tokenizer.get_vocab()
    moved = [t for t, i in snapshot["vocab"].items() if vocab.get(t) != i]
    n = snapshot["input_rows"].shape[0]
    weights = {"input_rows": model.get_input_embeddings().weight, "output_rows": getattr(
        model.get_output_embeddings(), "weight", None)}
    changed = [k for k, w in weights.items() if snapshot[k] is not None and (w is None or not torch.equal(
        w.detach()[:n].to("cpu", snapshot[k].dtype), snapshot[k]))]
    facts = {"old_tokens": len(snapshot["vocab"]), "old_ids_kept": len(snapshot["vocab"]) - len(moved),
             "old_rows_kept": not changed}
    problems = [f"{len(moved)} old tokens changed id (e.g. {moved[:3]})"] if moved else []
    problems += [f"the old {k.replace('_', ' ')} changed" for k in changed]
    return facts, problems


def check_vocabulary(model, tokenizer, snapshot: dict | None = None, *, saved_dir=None, verbose: bool = True) -> dict:
    """Check that model, tokenizer (and a saved copy) agree on the vocabulary, and that old tokens kept id and row.

    Mixing vocabularies (an expanded tokenizer on an un-resized model, or a tokenizer from another expansion) shows
    up here as a size mismatch or moved ids; the report says what is wrong, and prints it unless verbose=False.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    out = model.get_output_embeddings()
    facts = {"model_rows": rows, "output_rows": None if out is None else out.weight.shape[0],
             "config_vocab_size": model.config.get_text_config().vocab_size, "tokenizer_len": len(tokenizer)}
    problems = []
    if facts["config_vocab_size"] != rows:
        problems.append(f"config.vocab_size {facts['config_vocab_size']} != {rows} embedding rows")
    if facts["output_rows"] not in (None, rows):
        problems.append(f"output layer has {facts['output_rows']} rows, embeddings {rows}")
    if len(tokenizer) > rows:
        problems.append(f"tokenizer has {len(tokenizer)} tokens but the model only {rows} rows: ids past "
                        f"{rows - 1} would index outside the embeddings (a tokenizer from another vocabulary?)")
    if saved_dir is not None:
        facts |= _saved_sizes(Path(saved_dir))
        if facts["saved_config_vocab_size"] != rows:
            problems.append(f"saved config says vocab_size {facts['saved_config_vocab_size']}, model has {rows}")
        if facts.get("saved_tokenizer_len", len(tokenizer)) != len(tokenizer):
            problems.append(f"saved tokenizer has {facts['saved_tokenizer_len']} tokens, this one {len(tokenizer)}")
    if snapshot is not None:
        old, old_problems = _old_token_problems(model, tokenizer, snapshot)
        facts |= old
        problems += old_problems
    facts |= {"ok": not problems, "problems": problems, "message": _message(facts, problems)}
    if verbose:
        print(facts["message"])
    return facts


def _message(facts: dict, problems: list[str]) -> str:
    if problems:
        return "Vocabulary check FAILED (do not mix the vocabularies): " + "; ".join(problems)
    kept = (f"; all {facts['old_tokens']} old tokens keep their ids and embedding rows"
            if "old_tokens" in facts else "")
    return (f"Vocabulary check passed: tokenizer {facts['tokenizer_len']} tokens, model and config "
            f"{facts['model_rows']} rows{kept}.")


# ----------------------------------------------------------------------------- continued pre-training


def build_pretrain_dataset(texts: list[str], tokenizer, *, block_size: int):
    """Plain-text causal-LM dataset: texts joined with eos and cut into blocks (labels = inputs; the last block is
    padded, its padding masked out of the loss), so no token of the corpus is dropped."""
    from datasets import Dataset

    stream = [i for row in tokenizer(texts, add_special_tokens=False)["input_ids"]
              for i in row + [tokenizer.eos_token_id]]
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for start in range(0, len(stream), block_size):
        block = stream[start:start + block_size]
        pad = block_size - len(block)
        rows["input_ids"].append(block + [tokenizer.pad_token_id] * pad)
        rows["attention_mask"].append([1] * len(block) + [0] * pad)
        rows["labels"].append(block + [-100] * pad)
    return Dataset.from_dict(rows)


def _embedding_module_names(model) -> list[str]:
    """Short names of the input embedding and (when not tied to it) the output layer."""
    names = {m: n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is None or out.weight is inp.weight
    return [names[inp]] + ([] if tied else [names[out]])


def _training_args(profile, steps: int, output: Path):
    from transformers import TrainingArguments

    from .train import precision_args

    return TrainingArguments(
        output_dir=str(output), max_steps=steps, per_device_train_batch_size=profile.batch_size,
        gradient_accumulation_steps=profile.grad_accum, learning_rate=profile.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=profile.warmup_ratio, logging_steps=1, save_strategy="no",
        seed=profile.seed, data_seed=profile.seed, report_to="none", dataloader_num_workers=0,
        logging_nan_inf_filter=False, **precision_args(profile))


def _train_stage(model, peft_config, dataset, profile, steps: int, work: Path, save_dir: Path | None):
    """One training stage under `peft_config`: train, optionally save the adapter, merge it; (model, losses)."""
    from transformers import Trainer

    from .peft_methods import prepare_for_training

    peft_model = prepare_for_training(model, peft_config, gradient_checkpointing=profile.gradient_checkpointing)
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # fp16 mixed precision needs fp32 trainable weights
    trainer = Trainer(model=peft_model, args=_training_args(profile, steps, work), train_dataset=dataset)
    trainer.train()
    if save_dir is not None:
        # The new rows are stored on their own (new_rows.safetensors): no copy of the whole resized embeddings and
        # output layer in the adapter (peft's default once it sees the vocabulary grew; ~0.3 GB for TinyLlama).
        peft_model.save_pretrained(save_dir, save_embedding_layers=False)
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    return peft_model.merge_and_unload(), losses


def continued_pretraining(model, tokenizer, texts: list[str], profile, *, new_ids: list[int], steps: int,
                          work_dir, adapter_dir=None) -> tuple[object, list]:
    """Causal-LM training on `texts`: the new token rows alone for the first half of `steps`, then LoRA on every
    linear layer with those rows; both merged into the model. Old embedding and output rows never change. On a
    4-bit base the LoRA merge re-quantizes each layer (a small rounding change, which peft warns about).

    Returns (model, loss history [(stage, step, loss)]). The stage-2 adapter is saved in `adapter_dir` when given.
    """
    from peft import TrainableTokensConfig

    from .peft_methods import build_lora_config

    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    dataset = build_pretrain_dataset(texts, tokenizer, block_size=profile.max_length)
    names = _embedding_module_names(model)
    first = steps - steps // 2
    stage1 = TrainableTokensConfig(target_modules=names, token_indices=list(new_ids))
    model, loss1 = _train_stage(model, stage1, dataset, profile, first, Path(work_dir) / "tokens", None)
    stage2 = build_lora_config(profile)
    stage2.trainable_token_indices = {name: list(new_ids) for name in names}
    model, loss2 = _train_stage(model, stage2, dataset, profile, steps - first, Path(work_dir) / "lora", adapter_dir)
    _cast_back(model, dtypes)  # the base's dtypes, so a cached re-run gives the same model
    return model, [(1, s, v) for s, v in loss1] + [(2, first + s, v) for s, v in loss2]


# ----------------------------------------------------------------------------- the profile's entry point


def parse_vocab_expansion(spec: str) -> tuple[str, int] | None:
    """Profile field vocab_expansion, "<corpus>:<pieces>" (e.g. "data_samples/corpus/zh_train.txt:2000" or
    "hf:wikimedia/wikipedia@20231101.zh:20000"), as (corpus, vocab size); None for "" (no expansion)."""
    if not spec:
        return None
    corpus, _, size = spec.rpartition(":")
    if not corpus or not size.isdigit() or int(size) < 100:
        raise ValueError(f"profile field 'vocab_expansion' is {spec!r}; expected '<corpus>:<vocab size>' with a "
                         "vocab size of at least 100, e.g. 'data_samples/corpus/zh_train.txt:2000'")
    if not corpus.startswith("hf:") and not project_path(corpus).is_file():
        raise FileNotFoundError(f"profile field 'vocab_expansion' names {corpus}, which does not exist")
    return corpus, int(size)


def _fingerprint(model, tokenizer, profile, corpus: str) -> str:
    """Everything the expansion depends on: base, its vocabulary, the corpus, and the training knobs used."""
    h = hashlib.sha256(_VERSION.encode())
    vocab = sorted(tokenizer.get_vocab().items())
    knobs = ("vocab_expansion", "pretrain_steps", "quantization", "compute_dtype", "seed")
    if profile.pretrain_steps:
        knobs += ("max_length", "batch_size", "grad_accum", "learning_rate", "warmup_ratio", "lora_r",
                  "lora_alpha", "lora_dropout", "target_modules")
    h.update(json.dumps([str(model.name_or_path), model.get_input_embeddings().weight.shape[0], vocab,
                         {k: getattr(profile, k) for k in knobs}]).encode())
    if not corpus.startswith("hf:"):
        h.update(project_path(corpus).read_bytes())
    return h.hexdigest()[:16]


def _new_rows(model, start: int) -> dict:
    out = model.get_output_embeddings()
    rows = {"input": model.get_input_embeddings().weight[start:]}
    if out is not None and out.weight is not model.get_input_embeddings().weight:
        rows["output"] = out.weight[start:]
    return {k: v.detach().to("cpu").contiguous() for k, v in rows.items()}


def _load_rows(model, start: int, path: Path) -> None:
    from safetensors.torch import load_file

    rows = load_file(str(path))
    with torch.no_grad():
        model.get_input_embeddings().weight[start:] = rows["input"]
        if "output" in rows:
            model.get_output_embeddings().weight[start:] = rows["output"]


def _expand(model, tokenizer, profile, spec: tuple[str, int], folder: Path) -> tuple[object, object, dict]:
    """The uncached path: expand the tokenizer, resize, optionally pre-train; write what a re-run needs."""
    from safetensors.torch import save_file

    corpus, size = spec
    texts = read_corpus(corpus)
    expanded, report = expand_tokenizer(tokenizer, texts, size, folder / "tokenizer")
    report |= resize_embeddings(model, expanded, seed=profile.seed)
    new_ids = list(range(len(tokenizer), len(expanded)))
    if profile.pretrain_steps:
        model, losses = continued_pretraining(model, expanded, texts, profile, new_ids=new_ids,
                                              steps=profile.pretrain_steps, work_dir=folder / "work",
                                              adapter_dir=folder / "pretrain_adapter")
        shutil.rmtree(folder / "work", ignore_errors=True)
        report["pretrain_loss"] = losses
    save_file(_new_rows(model, report["rows_before"]), str(folder / "new_rows.safetensors"))
    # The expanded model's config (no weights): peft reads it when saving an adapter tuned on this model, sees the
    # vocabulary it was tuned with, and neither copies the embeddings nor warns that it cannot tell.
    model.config.save_pretrained(folder)
    return model, expanded, report


def _cast_back(model, dtypes: dict) -> None:
    """Return parameters to the dtypes they had before training (fp16 training keeps fp32 copies)."""
    for n, p in model.named_parameters():
        if n in dtypes and p.dtype != dtypes[n] and p.is_floating_point():
            p.data = p.data.to(dtypes[n])


def _restore(model, folder: Path, report: dict):
    """The cached path: the same tokenizer, rows and merged pre-training adapter, read back."""
    tokenizer = _reload(folder / "tokenizer")
    resize_embeddings(model, tokenizer)
    if (folder / "pretrain_adapter").is_dir():
        from peft import PeftModel

        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        model = PeftModel.from_pretrained(model, str(folder / "pretrain_adapter")).merge_and_unload()
        _cast_back(model, dtypes)
    _load_rows(model, report["rows_before"], folder / "new_rows.safetensors")
    return model, tokenizer


def apply_vocab_expansion(model, tokenizer, profile) -> tuple[object, object, dict]:
    """Apply the profile's vocab_expansion and pretrain_steps to a loaded base: (model, tokenizer, report).

    The report holds the method, how many tokens were added, tokens per character on held-out Chinese text before
    and after, the sequence-length reduction, the embedding sizes and any pre-training loss. The result is cached
    under <output_root>/<profile>/vocab/<fingerprint>, so re-running an arm with the same settings reads it back.
    """
    spec = parse_vocab_expansion(profile.vocab_expansion)
    if spec is None:
        if profile.pretrain_steps:
            raise ValueError("profile field 'pretrain_steps' needs 'vocab_expansion' (its corpus is pre-trained on)")
        return model, tokenizer, {"vocab_expansion": "", "pretrain_steps": 0, "new_tokens": 0}
    folder = output_dir(profile.output_root, profile.name, "vocab") / _fingerprint(model, tokenizer, profile, spec[0])
    if (folder / "report.json").exists():
        report = json.loads((folder / "report.json").read_text()) | {"cached": True}
        model, _ = _restore(model, folder, report)
    else:
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
        model, expanded, report = _expand(model, tokenizer, profile, spec, tmp)
        report = {"vocab_expansion": profile.vocab_expansion, "pretrain_steps": profile.pretrain_steps, **report,
                  **compare_efficiency(tokenizer, expanded, read_corpus_file(HELDOUT_CORPUS))}
        (tmp / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
        try:
            os.replace(tmp, folder)  # atomic: a half-written expansion is never read back
        except OSError:  # another process finished the same expansion first
            shutil.rmtree(tmp, ignore_errors=True)
        report["cached"] = False
    # A new identity: adapters trained on the expanded model are not attached to the plain base, nor vice versa.
    model.name_or_path = model.config.name_or_path = str(folder)
    return model, _reload(folder / "tokenizer"), report


def check_expansion(profile, texts: dict | None = None) -> dict:
    """Expand the profile's base as its arm will (read back when cached) and check it after a save and reload.

    Returns {"report": apply_vocab_expansion's report, "check": check_vocabulary's facts on the reloaded copy
    against the base's ids and rows, "efficiency": {name: compare_efficiency(base, expanded, texts[name])},
    "tokenizer": the expanded tokenizer}; `texts` is {name: list of held-aside strings}.
    """
    from .models import load_model, load_tokenizer, resolve_model_source

    source = resolve_model_source(profile.base_model)
    load = dict(quantization=profile.quantization, compute_dtype=profile.compute_dtype,
                trust_remote_code=profile.trust_remote_code)
    tokenizer = load_tokenizer(source, trust_remote_code=profile.trust_remote_code)
    model = load_model(source, **load)
    snapshot = snapshot_vocabulary(model, tokenizer)  # the base's ids and rows, before anything changes
    model, expanded, report = apply_vocab_expansion(model, tokenizer, profile)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        expanded.save_pretrained(tmp)
        del model  # one copy of the model in memory at a time (a T4 holds little more)
        gc.collect()
        check = check_vocabulary(load_model(tmp, **load), load_tokenizer(tmp), snapshot, saved_dir=tmp)
    gc.collect()
    efficiency = {name: compare_efficiency(tokenizer, expanded, t) for name, t in (texts or {}).items()}
    return {"report": report, "check": check, "efficiency": efficiency, "tokenizer": expanded}
