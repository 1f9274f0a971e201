"""Benchmark: tokenising training rows with datasets.map, 1 vs 2 worker processes, and a re-run from the cache.

    python benchmarks/bench_tokenize.py                 # 100k synthetic rows, the tiny tokenizer
    python benchmarks/bench_tokenize.py --rows 20000 --procs 1,2,4

Rows are prompt/completion pairs recombined from the project's Chinese samples (seeded), run through
helpers.batching.tokenize_rows, the path training uses. Timed runs write no cache; the last line times a
second call with the on-disk cache, as a re-run of a notebook would make it.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from datasets import Dataset  # noqa: E402

from helpers.batching import encode_prompt_completion, tokenize_rows  # noqa: E402
from helpers.data import load_training_data  # noqa: E402
from helpers.models import load_tokenizer  # noqa: E402
from helpers.prompts import format_prompt  # noqa: E402
from helpers.tiny import build_tiny_model  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--procs", default="1,2", help="worker process counts to compare")
    parser.add_argument("--max-length", type=int, default=512)
    return parser.parse_args(argv)


def synthetic_rows(n: int, tokenizer) -> Dataset:
    """n prompt/completion rows: sample instructions and answers recombined at random (seed 0)."""
    examples, _ = load_training_data("data_samples/instructions_zh.json")
    prompts = [format_prompt(ex, tokenizer) for ex in examples]
    answers = [ex["output"] for ex in examples]
    rng = random.Random(0)
    return Dataset.from_dict({"prompt": [rng.choice(prompts) for _ in range(n)],
                              "completion": [rng.choice(answers) for _ in range(n)]})


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("ZH_COOKBOOK_CACHE", str(ROOT / ".cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per process: the comparison is processes
    tok = load_tokenizer(str(build_tiny_model("qwen2")))
    rows = synthetic_rows(args.rows, tok)
    kwargs = {"tokenizer": tok, "max_length": args.max_length}
    rates = {}
    for procs in (int(p) for p in args.procs.split(",")):
        start = time.perf_counter()
        tokenize_rows(rows, encode_prompt_completion, kwargs, num_proc=procs, cache=False)
        rates[procs] = args.rows / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ZH_COOKBOOK_CACHE"] = cache
        tokenize_rows(rows, encode_prompt_completion, kwargs, num_proc=1)
        start = time.perf_counter()
        tokenize_rows(rows, encode_prompt_completion, kwargs, num_proc=1)
        cached = args.rows / (time.perf_counter() - start)
    print(f"\n{args.rows} rows, tiny tokenizer, max_length {args.max_length}, {os.cpu_count()} CPU cores")
    first = min(rates)
    for procs, rate in rates.items():
        print(f"num_proc={procs}: {rate:10.0f} samples/s  ({rate / rates[first]:.2f}x num_proc={first})")
    print(f"cached re-run: {cached:10.0f} samples/s  ({cached / rates[first]:.0f}x num_proc={first})")


if __name__ == "__main__":
    main()
