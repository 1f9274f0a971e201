"""Benchmark: log-likelihood choice scoring, naive loop vs batched scorer, on the tiny offline model.

    python benchmarks/bench_choice_scoring.py                      # nf4, ~200 items, 3 repeats
    python benchmarks/bench_choice_scoring.py --quantization none  # full-precision weights

The naive loop runs one unpadded forward pass per (question, option); the batched scorer runs one
right-padded forward pass per batch of questions and, when every option is a single token (A-D are),
reads all four options off the context's last position. Both must pick the same letters.

What it measures is the speed-up it prints, which depends on the machine and its load: on the project's shared
2-core CPU (nf4, 200 items, 3 repeats) runs printed 10.8-12.8x (issue #13) and 12.4x; quote a run's output,
not a fixed figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from helpers.eval_sets import load_exam  # noqa: E402
from helpers.evaluate import mc_prompts, score_choices, score_choices_naive  # noqa: E402
from helpers.models import load_model, load_tokenizer, resolve_model_source  # noqa: E402
from helpers.paths import project_path  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantization", choices=["nf4", "none"], default="nf4")
    parser.add_argument("--arch", default="qwen2", help="tiny architecture: qwen2, llama or bloom")
    parser.add_argument("--items", type=int, default=200, help="repeat the sample exam to this many questions")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per scorer (median reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shots", type=int, default=0)
    # One thread by default: the tiny model's matrices are too small to split, and on a shared 2-core
    # machine extra threads spin against other processes, slowing the many small naive calls most.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def exam_contexts(n_items: int, shots: int) -> list[str]:
    """The sample exam's prompts, repeated (cycled) to n_items."""
    test = load_exam(project_path("data_samples/exam_zh_test.jsonl"))
    dev = load_exam(project_path("data_samples/exam_zh_dev.jsonl")) if shots else None
    repeated = pd.concat([test] * (n_items // len(test) + 1), ignore_index=True).head(n_items)
    return mc_prompts(repeated, shots=shots, dev_df=dev)


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    """(median seconds, last result) over `repeats` runs, after one untimed warm-up on a small slice."""
    fn(warmup=True)
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(warmup=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("ZH_COOKBOOK_CACHE", str(ROOT / ".cache"))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    path = resolve_model_source(f"tiny:{args.arch}")
    tokenizer, model = load_tokenizer(path), load_model(path, quantization=args.quantization)
    contexts = exam_contexts(args.items, args.shots)

    def naive(warmup):
        return score_choices_naive(model, tokenizer, contexts[:4] if warmup else contexts)

    def batched(warmup):
        return score_choices(model, tokenizer, contexts[:4] if warmup else contexts, batch_size=args.batch_size)

    t_naive, ll_naive = timed(naive, args.repeats)
    t_batched, ll_batched = timed(batched, args.repeats)
    n = len(contexts)
    print(f"tiny:{args.arch} quantization={args.quantization} items={n} shots={args.shots} "
          f"batch_size={args.batch_size} repeats={args.repeats} device={model.device}")
    print(f"naive   : {n / t_naive:8.1f} items/s  (median {t_naive:.2f} s)")
    print(f"batched : {n / t_batched:8.1f} items/s  (median {t_batched:.2f} s)")
    print(f"speed-up: {t_naive / t_batched:.1f}x")
    print(f"max |log-lik difference|: {np.abs(ll_naive - ll_batched).max():.2e}")
    same = (ll_naive.argmax(axis=1) == ll_batched.argmax(axis=1)).all()
    assert same, "naive and batched scorers picked different letters"
    print("predictions identical: True")


if __name__ == "__main__":
    main()
