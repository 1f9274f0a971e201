"""Benchmark: building training rows (helpers.prompts.build_sft_dataset), 1 vs 2 worker processes, and a re-run.

    python benchmarks/bench_tokenize.py                 # 100k synthetic records, the tiny tokenizer
    python benchmarks/bench_tokenize.py --rows 20000 --procs 1,2,4

Records are conversations recombined from the project's Chinese samples (one sample's instruction, another's
answer; seeded), built exactly as training builds them: rendered in the chat template, tokenised with labels from
character offsets, the over-length policy applied and counted (datasets.map through batching.tokenize_rows). Each
timed run starts from an empty cache folder, so it tokenises and writes its cache as a first run would; the last
line times the same call again, as a re-run of a notebook makes it (read back from the cache).
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

from helpers.data import DataReport, load_training_data  # noqa: E402
from helpers.models import load_tokenizer  # noqa: E402
from helpers.prompts import build_sft_dataset  # noqa: E402
from helpers.tiny import build_tiny_model  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--procs", default="1,2", help="worker process counts to compare")
    parser.add_argument("--max-length", type=int, default=512)
    return parser.parse_args(argv)


def synthetic_records(n: int) -> list[dict]:
    """n one-turn conversations: one sample's first question with another's last answer, at random (seed 0)."""
    examples, _ = load_training_data("data_samples/instructions_zh.json")
    rng = random.Random(0)
    records = []
    for i in range(n):
        question, answer = rng.choice(examples), rng.choice(examples)
        records.append({**question, "messages": [question["messages"][0], answer["messages"][-1]],
                        "where": f"synthetic {i + 1}"})
    return records


def build(records, tok, max_length: int, num_proc: int) -> tuple[float, DataReport]:
    """Seconds to build the training rows, and the data report that counts what the over-length policy did."""
    report = DataReport(path="synthetic", read=len(records), kept=len(records))
    start = time.perf_counter()
    build_sft_dataset(records, tok, max_length=max_length, report=report, num_proc=num_proc)
    return time.perf_counter() - start, report


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("ZH_COOKBOOK_CACHE", str(ROOT / ".cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per process: the comparison is processes
    tok = load_tokenizer(str(build_tiny_model("qwen2")))
    records = synthetic_records(args.rows)
    rates, counts = {}, [int(p) for p in args.procs.split(",")]
    with tempfile.TemporaryDirectory() as root:
        for procs in counts:  # each from an empty cache folder
            os.environ["ZH_COOKBOOK_CACHE"] = f"{root}/{procs}"
            seconds, report = build(records, tok, args.max_length, procs)
            rates[procs] = args.rows / seconds
        cached = args.rows / build(records, tok, args.max_length, counts[-1])[0]  # the last run's cache, read back
    print(f"\n{args.rows} records, tiny tokenizer, max_length {args.max_length}, {os.cpu_count()} CPU cores; "
          f"kept {report.kept}, skipped {dict(report.skipped)}")
    first = min(rates)
    for procs, rate in rates.items():
        print(f"num_proc={procs}: {rate:10.0f} samples/s  ({rate / rates[first]:.2f}x num_proc={first})")
    print(f"cached re-run: {cached:10.0f} samples/s  ({cached / rates[first]:.0f}x num_proc={first})")


if __name__ == "__main__":
    main()
