"""How well a tokenizer covers Chinese: characters per token and the share of byte-level or unknown pieces."""
from __future__ import annotations

__all__ = ["tokenizer_efficiency"]


def tokenizer_efficiency(tokenizer, texts) -> dict:
    """Characters per token, and the shares of byte-fallback and unknown tokens, over `texts` (no special tokens).

    A token counts as a byte piece when it does not decode to whole characters on its own: SentencePiece's
    byte fallback (<0xE4>) and a byte-level BPE token holding part of a character's UTF-8 bytes both do.
    A base that spends two or three byte pieces per Chinese character sees less text per token and has to
    learn characters from bytes.
    """
    texts = [str(t) for t in texts if str(t).strip()]
    if not texts:
        raise ValueError("tokenizer_efficiency needs at least one non-empty text")
    ids = [i for row in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in row]
    n_chars = sum(len(t) for t in texts)
    pieces = {i: tokenizer.decode([i]) for i in set(ids)}
    byte_pieces = sum("\ufffd" in pieces[i] for i in ids)
    unk = tokenizer.unk_token_id
    unknown = sum(i == unk for i in ids) if unk is not None else 0
    n_tokens = max(len(ids), 1)
    return {"chars_per_token": n_chars / n_tokens, "tokens_per_char": len(ids) / n_chars,
            "byte_fallback_share": byte_pieces / n_tokens, "unk_share": unknown / n_tokens,
            "n_chars": n_chars, "n_tokens": len(ids)}
