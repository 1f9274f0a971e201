"""Train a profile outside the notebooks, on one process or many (torchrun / accelerate launch).

    python scripts/train_distributed.py --profile smoke --output outputs/cli
    torchrun --standalone --nproc_per_node 2 scripts/train_distributed.py --profile a100 --output outputs/ddp \\
        --set batch_size=4                                   # DDP: each process takes batch_size rows a step
    accelerate launch --config_file configs/accelerate_ddp.yaml scripts/train_distributed.py --profile a100
    accelerate launch --config_file configs/deepspeed_zero2.yaml scripts/train_distributed.py --profile a100

The same code path as the notebooks (helpers.experiment.load_base / tune -> helpers.train.train_model); the
Trainer finds the processes from the launcher's environment (NCCL on GPUs, gloo on CPUs). batch_size is per
process: the global batch is batch_size x grad_accum x processes, so halve batch_size (or grad_accum) when you
double the processes to keep a run's trajectory. Process 0 writes <output>/result.json and the adapter.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--output", required=True, help="folder for checkpoints, the adapter and result.json")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a profile field (repeatable), e.g. --set max_steps=200")
    return parser.parse_args(argv)


def overrides(pairs: list[str]) -> dict:
    """{"field": value} from FIELD=VALUE strings (numbers, true/false, else text)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {pair!r}")
        out[key.strip()] = _value(value.strip())
    return out


def _value(text: str):
    """true/false, a whole number, a number, else the text (get_profile then checks it against the field)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> None:
    from helpers.experiment import load_base, tune
    from helpers.profiles import get_profile

    args = parse_args(argv)
    profile = get_profile(args.profile, **overrides(args.set))
    model, tokenizer = load_base(profile)
    result, report = tune(model, tokenizer, profile, args.output)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = result.to_dict() | {"processes": int(os.environ.get("WORLD_SIZE", "1")), "profile": profile.name}
        Path(args.output, "result.json").write_text(json.dumps(summary, indent=1))
        print(f"{summary['steps']} steps on {summary['processes']} process(es); last loss "
              f"{result.loss_history[-1][1]:.4f}; adapter in {result.adapter_dir}")


if __name__ == "__main__":
    main()
