"""Tiny offline models of real architecture classes, with a tokenizer trained on data_samples."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from transformers import BloomConfig, LlamaConfig, Qwen2Config

from .paths import cache_dir, project_path

__all__ = ["TINY_ARCHS", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer", "build_tiny_model"]

_VERSION = "1"  # bump to rebuild every cached tiny model
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


def _decoder_config(config_class):
    """A tiny config for Llama-style decoders (Llama and Qwen2 take the same arguments)."""

    def make(vocab: int, ids: dict):
        s = _SIZES
        return config_class(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                            num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                            num_key_value_heads=s["kv_heads"], max_position_embeddings=1024,
                            initializer_range=_INIT_RANGE, **ids)

    return make


def _bloom_config(vocab: int, ids: dict):
    s = _SIZES
    return BloomConfig(vocab_size=vocab, hidden_size=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
                       initializer_range=_INIT_RANGE, **ids)


TINY_ARCHS = {"llama": _decoder_config(LlamaConfig), "qwen2": _decoder_config(Qwen2Config), "bloom": _bloom_config}


def _corpus() -> list[str]:
    """Every string in data_samples/*.json[l]: the tokenizer learns the Chinese it will be trained on."""
    from .data import iter_json_records

    paths = sorted(project_path("data_samples").glob("*.json*"))
    return [v for path in paths for _, row in iter_json_records(path) for v in row.values() if isinstance(v, str)]


def build_tokenizer(vocab_size: int = 3000):
    """Train a byte-level BPE tokenizer on data_samples (every byte encodable, so no unknown characters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")  # pad distinct from eos
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _fingerprint(arch: str) -> str:
    h = hashlib.sha256(f"{_VERSION}{arch}{_SIZES}{_INIT_RANGE}".encode())
    for path in sorted(project_path("data_samples").glob("*.json*")):
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
    tok = build_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_ARCHS[arch](len(tok), ids))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{arch}-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, target)  # atomic: a half-built model is never seen as cached
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
