"""Tiny offline models of real architecture classes, each with a tokenizer of its family's kind trained offline.

The three tokenizers differ the way their real families do (finding 01 compares them as bases):
- llama: a SentencePiece BPE model with byte fallback (a `tokenizer.model`, as LLaMA ships) trained on mostly
  non-Chinese text, so most Chinese characters fall back to UTF-8 bytes, as with LLaMA's 32k vocabulary;
- bloom: a byte-level BPE with a larger vocabulary trained on English and Chinese text (multilingual, like BLOOM);
- qwen2: a byte-level BPE trained on the Chinese sample data (strong in Chinese, like Qwen).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .paths import cache_dir, project_path

__all__ = [
    "TINY_ARCHS",
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "CORPUS_DIR",
    "read_corpus_file",
    "build_tokenizer",
    "build_sentencepiece_tokenizer",
    "build_tiny_model",
]

_VERSION = "3"  # bump to rebuild every cached tiny model
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
# A ChatML-style template (the format Qwen uses), so the smoke path exercises chat templates.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SIZES = dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)  # hidden 64 = one nf4 block per row
# A wider init than real models (0.02) so the frozen random output layer can express a peaked distribution:
# otherwise the logits stay near uniform and a 30-step smoke run cannot show the loss falling.
_INIT_RANGE = 0.2
CORPUS_DIR = "data_samples/corpus"  # plain-text corpora written for the project (see its README.md)


def _decoder_config(config_name: str):
    """A tiny config for Llama-style decoders (Llama and Qwen2 take the same arguments)."""

    def make(vocab: int, ids: dict):
        import transformers  # on use: importing the config classes costs a second

        s = _SIZES
        config_class = getattr(transformers, config_name)
        return config_class(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                            num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                            num_key_value_heads=s["kv_heads"], max_position_embeddings=1024,
                            initializer_range=_INIT_RANGE, **ids)

    return make


def _bloom_config(vocab: int, ids: dict):
    from transformers import BloomConfig

    s = _SIZES
    return BloomConfig(vocab_size=vocab, hidden_size=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
                       initializer_range=_INIT_RANGE, **ids)


TINY_ARCHS = {"llama": _decoder_config("LlamaConfig"), "qwen2": _decoder_config("Qwen2Config"), "bloom": _bloom_config}


def _corpus() -> list[str]:
    """Every string in data_samples/*.json[l]: the tokenizer learns the Chinese it will be trained on."""
    from .data import iter_json_records

    paths = sorted(project_path("data_samples").glob("*.json*"))
    return [text for path in paths for _, row in iter_json_records(path) for text in _strings(row)]


def _strings(value) -> list[str]:
    """Every string inside a JSON value, nested ones too (conversation turns, answer choices)."""
    if isinstance(value, str):
        return [value]
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [text for child in children for text in _strings(child)]


def read_corpus_file(path) -> list[str]:
    """The non-blank lines (one paragraph each) of a UTF-8 text corpus, project-relative or absolute."""
    file = project_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"corpus file {file} does not exist")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    texts = [line for line in lines if line]
    if not texts:
        raise ValueError(f"corpus file {file} holds no text")
    return texts


def build_tokenizer(vocab_size: int = 3000, texts: list[str] | None = None):
    """Train a byte-level BPE tokenizer (every byte encodable, so no unknown characters); data_samples by default."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus() if texts is None else texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")  # pad distinct from eos
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_sentencepiece_tokenizer(texts: list[str], directory, vocab_size: int = 2000):
    """Train a LLaMA-style SentencePiece BPE model (byte fallback) into `directory`/tokenizer.model; load it."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    # LLaMA's trainer settings: BPE, byte fallback, digits split, text kept as is (no NFKC, spaces kept).
    # pad and the chat markers live inside the proto, so appended pieces never collide with added tokens.
    with open(Path(directory) / "tokenizer.model", "wb") as out:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=out, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, split_digits=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=0.9995,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, control_symbols=SPECIAL_TOKENS[4:],
            num_threads=1, minloglevel=2)  # one thread: the same corpus always gives the same model
    tok = LlamaTokenizer.from_pretrained(str(directory), add_bos_token=True, pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _llama_tokenizer(directory):
    # Mostly English (with a little French, Spanish, German and Chinese), as LLaMA's pre-training mix was.
    return build_sentencepiece_tokenizer(read_corpus_file(f"{CORPUS_DIR}/en_train.txt"), directory, 2000)


def _bloom_tokenizer(directory):
    texts = read_corpus_file(f"{CORPUS_DIR}/en_train.txt") + read_corpus_file(f"{CORPUS_DIR}/zh_train.txt")
    return build_tokenizer(6000, texts + _corpus())


_TOKENIZERS = {"llama": _llama_tokenizer, "qwen2": lambda directory: build_tokenizer(), "bloom": _bloom_tokenizer}


def _fingerprint(arch: str) -> str:
    h = hashlib.sha256(f"{_VERSION}{arch}{_SIZES}{_INIT_RANGE}".encode())
    corpus = sorted(project_path(CORPUS_DIR).glob("*.txt"))
    for path in sorted(project_path("data_samples").glob("*.json*")) + corpus:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def build_tiny_model(arch: str = "qwen2", root: str | os.PathLike | None = None) -> Path:
    """Build (once, then cached on disk) a tiny random model + tokenizer directory for `arch`."""
    import torch
    from transformers import AutoModelForCausalLM

    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; valid: {', '.join(TINY_ARCHS)}")
    target = Path(root or cache_dir("tiny-models")) / f"{arch}-{_fingerprint(arch)}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{arch}-"))
    tok = _TOKENIZERS[arch](tmp)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_ARCHS[arch](len(tok), ids))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)  # writes tokenizer.json; a SentencePiece tokenizer.model stays beside it
    try:
        os.replace(tmp, target)  # atomic: a half-built model is never seen as cached
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
