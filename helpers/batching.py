"""Training rows and batches: tokenised rows (datasets.map, cached), length-grouped batches, padding share."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from torch.utils.data import Sampler

from .paths import cache_dir

__all__ = [
    "MAP_PARALLEL_FROM",
    "tokenize_rows",
    "check_training_rows",
    "length_grouped_order",
    "LengthGroupedBatches",
    "padding_share",
]

# Below this many rows, starting worker processes costs more than tokenising in one.
MAP_PARALLEL_FROM = 20_000
_MEGABATCH_GROUPS = 50  # groups sorted together: more means less padding and less randomness in batch makeup


def _cache_key(dataset, encode, fn_kwargs: dict) -> str:
    """The rows, the encoder (by name and the source of its module, so an edited encoder is not read back from an
    old cache) and its arguments (the tokenizer with its chat template, the template, max_length, the policy)."""
    from datasets.fingerprint import Hasher

    source = Path(inspect.getfile(encode)).read_bytes()
    return Hasher.hash([dataset._fingerprint, encode.__module__, encode.__qualname__, source, fn_kwargs])


def tokenize_rows(dataset, encode, fn_kwargs: dict, *, num_proc: int | None = None, cache: bool = True):
    """Run a batched `encode(batch, **fn_kwargs) -> {"input_ids", "labels", ...}` over a datasets.Dataset with
    datasets.map: `num_proc` worker processes (default: all cores from MAP_PARALLEL_FROM rows on; 1 or fewer: this
    process), and the result cached on disk, so a re-run with the same rows, encoder, tokenizer and settings reads it
    back instead (whatever num_proc wrote it)."""
    if num_proc is None:
        num_proc = min(os.cpu_count() or 1, 8) if len(dataset) >= MAP_PARALLEL_FROM else None
    num_proc = num_proc if num_proc and num_proc > 1 else None  # datasets runs num_proc=1 in a worker process
    key = _cache_key(dataset, encode, fn_kwargs)
    return dataset.map(encode, fn_kwargs=fn_kwargs, batched=True, batch_size=1000, num_proc=num_proc,
                       remove_columns=dataset.column_names, desc="Tokenizing", new_fingerprint=key,
                       cache_file_name=str(cache_dir("tokenized") / f"{key}.arrow") if cache else None)


def check_training_rows(dataset, max_length: int) -> list[int]:
    """Row lengths, after checking that every row fits max_length and has a supervised token; errors name the row.
    So every batch trains on something: a batch is made of these rows."""
    if "labels" not in dataset.column_names:
        raise ValueError("training takes tokenized rows: 'input_ids' and 'labels' (-100 where no loss is taken); "
                         "build them with helpers.prompts.build_sft_dataset(...)")
    lengths = []
    for i, (ids, labels) in enumerate(zip(dataset["input_ids"], dataset["labels"])):
        if len(ids) > max_length or len(ids) != len(labels):
            raise ValueError(f"training row {i} has {len(ids)} tokens and {len(labels)} labels; rows must be cut to "
                             f"max_length={max_length} with one label per token")
        if all(x == -100 for x in labels[1:]):  # the first token is never predicted: nothing comes before it
            raise ValueError(f"training row {i} has no supervised (answer) token left after truncation to "
                             f"max_length={max_length}; build the dataset with build_sft_dataset(...), which "
                             "applies the over-length policy, or raise max_length")
        lengths.append(len(ids))
    return lengths


def length_grouped_order(lengths: list[int], group: int, seed: int) -> list[int]:
    """A permutation whose consecutive `group`-sized slices hold rows of similar length: shuffle, sort within
    mega-batches of 50 groups, cut into groups and shuffle the groups (the longest first, so an OOM shows at once;
    a last, partial group stays last so every other group stays aligned with the batches)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    mega = group * _MEGABATCH_GROUPS
    order = [i for start in range(0, len(order), mega) for i in sorted(order[start:start + mega],
                                                                     key=lambda i: -lengths[i])]
    groups = [order[i:i + group] for i in range(0, len(order), group)]
    tail = [groups.pop()] if len(groups[-1]) < group and len(groups) > 1 else []
    groups = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
    longest = max(range(len(groups)), key=lambda k: lengths[groups[k][0]])
    groups[0], groups[longest] = groups[longest], groups[0]
    return [i for grp in groups + tail for i in grp]


class LengthGroupedBatches(Sampler):
    """Sampler of length-grouped rows whose order depends only on (seed, epoch): a resumed run, or every process
    of a distributed one, sees the same batches (transformers' own sampler draws from the global RNG)."""

    def __init__(self, lengths: list[int], group: int, seed: int):
        self.lengths, self.group, self.seed, self.epoch = lengths, group, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's data loader at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(length_grouped_order(self.lengths, self.group, self.seed + self.epoch))


def padding_share(lengths: list[int], order: list[int], batch_size: int) -> float:
    """Share of padded positions when rows are batched in `order` and each batch is padded to its longest row."""
    padded = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded if padded else 0.0
