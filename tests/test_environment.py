"""The environment cell, memory and speed figures, progress display and narrowly silenced library noise."""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers.console import headless, silence_known_noise, tqdm
from helpers.environment import (LIBRARIES, NoGPUWarning, TrainingProgress, check_environment, describe_environment,
                                 environment_info, memory_in_use, training_footprint, use_plain_progress)
from helpers.profiles import PROFILES, get_profile

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")


def test_environment_info_names_every_library_and_the_device():
    info = environment_info()
    assert all(info[lib] for lib in LIBRARIES) and torch.__version__.startswith(info["torch"].split("+")[0])
    text = describe_environment(info)
    assert all(f"{lib} {info[lib]}" in text for lib in LIBRARIES)
    assert ("GPU: none visible" in text) == (not torch.cuda.is_available())


def test_gpu_profiles_say_so_as_data():
    assert {name for name, p in PROFILES.items() if p.expects_gpu} == {"colab-t4", "a100"}


@needs_cpu_only
def test_gpu_profile_without_a_gpu_warns_and_smoke_does_not(capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_environment(get_profile("smoke"))
        assert not [w for w in caught if issubclass(w.category, NoGPUWarning)]
        check_environment(get_profile("colab-t4"))
    [warning] = [w for w in caught if issubclass(w.category, NoGPUWarning)]
    assert "'colab-t4' expects a GPU" in str(warning.message) and "Change runtime type" in str(warning.message)
    assert "GPU: none visible" in capsys.readouterr().out


def test_the_environment_cell_sets_the_profiles_torch_threads(capsys):
    before = torch.get_num_threads()
    try:
        assert check_environment(get_profile("smoke", torch_threads=1))["torch_threads"] == torch.get_num_threads() == 1
        assert "(torch uses 1)" in capsys.readouterr().out
        check_environment(get_profile("smoke", torch_threads=0))  # 0 leaves torch's setting alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@needs_cpu_only
def test_memory_on_a_cpu_is_the_process_rss_out_of_the_machine_total():
    mem = memory_in_use()
    assert "RSS" in mem["kind"] and 0 < mem["mb"] < mem["total_mb"]


def test_footprint_reports_speed_only_for_steps_that_ran():
    before, after = {"kind": "k", "mb": 100.0, "total_mb": 1000.0}, {"kind": "k", "mb": 250.0, "total_mb": 1000.0}
    ran = SimpleNamespace(new_steps=10, wall_time_s=5.0, tokens_per_second=400.0)
    f = training_footprint(ran, before, after)
    assert (f["memory_for_training_mb"], f["memory_share_pct"], f["train_seconds"], f["tokens_per_s"]) == \
        (150.0, 25.0, 5.0, 400.0)
    f = training_footprint(SimpleNamespace(new_steps=0, wall_time_s=0.4, tokens_per_second=None), before, after)
    assert f["train_seconds"] is None and f["tokens_per_s"] is None  # a 0.4 s resume is not a training time


def test_headless_bars_are_text_that_ends_at_100_percent(capsys):
    assert headless()  # pytest, like papermill, has no live frontend
    bar = tqdm(range(3), desc="work")
    assert type(bar).__module__ == "tqdm.std"
    list(bar)
    progress = TrainingProgress()
    state = SimpleNamespace(is_world_process_zero=True, max_steps=30, global_step=30)  # a finished run, resumed
    progress.on_train_begin(None, state, None)
    progress.on_train_end(None, state, None)
    err = capsys.readouterr().err
    assert "work: 100%" in err and "training: 100%" in err and "30/30" in err


def test_every_helper_draws_its_bars_through_the_console_module():
    # tqdm.auto draws a widget in a papermill kernel, saved frozen at 0%: only helpers.console picks the bar kind.
    helpers = Path(__file__).resolve().parents[1] / "helpers"
    direct = [p.name for p in helpers.glob("*.py")
              if p.name != "console.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert direct == []


def test_trainer_shows_one_bar_instead_of_a_loss_table():
    import transformers.trainer

    use_plain_progress()
    assert transformers.trainer.DEFAULT_PROGRESS_CALLBACK is TrainingProgress


def test_known_noise_is_silenced_by_message_only(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("some other deprecation", FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated, as a UserWarning", UserWarning)
    assert [str(w.message) for w in caught] == ["some other deprecation",
                                                "`is_gradient_checkpointing` is deprecated, as a UserWarning"]
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: no module")
        logger.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]


def test_importing_the_helpers_loads_no_training_library():
    """A notebook's import cell stays light (issue 13.8): transformers, trl, peft, bitsandbytes (which compiles
    kernels at import) and datasets load in the cells that use them, not when the helpers are imported."""
    import subprocess
    import sys

    light = ("adapters", "arms", "data", "environment", "experiment", "generation", "memory", "models", "plots",
             "prompts", "recipe", "results", "train", "tiny")
    heavy = ("transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate")
    modules = ", ".join(f"helpers.{m}" for m in light)
    code = f"import sys\nimport {modules}\nprint(sorted(set({heavy!r}) & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
