"""The training script under torchrun: 2 CPU processes (gloo) give the 1-process result at the same global batch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_distributed.py"
SETTINGS = ["--profile", "smoke", "--set", "max_steps=4", "--set", "train_limit=32", "--set", "save_steps=2",
            "--set", "logging_steps=1"]


def _train(out: Path, processes: int, batch_size: int) -> dict:
    launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                         "--nproc_per_node", str(processes)]
    done = subprocess.run([*launcher, str(SCRIPT), *SETTINGS, "--set", f"batch_size={batch_size}", "--output",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    one = _train(tmp_path / "one", 1, batch_size=4)
    two = _train(tmp_path / "two", 2, batch_size=2)  # 2 processes x 2 rows = the same 4 rows a step
    assert (one["processes"], two["processes"]) == (1, 2)
    assert [s for s, _ in two["loss_history"]] == [s for s, _ in one["loss_history"]] == [1, 2, 3, 4]
    assert [x for _, x in two["loss_history"]] == pytest.approx([x for _, x in one["loss_history"]], rel=1e-4)
    assert two["tokens_seen"] == one["tokens_seen"]
    assert (tmp_path / "two" / "checkpoints" / "checkpoint-4" / "COMPLETE").exists()  # marked once, by process 0
    a, b = (load_file(str(tmp_path / d / "adapter" / "adapter_model.safetensors")) for d in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-5)


def test_overrides_are_typed():
    sys.path.insert(0, str(SCRIPT.parent))
    from train_distributed import overrides

    assert overrides(["max_steps=200", "padding_free=on", "gradient_checkpointing=true", "learning_rate=1e-4"]) == {
        "max_steps": 200, "padding_free": "on", "gradient_checkpointing": True, "learning_rate": 1e-4}


def test_launcher_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    root = SCRIPT.parents[1] / "configs"
    kinds = {p.stem: load_config_from_file(str(p)).distributed_type.value for p in sorted(root.glob("*.yaml"))}
    assert kinds == {"accelerate_ddp": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED",
                     "fsdp": "FSDP"}
    for stage in (2, 3):
        assert json.loads((root / f"deepspeed_zero{stage}.json").read_text())["zero_optimization"]["stage"] == stage
