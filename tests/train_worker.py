"""Trains the tiny smoke model in a separate process, optionally killing itself with SIGKILL mid-run.

    python tests/train_worker.py OUT_DIR [--kill-after-step N] [--kill-during-save N] [--max-steps M]
"""
from __future__ import annotations

import argparse
import json
import os
import signal

from transformers import Trainer, TrainerCallback


class _KillAfterStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:  # the step's update is done, its log and save are not
            os.kill(os.getpid(), signal.SIGKILL)


def _kill_during_save(step):
    """SIGKILL after the weights and optimizer of checkpoint-`step` are written, before the rest."""
    original = Trainer._save_scaler

    def save_scaler(self, output_dir):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)

    Trainer._save_scaler = save_scaler


def main():
    from helpers.data import load_training_data
    from helpers.models import load_model, load_tokenizer, resolve_model_source
    from helpers.profiles import get_profile
    from helpers.prompts import build_sft_dataset
    from helpers.train import train_model

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--kill-after-step", type=int)
    p.add_argument("--kill-during-save", type=int)
    p.add_argument("--max-steps", type=int, default=8)
    a = p.parse_args()
    # dropout on, so the test also covers restoring the RNG state
    profile = get_profile("smoke", max_steps=a.max_steps, save_steps=2, logging_steps=1, lora_dropout=0.1)
    source = resolve_model_source(profile.base_model)
    tok, model = load_tokenizer(source), load_model(source, compute_dtype=profile.compute_dtype)
    examples, _ = load_training_data(profile.train_data, limit=32)
    ds = build_sft_dataset(examples, tok, max_length=profile.max_length)
    callbacks = [_KillAfterStep(a.kill_after_step)] if a.kill_after_step else []
    if a.kill_during_save:
        _kill_during_save(a.kill_during_save)
    result = train_model(model, tok, ds, profile, a.out, callbacks=callbacks)
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result.to_dict(), f)


if __name__ == "__main__":
    main()
